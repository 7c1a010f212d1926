"""What a model is and what ``fuse`` would do to it, without writing anything."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import onnx

from repvgg_onnx.passes.result import FusedBlock, Skipped
from repvgg_onnx.render import Rendered
from repvgg_onnx.summary import ModelSummary
from repvgg_onnx.transform import fuse_graph


@dataclass(frozen=True)
class Inspection(Rendered):
    """``fusable``: the rewrites ``fuse`` would make; ``skipped``: candidates it would leave,
    with reasons. A deploy-ready model has no fusable block."""

    summary: ModelSummary
    fusable: list[FusedBlock]
    skipped: list[Skipped]

    @property
    def path(self) -> str | None:
        return self.summary.path

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "kind": "inspect",
            "path": self.path,
            "summary": self.summary.to_dict(),
            "fusable": [
                asdict(block) | {"branches": list(block.branches)} for block in self.fusable
            ],
            "skipped": [asdict(skip) for skip in self.skipped],
        }


def inspect_model(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> Inspection:
    """Summarize ``model`` and run the passes on a copy of its graph to list what would fuse."""
    _, outcome = fuse_graph(model)
    return Inspection(ModelSummary.of(model, path), outcome.fused, outcome.skipped)
