"""What every command found, as records and as text: the result records of fuse and verify,
a model's summary, ``inspect``'s findings (control-flow bodies included), ``diff``'s blocks,
and ``render/``, which turns a report's JSON-ready dict into text, Markdown or HTML (with SVG
pictures of blocks).
"""
