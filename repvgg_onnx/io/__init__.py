"""Models in and out of files: loading with the checker, external data (memory-mapped),
path safety, atomic fsynced writes, size limits; and a model's skeleton (its graph without
the bytes of its large constants), which checks and shape inference read instead of the whole.

Knows nothing about graphs or passes: the layers above import it, never the other way round.
"""
