"""The per-channel affine map ``y[:, c] = s[c]·x[:, c] + t[c]`` as a normal form.

Inference BatchNormalization, a ``Mul``/``Div``/``Add``/``Sub`` by a per-channel constant and the
identity are this form. Composed after any form it scales that form's outputs (O(C): a
kernel keeps the scale beside it); read by a convolution it scales the kernel's input columns
and moves its shift into the bias, which is exact only where no padding sees the shift. It is
written as a ``Mul`` and an ``Add`` (never a BatchNormalization: a deploy-form model has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repvgg_onnx.algebra.affine_conv import (
    AffineConv,
    affine_conv,
    auto_pad_reason,
    input_channel_index,
    materialize,
    pad_values,
    per_channel,
    require_border_value,
    scale_and_shift,
)
from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import (
    LinearForm,
    NodeSpec,
    NotComposableError,
    NotEmittableError,
    cast,
)


@dataclass(frozen=True)
class ChannelAffine(LinearForm):
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
    def in_channels(self) -> int | None:
        return self.channels

    @property
    def out_channels(self) -> int | None:
        return self.channels

    @property
    def spatial_rank(self) -> None:
        return None

    @property
    def is_identity(self) -> bool:
        return self is IDENTITY or bool((self.scale == 1.0).all() and not self.shift.any())

    def channel_map(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scale, self.shift

    def compose(self, inner: LinearForm, rtol: float) -> LinearForm:
        """``s ⊙ inner(x) + t``: the inner form scales its outputs."""
        return inner.scale_outputs(self.scale, self.shift)

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> ChannelAffine:
        return channel_affine(scale * self.scale, scale * self.shift + shift)

    def read_by(self, conv: AffineConv, rtol: float) -> AffineConv:
        """``conv(s ⊙ x + t)``: ``W'[o, j] = W[o, j]·s[j]``, ``b' = b + Σ W·t``.

        Exact when the conv reads no padding, or when ``t`` equals its pad value: the composed
        conv pads ``x`` with zeros, which ``s ⊙ 0 + t`` maps to ``t``.
        """
        if not conv.has_explicit_pads and not np.all(self.shift == 0.0):
            raise NotComposableError(auto_pad_reason(conv))
        channels = conv.in_channels
        shift = per_channel(self.shift, channels, "channel shifts")
        if conv.has_explicit_pads and any(conv.pads):
            require_border_value(shift, pad_values(conv), rtol)
        conv = materialize(conv)
        scale = per_channel(self.scale, channels, "channel scales")
        in_index = input_channel_index(conv)
        spatial = (1,) * conv.spatial_rank
        kernel = conv.kernel * scale[in_index].reshape(in_index.shape + spatial)
        taps = conv.kernel.reshape((*conv.kernel.shape[:2], -1)).sum(axis=2)
        bias = conv.bias + np.sum(taps * shift[in_index], axis=1)
        return evolve(conv, kernel=kernel, bias=bias, pad_value=None)

    def as_summand(self, label: str, channels: int, spatial_rank: int) -> AffineConv:
        """A depthwise ``1x1`` conv (a scale-only kernel of ones)."""
        kernel = np.ones((channels, 1) + (1,) * spatial_rank)
        return scale_and_shift(affine_conv(kernel, groups=channels), self.scale, self.shift)

    def multiply_adds(self, channels: int | None = None) -> float:
        return float(self.channels or channels or 1)

    def node_specs(
        self, dtype: np.dtype, channels_last: bool, source_rank: int | None
    ) -> list[NodeSpec]:
        """``Mul`` then ``Add`` (each left out when it is the identity), with constants shaped to
        broadcast along the channel axis: ``[C]`` for ``[..., C]`` and ``[N, C]``, ``[C, 1, …]``
        for ``[N, C, …]``."""
        channels = self.channels
        if channels is None:
            shape: tuple[int, ...] = ()
        elif channels_last or source_rank == 2:
            shape = (channels,)
        elif source_rank is None:
            raise NotEmittableError("the rank of its input is unknown")
        else:
            shape = (channels,) + (1,) * (source_rank - 2)
        count = channels or 1
        scale = per_channel(self.scale, count).reshape(shape)
        shift = per_channel(self.shift, count).reshape(shape)
        specs = []
        if not np.all(scale == 1):
            specs.append(NodeSpec("Mul", {}, (("scale", cast(scale, dtype)),)))
        if np.any(shift):
            specs.append(NodeSpec("Add", {}, (("shift", cast(shift, dtype)),)))
        return specs

    def describe(self) -> str:
        return "Affine"


def channel_affine(scale=1.0, shift=0.0) -> ChannelAffine:
    """A :class:`ChannelAffine` from scalars or per-channel vectors (broadcast to each other)."""
    scale = np.asarray(scale, np.float64).reshape(-1)
    shift = np.asarray(shift, np.float64).reshape(-1)
    if scale.size != shift.size and 1 not in (scale.size, shift.size):
        raise ValueError(f"{scale.size} scales and {shift.size} shifts")
    return ChannelAffine(scale, shift)


IDENTITY = channel_affine()
