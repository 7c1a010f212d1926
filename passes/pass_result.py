"""What a pass returns: the blocks it fused, the candidates it skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field


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
class Skipped:
    """A candidate a pass left alone; ``reason`` is one sentence a user understands."""

    rule: str
    node: str
    reason: str


@dataclass
class PassResult:
    """The outcome of one pass over a graph.

    ``rewrites`` counts changes that are not fused blocks (canonicalization); the graph was
    modified iff ``fused`` is non-empty or ``rewrites`` is positive. ``shapes_stale`` says that
    tensors may now have shapes inference could find and did not (a folded constant).
    """

    fused: list[FusedBlock] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    rewrites: int = 0
    shapes_stale: bool = False

    @property
    def modified(self) -> bool:
        return bool(self.fused) or self.rewrites > 0
