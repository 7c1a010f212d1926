"""Non-linear patterns that onnxruntime fuses into one op only while their constants stay put.

A decomposed GELU ends in ``· 0.5`` (``x·(1 + erf(x/√2))·0.5``, or its ``tanh`` form) and a
decomposed LayerNorm or RMSNorm in ``· γ + β``. Folding such a tail into the next linear op is
exact, but onnxruntime then no longer recognises the pattern and runs it op by op (FastViT-T8
ran 10% slower), so the tail stays, and says why. Any other non-linear op (ReLU, SiLU,
Sigmoid...) has no such tail: a per-channel op after it (YOLOv7's ``ImplicitA``) folds on.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .graph_utils import producer

#: The ops of a pattern's tail: bare constant arithmetic, kept before the weighted op after it.
TAIL_OPS = frozenset({"Mul", "Div", "Add", "Sub"})
#: Ops that end the upward look: a pattern's non-linear core never passes through them.
LINEAR_BOUNDARY = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"})
#: How many nodes above the tail the core's tell-tale op may sit (GELU: Mul ← Add ← Erf).
_DEPTH = 3
_TELLS = (
    (frozenset({"Erf", "Tanh"}), "a GELU"),
    (frozenset({"Sqrt", "Reciprocal", "ReduceMean", "ReduceL2"}), "a LayerNorm"),
)


def fused_pattern_ending_at(tensor: gs.Tensor) -> str | None:
    """``"a GELU"`` or ``"a LayerNorm"`` if the non-linear node computing ``tensor`` is the end
    of such a pattern (its tell-tale op within :data:`_DEPTH` nodes above, not across a linear
    layer), else ``None``."""
    seen: set[str] = set()
    frontier = [node for node in (producer(tensor),) if node is not None]
    for _ in range(_DEPTH):
        above = []
        for node in frontier:
            seen.add(node.op)
            above.extend(
                parent
                for parent in (producer(t) for t in node.inputs if not isinstance(t, gs.Constant))
                if parent is not None and parent.op not in LINEAR_BOUNDARY
            )
        frontier = above
    for tells, name in _TELLS:
        if seen & tells:
            return name
    return None


def kept_tail_reason(tail: gs.Node, pattern: str, reader: str) -> str:
    """The sentence for a per-channel tail kept before ``reader`` (a node's description)."""
    return (
        f"{tail.op} '{tail.name}' stays before {reader}: it ends {pattern}, which onnxruntime "
        "fuses into one op only while this constant is in place (folding it would be exact "
        "but slower)"
    )
