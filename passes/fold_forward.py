"""Fold a per-channel op forward into every linear op that reads it (a region with many roots).

A BatchNormalization (or per-channel Mul/Add/Sub) whose output feeds several linear ops, or
feeds one through ops that only move axes, belongs to no single-root region: NextViT's
``norm1`` is read by the q, k and v projections after ``rearrange(b c h w -> b (h w) c)``,
FastViT's attention ``norm`` by ``qkv`` after ``flatten(2).transpose(-2, -1)``. When *every*
reader is such a path ending in a linear op that can absorb the map on its input side
(:func:`repvgg_onnx.algebra.linear_forms.compose`: no padding sees a non-zero shift), each linear op
gets the composed weights and the per-channel op disappears; the ops that move axes stay, now
reading the per-channel op's input.

The channel axis is followed through each path: a ``Transpose`` moves it, a ``Reshape`` or
``Flatten`` keeps it when the dims before it and its size are unchanged; the linear op must
read it as its channel axis (axis 1 of a Conv or Gemm input, the last axis of a MatMul input).

Invariant: the graph computes the same function (to float rounding); every tensor but the
removed op's output keeps its name and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.form import NodeSpec
from repvgg_onnx.algebra.linear_forms import compose

from .contracts import KEEPS_INTERFACE_AND_NAMES, WELL_FORMED, contract
from .graph_utils import (
    UniqueNames,
    attribute,
    constant_values,
    is_graph_output,
    is_standard,
    replace_uses,
    splice_nodes,
    static_shape,
)
from .pass_result import FusedBlock, PassResult, Refusal, attempt
from .readers import Kind, LinearOp, read_node
from .rewrite import chain_nodes, node_specs
from .runtime_patterns import fused_pattern_ending_at, kept_tail_reason

RULE = "fold_forward"
_MOVERS = ("Transpose", "Reshape", "Flatten")
_ABSORBERS = (Kind.CONV, Kind.GEMM, Kind.MATMUL)
#: Ops whose reading is always a convolution, never a per-channel map: not read at all.
_NEVER_PER_CHANNEL = frozenset({"Conv", "ConvTranspose"})


@dataclass(frozen=True)
class _Reader:
    """A linear op at the end of a path from the per-channel op, and the nodes replacing it."""

    op: LinearOp
    specs: tuple[NodeSpec, ...]


@contract(requires=WELL_FORMED, ensures=KEEPS_INTERFACE_AND_NAMES)
def fold_forward(graph: gs.Graph) -> PassResult:
    """Fold each per-channel op with several readers (or readers through axis moves)."""
    fused, skipped, placements = [], [], []
    names = UniqueNames(graph)
    for node in list(graph.nodes):
        if node.op in _NEVER_PER_CHANNEL:
            continue
        reading = read_node(node)
        if not isinstance(reading, LinearOp) or reading.form is None:
            continue
        if reading.form.channel_map() is None:
            continue
        plan = _plan(graph, reading)
        if plan is None:
            continue
        if isinstance(plan, Refusal):
            skipped.append(plan.by(RULE, node.name))
            continue
        fused.extend(_rewrite(reading, plan, names, placements))
    if fused:
        splice_nodes(graph, placements)
    return PassResult(fused=fused, skipped=skipped)


def _plan(graph: gs.Graph, op: LinearOp) -> list[_Reader] | Refusal | None:
    """The readers to rewrite, a reason to stop, or ``None`` when this is not a candidate
    (one direct linear reader is the region pass's; a graph output must keep its value)."""
    output = op.output
    if is_graph_output(graph, output) or not output.outputs:
        return None
    axis, rank = _channel_axis(op)
    if axis is None:
        return None
    direct = [node for node in output.outputs if not (is_standard(node) and node.op in _MOVERS)]
    ends = [_follow(graph, node, axis, rank) for node in list(output.outputs)]
    if any(end is None for end in ends) or (len(direct) == 1 and len(ends) == 1):
        return None
    if op.node.op != "BatchNormalization":
        pattern = _runtime_fused_pattern_read(op)
        if pattern is not None:
            readers_text = ", ".join(f"{r.node.op} '{r.node.name}'" for end in ends for r in end)
            return Refusal.because(kept_tail_reason(op.node, pattern, readers_text))
    readers = []
    for reader in [op for end in ends for op in end]:
        composed = attempt(partial(compose, reader.form, op.form))
        if isinstance(composed, Refusal):
            return composed.prefixed(
                f"{op.node.op} '{op.node.name}' cannot fold into {reader.node.op} "
                f"'{reader.node.name}' that reads it: "
            )
        dtype = _dtype(reader.node)
        specs = node_specs(composed, dtype, reader.kind is Kind.MATMUL, _rank(reader.node))
        if isinstance(specs, Refusal):
            return specs.prefixed(f"{op.node.op} '{op.node.name}' is left as it is: ")
        readers.append(_Reader(reader, tuple(specs)))
    return readers


def _runtime_fused_pattern_read(op: LinearOp) -> str | None:
    """The pattern onnxruntime fuses whose tail ``op`` is (through a chain of per-channel
    Mul/Div/Add/Sub, it reads a GELU or LayerNorm core; :mod:`runtime_patterns`), or ``None``."""
    tensor = op.input
    while len(tensor.inputs) == 1:
        reading = read_node(tensor.inputs[0])
        if not isinstance(reading, LinearOp):
            return fused_pattern_ending_at(tensor)
        if reading.node.op not in ("Mul", "Div", "Add", "Sub") or reading.kind is Kind.SUM:
            return None
        tensor = reading.input
    return None


def _channel_axis(op: LinearOp) -> tuple[int | None, int | None]:
    shape = op.output.shape
    if shape is None or len(shape) < 2:
        return None, None
    if op.node.op == "BatchNormalization" or op.layout.name == "CHANNELS_FIRST":
        return 1, len(shape)
    if op.layout.name == "CHANNELS_LAST":
        return len(shape) - 1, len(shape)
    return None, None


def _follow(graph: gs.Graph, node: gs.Node, axis: int, rank: int) -> list[LinearOp] | None:
    """The linear ops at the ends of the axis-moving paths from ``node`` (a reader of the
    per-channel op), if each reads the channel axis as its own channel axis; ``None`` if a
    path ends anywhere else (a tensor on the way that is a graph output counts as anywhere)."""
    if is_standard(node) and node.op in _MOVERS:
        moved = _moved_axis(node, axis)
        output = node.outputs[0]
        if moved is None or is_graph_output(graph, output) or not output.outputs:
            return None
        found: list[LinearOp] = []
        for reader in output.outputs:
            ends = _follow(graph, reader, moved, len(output.shape))
            if ends is None:
                return None
            found += ends
        return found
    reading = read_node(node)
    if not isinstance(reading, LinearOp) or reading.kind not in _ABSORBERS:
        return None
    wanted = rank - 1 if reading.kind is Kind.MATMUL else 1
    if axis != wanted or reading.form is None:
        return None
    return [reading]


def _moved_axis(node: gs.Node, axis: int) -> int | None:
    """Where the channel axis is after ``node``, or ``None`` if ``node`` splits or merges it."""
    before, after = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if before is None or after is None:
        return None
    if node.op == "Transpose":
        perm = attribute(node, "perm", None) or list(range(len(before)))[::-1]
        return list(perm).index(axis)
    prefix = math.prod(before[:axis])
    for index in range(len(after)):
        if math.prod(after[:index]) == prefix and after[index] == before[axis]:
            return index
    return None


def _rewrite(
    op: LinearOp,
    readers: list[_Reader],
    names: UniqueNames,
    placements: list[tuple[gs.Node, list[gs.Node]]],
) -> list[FusedBlock]:
    """Each reader is replaced by a node with composed weights where it stood (one block
    each, named by the tensor it writes, as ``diff`` counts them); the op's readers read its
    input."""
    blocks = []
    for reader in readers:
        node = reader.op.node
        output = node.outputs[0]
        node.outputs.clear()
        stem = node.name or output.name
        created = chain_nodes(list(reader.specs), node.inputs[0], output, stem, names)
        placements.append((node, created))
        label = f"{op.label}+{reader.op.label}"
        blocks.append(FusedBlock(RULE, output.name, created[0].name, (label,), reader.op.label))
    replace_uses(op.output, op.input)
    op.node.outputs.clear()
    placements.append((op.node, []))
    return blocks


def _dtype(node: gs.Node) -> np.dtype:
    weight = constant_values(node.inputs[1])
    return np.dtype(weight.dtype) if weight is not None else np.dtype(np.float32)


def _rank(node: gs.Node) -> int | None:
    shape = node.inputs[0].shape
    return None if shape is None else len(shape)
