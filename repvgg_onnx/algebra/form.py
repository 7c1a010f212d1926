"""The questions every normal form answers, and the plain data of the nodes that compute one.

A region of linear ops reads as ``y = A(x) + b`` in one of a few *forms* (a per-channel map, an
affine convolution — a matrix when it has no spatial dims —, a transposed convolution). Each
form is a :class:`LinearForm`: it knows its channels, how to compose with an inner form, how it
becomes a term of a sum, what it costs, which ONNX nodes compute it (as :class:`NodeSpec`, plain
data: an op type, its attributes, its arrays — nothing here imports ONNX) and how reports name
it. So a new form is one class in one module; the planner and the rewrite only ask forms.

Composition is double dispatch: ``outer.compose(inner)`` is the outer form's answer, which may
ask the inner one (a convolution asks ``inner.read_by(conv)``). Where a form cannot answer, it
raises one of the errors below, whose message is one sentence a user understands; the passes
turn it into a refusal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class FormError(ValueError):
    """A question a form cannot answer; the message is one sentence a user understands."""


class NotComposableError(FormError):
    """``outer(inner(x))`` is not one form of the algebra; the message says why."""


class IncompatibleBranchesError(FormError):
    """The branches of a sum do not compute one convolution; the message names the branches at
    fault."""


class NotEmittableError(FormError):
    """A form cannot be written as nodes here (the message says why: an unknown rank, say)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node to create: op type, attributes, and constant inputs after the data input."""

    op: str
    attrs: dict
    constants: tuple[tuple[str, np.ndarray], ...]


def cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``; an overflow becomes ``inf``, which the caller refuses."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values).astype(dtype)


class LinearForm(ABC):
    """``y = A(x) + b`` on the channel axis of ``x``: one normal form of the algebra.

    Invariant: a form is immutable, and every answer is computed from it alone (float64
    inside); nothing here edits an array the form holds.
    """

    # Channels and shape.

    @property
    @abstractmethod
    def in_channels(self) -> int | None:
        """The channels it reads (``None``: any count, the same map on every channel)."""

    @property
    @abstractmethod
    def out_channels(self) -> int | None:
        """The channels it writes (``None``: as many as it reads)."""

    @property
    @abstractmethod
    def spatial_rank(self) -> int | None:
        """Its spatial dims (``0`` for a map of the channel axis alone; ``None``: any rank)."""

    @property
    def is_identity(self) -> bool:
        """``y = x`` exactly (composing with it changes nothing)."""
        return False

    def channel_map(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(scale, shift)`` if the form is ``y[:, c] = scale[c]·x[:, c] + shift[c]`` (arrays of
        one element or one per channel), else ``None``: only such a map distributes over the
        terms of a sum it reads."""
        return None

    # Composition.

    @abstractmethod
    def compose(self, inner: LinearForm, rtol: float) -> LinearForm:
        """The one form equal to ``self(inner(x))`` (channel counts already agree), or
        :class:`NotComposableError`. ``rtol``: how closely a border value must match a pad."""

    @abstractmethod
    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> LinearForm:
        """The form equal to ``scale ⊙ self(x) + shift`` (per output channel)."""

    def read_by(self, conv: LinearForm, rtol: float) -> LinearForm:
        """The form equal to ``conv(self(x))``, for an affine convolution ``conv`` (which asks
        its inner form this), or :class:`NotComposableError`."""
        raise NotComposableError(f"a {conv.describe()} cannot read a {self.describe()}")

    # Sums.

    @property
    def summand_geometry(self) -> tuple[int, int] | None:
        """``(spatial rank, input channels)`` the form fixes for a sum it is a term of, or
        ``None`` if it adapts to the sum's (a per-channel map) or is never summed."""
        return None

    @abstractmethod
    def as_summand(self, label: str, channels: int, spatial_rank: int) -> LinearForm:
        """The form as an affine convolution of a ``channels``-channel, ``spatial_rank``-d input
        (a term :func:`~repvgg_onnx.algebra.conv_merge.merge_affine_convs` sums), or
        :class:`IncompatibleBranchesError` naming ``label``."""

    # Cost.

    @abstractmethod
    def multiply_adds(self, channels: int | None = None) -> float:
        """Multiply-adds per output position (all channels): the cost a rewrite must not raise.
        ``channels`` counts a map that is the same on every channel."""

    def composed_cost(self, inner: LinearForm, channels: int | None) -> float:
        """:meth:`multiply_adds` of ``self.compose(inner)``, from shapes alone."""
        return self.multiply_adds(channels)

    def cost_read_by(self, conv: LinearForm, channels: int | None) -> float:
        """:meth:`multiply_adds` of ``conv.compose(self)``, from shapes alone."""
        return conv.multiply_adds(channels)

    def input_positions_per_output(self) -> float:
        """Positions of its input per position of its output (a strided conv reads more)."""
        return 1.0

    # Emission.

    def emittable_reason(self) -> str | None:
        """Why no standard ONNX op computes the form, or ``None`` if one does."""
        return None

    @abstractmethod
    def node_specs(
        self, dtype: np.dtype, channels_last: bool, source_rank: int | None
    ) -> list[NodeSpec]:
        """The nodes computing the form on a tensor of rank ``source_rank`` (channel axis last
        if ``channels_last``), weights cast to ``dtype`` (an overflow is left as ``inf``), or
        :class:`NotEmittableError`. No node for the identity."""

    # Description.

    @abstractmethod
    def describe(self) -> str:
        """``"Conv3x3/g4"``, ``"Linear"``, ``"ConvTranspose4x4"``, ``"Affine"``: the form as
        reports name it."""

    def label(self, specs: Sequence[NodeSpec]) -> str:
        """What reports call the nodes ``specs`` that compute the form: their op types."""
        return "+".join(spec.op for spec in specs) or "Identity"
