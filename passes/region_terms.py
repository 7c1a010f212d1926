"""The pieces of a region plan: terms (a form of one source tensor, and the nodes it stands
for), sums of terms, and what the rewrite creates; with the small shape and type facts the
planner reads off tensors. No graph edits here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import NodeSpec
from repvgg_onnx.algebra.linear_forms import Form, channel_affine, compose

from .graph_utils import dim, rank, static_shape
from .pass_result import Refusal
from .readers import Kind, Layout, LinearOp

#: Ops with a weight tensor: two of them in a row are two layers, not a fold missed.
WEIGHTED = frozenset({Kind.CONV, Kind.CONV_TRANSPOSE, Kind.GEMM, Kind.MATMUL})


@dataclass(frozen=True)
class Term:
    """``form(source)``: one summand of a region, and the graph nodes it stands for.

    ``weighted`` says whether a Conv, Gemm, MatMul or ConvTranspose is among them: a failed
    composition of two weighted terms is two layers, not a missed fold, and is not reported.
    """

    source: gs.Tensor
    form: Form
    labels: tuple[str, ...] = ()
    nodes: tuple[gs.Node, ...] = ()
    cost: float = 0.0
    layout: Layout = Layout.ANY
    negative: bool = False
    weighted: bool = False
    reshaped: bool = False

    @property
    def is_raw(self) -> bool:
        """The source itself, untouched: no node, no map."""
        return not self.nodes and self.form.is_identity

    def describe(self) -> str:
        """``"Conv3x3+BN"``, ``"−BN"``, ``"Identity"``."""
        return ("−" if self.negative else "") + ("+".join(self.labels) or "Identity")


@dataclass(frozen=True)
class Expression:
    """A tensor as ``Σ terms``; ``nodes`` are the Add/Sub nodes that summed them."""

    terms: tuple[Term, ...]
    nodes: tuple[gs.Node, ...] = ()
    cost: float = 0.0
    final: gs.Node | None = None
    """A Reshape/Flatten that ends the region: the rewritten sum is reshaped like it."""

    @property
    def all_nodes(self) -> tuple[gs.Node, ...]:
        final = (self.final,) if self.final is not None else ()
        return self.nodes + tuple(n for term in self.terms for n in term.nodes) + final

    @property
    def total_cost(self) -> float:
        return self.cost + sum(term.cost for term in self.terms)

    def by_source(self) -> list[list[Term]]:
        groups: dict[int, list[Term]] = {}
        for term in self.terms:
            groups.setdefault(id(term.source), []).append(term)
        return list(groups.values())


@dataclass(frozen=True)
class Emission:
    """The nodes the rewrite creates for one group of terms (none: the source itself)."""

    source: gs.Tensor
    specs: tuple[NodeSpec, ...]
    label: str

    @property
    def node_count(self) -> int:
        return len(self.specs)


@dataclass(frozen=True)
class RegionPlan:
    """Replace ``nodes`` (the region) by ``emissions`` summed, writing ``root``."""

    root: gs.Tensor
    root_node: gs.Node
    nodes: tuple[gs.Node, ...]
    emissions: tuple[Emission, ...]
    branches: tuple[str, ...]
    result: str
    final: gs.Node | None = None


def positions_ratio(tensor: gs.Tensor, root: gs.Tensor) -> float:
    """Spatial positions of ``tensor`` per position of ``root`` (1 when unknown)."""
    a, b = static_shape(tensor), static_shape(root)
    if a is None or b is None or len(a) < 3 or len(b) < 3:
        return 1.0
    return math.prod(a[2:]) / max(math.prod(b[2:]), 1)


def meet(a: Layout, b: Layout) -> Layout | None:
    """The layout two views of one tensor agree on, or ``None`` if they conflict."""
    if a is Layout.ANY:
        return b
    if b is Layout.ANY or a is b:
        return a
    return None


#: Where each layout keeps the channels, for reasons.
CHANNEL_AXIS = {Layout.CHANNELS_FIRST: "axis 1", Layout.CHANNELS_LAST: "the last axis"}


def layouts_conflict(first: str, first_layout: Layout, second: str, second_layout: Layout) -> str:
    """Why two maps of one tensor whose layouts do not :func:`meet` are not one op."""
    return (
        f"the {first} works on {CHANNEL_AXIS[first_layout]} and the {second} on "
        f"{CHANNEL_AXIS[second_layout]}, so no one op computes both"
    )


def negate(term: Term) -> Term:
    return evolve(term, form=compose(channel_affine(-1.0), term.form), negative=not term.negative)


def node_text(op: LinearOp) -> str:
    return f"{op.node.op} '{op.node.name}'"


def border_rtol(op: LinearOp) -> float:
    return 1e-3 if op.dtype is not None and np.dtype(op.dtype).itemsize <= 2 else 1e-5


def opset_of(graph: gs.Graph) -> int:
    return int(graph.opset) if graph.opset else 17


def channels_of(tensor: gs.Tensor) -> int | None:
    return dim(tensor, 1) if (rank(tensor) or 0) >= 2 else None


def shape_facts(terms, source: gs.Tensor, layout: Layout) -> tuple[int, int] | Refusal:
    """``(spatial rank, channels)`` of a sum of terms of ``source``: as the first term whose form
    fixes them says, else from the forms' channels and ``source``'s shape."""
    fixed = (t.form.summand_geometry for t in terms)
    geometry = next((g for g in fixed if g is not None), None)
    channel_counts = [t.form.in_channels for t in terms] + [t.form.out_channels for t in terms]
    channels = next((c for c in channel_counts if c is not None), None)
    if geometry is not None:
        return geometry
    source_rank = rank(source)
    if layout is Layout.CHANNELS_LAST or source_rank == 2:
        spatial = 0
        channels = channels or dim(source, -1)
    elif source_rank is not None:
        spatial = source_rank - 2
        channels = channels or dim(source, 1)
    else:
        return Refusal.because(f"the rank of '{source.name}' is unknown")
    if channels is None:
        return Refusal.because(f"the channel count of '{source.name}' is unknown")
    return spatial, channels


def spatial_size(source: gs.Tensor, spatial_rank: int) -> tuple[int | None, ...]:
    """The static sizes of ``source``'s last ``spatial_rank`` dims (``None`` where unknown)."""
    source_rank = rank(source)
    if not spatial_rank or source_rank is None or source_rank < spatial_rank:
        return (None,) * spatial_rank
    return tuple(dim(source, axis) for axis in range(source_rank - spatial_rank, source_rank))


def same_leading_dims(source: gs.Tensor, root: gs.Tensor) -> bool:
    a, b = source.shape, root.shape
    if a is None or b is None or len(a) != len(b):
        return False
    return all(x == y and x is not None for x, y in zip(a[:-1], b[:-1], strict=True))


def dtype_of(term: Term) -> np.dtype:
    """The element type of the source tensor, else of the first weights in the term."""
    if term.source.dtype is not None:
        try:
            dtype = np.dtype(term.source.dtype)
            if np.issubdtype(dtype, np.floating):
                return dtype
        except TypeError:
            pass
    for node in term.nodes:
        for tensor in node.inputs[1:]:
            if isinstance(tensor, gs.Constant) and np.issubdtype(tensor.dtype, np.floating):
                return np.dtype(tensor.dtype)
    return np.dtype(np.float32)
