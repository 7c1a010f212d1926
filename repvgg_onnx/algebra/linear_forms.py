"""The algebra of affine regions over every form (pure numpy, float64 inside).

A region of linear ops computes ``y = A(x) + b`` from one tensor ``x``. Three forms cover
every op a region holds, each a :class:`~repvgg_onnx.algebra.form.LinearForm` in its own
module:

- :class:`~repvgg_onnx.algebra.channel_affine.ChannelAffine` — ``y[:, c] = s[c]·x[:, c] + t[c]``
  on the channel axis: inference BatchNormalization, a ``Mul``/``Div``/``Add``/``Sub`` by a
  per-channel constant, the identity;
- :class:`~repvgg_onnx.algebra.affine_conv.AffineConv` — a convolution (Conv, AveragePool,
  Pad), or with no spatial dims a linear map of the channel axis (Gemm, MatMul);
- :class:`~repvgg_onnx.algebra.transposed_conv.TransposedConv` — a ConvTranspose, which only
  absorbs per-channel maps after it.

:func:`compose` writes ``outer(inner(x))`` as one form and raises :class:`NotComposableError`
(one sentence) when that is not exact. The classic trap is padding: an outer conv pads its
input with zeros (or a Pad's value), while the composed conv would compute the inner map
there; that is exact only for a pointwise inner map whose value on a zero input, its bias,
equals the pad value. :func:`sum_forms` adds forms of the same input (signs and scales are
per-channel maps composed on first). :func:`multiply_adds` is the cost a rewrite must not
increase. Each of these asks the forms; none knows which forms exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from repvgg_onnx.algebra.affine_conv import AffineConv, affine_conv, per_channel
from repvgg_onnx.algebra.channel_affine import IDENTITY, ChannelAffine, channel_affine
from repvgg_onnx.algebra.conv_merge import merge_affine_convs
from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import LinearForm, NotComposableError

Form = LinearForm

__all__ = [
    "IDENTITY",
    "ChannelAffine",
    "Form",
    "NotComposableError",
    "average_pool_conv",
    "channel_affine",
    "compose",
    "composed_cost",
    "multiply_adds",
    "pad_conv",
    "sum_forms",
]


def compose(outer: Form, inner: Form, rtol: float = 1e-5) -> Form:
    """The one form equal to ``outer(inner(x))``; raises :class:`NotComposableError` if none is.

    ``rtol`` is how closely a pointwise inner map's border value must match the outer op's
    pad value (their float32 copies are computed by different code, so equality is too strict).
    """
    channels_in, channels_out = outer.in_channels, inner.out_channels
    if None not in (channels_in, channels_out) and channels_in != channels_out:
        raise NotComposableError(f"{channels_out} channels feed an op that expects {channels_in}")
    return outer.compose(inner, rtol)


def composed_cost(outer: Form, inner: Form, channels: int | None = None) -> float:
    """:func:`multiply_adds` of ``compose(outer, inner)``, from shapes alone (nothing computed)."""
    return outer.composed_cost(inner, channels)


def multiply_adds(form: Form, channels: int | None = None) -> float:
    """Multiply-adds per output position (all channels): the cost a rewrite must not raise."""
    return form.multiply_adds(channels)


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

    Per-channel maps sum as such; with any other form among them each becomes an affine conv
    (:meth:`~repvgg_onnx.algebra.form.LinearForm.as_summand`: a per-channel map a depthwise
    ``1x1``) and :func:`~repvgg_onnx.algebra.conv_merge.merge_affine_convs` places kernels by
    their begin pads (``input_size``, the static spatial size of ``x`` where known, decides
    output sizes that depend on it) and sums them, storing the result as ``dtype``. The forms
    that are not per-channel maps are asked first, so a refusal names them before a per-channel
    map's channel count.
    """
    maps = [form.channel_map() for form in forms]
    if all(m is not None for m in maps):
        return channel_affine(
            np.sum([per_channel(scale, channels) for scale, _ in maps], axis=0),
            np.sum([per_channel(shift, channels) for _, shift in maps], axis=0),
        )
    order = sorted(range(len(forms)), key=lambda i: maps[i] is not None)
    summands = {i: forms[i].as_summand(labels[i], channels, spatial_rank) for i in order}
    convs = [summands[i] for i in range(len(forms))]
    return merge_affine_convs(convs, labels, dtype, input_size)


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
