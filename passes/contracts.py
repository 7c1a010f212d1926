"""What each pass requires of the graph it is given and ensures of the graph it leaves.

A *check* is a pure function ``check(graph, before) -> list[str]`` over a graphsurgeon graph
and the :class:`Snapshot` taken of it before the pass; it returns its violations, each one
sentence naming the node or tensor at fault (none: the graph holds). A pass declares its
:class:`Contract` next to its definition with :func:`contract`, which only sets an attribute:
the fixpoint runs passes as they are and checks nothing. :func:`checked` wraps a pass so its
``requires`` are checked before each call and its ``ensures`` after (the test suite does so
on every committed fixture); the wrapper also holds the pass to its :class:`PassResult`
(``modified`` iff the graph changed).

Checks look into control-flow bodies where a pass could break them there too (order,
dangling reads, created BatchNormalization); names and the interface are the top graph's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from typing import TypeVar

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.graph.constant_views import stored_array

from .graph_utils import is_standard
from .pass_result import PassResult


@dataclass(frozen=True)
class Snapshot:
    """What the checks compare against: the graph as it was before the pass.

    It keeps the node and tensor objects themselves (so their ids stay theirs), each node's
    inputs and outputs as they were, every tensor's name and every constant's values."""

    nodes: dict[int, gs.Node]
    inputs: dict[int, tuple[gs.Tensor, ...]]
    outputs: dict[int, tuple[gs.Tensor, ...]]
    names: dict[int, tuple[gs.Tensor, str]]
    interface: tuple[tuple[str, str, str, str], ...]
    constants: dict[int, tuple[gs.Constant, np.ndarray]] = field(repr=False)

    @classmethod
    def of(cls, graph: gs.Graph) -> Snapshot:
        nodes = {id(node): node for node in _all_nodes(graph)}
        tensors = {id(t): t for t in _all_tensors(graph)}
        constants = {}
        for key, tensor in tensors.items():
            values = _current_values(tensor)
            if values is not None:
                constants[key] = (tensor, np.array(values, copy=True))
        return cls(
            nodes=nodes,
            inputs={key: tuple(node.inputs) for key, node in nodes.items()},
            outputs={key: tuple(node.outputs) for key, node in nodes.items()},
            names={key: (tensor, tensor.name) for key, tensor in tensors.items()},
            interface=_interface(graph),
            constants=constants,
        )


Check = Callable[[gs.Graph, Snapshot], list[str]]
PassFunction = Callable[[gs.Graph], PassResult]
_Declared = TypeVar("_Declared", bound=Callable)


@dataclass(frozen=True)
class Contract:
    """The checks that must hold before a pass runs (``requires``) and after (``ensures``)."""

    requires: tuple[Check, ...] = ()
    ensures: tuple[Check, ...] = ()


#: The attribute :func:`contract` sets on a pass.
CONTRACT_ATTRIBUTE = "contract"


def contract(
    requires: tuple[Check, ...] = (), ensures: tuple[Check, ...] = ()
) -> Callable[[_Declared], _Declared]:
    """Declare a pass's contract: sets ``pass.contract``, returns the pass itself unchanged."""

    def declare(run: _Declared) -> _Declared:
        setattr(run, CONTRACT_ATTRIBUTE, Contract(requires, ensures))
        return run

    return declare


def same_contract_as(wrapped: Callable) -> Callable[[_Declared], _Declared]:
    """Declare for a pass that wraps ``wrapped`` (same graph edits) ``wrapped``'s contract."""
    declared = contract_of(wrapped)
    if declared is None:
        raise ValueError(f"{wrapped.__name__} declares no contract to share.")
    return contract(declared.requires, declared.ensures)


def contract_of(run: Callable) -> Contract | None:
    return getattr(run, CONTRACT_ATTRIBUTE, None)


class ContractViolation(AssertionError):
    """A pass was given, or left, a graph its contract rules out."""


def checked(run: PassFunction) -> PassFunction:
    """``run`` with its contract checked on every call: ``requires`` before, ``ensures`` and
    an honest :attr:`PassResult.modified` after; a violation raises
    :class:`ContractViolation` listing them all, each prefixed by the pass's name."""
    declared = contract_of(run)
    if declared is None:
        raise ValueError(f"pass {run.__name__} declares no contract; add @contract(...).")

    @wraps(run)
    def checked_run(graph: gs.Graph) -> PassResult:
        before = Snapshot.of(graph)
        _raise(run, "requires", [v for check in declared.requires for v in check(graph, before)])
        result = run(graph)
        found = [v for check in declared.ensures for v in check(graph, before)]
        _raise(run, "ensures", found + result_matches_graph(graph, before, result))
        return result

    return checked_run


def _raise(run: Callable, part: str, violations: list[str]) -> None:
    if violations:
        lines = "\n".join(f"  {run.__name__} {part}: {v}" for v in violations)
        raise ContractViolation(f"{len(violations)} contract violation(s):\n{lines}")


# --- the checks -----------------------------------------------------------------------------


def topologically_ordered(graph: gs.Graph, before: Snapshot | None = None) -> list[str]:
    """Every node (and body) reads only tensors written by an earlier node, graph inputs,
    constants and omitted optionals ("") — here: nothing reads a tensor that it or a later
    node writes (a tensor no node writes is :func:`no_dangling_tensors`' finding)."""
    return [
        f"{reader} reads '{tensor.name}' before {_node(writer)} writes it"
        for reader, tensor, writer in _reads(graph)
        if writer is not None
    ]


def no_dangling_tensors(graph: gs.Graph, before: Snapshot | None = None) -> list[str]:
    """No node reads a variable that no node writes and that is no graph input; every output
    of the graph (or of a body) is written by a node, or is an input or a constant."""
    return [
        f"{reader} '{tensor.name}' is written by no node"
        if reader.endswith(" output")
        else f"{reader} reads '{tensor.name}', which no node writes and no graph input provides"
        for reader, tensor, writer in _reads(graph)
        if writer is None
    ]


def interface_unchanged(graph: gs.Graph, before: Snapshot) -> list[str]:
    """Graph inputs and outputs keep their names, element types and shapes, in order."""
    now = _interface(graph)
    if now == before.interface:
        return []
    was, is_ = set(before.interface), set(now)
    found = [
        f"graph {role} '{name}' ({dtype}, {shape}) is gone"
        for role, name, dtype, shape in before.interface
        if (role, name, dtype, shape) not in is_
    ]
    found += [
        f"graph {role} '{name}' ({dtype}, {shape}) is new"
        for role, name, dtype, shape in now
        if (role, name, dtype, shape) not in was
    ]
    return found or ["the graph inputs or outputs are in another order"]


def names_kept(graph: gs.Graph, before: Snapshot) -> list[str]:
    """Every tensor of the graph before the pass that a node still reads, or that is a graph
    output, keeps its name; a node that was there before and now reads a variable the pass
    created reads it under the name of the tensor it replaces (a rewrite reuses the replaced
    tensor's name); no two tensors share a name and no name is written twice."""
    found = []
    for tensor in _read_tensors(graph):
        kept = before.names.get(id(tensor))
        if kept is not None and tensor.name != kept[1]:
            found.append(f"tensor '{kept[1]}' is now named '{tensor.name}'")
    for node in graph.nodes:
        was = before.inputs.get(id(node))
        if was is None:
            continue
        for old, new in zip(was, node.inputs, strict=False):
            created = id(new) not in before.names and isinstance(new, gs.Variable)
            if new is not old and created and new.name != old.name:
                found.append(
                    f"{_node(node)} now reads the new tensor '{new.name}' "
                    f"where it read '{old.name}'; a rewrite keeps the replaced tensor's name"
                )
    return found + _shared_names(graph)


def no_batchnorm_created(graph: gs.Graph, before: Snapshot) -> list[str]:
    """No BatchNormalization node that was not in the graph before the pass."""
    return [
        f"{_node(node)} is new: the pass created a BatchNormalization"
        for node in _all_nodes(graph)
        if node.op == "BatchNormalization" and id(node) not in before.nodes
    ]


def constants_unedited(graph: gs.Graph, before: Snapshot) -> list[str]:
    """No constant that was in the graph before the pass holds other values now (passes make
    new constants, never edit one in place: exporters share initializers between nodes)."""
    found = []
    for tensor in _all_tensors(graph):
        kept = before.constants.get(id(tensor))
        if kept is None:
            continue
        if not _same_values(_current_values(tensor), kept[1]):
            found.append(f"constant '{tensor.name}' was edited in place")
    return found


def sums_are_binary(graph: gs.Graph, before: Snapshot | None = None) -> list[str]:
    """No standard-domain ``Sum`` of more than one input is left (canonicalize makes each a
    chain of ``Add``)."""
    return [
        f"{_node(node)} adds {len(node.inputs)} inputs at once"
        for node in graph.nodes
        if node.op == "Sum" and is_standard(node) and len(node.inputs) > 1
    ]


def result_matches_graph(graph: gs.Graph, before: Snapshot, result: PassResult) -> list[str]:
    """The pass reports ``modified`` iff it changed a node, a node's inputs or outputs, or a
    graph input or output (the fixpoint stops on a round that reports no change)."""
    changed = _first_change(graph, before)
    if changed is not None and not result.modified:
        return [f"the pass changed the graph ({changed}) but reports no change"]
    if changed is None and result.modified:
        return ["the pass reports a change but the graph's nodes and edges are as before"]
    return []


#: What every pass keeps whatever it rewrites.
WELL_FORMED: tuple[Check, ...] = (topologically_ordered, no_dangling_tensors)
KEEPS_INTERFACE_AND_NAMES: tuple[Check, ...] = (
    *WELL_FORMED,
    interface_unchanged,
    names_kept,
    no_batchnorm_created,
    constants_unedited,
)


# --- helpers ---------------------------------------------------------------------------------


def _all_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    """The graph's nodes and those of every body within them."""
    for node in graph.nodes:
        yield node
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _all_nodes(value)


def _all_tensors(graph: gs.Graph) -> list[gs.Tensor]:
    """Every tensor a node (of the graph or a body) reads or writes, and the graph's inputs and
    outputs, once each."""
    tensors = {id(t): t for t in (*graph.inputs, *graph.outputs)}
    for node in _all_nodes(graph):
        for tensor in (*node.inputs, *node.outputs):
            tensors[id(tensor)] = tensor
    return list(tensors.values())


def _read_tensors(graph: gs.Graph) -> list[gs.Tensor]:
    """The tensors the graph's nodes read and its outputs, once each."""
    tensors = {id(t): t for node in graph.nodes for t in node.inputs}
    tensors.update((id(t), t) for t in graph.outputs)
    return list(tensors.values())


def _reads(
    graph: gs.Graph,
    available: frozenset[int] = frozenset(),
    outer: dict | None = None,
    owner: str = "graph",
) -> Iterator[tuple[str, gs.Tensor, gs.Node | None]]:
    """Each read of a variable not yet computed where it is read: ``(reader, tensor,
    writer)``, the reader a node or ``"<owner> output"`` (a graph's outputs are read after its
    last node), the writer the node writing it later (in this graph or an enclosing one) or
    ``None`` if no node writes it. Bodies see what their graph computed before the node that
    holds them."""
    writers = dict(outer or {})
    writers.update((id(t), node) for node in graph.nodes for t in node.outputs)
    done = set(available) | {id(t) for t in graph.inputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            if _unavailable(tensor, done):
                yield _node(node), tensor, writers.get(id(tensor))
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from _reads(value, frozenset(done), writers, f"body '{value.name}'")
        done.update(id(t) for t in node.outputs)
    for tensor in graph.outputs:
        if _unavailable(tensor, done):
            yield f"{owner} output", tensor, writers.get(id(tensor))


def _unavailable(tensor: gs.Tensor, done: set[int]) -> bool:
    return isinstance(tensor, gs.Variable) and bool(tensor.name) and id(tensor) not in done


def _interface(graph: gs.Graph) -> tuple[tuple[str, str, str, str], ...]:
    return tuple(
        (role, tensor.name, _dtype_name(tensor.dtype), _shape_text(tensor.shape))
        for role, tensors in (("input", graph.inputs), ("output", graph.outputs))
        for tensor in tensors
    )


def _node(node: gs.Node) -> str:
    """``node 'conv1' (Conv)``; an unnamed node by what it writes: ``the Sum node writing 's'``."""
    if node.name:
        return f"node '{node.name}' ({node.op})"
    written = ", ".join(f"'{t.name}'" for t in node.outputs) or "nothing"
    return f"the {node.op} node writing {written}"


def _dtype_name(dtype) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:  # an ONNX type numpy has no dtype for
        return str(dtype)


def _shape_text(shape) -> str:
    return "unknown shape" if shape is None else str(list(shape))


def _shared_names(graph: gs.Graph) -> list[str]:
    """Names written by two nodes (or by a node and a graph input), or held by two tensors."""
    writes = Counter(t.name for node in graph.nodes for t in node.outputs if t.name)
    writes.update(t.name for t in graph.inputs)
    found = [
        f"tensor name '{name}' is written {count} times"
        for name, count in writes.items()
        if count > 1
    ]
    holders: dict[str, set[int]] = {}
    for tensor in (*graph.inputs, *graph.outputs, *_all_tensors_of(graph)):
        if tensor.name:
            holders.setdefault(tensor.name, set()).add(id(tensor))
    found += [
        f"tensor name '{name}' names {len(ids)} different tensors"
        for name, ids in holders.items()
        if len(ids) > 1
    ]
    return found


def _all_tensors_of(graph: gs.Graph) -> Iterator[gs.Tensor]:
    for node in graph.nodes:
        yield from node.inputs
        yield from node.outputs


def _current_values(tensor: gs.Tensor) -> np.ndarray | None:
    """A constant's values as they are now, read afresh (not a cached view), or ``None``."""
    return stored_array(tensor) if isinstance(tensor, gs.Constant) else None


def _same_values(now: np.ndarray | None, was: np.ndarray) -> bool:
    """The same type, shape and elements, bit for bit (a NaN equals itself)."""
    if now is None or now.dtype != was.dtype or now.shape != was.shape:
        return False
    if now.dtype.hasobject:  # strings: no bytes to compare
        return bool(np.array_equal(now, was))
    return np.ascontiguousarray(now).tobytes() == np.ascontiguousarray(was).tobytes()


def _first_change(graph: gs.Graph, before: Snapshot) -> str | None:
    """A sentence naming one change of the graph's nodes or edges since ``before``, else
    ``None``."""
    now = list(_all_nodes(graph))
    for node in now:
        if id(node) not in before.nodes:
            return f"{_node(node)} is new"
        if _ids(node.inputs) != _ids(before.inputs[id(node)]):
            return f"{_node(node)} reads other tensors"
        if _ids(node.outputs) != _ids(before.outputs[id(node)]):
            return f"{_node(node)} writes other tensors"
    if len(now) != len(before.nodes):
        return "nodes were removed"
    if _interface(graph) != before.interface:
        return "the graph inputs or outputs changed"
    return None


def _ids(tensors) -> list[int]:
    """Tensors by identity (graphsurgeon's ``==`` compares names only)."""
    return [id(t) for t in tensors]
