"""What the region pass learned in its last run, so that the next round of the fixpoint plans
again only the regions its own rewrites could have changed (a worklist over rounds).

The region pass plans each *root* (a linear op whose output is not interior to a region),
cutting below it where composing is not exact and planning the cut tensors as roots of
their own. Planning a root reads only its *linear component* (the linear ops connected to
it through tensors one of them computes and another reads) and, for the wording of its
reasons and the runtime-pattern check, the non-linear nodes next to that component. So
between two runs of the region pass in which nothing else edited the graph (no other pass
modified it, shapes were not inferred again), planning a root gives what it gave last time
unless its component holds a node that a rewrite created, or one that computes or reads a
tensor a removed node read, or the root composes constants over an activation output whose
pattern look-up (:func:`~.runtime_patterns.fused_pattern_ending_at`) passes where a
rewritten region's output is computed. :func:`nodes_to_replan` finds those components; the
other roots' refusals are repeated from last time, in the same order, and a component made
of one new node alone (a region rewritten into one node between non-linear ops) plans to
nothing and says nothing.

Invariant (``tests/test_region_worklist.py``): with the memory, every run of the fixpoint
returns the same plans, in the same order, and the same refusals, in the same order, as
planning every root in every round.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .graph_utils import producer
from .pass_result import Refusal
from .runtime_patterns import LINEAR_BOUNDARY

#: The ops whose bare constants :func:`~.runtime_patterns.fused_pattern_ending_at` may keep
#: before a weighted op (regions' ``_CONSTANT_ARITHMETIC``).
_TAIL_OPS = frozenset({"Mul", "Div", "Add", "Sub"})


@dataclass(frozen=True)
class KnownRoot:
    """A root planned in the last run, with nothing to rewrite in its tree: its node (still in
    the graph), its output, the refusals planning it and the roots cut below it reported, and
    the tensors planned (the root's output and those cut roots)."""

    node: gs.Node
    output: gs.Tensor
    skipped: tuple[Refusal, ...]
    planned: tuple[gs.Tensor, ...]


@dataclass
class RegionMemory:
    """The last run's roots and rewrites, valid while only the region pass edited the graph.

    Holds graph objects (never their ids alone), so an id it keys by is never reused while
    it is held."""

    known: dict[int, KnownRoot] = field(default_factory=dict)
    created: list[gs.Node] = field(default_factory=list)
    """Every node the last run's rewrites created."""
    lone: dict[int, gs.Node] = field(default_factory=dict)
    """Of those, the nodes that are a whole rewrite alone (one region, one new node)."""
    read_by_removed: list[gs.Tensor] = field(default_factory=list)
    """Tensors the nodes the rewrites removed read, still in the graph."""
    rewritten: list[tuple[gs.Tensor, str]] = field(default_factory=list)
    """Each rewritten region's output, with the op type of the node that computed it."""
    edits: int = 0
    valid_at: int | None = None

    def note_edit(self) -> None:
        """The fixpoint saw a pass modify the graph (the region pass's own edits included)."""
        self.edits += 1

    def forget(self) -> None:
        """Something other than the region pass changed the graph: plan everything next."""
        self.valid_at = None
        self.known, self.created, self.lone = {}, [], {}
        self.read_by_removed, self.rewritten = [], []

    @property
    def usable(self) -> bool:
        """Nothing but the last region run's own rewrites changed the graph since."""
        return self.valid_at is not None and self.valid_at == self.edits

    def remember(
        self,
        known: dict[int, KnownRoot],
        created: list[list[gs.Node]],
        read_by_removed: list[gs.Tensor],
        rewritten: list[tuple[gs.Tensor, str]],
    ) -> None:
        """Record a region run: its known roots and, per rewrite, the nodes it created. Its
        own edit (if it rewrote anything) is the next one the fixpoint notes."""
        self.known = known
        self.created = [node for nodes in created for node in nodes]
        self.lone = {id(nodes[0]): nodes[0] for nodes in created if len(nodes) == 1}
        self.read_by_removed = read_by_removed
        self.rewritten = rewritten
        self.valid_at = self.edits + (1 if created else 0)


_memory: RegionMemory | None = None


def current_memory() -> RegionMemory | None:
    """The memory of the fixpoint running now, if any (none outside :func:`remembering`)."""
    return _memory


@contextlib.contextmanager
def remembering() -> Iterator[RegionMemory]:
    """Within the block, region runs remember what they planned (one fixpoint's rounds)."""
    global _memory
    outer, _memory = _memory, RegionMemory()
    try:
        yield _memory
    finally:
        _memory = outer


def nodes_to_replan(memory: RegionMemory, is_linear: Callable[[gs.Node], bool]) -> set[int]:
    """The ids of the nodes whose linear component the last run's rewrites may have changed
    (see the module docstring); ``is_linear`` says whether a node is read as a linear op."""
    replan: set[int] = set()

    def add_component(start: gs.Node) -> list[gs.Node]:
        component, stack = [], [start]
        replan.add(id(start))
        while stack:
            node = stack.pop()
            component.append(node)
            for neighbour in _neighbours(node):
                if id(neighbour) not in replan and is_linear(neighbour):
                    replan.add(id(neighbour))
                    stack.append(neighbour)
        return component

    for node in memory.created:
        if id(node) in replan:
            continue
        component = add_component(node)
        if len(component) == 1 and id(node) in memory.lone:
            replan.discard(id(node))  # one new node between non-linear ops: nothing to plan
    for tensor in memory.read_by_removed:  # read by fewer nodes: a region may grow through it
        source = producer(tensor)
        if source is not None and id(source) not in replan and is_linear(source):
            add_component(source)
    for tensor, old_op in memory.rewritten:
        for node in _tails_after(tensor, old_op):
            if id(node) not in replan and is_linear(node):
                add_component(node)
    return replan


def _neighbours(node: gs.Node) -> Iterator[gs.Node]:
    """The nodes computing ``node``'s variable inputs and those reading its outputs."""
    for tensor in node.inputs:
        if not isinstance(tensor, gs.Constant) and (source := producer(tensor)) is not None:
            yield source
    for tensor in node.outputs:
        yield from tensor.outputs


def _tails_after(tensor: gs.Tensor, old_op: str) -> Iterator[gs.Node]:
    """Bare constant arithmetic (Mul/Div/Add/Sub) reading the output of a node whose
    runtime-pattern look-up can reach the node computing ``tensor`` (a rewritten region's
    output, computed by an ``old_op`` before): that node is on the look-up's path only if it
    or the one before is not a linear layer, and the look-up climbs at most two nodes past the
    activation."""
    writer = producer(tensor)
    if old_op in LINEAR_BOUNDARY and (writer is None or writer.op in LINEAR_BOUNDARY):
        return
    activations = list(tensor.outputs)
    activations += [
        reader
        for first in tensor.outputs
        if first.op not in LINEAR_BOUNDARY
        for output in first.outputs
        for reader in output.outputs
    ]
    for activation in activations:
        for output in activation.outputs:
            yield from (reader for reader in output.outputs if reader.op in _TAIL_OPS)
