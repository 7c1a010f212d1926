"""A ConvTranspose with constant weights as a normal form.

It absorbs per-channel maps after it (a scale kept beside the kernel, a new bias) and nothing
else: composing into its input side, or merging it with parallel branches, is refused. Its
geometry attributes are kept verbatim for the node that replaces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from repvgg_onnx.algebra.affine_conv import per_channel
from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import (
    IncompatibleBranchesError,
    LinearForm,
    NodeSpec,
    NotComposableError,
    cast,
)

_ONLY_AFTER = "a ConvTranspose only absorbs per-channel maps after it"


@dataclass(frozen=True)
class TransposedConv(LinearForm):
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

    def compose(self, inner: LinearForm, rtol: float) -> LinearForm:
        if inner.is_identity:
            return self
        raise NotComposableError(_ONLY_AFTER)

    def read_by(self, conv: LinearForm, rtol: float) -> LinearForm:
        raise NotComposableError(_ONLY_AFTER)

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> TransposedConv:
        """``W' = W·s`` per output channel (kept as a factor), ``b' = b·s + t``."""
        channels = self.out_channels
        scale = per_channel(scale, channels, "channel scales")
        return evolve(
            self,
            bias=self.bias * scale + per_channel(shift, channels, "channel shifts"),
            scale=scale if self.scale is None else self.scale * scale,
        )

    def as_summand(self, label: str, channels: int, spatial_rank: int) -> LinearForm:
        raise IncompatibleBranchesError(
            f"{label} is a ConvTranspose, which is not merged with parallel branches"
        )

    def multiply_adds(self, channels: int | None = None) -> float:
        strides = dict(self.attributes).get("strides") or [1] * self.spatial_rank
        per_input = self.out_channels * self.kernel.shape[0] // self.groups
        return per_input * math.prod(self.kernel.shape[2:]) / math.prod(strides)

    def node_specs(
        self, dtype: np.dtype, channels_last: bool, source_rank: int | None
    ) -> list[NodeSpec]:
        """One ConvTranspose, the output scale multiplied into the kernel's columns."""
        kernel = self.kernel.astype(np.float64)
        if self.scale is not None:
            in_per_group = self.in_channels // self.groups
            out_per_group = kernel.shape[1]
            group = np.arange(self.in_channels) // in_per_group
            columns = group[:, None] * out_per_group + np.arange(out_per_group)[None, :]
            kernel = kernel * self.scale[columns].reshape(columns.shape + (1,) * self.spatial_rank)
        attrs = dict(self.attributes) | {"group": self.groups}
        constants = (("weight", cast(kernel, dtype)), ("bias", cast(self.bias, dtype)))
        return [NodeSpec("ConvTranspose", attrs, constants)]

    def describe(self) -> str:
        return "ConvTranspose" + "x".join(str(k) for k in self.kernel.shape[2:])
