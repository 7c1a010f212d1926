"""Turn a planned form into ONNX nodes, and a region plan into graph edits.

A form becomes the one standard op that computes it: a Conv (any spatial rank), a Gemm
(``[N, C]``) or MatMul+Add (``[..., C]``) for a linear map of channels, a ConvTranspose, or a
per-channel map as Mul and Add (never a BatchNormalization: a deploy-form model has none).
Weights are new constants computed in float64 and cast once to the model's type; a cast that
overflows is refused before any edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.affine_conv import AffineConv, materialize, per_channel, regroup_kernel
from repvgg_onnx.algebra.linear_forms import ChannelAffine, Form, TransposedConv

from .graph_utils import UniqueNames


@dataclass(frozen=True)
class NodeSpec:
    """One node to create: op type, attributes, and constant inputs after the data input."""

    op: str
    attrs: dict
    constants: tuple[tuple[str, np.ndarray], ...]


def node_specs(form: Form, dtype: np.dtype, channels_last: bool, source_rank: int | None):
    """The nodes computing ``form`` on a tensor of rank ``source_rank``, weights as ``dtype``,
    or a sentence saying why the weights do not fit ``dtype``."""
    if isinstance(form, ChannelAffine):
        specs = _channel_affine_specs(form, dtype, channels_last, source_rank)
        if isinstance(specs, str):
            return specs
    elif isinstance(form, TransposedConv):
        specs = [_conv_transpose_spec(form, dtype)]
    elif form.spatial_rank == 0:
        specs = _linear_specs(form, dtype, source_rank == 2)
    else:
        specs = [_conv_spec(form, dtype)]
    for spec in specs:
        for _, values in spec.constants:
            if not np.all(np.isfinite(values)):
                return f"the fused weights overflow {np.dtype(dtype).name}"
    return specs


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values).astype(dtype)


def _conv_spec(conv: AffineConv, dtype: np.dtype) -> NodeSpec:
    with np.errstate(over="ignore", invalid="ignore"):
        conv = materialize(conv, dtype)
    attrs = {
        "dilations": list(conv.dilations),
        "group": conv.groups,
        "kernel_shape": list(conv.kernel_shape),
        "strides": list(conv.strides),
    }
    if conv.has_explicit_pads:
        attrs["pads"] = list(conv.pads)
    else:
        attrs["auto_pad"] = conv.auto_pad
    return NodeSpec("Conv", attrs, (("weight", conv.kernel), ("bias", _cast(conv.bias, dtype))))


def _linear_specs(conv: AffineConv, dtype: np.dtype, two_dimensional: bool) -> list[NodeSpec]:
    conv = materialize(conv)
    matrix = regroup_kernel(conv.kernel, conv.groups, 1)
    bias = _cast(conv.bias, dtype)
    if two_dimensional:
        constants = (("weight", _cast(matrix, dtype)), ("bias", bias))
        return [NodeSpec("Gemm", {"transB": 1}, constants)]
    specs = [NodeSpec("MatMul", {}, (("weight", _cast(matrix.T, dtype)),))]
    if np.any(conv.bias):
        specs.append(NodeSpec("Add", {}, (("bias", bias),)))
    return specs


def _conv_transpose_spec(form: TransposedConv, dtype: np.dtype) -> NodeSpec:
    kernel = form.kernel.astype(np.float64)
    if form.scale is not None:
        in_per_group = form.in_channels // form.groups
        out_per_group = kernel.shape[1]
        group = np.arange(form.in_channels) // in_per_group
        columns = group[:, None] * out_per_group + np.arange(out_per_group)[None, :]
        kernel = kernel * form.scale[columns].reshape(columns.shape + (1,) * form.spatial_rank)
    attrs = dict(form.attributes) | {"group": form.groups}
    constants = (("weight", _cast(kernel, dtype)), ("bias", _cast(form.bias, dtype)))
    return NodeSpec("ConvTranspose", attrs, constants)


def _channel_affine_specs(
    form: ChannelAffine, dtype: np.dtype, channels_last: bool, source_rank: int | None
) -> list[NodeSpec] | str:
    """``Mul`` then ``Add`` (each left out when it is the identity), with constants shaped to
    broadcast along the channel axis: ``[C]`` for ``[..., C]`` and ``[N, C]``, ``[C, 1, …]``
    for ``[N, C, …]``."""
    channels = form.channels
    if channels is None:
        shape: tuple[int, ...] = ()
    elif channels_last or source_rank == 2:
        shape = (channels,)
    elif source_rank is None:
        return "the rank of its input is unknown"
    else:
        shape = (channels,) + (1,) * (source_rank - 2)
    count = channels or 1
    scale = per_channel(form.scale, count).reshape(shape)
    shift = per_channel(form.shift, count).reshape(shape)
    specs = []
    if not np.all(scale == 1):
        specs.append(NodeSpec("Mul", {}, (("scale", _cast(scale, dtype)),)))
    if np.any(shift):
        specs.append(NodeSpec("Add", {}, (("shift", _cast(shift, dtype)),)))
    return specs


def chain_nodes(
    specs: list[NodeSpec],
    source: gs.Tensor,
    output: gs.Tensor,
    stem: str,
    names: UniqueNames,
) -> list[gs.Node]:
    """``specs`` as a chain of new nodes from ``source`` (not yet in any graph); the last
    node writes ``output``.

    Every node after the first is a per-channel Mul or Add, so the tensors between them have
    ``output``'s shape and type.
    """
    created, current = [], source
    for index, spec in enumerate(specs):
        last = index == len(specs) - 1
        result = (
            output
            if last
            else gs.Variable(names(f"{stem}_{spec.op.lower()}"), output.dtype, output.shape)
        )
        inputs = [current] + [
            gs.Constant(names(f"{stem}.reparam.{name}"), values) for name, values in spec.constants
        ]
        node = gs.Node(
            spec.op,
            name=names(f"{stem}/reparam" if index == 0 else f"{stem}/reparam_{spec.op}"),
            attrs=spec.attrs,
            inputs=inputs,
            outputs=[result],
        )
        created.append(node)
        current = result
    return created
