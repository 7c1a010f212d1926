"""One reader per op type: how a node is read as a linear map of its variable input(s).

A reader returns a :class:`LinearOp` (the node's normal form and which axis of its tensors is
the channel axis), a :class:`Refusal` (the node looks linear but is not exactly so: the
sentence says why), or ``None`` (the op is not linear at all). Readers never modify the graph.
Each states its exactness condition next to its formula; only ops of the standard domain are
read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.affine_conv import (
    AffineConv,
    affine_conv,
    batchnorm_scale_shift,
    conv_label,
    same_pads,
)
from repvgg_onnx.algebra.channel_affine import ChannelAffine, channel_affine
from repvgg_onnx.algebra.linear_forms import Form, average_pool_conv, pad_conv
from repvgg_onnx.algebra.transposed_conv import TransposedConv

from .graph_utils import (
    attribute,
    constant_values,
    dim,
    is_omitted,
    is_overridable,
    is_standard,
    rank,
)
from .pass_result import Refusal


class Kind(Enum):
    """What a linear op is; reports and plans use these, never display strings."""

    CONV = "Conv"
    CONV_TRANSPOSE = "ConvTranspose"
    BATCHNORM = "BN"
    SCALE = "Scale"
    SHIFT = "Shift"
    SUM = "Sum"
    AVERAGE_POOL = "AvgPool"
    PAD = "Pad"
    GEMM = "Gemm"
    MATMUL = "MatMul"
    RESHAPE = "Reshape"
    DATA_MOVEMENT = "DataMovement"


class Layout(Enum):
    """Which axis of a tensor is its channel axis: ``[N, C, ...]``, ``[..., C]``, or both
    (rank 2, or an op that treats every element alike)."""

    CHANNELS_FIRST = "NC..."
    CHANNELS_LAST = "...C"
    ANY = "any"


@dataclass(frozen=True)
class LinearOp:
    """A node read as ``output = form(input)`` (or, for ``SUM``, ``Σ sign·input``).

    ``form`` is ``None`` for ``SUM``, ``RESHAPE`` (the identity on the channel axis) and
    ``DATA_MOVEMENT`` (read by probing its whole chain). ``dtype`` is the floating type of its
    constants, if any.
    """

    node: gs.Node
    kind: Kind
    inputs: tuple[gs.Tensor, ...]
    form: Form | None
    label: str
    layout: Layout
    signs: tuple[float, ...] = (1.0,)
    dtype: np.dtype | None = None

    @property
    def input(self) -> gs.Tensor:
        return self.inputs[0]

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]


def _refused(node: gs.Node, reason: str) -> Refusal:
    """``node`` looks like a linear op but is not exactly one, for ``reason``."""
    return Refusal.because(reason, node.name)


Reading = LinearOp | Refusal | None
Reader = Callable[[gs.Node], Reading]


def read_node(node: gs.Node) -> Reading:
    """The node read by the reader registered for its op type (standard domain only)."""
    reader = READERS.get(node.op)
    if reader is None or not node.outputs:
        return None
    if not is_standard(node):
        return _refused(
            node,
            f"{node.op} '{node.name}' is in the domain '{node.domain}', not the standard one, "
            "so it is not read as the standard op",
        )
    return reader(node)


def _constant_input(
    node: gs.Node, index: int, what: str, *, check_finite: bool = True
) -> np.ndarray | Refusal:
    """A constant, finite, floating input of ``node``, or why it is not one (with
    ``check_finite=False``, the caller checks finiteness itself, with :func:`_non_finite`)."""
    if index >= len(node.inputs) or is_omitted(node.inputs[index]):
        return _refused(node, f"{node.op} '{node.name}' has no {what}")
    tensor = node.inputs[index]
    values = constant_values(tensor)
    if values is None and is_overridable(tensor):
        return _refused(
            node,
            f"{node.op} '{node.name}' has a {what} '{tensor.name}' that is also a graph input, "
            "so a caller may feed another value",
        )
    if values is None:
        return _refused(
            node, f"{node.op} '{node.name}' has a {what} that is not constant ('{tensor.name}')"
        )
    if values.dtype.kind != "f":
        return _refused(
            node, f"{node.op} '{node.name}' has a {values.dtype} {what}, not floating point"
        )
    if check_finite and not np.isfinite(values).all():
        return _non_finite(node, index, what)
    return values


def _non_finite(node: gs.Node, index: int, what: str) -> Refusal:
    return _refused(
        node,
        f"{node.op} '{node.name}' has a {what} holding inf or NaN ('{node.inputs[index].name}')",
    )


def _conv_geometry(node: gs.Node, kernel_shape) -> dict | Refusal:
    """Strides, dilations and explicit pads, with ``auto_pad`` resolved where it does not
    depend on the input size (``VALID``; ``SAME_*`` with stride 1), else kept symbolic."""
    spatial = len(kernel_shape)
    strides = list(attribute(node, "strides", None) or [1] * spatial)
    dilations = list(attribute(node, "dilations", None) or [1] * spatial)
    if len(strides) != spatial or len(dilations) != spatial:
        return _refused(
            node, f"{node.op} '{node.name}' has strides or dilations that do not fit its kernel"
        )
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        return _refused(node, f"{node.op} '{node.name}' has strides or dilations below 1")
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    pads = list(attribute(node, "pads", None) or [0] * (2 * spatial))
    geometry = {"strides": strides, "dilations": dilations, "auto_pad": "NOTSET"}
    if auto_pad == "NOTSET":
        if len(pads) != 2 * spatial or any(p < 0 for p in pads):
            return _refused(
                node, f"{node.op} '{node.name}' has pads {pads} that do not fit its kernel"
            )
        return geometry | {"pads": pads}
    if auto_pad == "VALID":
        return geometry | {"pads": [0] * (2 * spatial)}
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return _refused(node, f"{node.op} '{node.name}' has an unknown auto_pad {auto_pad!r}")
    if any(s != 1 for s in strides):
        return geometry | {"pads": [0] * (2 * spatial), "auto_pad": auto_pad}
    any_size = [1] * spatial  # with stride 1 the pads do not depend on the input size
    return geometry | {
        "pads": list(same_pads(any_size, kernel_shape, strides, dilations, auto_pad))
    }


def read_conv(node: gs.Node) -> Reading:
    """``Conv(x, W, b)``: already the normal form. Needs constant weights."""
    weight = _constant_input(node, 1, "weight")
    if isinstance(weight, Refusal):
        return weight
    bias = None
    if len(node.inputs) > 2 and not is_omitted(node.inputs[2]):
        bias = _constant_input(node, 2, "bias")
        if isinstance(bias, Refusal):
            return bias
    if weight.ndim < 3:
        return _refused(node, f"Conv '{node.name}' has a weight of rank {weight.ndim}")
    geometry = _conv_geometry(node, weight.shape[2:])
    if isinstance(geometry, Refusal):
        return geometry
    groups = int(attribute(node, "group", 1))
    channels = dim(node.inputs[0], 1)
    if groups < 1 or weight.shape[0] % groups or (channels not in (None, weight.shape[1] * groups)):
        return _refused(node, f"Conv '{node.name}': group {groups} does not fit its weight")
    try:
        form = affine_conv(weight, bias, groups=groups, **geometry)
    except ValueError as error:
        return _refused(node, f"Conv '{node.name}': {error}")
    label = conv_label(weight.shape[2:], groups, form.strides)
    return LinearOp(
        node, Kind.CONV, (node.inputs[0],), form, label, Layout.CHANNELS_FIRST, dtype=weight.dtype
    )


def read_conv_transpose(node: gs.Node) -> Reading:
    """``ConvTranspose(x, W, b)``: absorbs per-output-channel maps after it; its geometry
    attributes are kept verbatim."""
    weight = _constant_input(node, 1, "weight")
    if isinstance(weight, Refusal):
        return weight
    bias = np.zeros(0)
    if len(node.inputs) > 2 and not is_omitted(node.inputs[2]):
        bias = _constant_input(node, 2, "bias")
        if isinstance(bias, Refusal):
            return bias
    groups = int(attribute(node, "group", 1))
    if weight.ndim < 3 or groups < 1 or weight.shape[0] % groups:
        return _refused(node, f"ConvTranspose '{node.name}' has a weight that does not fit it")
    out_channels = weight.shape[1] * groups
    bias = np.zeros(out_channels) if bias.size == 0 else bias.astype(np.float64)
    kept = tuple(sorted((k, v) for k, v in node.attrs.items() if k != "group"))
    form = TransposedConv(weight, bias, groups, kept)
    label = "ConvTranspose" + "x".join(str(k) for k in weight.shape[2:])
    return LinearOp(
        node, Kind.CONV_TRANSPOSE, (node.inputs[0],), form, label, Layout.CHANNELS_FIRST,
        dtype=weight.dtype,
    )  # fmt: skip


def read_batchnorm(node: gs.Node) -> Reading:
    """Inference BatchNormalization: ``γ(x − μ)/sqrt(var + ε) + β`` per channel (axis 1).
    Exact when it uses running statistics: not in training mode, ``var + ε > 0``."""
    if is_training_batchnorm(node):
        return _refused(node, f"BatchNormalization '{node.name}' runs in training mode")
    if attribute(node, "spatial", 1) == 0:
        return _refused(node, f"BatchNormalization '{node.name}' has spatial=0")
    values = []
    for index, name in enumerate(_BATCHNORM_PARAMETERS, start=1):
        value = _constant_input(node, index, name, check_finite=False)
        if isinstance(value, Refusal):  # a parameter before it that is not finite is named first
            return _first_non_finite(node, values) or value
        values.append(value)
    if any(v.ndim != 1 for v in values) or len({v.size for v in values}) != 1:
        return _first_non_finite(node, values) or _refused(
            node, f"BatchNormalization '{node.name}' has parameters of unequal shape"
        )
    parameters = np.array(values, dtype=np.float64)  # [4, C]: one conversion, one check
    if not np.isfinite(parameters).all():
        return _first_non_finite(node, values)
    gamma, beta, mean, var = parameters
    eps = float(attribute(node, "epsilon", 1e-5))
    if (var + eps <= 0).any():
        return _refused(node, f"BatchNormalization '{node.name}' has var + epsilon <= 0")
    scale, shift = batchnorm_scale_shift(gamma, beta, mean, var, eps)
    layout = Layout.ANY if rank(node.inputs[0]) == 2 else Layout.CHANNELS_FIRST
    return LinearOp(
        node, Kind.BATCHNORM, (node.inputs[0],), ChannelAffine(scale, shift), "BN", layout,
        dtype=values[0].dtype,
    )  # fmt: skip


_BATCHNORM_PARAMETERS = ("scale", "bias", "mean", "variance")


def _first_non_finite(node: gs.Node, values: list[np.ndarray]) -> Refusal | None:
    """Why the first of the BatchNormalization parameters read so far that holds inf or NaN
    is refused, as :func:`_constant_input` would say it; ``None`` if all are finite."""
    for index, (value, name) in enumerate(
        zip(values, _BATCHNORM_PARAMETERS, strict=False), start=1
    ):
        if not np.isfinite(value).all():
            return _non_finite(node, index, name)
    return None


def is_training_batchnorm(node: gs.Node) -> bool:
    """True for a BatchNormalization that updates statistics (``training_mode=1`` or more
    than one named output): its output depends on the batch, so nothing may be folded."""
    if node.op != "BatchNormalization":
        return False
    extra_outputs = [t for t in node.outputs[1:] if t.name]
    return bool(attribute(node, "training_mode", 0)) or bool(extra_outputs)


def _channel_layout(values: np.ndarray, data: gs.Tensor, node: gs.Node) -> Layout | Refusal:
    """The channel axis a constant operand varies along, if it is one value per channel (or
    one value) and broadcasting it does not change the data's shape."""
    data_rank = rank(data)
    if data_rank is None:
        return _refused(node, f"{node.op} '{node.name}': the rank of '{data.name}' is unknown")
    if values.ndim > data_rank:
        return _refused(
            node, f"{node.op} '{node.name}': its constant has more dims than '{data.name}'"
        )
    shape = (1,) * (data_rank - values.ndim) + values.shape
    varying = [axis for axis, size in enumerate(shape) if size != 1]
    for axis in varying:
        if dim(data, axis) not in (None, shape[axis]):
            return _refused(
                node, f"{node.op} '{node.name}': its constant would broadcast '{data.name}'"
            )
    if not varying or (varying == [1] and data_rank == 2):
        return Layout.ANY
    if varying == [1]:
        return Layout.CHANNELS_FIRST
    if varying == [data_rank - 1] and data_rank >= 3:
        return Layout.CHANNELS_LAST
    return _refused(
        node,
        f"{node.op} '{node.name}' multiplies by a constant of shape {list(values.shape)} that "
        f"varies along axis {varying[-1]} of the rank-{data_rank} '{data.name}', "
        "not one value per channel",
    )


def read_elementwise(node: gs.Node) -> Reading:
    """``Add``/``Sub`` of two variables: a signed sum. ``Mul``/``Div``/``Add``/``Sub`` with a
    per-channel constant ``c``: ``x·c``, ``x/c`` (``c ≠ 0``), ``x + c``, ``x − c``,
    ``c − x``. A ``[C]`` constant on ``[N, C, H, W]`` varies along W: not per channel."""
    if len(node.inputs) != 2:
        return None
    first, second = node.inputs
    constants = [constant_values(t) for t in (first, second)]
    if all(c is None for c in constants):
        if node.op in ("Add", "Sub"):
            signs = (1.0, 1.0 if node.op == "Add" else -1.0)
            return LinearOp(node, Kind.SUM, (first, second), None, node.op, Layout.ANY, signs)
        return None
    if all(c is not None for c in constants):
        return None
    index = 0 if constants[0] is not None else 1
    values, data = constants[index], node.inputs[1 - index]
    if node.op == "Div" and index == 0:
        return None
    if not np.issubdtype(values.dtype, np.floating):
        return _refused(node, f"{node.op} '{node.name}' has a {values.dtype} constant")
    if not np.all(np.isfinite(values)) or (node.op == "Div" and np.any(values == 0)):
        return _refused(node, f"{node.op} '{node.name}' has a constant holding inf, NaN or 0")
    layout = _channel_layout(values, data, node)
    if isinstance(layout, Refusal):
        return layout
    flat = values.astype(np.float64).reshape(-1)
    if node.op == "Mul":
        kind, form = Kind.SCALE, channel_affine(flat, 0.0)
    elif node.op == "Div":
        kind, form = Kind.SCALE, channel_affine(1.0 / flat, 0.0)
    elif node.op == "Add":
        kind, form = Kind.SHIFT, channel_affine(1.0, flat)
    elif index == 1:
        kind, form = Kind.SHIFT, channel_affine(1.0, -flat)
    else:
        kind, form = Kind.SHIFT, channel_affine(-1.0, flat)
    return LinearOp(node, kind, (data,), form, node.op, layout, dtype=values.dtype)


def read_sum(node: gs.Node) -> Reading:
    """``Sum(a, b, …)`` of variables: a sum of terms."""
    if len(node.inputs) < 2 or any(constant_values(t) is not None for t in node.inputs):
        return None
    signs = (1.0,) * len(node.inputs)
    return LinearOp(node, Kind.SUM, tuple(node.inputs), None, "Sum", Layout.ANY, signs)


def read_average_pool(node: gs.Node) -> Reading:
    """``AveragePool``: a depthwise kernel of ``1/k``. Exact when every window divides by
    ``k`` (``count_include_pad=1`` or no pads) and no window is partial (``ceil_mode=0``)."""
    kernel_shape = list(attribute(node, "kernel_shape", []))
    channels = dim(node.inputs[0], 1)
    if not kernel_shape or channels is None:
        return _refused(node, f"AveragePool '{node.name}': channel count or kernel unknown")
    geometry = _conv_geometry(node, kernel_shape)
    if isinstance(geometry, Refusal):
        return geometry
    if geometry["auto_pad"] != "NOTSET":
        return _refused(node, f"AveragePool '{node.name}' pads by the input size (auto_pad)")
    if attribute(node, "ceil_mode", 0):
        return _refused(node, f"AveragePool '{node.name}' has ceil_mode=1 (partial windows)")
    if any(geometry["pads"]) and not attribute(node, "count_include_pad", 0):
        return _refused(
            node,
            f"AveragePool '{node.name}' divides border windows by fewer taps (count_include_pad=0)",
        )
    form = average_pool_conv(
        channels, kernel_shape, geometry["strides"], geometry["pads"], geometry["dilations"]
    )
    label = "AvgPool" + "x".join(map(str, kernel_shape))
    return LinearOp(node, Kind.AVERAGE_POOL, (node.inputs[0],), form, label, Layout.CHANNELS_FIRST)


def _pad_parameters(node: gs.Node) -> tuple[list[int], float | np.ndarray] | Refusal:
    """Pads ``(begins…, ends…)`` over all axes and the fill value, from attributes (opset < 11)
    or constant inputs (with ``axes``, opset 18)."""
    data_rank = rank(node.inputs[0])
    if data_rank is None:
        return _refused(node, f"Pad '{node.name}': the rank of its input is unknown")
    if "pads" in node.attrs:
        return list(attribute(node, "pads", [])), float(attribute(node, "value", 0.0))
    pads = constant_values(node.inputs[1]) if len(node.inputs) > 1 else None
    if pads is None:
        return _refused(node, f"Pad '{node.name}' has pads that are not constant")
    value: float | np.ndarray = 0.0
    if len(node.inputs) > 2 and not is_omitted(node.inputs[2]):
        constant = constant_values(node.inputs[2])
        if constant is None or constant.size != 1:
            return _refused(node, f"Pad '{node.name}' has a fill value that is not one constant")
        value = constant.astype(np.float64).reshape(-1)
    pads = [int(p) for p in pads.reshape(-1)]
    if len(node.inputs) > 3 and not is_omitted(node.inputs[3]):
        axes = constant_values(node.inputs[3])
        if axes is None:
            return _refused(node, f"Pad '{node.name}' has axes that are not constant")
        full = [0] * (2 * data_rank)
        for position, axis in enumerate(int(a) % data_rank for a in axes.reshape(-1)):
            full[axis], full[data_rank + axis] = pads[position], pads[len(axes) + position]
        pads = full
    return pads, value


def read_pad(node: gs.Node) -> Reading:
    """``Pad`` (mode constant) of the spatial axes: the identity with pads whose border holds
    the fill value. Reflect/edge modes, negative pads or pads of N and C are not linear maps of
    this form."""
    if attribute(node, "mode", "constant") != "constant":
        return _refused(node, f"Pad '{node.name}' uses mode {attribute(node, 'mode', '')!r}")
    parameters = _pad_parameters(node)
    if isinstance(parameters, Refusal):
        return parameters
    pads, value = parameters
    data_rank = len(pads) // 2
    channels = dim(node.inputs[0], 1)
    if data_rank < 3 or len(pads) != 2 * data_rank or channels is None:
        return _refused(node, f"Pad '{node.name}' is not a spatial pad of an [N, C, ...] tensor")
    if any(pads[axis] or pads[data_rank + axis] for axis in (0, 1)) or min(pads) < 0:
        return _refused(node, f"Pad '{node.name}' pads the batch or channel axis, or crops")
    spatial = pads[2:data_rank] + pads[data_rank + 2 :]
    form = pad_conv(channels, spatial, value)
    return LinearOp(node, Kind.PAD, (node.inputs[0],), form, "Pad", Layout.CHANNELS_FIRST)


def _linear_form(weight: np.ndarray, bias: np.ndarray | None) -> AffineConv:
    return affine_conv(np.asarray(weight, np.float64), bias)


def read_gemm(node: gs.Node) -> Reading:
    """``Gemm(A, B, C) = α·A·B' + β·C`` on ``A [N, Cin]``: a 1x1 map of the channel axis with
    ``W = α·B'ᵀ``, ``b = β·C``. Needs ``transA = 0`` and ``C`` one value per output (or one)."""
    if attribute(node, "transA", 0):
        return None
    weight = _constant_input(node, 1, "weight")
    if isinstance(weight, Refusal):
        return weight
    if weight.ndim != 2:
        return _refused(node, f"Gemm '{node.name}' has a weight of rank {weight.ndim}")
    matrix = weight if attribute(node, "transB", 0) else weight.T
    matrix = float(attribute(node, "alpha", 1.0)) * matrix.astype(np.float64)
    bias = None
    if len(node.inputs) > 2 and not is_omitted(node.inputs[2]):
        constant = _constant_input(node, 2, "bias")
        if isinstance(constant, Refusal):
            return constant
        if constant.size not in (1, matrix.shape[0]) or constant.ndim > 2:
            return _refused(node, f"Gemm '{node.name}' adds a bias that is not per output")
        if constant.ndim == 2 and constant.shape[0] != 1:
            return _refused(node, f"Gemm '{node.name}' adds a bias that is not per output")
        bias = float(attribute(node, "beta", 1.0)) * np.broadcast_to(
            constant.astype(np.float64).reshape(-1), (matrix.shape[0],)
        )
    form = _linear_form(matrix, bias)
    return LinearOp(
        node, Kind.GEMM, (node.inputs[0],), form, "Gemm", Layout.ANY, dtype=weight.dtype
    )


def read_matmul(node: gs.Node) -> Reading:
    """``MatMul(x, W)`` with a constant ``W [Cin, Cout]``: a 1x1 map of the last axis."""
    if len(node.inputs) != 2 or constant_values(node.inputs[0]) is not None:
        return None
    weight = _constant_input(node, 1, "weight")
    if isinstance(weight, Refusal):
        return weight
    data_rank = rank(node.inputs[0])
    if weight.ndim != 2 or data_rank is None or data_rank < 2:
        return _refused(node, f"MatMul '{node.name}' is not x·W with a 2-d constant W")
    layout = Layout.ANY if data_rank == 2 else Layout.CHANNELS_LAST
    form = _linear_form(weight.T, None)
    return LinearOp(
        node, Kind.MATMUL, (node.inputs[0],), form, "MatMul", layout, dtype=weight.dtype
    )


def read_reshape(node: gs.Node) -> Reading:
    """``Reshape``/``Flatten``: the identity on the order of elements. It keeps the channel axis
    of ``[..., C]`` when the last dim is unchanged (LeViT's ``bn(x.flatten(0, 1)).reshape_as(x)``,
    see :func:`keeps_channels`); any other reshape can only end a region, whose rewritten result
    is then reshaped the same way."""
    if node.op == "Reshape" and len(node.inputs) < 2:
        return None
    return LinearOp(node, Kind.RESHAPE, (node.inputs[0],), None, node.op, Layout.CHANNELS_LAST)


def keeps_channels(op: LinearOp) -> bool:
    """A reshape that keeps the last axis, and so the channel axis of ``[..., C]``."""
    source, target = op.input, op.output
    last_in, last_out = dim(source, -1), dim(target, -1)
    ranks = (rank(source) or 0, rank(target) or 0)
    return last_in is not None and last_in == last_out and min(ranks) >= 2


#: Ops that only copy elements of their variable input(s) or write constants; a chain of them
#: (with the ``Pad`` reader's ops) is read as a whole by probing (:mod:`.data_movement`).
MOVERS = frozenset(
    {
        "Concat", "Expand", "Tile", "Slice", "Pad", "ScatterND", "ScatterElements", "Transpose",
        "Squeeze", "Unsqueeze",
    }
)  # fmt: skip


def read_data_movement(node: gs.Node) -> Reading:
    """``Expand``, ``Tile``, ``Slice``, ``Transpose``, ``Squeeze``, ``Unsqueeze`` with constant
    parameters, ``ScatterND``/``ScatterElements`` of constants (no reduction), ``Concat`` of
    constants and moved data: ops that only copy elements or write constants, of floating
    data (never shape arithmetic). Read as a chain (down to the tensor they all move) by
    probing it."""
    if node.op == "Concat":
        return _read_concat(node)
    if not _is_floating(node.inputs[0]):
        return None
    if any(constant_values(t) is None for t in node.inputs[1:] if not is_omitted(t)):
        return None
    if node.op.startswith("Scatter") and attribute(node, "reduction", "none") != "none":
        return None
    return LinearOp(node, Kind.DATA_MOVEMENT, (node.inputs[0],), None, node.op, Layout.ANY)


def _read_concat(node: gs.Node) -> Reading:
    """A ``Concat`` of floating constants (Paddle's BN-then-pad strips) and variable pieces
    that are one tensor or computed by data-movement ops (slices of one tensor put back
    together, strips expanded from a constant) but for one; a Concat of two tensors computed
    otherwise (a channel concat) is not read."""
    constants = [constant_values(t) for t in node.inputs]
    if any(c is not None and c.dtype.kind != "f" for c in constants):
        return None
    variables = {id(t): t for t, c in zip(node.inputs, constants, strict=True) if c is None}
    pieces = tuple(variables.values())
    if not pieces or not all(_is_floating(t) for t in pieces):
        return None
    moved = [
        len(t.inputs) == 1 and t.inputs[0].op in MOVERS and is_standard(t.inputs[0]) for t in pieces
    ]
    if len(pieces) - sum(moved) > 1:
        return None
    return LinearOp(node, Kind.DATA_MOVEMENT, pieces, None, node.op, Layout.ANY)


def _is_floating(tensor: gs.Tensor) -> bool:
    """The tensor holds floating values, or its type is not known."""
    if tensor.dtype is None:
        return True
    try:
        return np.issubdtype(np.dtype(tensor.dtype), np.floating)
    except TypeError:
        return True


READERS: dict[str, Reader] = {
    "Conv": read_conv,
    "ConvTranspose": read_conv_transpose,
    "BatchNormalization": read_batchnorm,
    "Mul": read_elementwise,
    "Div": read_elementwise,
    "Add": read_elementwise,
    "Sub": read_elementwise,
    "Sum": read_sum,
    "AveragePool": read_average_pool,
    "Pad": read_pad,
    "Gemm": read_gemm,
    "MatMul": read_matmul,
    "Reshape": read_reshape,
    "Flatten": read_reshape,
    "ScatterND": read_data_movement,
    "Transpose": read_data_movement,
    "Slice": read_data_movement,
    "Concat": read_data_movement,
    "Expand": read_data_movement,
    "Tile": read_data_movement,
    "ScatterElements": read_data_movement,
    "Squeeze": read_data_movement,
    "Unsqueeze": read_data_movement,
}


def cost_of(op: LinearOp, channels: int | None) -> float:
    """Multiply-adds per output position of one op, as its form counts them (an Add of
    two tensors costs one per channel; moving data costs nothing)."""
    if op.form is None:
        return float(channels or 1) if op.kind is Kind.SUM else 0.0
    if op.kind is Kind.PAD:
        return 0.0
    return op.form.multiply_adds(channels)
