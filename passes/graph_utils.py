"""Small queries and edits on onnx-graphsurgeon graphs shared by the passes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from repvgg_onnx.gs_internals import stored_values

from .mapped_weights import RAW_DTYPES, mapped_view

#: Op domains whose ops have the standard ONNX meaning; ops of any other domain (a custom
#: ``Conv`` of a model-local function, say) are never read as linear ops or folded.
STANDARD_DOMAINS = ("", "ai.onnx")

_OVERRIDABLE = "_repvgg_onnx_overridable"
_READ_ONLY_VALUES = "_repvgg_onnx_values"


def is_standard(node: gs.Node) -> bool:
    return (node.domain or "") in STANDARD_DOMAINS


def mark_overridable(tensor: gs.Tensor) -> None:
    """Record that ``tensor`` is an initializer also listed as a graph input: a caller may feed
    another value at run time, so its value is only a default, not a constant."""
    setattr(tensor, _OVERRIDABLE, True)


def is_overridable(tensor: gs.Tensor) -> bool:
    return bool(getattr(tensor, _OVERRIDABLE, False))


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The tensor's value if it is a constant (an initializer no caller can override).

    Arrays are read-only: an initializer may be shared by several nodes, so passes make new
    constants and never edit one in place. A weight still in its TensorProto's raw bytes is a
    view of them, not a copy, and the proto stays the constant's value, so an untouched weight
    is written back as the bytes it arrived as."""
    if not isinstance(tensor, gs.Constant) or is_overridable(tensor):
        return None
    if isinstance(stored_values(tensor), SparseValues):  # made dense before import
        return None
    values = getattr(tensor, _READ_ONLY_VALUES, None)
    if values is None:
        lazy = stored_values(tensor)
        if isinstance(lazy, LazyValues):
            values = _raw_view(lazy.tensor)
            if values is None and lazy.tensor.data_location == onnx.TensorProto.EXTERNAL:
                return None  # not in memory and not mapped: nothing to read it from
        if values is None:  # loaded aside: the constant keeps its proto, to export as is
            try:
                values = np.asarray(lazy.load() if isinstance(lazy, LazyValues) else lazy)
            except (ValueError, TypeError):  # data that does not fit its type and shape
                return None  # not re-read: what no reader can read, no pass rewrites
            values.flags.writeable = False
        tensor.__dict__[_READ_ONLY_VALUES] = values  # graphsurgeon's __setattr__ is slower
    return values


def forget_values(tensor: gs.Tensor) -> None:
    """Drop the array :func:`constant_values` keeps for ``tensor``, whose values are changing
    hands (a kept reference would keep a weight alive after its new owner let it go)."""
    tensor.__dict__.pop(_READ_ONLY_VALUES, None)


def _raw_view(proto: onnx.TensorProto) -> np.ndarray | None:
    """The tensor's elements as a read-only view of its little-endian ``raw_data`` (or of the
    bytes it was left with in its data file, see :mod:`.mapped_weights`), for the whole-byte
    numeric types numpy and onnx agree on; ``None`` otherwise."""
    dtype = RAW_DTYPES.get(proto.data_type)
    if dtype is None:
        return None
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        return mapped_view(proto, dtype)
    if not proto.HasField("raw_data"):
        return None
    shape = tuple(proto.dims)
    raw = proto.raw_data
    if len(raw) != dtype.itemsize * math.prod(shape):
        return None
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


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


def tensor_map(graph: gs.Graph) -> dict[str, gs.Tensor]:
    """Every named tensor of ``graph`` (not of its subgraphs) by name, as ``graph.tensors()``
    gives it, in a third of its time (no duplicate check, no logging)."""
    found: dict[str, gs.Tensor] = {t.name: t for t in graph.inputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            found[tensor.name] = tensor
        for tensor in node.outputs:
            found[tensor.name] = tensor
    for tensor in graph.outputs:
        found[tensor.name] = tensor
    found.pop("", None)  # omitted optional inputs and outputs
    return found


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
