"""Result objects of a fuse run and their text and JSON renderings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from repvgg_onnx.passes.result import FusedBlock, Skipped
from repvgg_onnx.skeleton import serialized_size
from repvgg_onnx.verify import Verification

SCHEMA_VERSION = 1


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
class FuseReport:
    """What ``fuse`` did: blocks fused, candidates skipped (with reasons), sizes, verdict."""

    fused: list[FusedBlock]
    skipped: list[Skipped]
    before: ModelStats
    after: ModelStats
    verification: Verification | None = None
    rounds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "fuse",
            "fused": [asdict(block) | {"branches": list(block.branches)} for block in self.fused],
            "skipped": [asdict(skip) for skip in self.skipped],
            "before": asdict(self.before),
            "after": asdict(self.after),
            "verification": self.verification.to_dict() if self.verification else None,
            "rounds": self.rounds,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def to_text(self) -> str:
        lines = [self._headline()]
        lines += [f"  {block.describe()}" for block in self.fused]
        if self.skipped:
            lines.append(f"Skipped {_plural(len(self.skipped), 'candidate')}:")
            lines += [f"  {skip.node}: {skip.reason}" for skip in self.skipped]
        lines.append("Ops:        " + _op_changes(self.before.op_counts, self.after.op_counts))
        lines.append(f"Parameters: {self.before.parameters:,} → {self.after.parameters:,}")
        lines.append(
            f"Size:       {_bytes(self.before.size_bytes)} → {_bytes(self.after.size_bytes)}"
        )
        lines.append("Verified:   " + describe_verification(self.verification))
        if self.seconds:
            timing = ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())
            lines.append(f"Time:       {timing}")
        return "\n".join(lines)

    def _headline(self) -> str:
        if not self.fused:
            return "Fused nothing: no re-parameterizable block found."
        rules = Counter(block.rule for block in self.fused)
        detail = ", ".join(f"{rule}: {count}" for rule, count in rules.items())
        return f"Fused {_plural(len(self.fused), 'block')} ({detail}):"


def describe_verification(verification: Verification | None) -> str:
    if verification is None:
        return "skipped (--no-verify)"
    verdict = "passed" if verification.passed else "FAILED"
    parts = [
        f"'{o.name}' max abs err {o.max_abs_error:.3g} (allowed {o.atol:.3g} + "
        f"{o.rtol:g}·|ref|, scale {o.scale:.3g}){'' if o.passed else ' ✗'}"
        for o in verification.outputs
    ]
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in verification.input_shapes.items())
    return f"{verdict} on {shapes} (seed {verification.seed}): " + "; ".join(parts)


def _op_changes(before: dict[str, int], after: dict[str, int]) -> str:
    ops = sorted(set(before) | set(after), key=lambda op: (-before.get(op, 0), op))
    changed = [op for op in ops if before.get(op, 0) != after.get(op, 0)]
    same = [op for op in ops if op not in changed]
    parts = [f"{op} {before.get(op, 0)} → {after.get(op, 0)}" for op in changed]
    parts += [f"{op} {before[op]}" for op in same]
    return ", ".join(parts) if parts else "(empty graph)"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialize {type(value).__name__}")
