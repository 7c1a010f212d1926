"""What ``fuse`` reports: the blocks it fused, the candidates it skipped and why, the model's
size before and after, and the verification's verdict; rendered by :mod:`.render`."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import onnx

from repvgg_onnx.io.stripped_model import serialized_size, tensor_census
from repvgg_onnx.passes.pass_result import FusedBlock, Skipped
from repvgg_onnx.pipeline.function_inlining import Inlining
from repvgg_onnx.reports.render.formats import Rendered
from repvgg_onnx.reports.render.schema import SCHEMA_VERSION, verdict
from repvgg_onnx.verification.results import Verification


@dataclass(frozen=True)
class ModelStats:
    """Size of a model: op-type histogram of the main graph, parameter count (initializer and
    Constant elements), serialized bytes (see :func:`serialized_size`)."""

    op_counts: dict[str, int]
    parameters: int
    size_bytes: int

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ModelStats:
        census = tensor_census(model)
        parameters = census.elements
        op_types = []
        for node in model.graph.node:
            op_types.append(node.op_type)
            if op_types[-1] == "Constant":
                parameters += sum(math.prod(a.t.dims) for a in node.attribute if a.name == "value")
        return cls(
            op_counts=dict(sorted(Counter(op_types).items())),
            parameters=parameters,
            size_bytes=serialized_size(model, census),
        )


@dataclass
class FuseReport(Rendered):
    """What ``fuse`` did: blocks fused, candidates skipped (with reasons), sizes, verdict."""

    fused: list[FusedBlock]
    skipped: list[Skipped]
    before: ModelStats
    after: ModelStats
    verification: Verification | None = None
    rounds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    canonicalized: int = 0
    """No-op, Constant and constant-subexpression nodes removed: never counted as blocks."""
    verification_skipped: str = "not requested (--no-verify)"
    """Why ``verification`` is ``None``: it was not requested, or it could not run."""
    inlining: Inlining = field(default_factory=Inlining)
    """The local functions inlined before the passes (none for a model without functions)."""

    def verdict(self) -> dict:
        """Passed, failed (naming the worst output) or skipped (with the reason)."""
        if self.verification is None:
            return verdict("skipped", self.verification_skipped)
        return self.verification.verdict()

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "fuse",
            "verdict": self.verdict(),
            "fused": [asdict(block) | {"branches": list(block.branches)} for block in self.fused],
            "skipped": [asdict(skip) for skip in self.skipped],
            "before": asdict(self.before),
            "after": asdict(self.after),
            "verification": (
                self.verification.to_dict() if self.verification is not None else None
            ),
            "rounds": self.rounds,
            "canonicalized": self.canonicalized,
            "inlining": self.inlining.to_dict(),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }
