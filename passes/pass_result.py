"""What a pass returns: the blocks it fused, and the candidates it skipped (each a Refusal)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from repvgg_onnx.algebra.form import FormError

Answer = TypeVar("Answer")


@dataclass(frozen=True)
class FusedBlock:
    """One rewrite that replaced a subgraph by a single node.

    ``output`` is the name of the tensor the new node computes; it is the name the replaced
    subgraph's output had, so the block can be found in both models.
    """

    rule: str
    output: str
    node: str
    branches: tuple[str, ...]
    result: str

    def describe(self) -> str:
        """``"stage1.0 out: Conv3x3+BN, Conv1x1+BN, BN → Conv3x3"``."""
        return f"{self.output}: {', '.join(self.branches)} → {self.result}"


@dataclass(frozen=True)
class Refusal:
    """Why something was left alone: ``reason`` is one sentence a user understands.

    Every skip is one: a reader's (the node looks linear but is not exactly so), a planning
    helper's (returned as ``X | Refusal``, never raised), a pass's. ``node`` names the node it is
    about and ``rule`` the pass that refused, each ``""`` until known; a pass reports a refusal
    with both (:meth:`by`). Its fields are the report's ``skipped`` entries, in this order.
    """

    rule: str
    node: str
    reason: str

    @classmethod
    def because(cls, reason: str, node: str = "") -> Refusal:
        """A refusal no pass has reported yet (its rule is not known)."""
        return cls("", node, reason)

    def by(self, rule: str, node: str | None = None) -> Refusal:
        """The refusal as pass ``rule`` reports it, naming ``node`` (else the node it names)."""
        return Refusal(rule, self.node if node is None else node, self.reason)

    def prefixed(self, context: str) -> Refusal:
        """The same refusal, its reason after ``context`` (what it is about, as
        ``"Conv3x3+BN is left as it is: "``)."""
        return Refusal(self.rule, self.node, context + self.reason)


#: The name reports and the public API use for a pass's refusals.
Skipped = Refusal


def attempt(
    question: Callable[[], Answer], errors: tuple[type[ValueError], ...] = (FormError,)
) -> Answer | Refusal:
    """The algebra's answer to ``question``, or its refusal: the one place where an error the
    algebra raises (a :class:`~repvgg_onnx.algebra.form.FormError`, or with ``errors`` any
    ``ValueError`` such as mismatched sizes) becomes a :class:`Refusal` with its sentence."""
    try:
        return question()
    except errors as error:
        return Refusal.because(str(error))


@dataclass
class PassResult:
    """The outcome of one pass over a graph.

    ``rewrites`` counts changes that are not fused blocks (canonicalization); the graph was
    modified iff ``fused`` is non-empty or ``rewrites`` is positive. ``shapes_stale`` says that
    tensors may now have shapes inference could find and did not (a folded constant).
    """

    fused: list[FusedBlock] = field(default_factory=list)
    skipped: list[Refusal] = field(default_factory=list)
    rewrites: int = 0
    shapes_stale: bool = False

    @property
    def modified(self) -> bool:
        return bool(self.fused) or self.rewrites > 0
