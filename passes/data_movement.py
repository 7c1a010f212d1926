"""Read a chain of element-moving ops (Pad, Concat, Expand, Tile, Slice, Transpose, ScatterND of
constants) as a Pad.

Exporters write DBB's "BN then pad with the BN's shift" layer as ``Pad`` followed by slice
assignments: ``ScatterND`` nodes (with ``Transpose`` around them in the dynamo exporter) that
overwrite the border with constants; paddle2onnx writes it as ``Concat`` of constant strips
around the BN output. The chain may branch (slices of one tensor concatenated again), as long
as every op reads the one source or another op of the chain. Such ops only copy input
elements or write constants, so the chain is fully described by where each output element
comes from, and two evaluations
prove it: on input ``p = 1, 2, …, n`` and on ``−p``, an output element that is a copy of
input ``j`` reads ``j+1`` and ``−(j+1)``; one that is a constant reads the same value twice.
Anything else means the chain computed something, and it is refused. If every output
element is a copy at a fixed offset or a per-channel constant on the border, the chain is a
constant-mode Pad with one fill value per channel
(:func:`repvgg_onnx.algebra.linear_forms.pad_conv`).

The evaluation is onnx's reference implementation of the ops, never ours.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from repvgg_onnx.algebra.affine_conv import AffineConv
from repvgg_onnx.algebra.linear_forms import pad_conv
from repvgg_onnx.graph.gs_versions import node_proto

from .graph_utils import constant_values, static_shape
from .pass_result import Refusal
from .reference_evaluator import reference_evaluator

#: Probe values ``1…n`` are exact in float32 up to 2**24.
MAX_PROBE_ELEMENTS = 1 << 24


def chain_as_pad(nodes: list[gs.Node], source: gs.Tensor, opset: int) -> AffineConv | Refusal:
    """The Pad that ``nodes`` (each after the nodes it reads; the last one the top; every
    variable input ``source`` or another node's output) compute from ``source``, or why they
    are not one."""
    shape = static_shape(source)
    if shape is None or len(shape) < 3:
        return Refusal.because(
            f"the shape of '{source.name}' is not static, so {describe_nodes(nodes)} cannot be read"
        )
    if math.prod(shape) > MAX_PROBE_ELEMENTS:
        return Refusal.because(
            f"'{source.name}' is too large to read {describe_nodes(nodes)} exactly"
        )
    try:
        model = _chain_model(nodes, source, shape, opset)
        evaluator = reference_evaluator(model, overwrite_intermediates=True)
        probe = np.arange(1, math.prod(shape) + 1, dtype=np.float32).reshape(shape)
        [first] = evaluator.run(None, {"x": probe})
        [second] = evaluator.run(None, {"x": -probe})
    except Exception as error:  # the reference evaluator raises assorted types
        return Refusal.because(
            f"{describe_nodes(nodes)} could not be evaluated ({type(error).__name__})"
        )
    first, second = np.asarray(first), np.asarray(second)
    found = _placed_pad(first, second, probe)
    if found is not None:
        return found
    return _as_pad(np.asarray(first, np.float64), np.asarray(second, np.float64), shape, nodes)


def describe_nodes(nodes: list[gs.Node]) -> str:
    """``Concat 'a', Slice 'b'``: the nodes of a chain, for a reason."""
    return ", ".join(f"{node.op} '{node.name}'" for node in nodes)


def _chain_model(
    nodes: list[gs.Node], source: gs.Tensor, shape: tuple[int, ...], opset: int
) -> onnx.ModelProto:
    """A model of just the chain, input ``x`` (float32) in place of ``source``."""
    protos, initializers = [], {}
    for node in nodes:
        proto = node_proto(node)
        for index, tensor in enumerate(node.inputs):
            if tensor is source:
                proto.input[index] = "x"
            elif (value := constant_values(tensor)) is not None:
                initializers[tensor.name] = numpy_helper.from_array(value, tensor.name)
        protos.append(proto)
    top = nodes[-1].outputs[0].name
    graph = helper.make_graph(
        protos,
        "chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(top, onnx.TensorProto.FLOAT, None)],
        list(initializers.values()),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _placed_pad(first: np.ndarray, second: np.ndarray, probe: np.ndarray) -> AffineConv | None:
    """The pad, if ``first`` and ``second`` hold ``probe`` and ``−probe`` unchanged in one
    window at a spatial offset and one finite constant per channel in both everywhere else;
    else ``None`` (then :func:`_as_pad` reads them element by element and says why not).

    What it accepts, :func:`_as_pad` accepts with the same pad: every input element copied
    once, by one spatial offset, and a border of per-channel constants. It only looks at the
    window and the border slabs, not at a classification of every element."""
    shape = probe.shape
    if first.ndim != probe.ndim:
        return None
    landed = np.flatnonzero((first.reshape(-1) == 1) & (second.reshape(-1) == -1))
    if not len(landed):
        return None
    # where input element 0 landed; the window check below fails unless that is the window's
    # corner in batch 0, channel 0, and the window fits
    begin = [int(i) for i in np.unravel_index(int(landed[0]), first.shape)][2:]
    end = [out - inp - b for out, inp, b in zip(first.shape[2:], shape[2:], begin, strict=True)]
    window = (
        slice(None),
        slice(None),
        *(slice(b, b + n) for b, n in zip(begin, shape[2:], strict=True)),
    )
    if not (np.array_equal(first[window], probe) and np.array_equal(second[window], -probe)):
        return None
    slabs = [
        (slice(None), slice(None), *([slice(None)] * axis), side)
        for axis, (b, n) in enumerate(zip(begin, shape[2:], strict=True))
        for side in (slice(0, b), slice(b + n, None))
    ]
    border = [s for s in slabs if first[s].size]
    if not border:
        return pad_conv(shape[1], begin + end, np.zeros(shape[1]))
    fill = first[border[0]].reshape(shape[0], shape[1], -1)[0, :, 0]
    spread = fill.reshape((1, -1) + (1,) * (len(shape) - 2))
    if not np.all(np.isfinite(fill)):
        return None
    for slab in border:
        if not (np.all(first[slab] == spread) and np.all(second[slab] == spread)):
            return None
    return pad_conv(shape[1], begin + end, fill.astype(np.float64))


def _common_offset(first: np.ndarray, copy: np.ndarray, shape: tuple[int, ...]) -> list[int] | None:
    """The one offset by which every input element was copied (each exactly once), or
    ``None`` if they moved by different offsets.

    The first input element (probe value 1, at the origin) lands at the offset itself; the
    copies then agree on it iff they are the probe placed there, element for element."""
    landed = np.flatnonzero(copy.reshape(-1) & (first.reshape(-1) == 1))
    offset = [int(i) for i in np.unravel_index(int(landed[0]), first.shape)]
    window = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
    if any(o + n > m for o, n, m in zip(offset, shape, first.shape, strict=True)):
        return None
    placed = np.zeros(first.shape)
    placed[window] = np.arange(1, math.prod(shape) + 1, dtype=np.float64).reshape(shape)
    return offset if np.array_equal(np.where(copy, first, 0.0), placed) else None


def _as_pad(
    first: np.ndarray, second: np.ndarray, shape: tuple[int, ...], nodes: list[gs.Node]
) -> AffineConv | Refusal:
    """The pad that maps probe ``p`` to ``first`` and ``−p`` to ``second``, or why there is
    none: every output element must be a copy or a constant, every input element copied exactly
    once, all by the same spatial offset (no batch or channel move), none cropped, and the
    constants one finite value per channel."""
    size = math.prod(shape)
    constant = first == second
    copy = (first == -second) & (first >= 1) & (first <= size) & (first == np.round(first))
    names = describe_nodes(nodes)
    if first.ndim != len(shape):
        return Refusal.because(f"{names} change the rank of their input, so they are not a pad")
    if not np.all(constant | copy):
        return Refusal.because(
            f"{names} compute values that are neither copies of their input nor constants"
        )
    copied = np.bincount(first[copy].astype(np.int64) - 1, minlength=size)
    if np.any(copied != 1):
        how = "more than once" if np.any(copied > 1) else "not at all"
        return Refusal.because(f"{names} copy some input elements {how}, so they are not a pad")
    offset = _common_offset(first, copy, shape)
    if offset is None:
        return Refusal.because(
            f"{names} move input elements relative to each other, so they are not a pad"
        )
    begin = offset[2:]
    end = [out - inp - b for out, inp, b in zip(first.shape[2:], shape[2:], begin, strict=True)]
    if any(offset[:2]) or first.shape[:2] != shape[:2]:
        return Refusal.because(
            f"{names} move or add elements along the batch or channel axis, not a spatial pad"
        )
    border = np.where(constant, first, np.nan)
    values = np.moveaxis(border, 1, 0).reshape(shape[1], -1)
    fill = np.nanmax(values, axis=1) if np.any(constant) else np.zeros(shape[1])
    if np.any(constant) and not np.all(np.isnan(values) | (values == fill[:, None])):
        return Refusal.because(f"{names} pad with values that differ within a channel")
    fill = np.where(np.isnan(fill), 0.0, fill)
    if not np.all(np.isfinite(fill)):
        return Refusal.because(f"{names} pad with inf")
    return pad_conv(shape[1], begin + end, fill)
