"""Fold a per-channel constant ``Mul``, ``Div``, ``Add`` or ``Sub`` into the Conv before it.

``conv(x)·c = conv'(x)`` with ``W' = W·c``, ``b' = b·c``; ``conv(x) + c`` has ``b' = b + c``
(``Div`` and ``Sub`` by ``c`` are ``Mul`` by ``1/c`` and ``Add`` of ``−c``). Exports carry such
ops for PP-YOLOE's ``alpha``-scaled branches, layer scales and explicit bias adds; folding them
makes those branches plain Convs the merge pass can sum. Legal when ``c`` has one value per
output channel (shape ``[C,1,1]``, ``[1,C,1,1]``, a scalar…) so the output shape is unchanged,
and the Conv's output is read by this op alone.

Invariant: the graph computes the same function (to float rounding); the new Conv writes the
op's output tensor under the same name.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra import AffineConv, scale_and_shift

from .graph_utils import UniqueNames, constant_values, has_single_use, producer
from .normal_form import conv_as_affine, conv_dtype, describe_conv
from .result import FusedBlock, PassResult
from .rewrite import replace_with_conv

RULE = "fold_scale"
_OPS = ("Mul", "Div", "Add", "Sub")


def fold_scale(graph: gs.Graph) -> PassResult:
    """Replace each ``Conv → (Mul|Div|Add|Sub) per-channel constant`` pair by one Conv."""
    plans = []
    for node in graph.nodes:
        if node.op in _OPS and len(node.inputs) == 2:
            plan = _plan(graph, node)
            if plan is not None:
                plans.append(plan)
    names = UniqueNames(graph)
    fused = []
    for node, conv, original, folded in plans:
        output = node.outputs[0].name
        new = replace_with_conv(graph, node, conv.inputs[0], folded, conv_dtype(conv), names)
        label = f"{describe_conv(original)}+{node.op}"
        fused.append(FusedBlock(RULE, output, new.name, (label,), describe_conv(folded)))
    if fused:
        graph.cleanup().toposort()
    return PassResult(fused=fused)


def _plan(graph: gs.Graph, node: gs.Node):
    """``(node, conv, conv form, folded form)`` if ``node`` folds into its Conv, else ``None``."""
    first, second = node.inputs
    operands = [(first, second)] + ([(second, first)] if node.op in ("Mul", "Add") else [])
    for tensor, constant in operands:
        conv = producer(tensor)
        value = constant_values(constant)
        if conv is None or conv.op != "Conv" or value is None:
            continue
        if not has_single_use(graph, tensor):
            return None
        form = conv_as_affine(conv)
        if isinstance(form, str):
            return None
        per_channel = _per_channel(value, form)
        if per_channel is None:
            return None
        folded = _apply(node.op, form, per_channel)
        return None if folded is None else (node, conv, form, folded)
    return None


def _per_channel(value: np.ndarray, conv: AffineConv) -> np.ndarray | None:
    """``value`` as one float per output channel, if broadcasting it over ``[N, C, *spatial]``
    changes no shape; else ``None``."""
    rank = conv.spatial_rank + 2
    if value.ndim > rank or not np.issubdtype(value.dtype, np.floating):
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, conv.out_channels):
        return None
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (conv.out_channels,))


def _apply(op: str, conv: AffineConv, values: np.ndarray) -> AffineConv | None:
    """The folded conv, or ``None`` for a division by zero."""
    ones, zeros = np.ones_like(values), np.zeros_like(values)
    if op == "Mul":
        return scale_and_shift(conv, values, zeros)
    if op == "Div":
        return None if np.any(values == 0) else scale_and_shift(conv, 1.0 / values, zeros)
    if op == "Add":
        return scale_and_shift(conv, ones, values)
    return scale_and_shift(conv, ones, -values)
