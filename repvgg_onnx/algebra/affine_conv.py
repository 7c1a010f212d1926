"""The weight math of re-parameterization, as pure numpy functions (float64 inside).

Every branch of a re-parameterizable block reduces to one normal form, an *affine convolution*
of the block's input ``x``::

    y = conv(x, kernel, strides, dilations, pads, groups) + bias[:, None, ...]

- a Conv is one already (a missing bias is zero);
- a Conv followed by inference BatchNormalization folds into one (RepVGG eq. 3):
  ``W' = W·γ/σ``, ``b' = β + (b − μ)·γ/σ``, ``σ = sqrt(var + ε)``;
- a BatchNormalization on ``x`` itself is a depthwise 1x1 kernel ``γ/σ`` with bias ``β − μγ/σ``;
- the bare identity is a depthwise 1x1 kernel of ones.

:class:`AffineConv` answers every question of :class:`~repvgg_onnx.algebra.form.LinearForm`:
two convolutions compose into one (kernels convolved, strides multiplied), it is written as a
Conv, or as a Gemm or MatMul when it has no spatial dims. Merging parallel branches is
:mod:`~repvgg_onnx.algebra.conv_merge`. Nothing here knows about ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import LinearForm, NodeSpec, NotComposableError, cast


@dataclass(frozen=True)
class AffineConv(LinearForm):
    """``y = scale ⊙ conv(x, kernel) + bias``, ONNX Conv semantics, any number of spatial dims.

    Invariants: ``kernel`` is ``[Cout, Cin/groups, *kernel_shape]``, ``bias`` and ``scale``
    (``None`` means ones) are ``[Cout]``. The kernel is kept as the model stores it (no copy)
    and the per-output-channel ``scale`` beside it, so folding a BatchNormalization or a
    scale costs O(Cout); the arithmetic on kernels happens in float64, once, chunk by chunk,
    when :func:`materialize` or :func:`merge_affine_convs` writes the final weights.
    ``strides``, ``dilations`` have one entry per spatial dim; ``pads`` is ONNX's
    ``(begin_0, begin_1, …, end_0, end_1, …)``. A kernel with no spatial dims
    (``[Cout, Cin/groups]``) is a linear map of the channel axis (Gemm, MatMul).

    ``pad_value`` (per input channel, ``None`` for zeros) is the value the padded border of the
    input holds: a ``Pad`` with a non-zero value reads this way; an ONNX Conv always pads with
    zeros. ``auto_pad`` is ``"SAME_UPPER"``/``"SAME_LOWER"`` when the padding depends on the
    input size (``SAME_*`` with strides > 1); ``pads`` is then all zeros and meaningless, so
    only per-output-channel folds apply.
    """

    kernel: np.ndarray
    bias: np.ndarray
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    groups: int
    scale: np.ndarray | None = None
    pad_value: np.ndarray | None = None
    auto_pad: str = "NOTSET"

    @property
    def spatial_rank(self) -> int:
        return self.kernel.ndim - 2

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return self.kernel.shape[2:]  # numpy shapes are tuples of Python ints

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.kernel.shape[1]) * self.groups

    @property
    def has_explicit_pads(self) -> bool:
        return self.auto_pad == "NOTSET"

    @property
    def is_padded(self) -> bool:
        """True if some output reads the padded border (explicit non-zero pads or auto_pad)."""
        return not self.has_explicit_pads or any(self.pads)

    @property
    def pads_begin(self) -> tuple[int, ...]:
        return self.pads[: self.spatial_rank]

    @property
    def pads_end(self) -> tuple[int, ...]:
        return self.pads[self.spatial_rank :]

    def compose(self, inner: LinearForm, rtol: float) -> LinearForm:
        """``conv(inner(x))``: the inner form says how a conv reads it (:meth:`read_by`)."""
        return self if inner.is_identity else inner.read_by(self, rtol)

    def read_by(self, conv: AffineConv, rtol: float) -> AffineConv:
        return _compose_convs(conv, self, rtol)

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> AffineConv:
        return scale_and_shift(self, scale, shift)

    @property
    def summand_geometry(self) -> tuple[int, int]:
        return self.spatial_rank, self.in_channels

    def as_summand(self, label: str, channels: int, spatial_rank: int) -> AffineConv:
        return self

    def multiply_adds(self, channels: int | None = None) -> float:
        return float(self.out_channels * self.kernel.shape[1] * math.prod(self.kernel_shape))

    def composed_cost(self, inner: LinearForm, channels: int | None) -> float:
        return inner.cost_read_by(self, channels)

    def cost_read_by(self, conv: AffineConv, channels: int | None) -> float:
        """The composed kernel's taps (:func:`_composed_lattice`) in ``gcd`` of the groups."""
        if conv.spatial_rank != self.spatial_rank:
            return conv.multiply_adds(channels)
        groups = math.gcd(conv.groups, self.groups)
        _, shape = _composed_lattice(conv, self)
        return float(conv.out_channels * (self.in_channels // groups) * math.prod(shape))

    def input_positions_per_output(self) -> float:
        return float(math.prod(self.strides))

    def emittable_reason(self) -> str | None:
        if self.is_padded and self.pad_value is not None and np.any(self.pad_value):
            return "it pads with a non-zero value, which no ONNX Conv does"
        return None

    def node_specs(
        self, dtype: np.dtype, channels_last: bool, source_rank: int | None
    ) -> list[NodeSpec]:
        """A Conv; with no spatial dims a Gemm on ``[N, C]``, else MatMul (and Add)."""
        if self.spatial_rank == 0:
            return _linear_specs(self, dtype, source_rank == 2)
        return [_conv_spec(self, dtype)]

    def describe(self) -> str:
        if self.spatial_rank == 0:
            return "Linear"
        return conv_label(self.kernel_shape, self.groups, self.strides)

    def label(self, specs: Sequence[NodeSpec]) -> str:
        return self.describe() if self.spatial_rank > 0 else super().label(specs)


def affine_conv(
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    groups: int = 1,
    auto_pad: str = "NOTSET",
) -> AffineConv:
    """An :class:`AffineConv` with ONNX's defaults: stride 1, dilation 1, no pads, no bias."""
    kernel = _as_floating(kernel)
    rank = kernel.ndim - 2
    if rank < 0:
        raise ValueError(f"a conv kernel needs at least 2 dims, got shape {kernel.shape}")
    out_channels = kernel.shape[0]
    bias = np.zeros(out_channels) if bias is None else _as_floating(bias)
    if bias.shape != (out_channels,):
        raise ValueError(f"bias shape {bias.shape} does not match {out_channels} output channels")
    if groups < 1 or out_channels % groups:
        raise ValueError(f"{out_channels} output channels cannot be split into {groups} groups")
    geometry = {"strides": strides, "dilations": dilations}
    for name, values in geometry.items():
        if values is not None and len(values) != rank:
            raise ValueError(f"{name} {list(values)} do not fit a {rank}-d kernel")
    if pads is not None and len(pads) != 2 * rank:
        raise ValueError(f"pads {list(pads)} do not fit a {rank}-d kernel")
    return AffineConv(
        kernel=kernel,
        bias=bias,
        strides=tuple(int(s) for s in strides) if strides is not None else (1,) * rank,
        dilations=tuple(int(d) for d in dilations) if dilations is not None else (1,) * rank,
        pads=tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * rank),
        groups=int(groups),
        auto_pad=auto_pad,
    )


def same_pads(
    sizes: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    auto_pad: str,
) -> tuple[int, ...]:
    """ONNX's explicit pads (begins, then ends) of ``auto_pad=SAME_UPPER/SAME_LOWER`` on an
    input of spatial ``sizes``: per dim, ``ceil(n / s)`` outputs and a total of
    ``max((out − 1)·s + d·(k − 1) + 1 − n, 0)``, the odd one at the end (``SAME_UPPER``, TF's
    ``SAME``) or at the beginning (``SAME_LOWER``). With stride 1 the total is ``d·(k − 1)``
    whatever ``n``."""
    begins, ends = [], []
    for size, kernel, stride, dilation in zip(sizes, kernel_shape, strides, dilations, strict=True):
        outputs = -(-size // stride)
        total = max((outputs - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return (*begins, *ends)


def _as_floating(values) -> np.ndarray:
    """``values`` as a floating-point array: floating input as is, anything else as float64."""
    array = np.asarray(values)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def batchnorm_scale_shift(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as ``y = scale·x + shift`` per channel.

    ``scale = γ / sqrt(var + ε)``, ``shift = β − μ·scale``.
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return scale, shift


def scale_and_shift(conv: AffineConv, scale: np.ndarray, shift: np.ndarray) -> AffineConv:
    """The affine conv equal to ``scale ⊙ conv(x) + shift`` (one value per output channel).

    ``W' = W·scale`` per output channel (kept as a factor, see :class:`AffineConv`),
    ``b' = b·scale + shift``.
    """
    scale = per_channel(scale, conv.out_channels, "channel scales")
    shift = per_channel(shift, conv.out_channels, "channel shifts")
    return evolve(
        conv,
        bias=np.multiply(conv.bias, scale, dtype=np.float64) + shift,
        scale=scale if conv.scale is None else conv.scale * scale,
    )


def per_channel(values: np.ndarray, channels: int, what: str = "values") -> np.ndarray:
    """``values`` as ``channels`` float64 numbers: one per channel, or one for all of them."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 1:
        return np.full(channels, values[0])
    if values.size != channels:
        raise ValueError(f"{values.size} {what} for {channels} channels")
    return values


def regroup_kernel(
    kernel: np.ndarray,
    groups: int,
    new_groups: int,
    first_row: int = 0,
    out_channels: int | None = None,
) -> np.ndarray:
    """Express a ``groups``-grouped kernel as an equivalent ``new_groups``-grouped one.

    ``new_groups`` must divide ``groups``; each new group holds ``groups/new_groups`` old groups
    on its block diagonal and zeros elsewhere. For the identity (``groups = C``) regrouped to
    ``g`` this gives timm's ``k[i, i % (C/g)] = 1``. ``kernel`` may be the output channels
    ``first_row …`` of a kernel of ``out_channels`` channels; the result is the same rows.
    """
    if groups == new_groups:
        return kernel
    if new_groups < 1 or groups % new_groups:
        raise ValueError(f"cannot regroup a {groups}-group kernel into {new_groups} groups")
    rows, in_per_group = kernel.shape[:2]
    out_per_group = (rows if out_channels is None else out_channels) // groups
    merged_per_new = groups // new_groups
    result = np.zeros((rows, in_per_group * merged_per_new, *kernel.shape[2:]))
    last_row = first_row + rows
    for group in range(first_row // out_per_group, (last_row - 1) // out_per_group + 1):
        start = max(group * out_per_group, first_row) - first_row
        stop = min((group + 1) * out_per_group, last_row) - first_row
        first_col = (group % merged_per_new) * in_per_group
        result[start:stop, first_col : first_col + in_per_group] = kernel[start:stop]
    return result


def materialize(conv: AffineConv, dtype: np.dtype = np.float64) -> AffineConv:
    """The same conv with ``scale`` multiplied into a kernel of ``dtype`` (float64 inside)."""
    if conv.scale is None and conv.kernel.dtype == dtype:
        return conv
    kernel = np.empty(conv.kernel.shape, dtype)
    for rows in row_chunks(conv.kernel.shape):
        kernel[rows] = scaled_rows(conv, rows)
    return evolve(conv, kernel=kernel, scale=None)


def scaled_rows(conv: AffineConv, rows: slice) -> np.ndarray:
    """Output channels ``rows`` of the effective kernel ``kernel·scale``, in float64."""
    if conv.scale is None:
        return conv.kernel[rows].astype(np.float64)
    factor = conv.scale[rows].reshape((-1,) + (1,) * (conv.kernel.ndim - 1))
    return np.multiply(conv.kernel[rows], factor, dtype=np.float64)


#: Float64 elements per chunk of output channels: small enough to stay in cache, so a kernel
#: is read once and written once instead of passing through several full-size temporaries.
_CHUNK_ELEMENTS = 1 << 16


def row_chunks(shape: Sequence[int]) -> list[slice]:
    """Slices of output channels of about ``_CHUNK_ELEMENTS`` elements each."""
    step = max(1, _CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    return [slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def conv_label(kernel_shape: Sequence[int], groups: int = 1, strides: Sequence[int] = ()) -> str:
    """``"Conv3x3/g4/s2x2"``: a conv as every report labels it (``fuse``, ``inspect``, ``diff``
    and the HTML pictures): its kernel, then its groups and strides where not 1."""
    text = "Conv" + "x".join(str(k) for k in kernel_shape)
    if groups > 1:
        text += f"/g{groups}"
    if any(s != 1 for s in strides):
        text += "/s" + "x".join(str(s) for s in strides)
    return text


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
    return NodeSpec("Conv", attrs, (("weight", conv.kernel), ("bias", cast(conv.bias, dtype))))


def _linear_specs(conv: AffineConv, dtype: np.dtype, two_dimensional: bool) -> list[NodeSpec]:
    conv = materialize(conv)
    matrix = regroup_kernel(conv.kernel, conv.groups, 1)
    bias = cast(conv.bias, dtype)
    if two_dimensional:
        constants = (("weight", cast(matrix, dtype)), ("bias", bias))
        return [NodeSpec("Gemm", {"transB": 1}, constants)]
    specs = [NodeSpec("MatMul", {}, (("weight", cast(matrix.T, dtype)),))]
    if np.any(conv.bias):
        specs.append(NodeSpec("Add", {}, (("bias", bias),)))
    return specs


def input_channel_index(conv: AffineConv) -> np.ndarray:
    """``[Cout, Cin/groups]``: the input channel each kernel column reads."""
    out_per_group = conv.out_channels // conv.groups
    in_per_group = conv.kernel.shape[1]
    group = np.arange(conv.out_channels) // out_per_group
    return group[:, None] * in_per_group + np.arange(in_per_group)[None, :]


def pad_values(conv: AffineConv) -> np.ndarray:
    """The value the padded border of the conv's input holds, per input channel."""
    if conv.pad_value is None:
        return np.zeros(conv.in_channels)
    return per_channel(conv.pad_value, conv.in_channels, "pad values")


#: Border values this close to the pad value (in the tensor's own units) count as equal: a
#: shift computed as ``β − μγ/σ`` from float32 constants is ~1e-8 where it "is" zero.
BORDER_ATOL = 1e-6


def require_border_value(border: np.ndarray, pad_value: np.ndarray, rtol: float) -> None:
    """The inner map's value on the padded border must be the outer op's pad value."""
    scale = max(float(np.max(np.abs(border), initial=0.0)), float(np.max(np.abs(pad_value))))
    if np.all(np.abs(border - pad_value) <= BORDER_ATOL + rtol * scale):
        return
    worst = int(np.argmax(np.abs(border - pad_value)))
    raise NotComposableError(
        f"the padding would see the inner map's bias {border[worst]:.4g} on channel {worst} "
        f"where it expects {pad_value[worst]:.4g}"
    )


def auto_pad_reason(conv: AffineConv) -> str:
    """Why nothing composes into the input side of a conv whose pads depend on the input."""
    return (
        f"auto_pad={conv.auto_pad} with strides {list(conv.strides)} pads by the input size, "
        "so nothing can be composed into its input side"
    )


def _compose_convs(outer: AffineConv, inner: AffineConv, rtol: float) -> AffineConv:
    """Two convolutions as one: kernels convolved, strides multiplied, pads mapped back.

    Along one dim the inner conv reads ``x[m·s₁ − p₁ + d₁·t₁]`` and the outer reads
    ``z[o·s₂ − p₂ + d₂·t₂]``, so the composition reads ``x[o·s₁s₂ − (p₂s₁ + p₁) +
    s₁d₂·t₂ + d₁·t₁]``: stride ``s₁s₂``, begin pad ``p₂s₁ + p₁`` (end likewise), taps on
    the lattice of ``gcd(s₁d₂, d₁)``. The output size matches for every input size. Groups
    become ``gcd(g₁, g₂)`` (block-diagonal products).
    """
    if outer.spatial_rank != inner.spatial_rank:
        raise NotComposableError(
            f"a {outer.spatial_rank}-d map cannot read a {inner.spatial_rank}-d map's output"
        )
    for conv in (outer, inner):
        if not conv.has_explicit_pads:
            raise NotComposableError(auto_pad_reason(conv))
    if any(outer.pads):
        if any(k != 1 for k in inner.kernel_shape):
            raise NotComposableError(
                f"the zero padding of the outer {_kernel_text(outer)} map would read values the "
                f"inner {_kernel_text(inner)} kernel computes from the input's border"
            )
        require_border_value(_border_value(inner), pad_values(outer), rtol)
    groups = math.gcd(outer.groups, inner.groups)
    outer64, inner64 = materialize(outer), materialize(inner)
    kernel, dilations = _convolve_kernels(outer64, inner64, groups)
    strides = tuple(a * b for a, b in zip(outer.strides, inner.strides, strict=True))
    begin = [
        p * s + q
        for p, s, q in zip(outer.pads_begin, inner.strides, inner.pads_begin, strict=False)
    ]
    end = [
        p * s + q for p, s, q in zip(outer.pads_end, inner.strides, inner.pads_end, strict=False)
    ]
    return AffineConv(
        kernel=kernel,
        bias=outer64.bias + _apply_to_constant(outer64, inner64.bias),
        strides=strides,
        dilations=dilations,
        pads=tuple(begin + end),
        groups=groups,
        pad_value=inner.pad_value if any(inner.pads) else None,
    )


def _kernel_text(conv: AffineConv) -> str:
    return "x".join(str(k) for k in conv.kernel_shape) or "linear"


def _border_value(conv: AffineConv) -> np.ndarray:
    """What a pointwise conv outputs where its input is padding: ``W·pad_value + b``."""
    return materialize(conv).bias + _apply_to_constant(materialize(conv), pad_values(conv))


def _apply_to_constant(conv: AffineConv, values: np.ndarray) -> np.ndarray:
    """``Σ_taps W·v`` per output channel: the conv (no bias) of a constant input ``v[c]``."""
    groups = conv.groups
    taps = conv.kernel.reshape((*conv.kernel.shape[:2], -1)).sum(axis=2)
    blocks = taps.reshape(groups, conv.out_channels // groups, -1)
    inputs = np.asarray(values, np.float64).reshape(groups, -1)
    return np.einsum("gom,gm->go", blocks, inputs).reshape(-1)


def _tap_products(outer: AffineConv, inner: AffineConv, groups: int) -> np.ndarray:
    """Every outer tap times the inner kernel, ``[groups, Cout/g, outer taps, Cin/g · inner
    taps]`` (float64), for ``groups`` dividing both convs' groups.

    One BLAS product per group, which runs at full speed (a strided product per tap does not).
    An outer conv in finer groups than ``groups`` (a depthwise kernel after a dense 1x1) is
    multiplied in its own groups, each reading only its own inner rows: regrouped, it would be
    a dense kernel of zeros off its diagonal, as many times the work as it has groups.
    """
    cout, cmid = outer.out_channels, inner.out_channels
    columns = (inner.in_channels // groups) * math.prod(inner.kernel_shape)
    inner_rows = regroup_kernel(inner.kernel, inner.groups, groups).reshape(cmid, columns)
    if outer.groups != groups:
        fine = outer.groups
        a = outer.kernel.reshape(fine, cout // fine, cmid // fine, -1)
        b = inner_rows.reshape(fine, cmid // fine, columns)
        products = np.matmul(a.transpose(0, 1, 3, 2), b[:, np.newaxis])
        return products.reshape(groups, cout // groups, -1, columns)
    a = outer.kernel.reshape(groups, cout // groups, cmid // groups, -1)
    b = inner_rows.reshape(groups, cmid // groups, columns)
    if groups == 1:  # no stack to copy the one product into
        return np.tensordot(a[0], b[0], axes=([1], [0]))[np.newaxis]
    return np.stack([np.tensordot(a[g], b[g], axes=([1], [0])) for g in range(groups)])


def _convolve_kernels(
    outer: AffineConv, inner: AffineConv, groups: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The composed kernel ``[Cout, Cin/groups, *K]`` and its dilations (float64)."""
    outer_k, inner_k = outer.kernel_shape, inner.kernel_shape
    steps_outer, steps_inner = _tap_steps(outer, inner)
    dilations, shape = _composed_lattice(outer, inner)
    cout, cin = outer.out_channels, inner.in_channels
    grouped = (groups, cout // groups, cin // groups, *shape)
    inner_window = [
        step // lattice if k > 1 else 1
        for step, lattice, k in zip(steps_inner, dilations, inner_k, strict=True)
    ]
    taps = _tap_products(outer, inner, groups)
    if all(k == 1 for k in inner_k):  # each outer tap is a tap of its own (DBB's 1x1 → kxk)
        kernel = np.moveaxis(taps, 2, -1).reshape(grouped)  # taps is ours to overwrite
        # x + 0.0, as the loop below computes 0.0 + x (a −0.0 product becomes 0.0), so both
        # ways write the same bytes
        kernel += 0.0
        return kernel.reshape(cout, cin // groups, *shape), tuple(dilations)
    kernel = np.zeros(grouped)
    for flat, tap in enumerate(np.ndindex(*outer_k)):
        product = taps[:, :, flat].reshape(groups, cout // groups, cin // groups, *inner_k)
        window = tuple(
            slice(
                step * t // lattice,
                step * t // lattice + stride * (k - 1) + 1,
                stride,
            )
            for t, step, lattice, stride, k in zip(
                tap, steps_outer, dilations, inner_window, inner_k, strict=True
            )
        )
        kernel[(slice(None),) * 3 + window] += product
    return kernel.reshape(cout, cin // groups, *shape), tuple(dilations)


def _tap_steps(outer: AffineConv, inner: AffineConv) -> tuple[list[int], list[int]]:
    """Per dim, the input distance between the outer kernel's taps and the inner's."""
    steps_outer = [s * d for s, d in zip(inner.strides, outer.dilations, strict=True)]
    return steps_outer, list(inner.dilations)


def _composed_lattice(outer: AffineConv, inner: AffineConv) -> tuple[list[int], list[int]]:
    """Dilations and kernel shape of ``outer ∘ inner``: taps on the lattice of
    ``gcd(s₁d₂, d₁)`` spanning both kernels."""
    steps_outer, steps_inner = _tap_steps(outer, inner)
    dilations, shape = [], []
    for k_o, k_i, step_o, step_i in zip(
        outer.kernel_shape, inner.kernel_shape, steps_outer, steps_inner, strict=True
    ):
        lattice = math.gcd(step_o if k_o > 1 else 0, step_i if k_i > 1 else 0) or 1
        dilations.append(lattice)
        shape.append((step_o * (k_o - 1) + step_i * (k_i - 1)) // lattice + 1)
    return dilations, shape
