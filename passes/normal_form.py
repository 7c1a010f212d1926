"""Reading ONNX Conv and BatchNormalization nodes as the algebra's normal form.

Each reader returns either the normal form or a one-sentence reason why the node cannot be
read as one (non-constant weights, training-mode BatchNormalization, input-size dependent
``auto_pad``…). Readers never modify the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra import AffineConv, affine_conv

from .graph_utils import attribute, constant_values


@dataclass(frozen=True)
class BatchNormParameters:
    """The constants of an inference BatchNormalization node."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @property
    def dtype(self) -> np.dtype:
        return self.gamma.dtype


def conv_as_affine(node: gs.Node) -> AffineConv | str:
    """The affine conv a Conv node computes, or why it cannot be read as constant weights."""
    weight = constant_values(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return f"Conv '{node.name}' has weights that are not constant ('{node.inputs[1].name}')"
    if not np.issubdtype(weight.dtype, np.floating):
        return f"Conv '{node.name}' has {weight.dtype} weights, not floating point"
    bias = None
    if len(node.inputs) > 2 and not _is_omitted(node.inputs[2]):
        bias = constant_values(node.inputs[2])
        if bias is None:
            return f"Conv '{node.name}' has a bias that is not constant ('{node.inputs[2].name}')"
    rank = weight.ndim - 2
    strides = tuple(attribute(node, "strides", [1] * rank))
    dilations = tuple(attribute(node, "dilations", [1] * rank))
    pads = _explicit_pads(node, weight.shape[2:], strides, dilations)
    if isinstance(pads, str):
        return pads
    return affine_conv(
        weight,
        bias,
        strides=strides,
        dilations=dilations,
        pads=pads,
        groups=int(attribute(node, "group", 1)),
    )


def conv_dtype(node: gs.Node) -> np.dtype:
    """The element type of a Conv's constant weights, without loading them."""
    return np.dtype(node.inputs[1].dtype)


def batchnorm_parameters(node: gs.Node) -> BatchNormParameters | str:
    """The constants of an inference BatchNormalization, or why it is not one."""
    if is_training_batchnorm(node):
        return f"BatchNormalization '{node.name}' runs in training mode"
    values = [constant_values(tensor) for tensor in node.inputs[1:5]]
    for tensor, value in zip(node.inputs[1:5], values, strict=True):
        if value is None:
            return (
                f"BatchNormalization '{node.name}' has a parameter that is not constant "
                f"('{tensor.name}')"
            )
    if attribute(node, "spatial", 1) == 0:
        return f"BatchNormalization '{node.name}' has spatial=0 (statistics per position)"
    if not all(value.ndim == 1 for value in values) or len({v.size for v in values}) != 1:
        return (
            f"BatchNormalization '{node.name}' has parameters of shapes "
            f"{[list(v.shape) for v in values]}, not one value per channel"
        )
    gamma, beta, mean, var = values
    return BatchNormParameters(gamma, beta, mean, var, float(attribute(node, "epsilon", 1e-5)))


def is_training_batchnorm(node: gs.Node) -> bool:
    """True for a BatchNormalization that updates statistics (``training_mode=1`` or more
    than one used output): its output depends on the batch, so nothing may be folded."""
    if node.op != "BatchNormalization":
        return False
    extra_outputs = [t for t in node.outputs[1:] if t.name]
    return bool(attribute(node, "training_mode", 0)) or bool(extra_outputs)


def describe_conv(conv: AffineConv) -> str:
    """``"Conv3x3"``, ``"Conv3x3/g4"``, ``"Conv3x3/s2"`` — enough to tell branches apart."""
    text = "Conv" + "x".join(str(k) for k in conv.kernel_shape)
    if conv.groups > 1:
        text += f"/g{conv.groups}"
    if any(s != 1 for s in conv.strides):
        text += "/s" + "x".join(str(s) for s in conv.strides)
    return text


def _is_omitted(tensor: gs.Tensor) -> bool:
    return not tensor.name and isinstance(tensor, gs.Variable)


def _explicit_pads(node: gs.Node, kernel_shape, strides, dilations) -> tuple[int, ...] | str:
    """ONNX pads ``(begins…, ends…)`` with ``auto_pad`` resolved where it does not depend on
    the input size (``VALID``, or ``SAME_*`` with stride 1)."""
    rank = len(kernel_shape)
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "NOTSET":
        return tuple(attribute(node, "pads", [0] * (2 * rank)))
    if auto_pad == "VALID":
        return (0,) * (2 * rank)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and all(s == 1 for s in strides):
        totals = [d * (k - 1) for k, d in zip(kernel_shape, dilations, strict=True)]
        small = [t // 2 for t in totals]
        large = [t - s for t, s in zip(totals, small, strict=True)]
        return tuple(small + large) if auto_pad == "SAME_UPPER" else tuple(large + small)
    return (
        f"Conv '{node.name}' uses auto_pad={auto_pad} with strides {list(strides)}, "
        "whose padding depends on the input size"
    )
