"""Result objects of a fuse run and their text and JSON renderings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np
import onnx

from repvgg_onnx.passes.result import FusedBlock, Skipped
from repvgg_onnx.render import SCHEMA_VERSION, Rendered, verdict
from repvgg_onnx.skeleton import serialized_size
from repvgg_onnx.verify import Verification


@dataclass(frozen=True)
class ModelStats:
    """Size of a model: op-type histogram of the main graph, parameter count (initializer and
    Constant elements), serialized bytes (see :func:`serialized_size`)."""

    op_counts: dict[str, int]
    parameters: int
    size_bytes: int

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ModelStats:
        graph = model.graph
        parameters = sum(int(np.prod(tensor.dims, dtype=np.int64)) for tensor in graph.initializer)
        for node in graph.node:
            if node.op_type == "Constant":
                parameters += sum(
                    int(np.prod(a.t.dims, dtype=np.int64))
                    for a in node.attribute
                    if a.name == "value"
                )
        return cls(
            op_counts=dict(sorted(Counter(node.op_type for node in graph.node).items())),
            parameters=parameters,
            size_bytes=serialized_size(model),
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
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def report_schema() -> dict:
    """The JSON schema every report's ``to_dict()`` follows (``schema_version`` 2)."""
    text = resources.files("repvgg_onnx").joinpath("schema/report.schema.json").read_text()
    return json.loads(text)
