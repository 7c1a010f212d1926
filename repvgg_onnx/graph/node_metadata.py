"""The ``metadata_props`` keys ``fuse`` writes on the nodes it creates, read back by ``diff``.

On IR ≥ 10 models every fused node carries :data:`RULE_KEY` (the rule that made it, e.g.
``affine_region``) and :data:`BRANCHES_KEY` (the branches it replaced, as ``fuse`` labels them).
Writer and reader share these names, so the two cannot drift apart.
"""

RULE_KEY = "repvgg_onnx.rule"
BRANCHES_KEY = "repvgg_onnx.branches"
