"""What ``inspect --fail-if-fusable`` refuses, read off an ``inspect`` report dict, and the
command that fixes it. The CLI's gate, the many-model summary and the GitHub annotations
all read it here, so they cannot disagree about which model fails.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePath


def _count(count: int, one: str, many: str) -> str:
    """``1 sum``, ``2 sums``: the count and the words for it."""
    return f"{count} {one if count == 1 else many}"


def gate_failure(report: dict) -> str | None:
    """Why the model of an ``inspect`` report fails ``--fail-if-fusable`` (one phrase), or
    ``None`` when it passes. It fails iff ``fuse`` would fuse a block, or a control-flow body
    holds training-form ops; a BatchNormalization or a sum ``fuse`` leaves alone does not
    fail it (the report calls such a model "not deploy form")."""
    if report["fusable"]:
        return _count(len(report["fusable"]), "fusable block remains", "fusable blocks remain")
    subgraphs = report.get("in_subgraphs") or []
    if subgraphs:
        return subgraphs[0]["message"]
    return None


def gate_fix(report: dict) -> str:
    """What to do about a model that fails the gate: the ``fuse`` command line (paths quoted
    for a POSIX shell), or, for training-form ops in control-flow bodies, re-export."""
    if not report["fusable"]:
        return (
            "re-parameterize these blocks before export (fuse does not rewrite control-flow bodies)"
        )
    return f"run {fuse_command(report.get('path') or 'model.onnx')} before shipping"


def fuse_command(path: str) -> str:
    """``repvgg-onnx fuse a.onnx a.deploy.onnx``: the deploy model next to the training one."""
    source = PurePath(path)
    stem = source.name[: -len(".onnx")] if source.name.endswith(".onnx") else source.name
    target = str(source.with_name(f"{stem}.deploy.onnx"))
    return f"repvgg-onnx fuse {shlex.quote(path)} {shlex.quote(target)}"


@dataclass(frozen=True)
class ModelState:
    """One model of an ``inspect_many`` report: ``label`` is ``training form`` (fails the
    gate), ``unusable``, ``not deploy form`` (passes the gate, but a BatchNormalization or a
    sum of linear branches stays) or ``deploy form``; ``detail`` says why (may be empty)."""

    path: str
    label: str
    detail: str

    @property
    def detail_suffix(self) -> str:
        return f": {self.detail}" if self.detail else ""


def model_states(report: dict) -> list[ModelState]:
    """The state of each model of an ``inspect_many`` report, in its order."""
    return [_state(model) for model in report["models"]]


def _state(model: dict) -> ModelState:
    path = str(model.get("path") or "model")
    if "error" in model:
        return ModelState(path, "unusable", model["error"]["message"].removeprefix(f"{path}: "))
    failure = gate_failure(model)
    if failure is not None:
        return ModelState(path, "training form", failure)
    left = []
    if model.get("batchnorms"):
        left.append(_count(len(model["batchnorms"]), "BatchNormalization", "BatchNormalizations"))
    if model.get("branch_sums"):
        left.append(_count(len(model["branch_sums"]), "sum", "sums") + " of linear branches")
    if left:
        return ModelState(path, "not deploy form", f"{' and '.join(left)} would remain")
    return ModelState(path, "deploy form", "")
