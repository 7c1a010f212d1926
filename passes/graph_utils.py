"""Small queries and edits on onnx-graphsurgeon graphs shared by the passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.graph.constant_views import (  # noqa: F401  (the passes' one import of them)
    constant_values,
    forget_values,
    is_overridable,
    mark_overridable,
    tensor_map,
)
from repvgg_onnx.graph.unread_nodes import has_subgraph  # noqa: F401

#: Op domains whose ops have the standard ONNX meaning; ops of any other domain (a custom
#: ``Conv`` of a model-local function, say) are never read as linear ops or folded.
STANDARD_DOMAINS = ("", "ai.onnx")


def is_standard(node: gs.Node) -> bool:
    return (node.domain or "") in STANDARD_DOMAINS


def is_omitted(tensor: gs.Tensor) -> bool:
    """An optional input left out (empty name)."""
    return not tensor.name and isinstance(tensor, gs.Variable)


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes ``tensor``, or ``None`` for graph inputs and constants."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(output is tensor for output in graph.outputs)


def use_count(tensor: gs.Tensor) -> int:
    """How many node inputs read ``tensor`` (nodes of subgraphs included)."""
    return sum(1 for node in tensor.outputs for t in node.inputs if t is tensor)


def has_single_use(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """True iff exactly one node input reads ``tensor`` and it is not a graph output."""
    return use_count(tensor) == 1 and not is_graph_output(graph, tensor)


def describe_uses(graph: gs.Graph, tensor: gs.Tensor, besides: gs.Node | None = None) -> str:
    """Who else reads ``tensor``: ``"node 'Relu_3'"``, ``"the graph output"``."""
    others = [f"{node.op} '{node.name}'" for node in tensor.outputs if node is not besides]
    if is_graph_output(graph, tensor):
        others.append("the graph output")
    return ", ".join(others) or "nothing"


def replace_uses(tensor: gs.Tensor, replacement: gs.Tensor) -> None:
    """Make every node that reads ``tensor`` read ``replacement`` instead."""
    for node in list(tensor.outputs):
        for index, value in enumerate(node.inputs):
            if value is tensor:
                node.inputs[index] = replacement


def splice_nodes(graph: gs.Graph, placements: list[tuple[gs.Node, list[gs.Node]]]) -> None:
    """Insert each list of new nodes just before its anchor node, then remove every node
    that no longer has a reader, walking up from the anchors (what ``cleanup`` would remove
    there, without visiting the whole graph).

    Invariant: the graph stays in topological order, provided it was and each new node reads
    only tensors computed before its anchor (or by new nodes placed before it). Graph outputs
    and the nodes computing them are never removed.
    """
    before = {id(anchor): new for anchor, new in placements}
    dead: set[int] = set()
    stack = [anchor for anchor, _ in placements]
    while stack:
        node = stack.pop()
        if id(node) in dead or any(t.outputs or is_graph_output(graph, t) for t in node.outputs):
            continue
        dead.add(id(node))
        producers = [p for t in node.inputs if (p := producer(t)) is not None]
        node.inputs.clear()
        node.outputs.clear()
        stack.extend(producers)
    nodes = []
    for node in graph.nodes:
        nodes.extend(before.get(id(node), ()))
        if id(node) not in dead:
            nodes.append(node)
    graph.nodes = nodes


def ensure_topological_order(graph: gs.Graph) -> None:
    """Sort ``graph`` only if some node reads a tensor that a later node computes."""
    computed: set[int] = set()
    pending = {id(t) for node in graph.nodes for t in node.outputs}
    for node in graph.nodes:
        if any(id(t) in pending and id(t) not in computed for t in node.inputs):
            graph.toposort()
            return
        computed.update(id(t) for t in node.outputs)


def attribute(node: gs.Node, name: str, default):
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def static_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The tensor's shape if every dim is a known integer, else ``None``."""
    shape = tensor.shape
    if shape is None:
        return None
    for d in shape:  # a loop: a generator costs more than the check on a shape of rank 4
        if not isinstance(d, int | np.integer) or d < 0:
            return None
    return tuple(int(d) for d in shape)


def broadcasts_into(shape: Sequence, target: Sequence | None) -> bool:
    """``shape`` broadcasts one way into ``target`` (``x ∘ c`` keeps ``x``'s shape when ``c``
    has ``shape`` and ``x`` has ``target``): no more dims, and each of its dims, aligned from
    the right, is 1 or the same known size."""
    if target is None or len(shape) > len(target):
        return False
    return all(
        size == 1
        or (
            isinstance(size, int | np.integer)
            and isinstance(known, int | np.integer)
            and size == known
        )
        for size, known in zip(reversed(shape), reversed(target), strict=False)
    )


def rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def dim(tensor: gs.Tensor, axis: int) -> int | None:
    """One dim of the tensor's shape if known, else ``None``."""
    shape = tensor.shape
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    value = shape[axis]
    if type(value) is int:
        return value if value >= 0 else None
    return int(value) if isinstance(value, int | np.integer) and value >= 0 else None


class UniqueNames:
    """Hands out tensor and node names that do not clash with any name in the graph (the
    names taken are gathered on the first call, so a pass that names nothing pays nothing)."""

    def __init__(self, graph: gs.Graph) -> None:
        self._graph = graph
        self._taken: set[str] | None = None

    def __call__(self, wanted: str) -> str:
        if self._taken is None:
            self._taken = set(tensor_map(self._graph)) | {n.name for n in self._graph.nodes}
        name, suffix = wanted, 1
        while name in self._taken:
            name = f"{wanted}_{suffix}"
            suffix += 1
        self._taken.add(name)
        return name
