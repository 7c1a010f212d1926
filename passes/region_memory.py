"""What the region pass learned in its last run, so that the next round of the fixpoint plans
again only the regions its own rewrites could have changed (a worklist over rounds).

The region pass plans each *root* (a linear op whose output is not interior to a region),
cutting below it where composing is not exact and planning the cut tensors as roots of
their own. Planning a root reads only its *linear component* (the linear ops connected to
it through tensors one of them computes and another reads) and, for the wording of its
reasons and the runtime-pattern check, the non-linear nodes next to that component. A
rewrite replaces a region's nodes by new ones that read every tensor the region read (a
term that cancels is still emitted, as a zero map) and write its output. So between two
runs of the region pass in which nothing else edited the graph (no other pass modified it,
shapes were not inferred again), planning a root gives what it gave last time unless its
component holds a node a rewrite created (which reaches the linear ops computing the
region's sources, whose readers changed), or it composes constants over an activation
output whose pattern look-up (:func:`~.runtime_patterns.fused_pattern_ending_at`) passes
where a rewritten region's output is computed. :func:`nodes_to_replan` finds those
components; the other roots repeat last time's refusals, in the same order. A component
made of one new node alone (a region rewritten into one node of one variable input, between
non-linear ops) plans to nothing and says nothing; a new ``Add`` of two such inputs would
say why it stays, so it is planned again.

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
from .runtime_patterns import LINEAR_BOUNDARY, TAIL_OPS


@dataclass(frozen=True)
class KnownRoot:
    """A root planned in its own place in the last run: its node, its output, and the
    refusals planning it and the roots cut below it reported."""

    node: gs.Node
    output: gs.Tensor
    skipped: tuple[Refusal, ...]


@dataclass
class RegionMemory:
    """The last run's roots and rewrites, valid while only the region pass edited the graph.

    Holds every graph object it keys by id (``lone`` are ids of nodes ``created`` holds), so
    no such id is reused while it is held."""

    known: dict[int, KnownRoot] = field(default_factory=dict)
    created: list[gs.Node] = field(default_factory=list)
    """Every node the last run's rewrites created."""
    lone: set[int] = field(default_factory=set)
    """Of those, the ids of the nodes that are a whole rewrite alone and read one variable
    tensor."""
    rewritten: list[tuple[gs.Tensor, str]] = field(default_factory=list)
    """Each rewritten region's output, with the op type of the node that computed it."""
    edits: int = 0
    valid_at: int | None = None

    def note_edit(self) -> None:
        """The fixpoint saw a pass modify the graph (the region pass's own edits included)."""
        self.edits += 1

    @property
    def usable(self) -> bool:
        """Nothing but the last region run's own rewrites changed the graph since."""
        return self.valid_at is not None and self.valid_at == self.edits

    def remember(
        self,
        known: dict[int, KnownRoot],
        created: list[list[gs.Node]],
        rewritten: list[tuple[gs.Tensor, str]],
    ) -> None:
        """Record a region run: its known roots and, per rewrite, the nodes it created. Its
        own edit (if it rewrote anything) is the next one the fixpoint notes."""
        self.known = known
        self.created = [node for nodes in created for node in nodes]
        self.lone = {
            id(nodes[0]) for nodes in created if len(nodes) == 1 and _variable_inputs(nodes[0]) == 1
        }
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
    for tensor, old_op in memory.rewritten:
        for node in _tails_after(tensor, old_op):
            if id(node) not in replan and is_linear(node):
                add_component(node)
    return replan


def _variable_inputs(node: gs.Node) -> int:
    return sum(1 for tensor in node.inputs if not isinstance(tensor, gs.Constant))


def _neighbours(node: gs.Node) -> Iterator[gs.Node]:
    """The nodes computing ``node``'s variable inputs and those reading its outputs."""
    for tensor in node.inputs:
        if not isinstance(tensor, gs.Constant) and (source := producer(tensor)) is not None:
            yield source
    for tensor in node.outputs:
        yield from tensor.outputs


def _tails_after(tensor: gs.Tensor, old_op: str) -> Iterator[gs.Node]:
    """Bare constant arithmetic (Mul/Div/Add/Sub) reading an activation computed from
    ``tensor`` (a rewritten region's output, computed by an ``old_op`` before): the
    activation's runtime-pattern look-up climbs two nodes above it, never through a linear
    layer, so whether it sees the nodes above ``tensor`` changes only if the old or the new
    writer is not a linear layer. (No op a region reads or writes is itself a pattern's tell,
    and a writer two nodes above the activation is the look-up's last step.)"""
    writer = producer(tensor)
    if old_op in LINEAR_BOUNDARY and (writer is None or writer.op in LINEAR_BOUNDARY):
        return
    for activation in tensor.outputs:
        for output in activation.outputs:
            yield from (reader for reader in output.outputs if reader.op in TAIL_OPS)
