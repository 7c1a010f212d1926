"""Composition of linear maps: the algebra of affine regions (pure numpy, float64 inside).

A region of linear ops computes ``y = A(x) + b`` from one tensor ``x``. Three forms cover
every op a region holds:

- :class:`ChannelAffine` — ``y[:, c] = s[c]·x[:, c] + t[c]`` on the channel axis: inference
  BatchNormalization, a ``Mul``/``Div``/``Add``/``Sub`` by a per-channel constant, the identity;
- :class:`~repvgg_onnx.algebra.affine_conv.AffineConv` — a convolution (Conv, AveragePool,
  Pad), or with no spatial dims a linear map of the channel axis (Gemm, MatMul);
- :class:`TransposedConv` — a ConvTranspose, which only absorbs per-channel maps after it.

:func:`compose` writes ``outer(inner(x))`` as one form and raises :class:`NotComposableError`
(one sentence) when that is not exact. The classic trap is padding: an outer conv pads its
input with zeros (or a Pad's value), while the composed conv would compute the inner map
there; that is exact only for a pointwise inner map whose value on a zero input, its bias,
equals the pad value. :func:`sum_forms` adds forms of the same input (signs and scales are
per-channel maps composed on first). :func:`multiply_adds` is the cost a rewrite must not
increase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repvgg_onnx.algebra.affine_conv import (
    AffineConv,
    IncompatibleBranchesError,
    affine_conv,
    materialize,
    merge_affine_convs,
    per_channel,
    regroup_kernel,
    scale_and_shift,
)
from repvgg_onnx.algebra.evolve import evolve


class NotComposableError(ValueError):
    """``outer(inner(x))`` is not one form of the algebra; the message says why."""


@dataclass(frozen=True)
class ChannelAffine:
    """``y[:, c] = scale[c]·x[:, c] + shift[c]``; arrays of one element apply to every channel.

    Invariant: ``scale`` and ``shift`` are float64 vectors of length 1 or ``C``.
    """

    scale: np.ndarray
    shift: np.ndarray

    @property
    def channels(self) -> int | None:
        """The channel count, or ``None`` for a map that is the same on every channel."""
        sizes = {self.scale.size, self.shift.size} - {1}
        return sizes.pop() if sizes else None

    @property
    def is_identity(self) -> bool:
        return self is IDENTITY or bool((self.scale == 1.0).all() and not self.shift.any())


def channel_affine(scale=1.0, shift=0.0) -> ChannelAffine:
    """A :class:`ChannelAffine` from scalars or per-channel vectors (broadcast to each other)."""
    scale = np.asarray(scale, np.float64).reshape(-1)
    shift = np.asarray(shift, np.float64).reshape(-1)
    if scale.size != shift.size and 1 not in (scale.size, shift.size):
        raise ValueError(f"{scale.size} scales and {shift.size} shifts")
    return ChannelAffine(scale, shift)


IDENTITY = channel_affine()


@dataclass(frozen=True)
class TransposedConv:
    """A ConvTranspose with constant weights, then ``scale ⊙ · + bias`` per output channel.

    ``kernel`` is ONNX's ``[Cin, Cout/groups, *k]`` as stored; ``attributes`` are the node's
    geometry attributes, kept verbatim for the rewritten node.
    """

    kernel: np.ndarray
    bias: np.ndarray
    groups: int
    attributes: tuple[tuple[str, object], ...]
    scale: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[1]) * self.groups

    @property
    def spatial_rank(self) -> int:
        return self.kernel.ndim - 2


Form = ChannelAffine | AffineConv | TransposedConv


def output_channels(form: Form) -> int | None:
    return form.channels if isinstance(form, ChannelAffine) else form.out_channels


def input_channels(form: Form) -> int | None:
    return form.channels if isinstance(form, ChannelAffine) else form.in_channels


def compose(outer: Form, inner: Form, rtol: float = 1e-5) -> Form:
    """The one form equal to ``outer(inner(x))``; raises :class:`NotComposableError` if none is.

    ``rtol`` is how closely a pointwise inner map's border value must match the outer op's
    pad value (their float32 copies are computed by different code, so equality is too strict).
    """
    channels_in, channels_out = input_channels(outer), output_channels(inner)
    if None not in (channels_in, channels_out) and channels_in != channels_out:
        raise NotComposableError(f"{channels_out} channels feed an op that expects {channels_in}")
    if isinstance(outer, ChannelAffine):
        return _scale_outputs(outer, inner)
    if isinstance(inner, ChannelAffine) and inner.is_identity:
        return outer
    if isinstance(outer, TransposedConv) or isinstance(inner, TransposedConv):
        raise NotComposableError("a ConvTranspose only absorbs per-channel maps after it")
    if isinstance(inner, ChannelAffine):
        return _scale_inputs(outer, inner, rtol)
    return _compose_convs(outer, inner, rtol)


def _scale_outputs(outer: ChannelAffine, inner: Form) -> Form:
    """``s ⊙ inner(x) + t``: per-output-channel, O(C) (kernels keep a lazy scale)."""
    if isinstance(inner, ChannelAffine):
        return channel_affine(outer.scale * inner.scale, outer.scale * inner.shift + outer.shift)
    if isinstance(inner, TransposedConv):
        channels = inner.out_channels
        scale = per_channel(outer.scale, channels, "channel scales")
        return evolve(
            inner,
            bias=inner.bias * scale + per_channel(outer.shift, channels, "channel shifts"),
            scale=scale if inner.scale is None else inner.scale * scale,
        )
    return scale_and_shift(inner, outer.scale, outer.shift)


def _scale_inputs(outer: AffineConv, inner: ChannelAffine, rtol: float) -> AffineConv:
    """``conv(s ⊙ x + t)``: ``W'[o, j] = W[o, j]·s[j]``, ``b' = b + Σ W·t``.

    Exact when the conv reads no padding, or when ``t`` equals its pad value: the composed
    conv pads ``x`` with zeros, which ``s ⊙ 0 + t`` maps to ``t``.
    """
    if not outer.has_explicit_pads and not _is_constant_shift(inner, 0.0):
        raise NotComposableError(_auto_pad_reason(outer))
    channels = outer.in_channels
    shift = per_channel(inner.shift, channels, "channel shifts")
    if outer.has_explicit_pads and any(outer.pads):
        _require_border_value(shift, _pad_values(outer), rtol)
    conv = materialize(outer)
    scale = per_channel(inner.scale, channels, "channel scales")
    in_index = _input_channel_index(conv)
    spatial = (1,) * conv.spatial_rank
    kernel = conv.kernel * scale[in_index].reshape(in_index.shape + spatial)
    taps = conv.kernel.reshape((*conv.kernel.shape[:2], -1)).sum(axis=2)
    bias = conv.bias + np.sum(taps * shift[in_index], axis=1)
    return evolve(conv, kernel=kernel, bias=bias, pad_value=None)


def _is_constant_shift(affine: ChannelAffine, value: float) -> bool:
    return bool(np.all(affine.shift == value))


def _input_channel_index(conv: AffineConv) -> np.ndarray:
    """``[Cout, Cin/groups]``: the input channel each kernel column reads."""
    out_per_group = conv.out_channels // conv.groups
    in_per_group = conv.kernel.shape[1]
    group = np.arange(conv.out_channels) // out_per_group
    return group[:, None] * in_per_group + np.arange(in_per_group)[None, :]


def _pad_values(conv: AffineConv) -> np.ndarray:
    if conv.pad_value is None:
        return np.zeros(conv.in_channels)
    return per_channel(conv.pad_value, conv.in_channels, "pad values")


#: Border values this close to the pad value (in the tensor's own units) count as equal: a
#: shift computed as ``β − μγ/σ`` from float32 constants is ~1e-8 where it "is" zero.
BORDER_ATOL = 1e-6


def _require_border_value(border: np.ndarray, pad_value: np.ndarray, rtol: float) -> None:
    """The inner map's value on the padded border must be the outer op's pad value."""
    scale = max(float(np.max(np.abs(border), initial=0.0)), float(np.max(np.abs(pad_value))))
    if np.all(np.abs(border - pad_value) <= BORDER_ATOL + rtol * scale):
        return
    worst = int(np.argmax(np.abs(border - pad_value)))
    raise NotComposableError(
        f"the padding would see the inner map's bias {border[worst]:.4g} on channel {worst} "
        f"where it expects {pad_value[worst]:.4g}"
    )


def _auto_pad_reason(conv: AffineConv) -> str:
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
            raise NotComposableError(_auto_pad_reason(conv))
    if any(outer.pads):
        if any(k != 1 for k in inner.kernel_shape):
            raise NotComposableError(
                f"the zero padding of the outer {_kernel_text(outer)} map would read values the "
                f"inner {_kernel_text(inner)} kernel computes from the input's border"
            )
        _require_border_value(_border_value(inner), _pad_values(outer), rtol)
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
    return materialize(conv).bias + _apply_to_constant(materialize(conv), _pad_values(conv))


def _apply_to_constant(conv: AffineConv, values: np.ndarray) -> np.ndarray:
    """``Σ_taps W·v`` per output channel: the conv (no bias) of a constant input ``v[c]``."""
    groups = conv.groups
    taps = conv.kernel.reshape((*conv.kernel.shape[:2], -1)).sum(axis=2)
    blocks = taps.reshape(groups, conv.out_channels // groups, -1)
    inputs = np.asarray(values, np.float64).reshape(groups, -1)
    return np.einsum("gom,gm->go", blocks, inputs).reshape(-1)


def _convolve_kernels(
    outer: AffineConv, inner: AffineConv, groups: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The composed kernel ``[Cout, Cin/groups, *K]`` and its dilations (float64)."""
    outer_k, inner_k = outer.kernel_shape, inner.kernel_shape
    steps_outer, steps_inner = _tap_steps(outer, inner)
    dilations, shape = _composed_lattice(outer, inner)
    a = regroup_kernel(outer.kernel, outer.groups, groups)
    b = regroup_kernel(inner.kernel, inner.groups, groups)
    cout, cmid, cin = outer.out_channels, inner.out_channels, inner.in_channels
    a = a.reshape(groups, cout // groups, cmid // groups, -1)
    b = b.reshape(groups, cmid // groups, (cin // groups) * math.prod(inner_k))
    kernel = np.zeros((groups, cout // groups, cin // groups, *shape))
    inner_window = [
        step // lattice if k > 1 else 1
        for step, lattice, k in zip(steps_inner, dilations, inner_k, strict=True)
    ]
    for flat, tap in enumerate(np.ndindex(*outer_k)):
        product = np.matmul(a[..., flat], b).reshape(
            groups, cout // groups, cin // groups, *inner_k
        )
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


def composed_cost(outer: Form, inner: Form, channels: int | None = None) -> float:
    """:func:`multiply_adds` of ``compose(outer, inner)``, from shapes alone (nothing computed)."""
    if isinstance(outer, ChannelAffine):
        return multiply_adds(inner, channels)
    if isinstance(inner, ChannelAffine) or not isinstance(outer, AffineConv):
        return multiply_adds(outer, channels)
    if not isinstance(inner, AffineConv) or outer.spatial_rank != inner.spatial_rank:
        return multiply_adds(outer, channels)
    groups = math.gcd(outer.groups, inner.groups)
    _, shape = _composed_lattice(outer, inner)
    return float(outer.out_channels * (inner.in_channels // groups) * math.prod(shape))


def sum_forms(
    forms: Sequence[Form],
    labels: Sequence[str],
    *,
    spatial_rank: int,
    channels: int,
    dtype: np.dtype = np.float64,
    input_size: Sequence[int | None] | None = None,
) -> Form:
    """The one form equal to ``Σ forms(x)``; raises ``IncompatibleBranchesError`` if none is.

    Per-channel maps sum as such; with any convolution among them each becomes a depthwise
    ``1x1`` conv and :func:`~repvgg_onnx.algebra.affine_conv.merge_affine_convs` places kernels
    by their begin pads (``input_size``, the static spatial size of ``x`` where known, decides
    output sizes that depend on it) and sums them, storing the result as ``dtype``.
    """
    if all(isinstance(form, ChannelAffine) for form in forms):
        return channel_affine(
            np.sum([per_channel(f.scale, channels) for f in forms], axis=0),
            np.sum([per_channel(f.shift, channels) for f in forms], axis=0),
        )
    for form, label in zip(forms, labels, strict=True):
        if isinstance(form, TransposedConv):
            raise IncompatibleBranchesError(
                f"{label} is a ConvTranspose, which is not merged with parallel branches"
            )
    convs = [
        channel_conv(form, channels, spatial_rank) if isinstance(form, ChannelAffine) else form
        for form in forms
    ]
    return merge_affine_convs(convs, labels, dtype, input_size)


def channel_conv(affine: ChannelAffine, channels: int, spatial_rank: int) -> AffineConv:
    """A per-channel map as a depthwise ``1x1`` conv (a scale-only kernel of ones)."""
    kernel = np.ones((channels, 1) + (1,) * spatial_rank)
    conv = affine_conv(kernel, groups=channels)
    return scale_and_shift(conv, affine.scale, affine.shift)


def average_pool_conv(
    channels: int,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> AffineConv:
    """AveragePool with ``count_include_pad=1`` (or no pads): a depthwise kernel of ``1/k``."""
    kernel = np.full((channels, 1, *kernel_shape), 1.0 / math.prod(kernel_shape))
    return affine_conv(kernel, strides=strides, dilations=dilations, pads=pads, groups=channels)


def pad_conv(channels: int, pads: Sequence[int], value: np.ndarray | float) -> AffineConv:
    """A constant-mode Pad of the spatial dims: the identity ``1x1`` with ``pads`` whose border
    holds ``value`` (one number, or one per channel)."""
    rank = len(pads) // 2
    identity = affine_conv(np.ones((channels, 1) + (1,) * rank), pads=pads, groups=channels)
    values = per_channel(value, channels, "pad values")
    return evolve(identity, pad_value=values if np.any(values) else None)


def emittable_reason(form: Form) -> str | None:
    """Why ``form`` is not one standard ONNX op, or ``None`` if it is."""
    padded = isinstance(form, AffineConv) and form.is_padded
    if padded and form.pad_value is not None and np.any(form.pad_value):
        return "it pads with a non-zero value, which no ONNX Conv does"
    return None


def multiply_adds(form: Form, channels: int | None = None) -> float:
    """Multiply-adds per output position (all channels): the cost a rewrite must not raise."""
    if isinstance(form, ChannelAffine):
        return float(form.channels or channels or 1)
    if isinstance(form, TransposedConv):
        strides = dict(form.attributes).get("strides") or [1] * form.spatial_rank
        per_input = form.out_channels * form.kernel.shape[0] // form.groups
        return per_input * math.prod(form.kernel.shape[2:]) / math.prod(strides)
    return float(form.out_channels * form.kernel.shape[1] * math.prod(form.kernel_shape))


def describe_form(form: Form) -> str:
    """``"Conv3x3/g4"``, ``"Gemm"``, ``"ConvTranspose4x4"``, ``"Affine"`` for reports."""
    if isinstance(form, ChannelAffine):
        return "Affine"
    if isinstance(form, TransposedConv):
        return "ConvTranspose" + "x".join(str(k) for k in form.kernel.shape[2:])
    if form.spatial_rank == 0:
        return "Linear"
    return conv_label(form.kernel_shape, form.groups, form.strides)


def conv_label(kernel_shape: Sequence[int], groups: int = 1, strides: Sequence[int] = ()) -> str:
    """``"Conv3x3/g4/s2x2"``: a conv as every report labels it (``fuse``, ``inspect``, ``diff``
    and the HTML pictures): its kernel, then its groups and strides where not 1."""
    text = "Conv" + "x".join(str(k) for k in kernel_shape)
    if groups > 1:
        text += f"/g{groups}"
    if any(s != 1 for s in strides):
        text += "/s" + "x".join(str(s) for s in strides)
    return text
