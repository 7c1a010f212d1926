"""The result objects of every command: a verification (per-output comparisons, the first
diverging tensor), a fuse run; their renderings come from :mod:`repvgg_onnx.render`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np
import onnx

from repvgg_onnx.passes.result import FusedBlock, Skipped
from repvgg_onnx.render import SCHEMA_VERSION, Rendered, verdict
from repvgg_onnx.skeleton import serialized_size, tensor_census


@dataclass(frozen=True)
class OutputComparison:
    """How one output of the candidate differs from the reference's."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    scale: float
    atol: float
    rtol: float
    passed: bool
    required_atol: float
    """The smallest ``atol`` that would have passed at this ``rtol`` (as Polygraphy reports)."""
    mean_abs_error: float = 0.0
    cosine_similarity: float = 1.0
    top1_agreement: float | None = None
    """For ``[N, classes]`` outputs: the share of rows whose arg-max class is the same."""
    b_name: str | None = None
    """The candidate's name for this output when it differs (outputs matched by position)."""
    problem: str | None = None
    """Why the values could not be compared at all: different shapes or element types."""

    def to_dict(self) -> dict:
        """JSON-ready: non-finite errors (a shape mismatch, NaN) become ``None``."""
        data = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        }
        data["shape"] = list(self.shape)
        return data


@dataclass(frozen=True)
class Localization:
    """The first intermediate tensor, in topological order, on which the two models disagree."""

    tensor: str
    max_abs_error: float
    a_producer: str
    b_producer: str
    consumers: tuple[str, ...]

    @property
    def message(self) -> str:
        readers = ", ".join(self.consumers) or "no node"
        return (
            f"first divergence at tensor '{self.tensor}' (max abs err {self.max_abs_error:.3g}): "
            f"computed by {self.a_producer} in A and {self.b_producer} in B, read by {readers}"
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"consumers": list(self.consumers), "message": self.message}


@dataclass(frozen=True)
class Verification(Rendered):
    """The verdict on two models: ``passed`` iff every output is within tolerance."""

    passed: bool
    outputs: tuple[OutputComparison, ...]
    input_shapes: dict[str, list[int]]
    seed: int
    rtol: float | None
    atol: float | None
    batches: int = 1
    warnings: tuple[str, ...] = ()
    localization: Localization | None = None
    a_path: str | None = None
    b_path: str | None = None
    reference_outputs: str | None = None
    """The ``.npz`` of saved outputs B was compared with, when the reference is not a model run
    here (``a_path`` is then the model that recorded them, if the file says)."""
    output_atol: Mapping[str, float] = field(default_factory=dict)
    output_rtol: Mapping[str, float] = field(default_factory=dict)
    """Per-output tolerances that override ``atol``/``rtol``, by output name."""
    feeds: Mapping[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    """The first batch of inputs both models ran on (for localization; not reported)."""

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[OutputComparison]:
        return [output for output in self.outputs if not output.passed]

    def verdict(self) -> dict:
        """Passed, or failed naming the worst output and how far off it is."""
        failures = self.failures()
        if not failures:
            return verdict("passed")
        worst = max(failures, key=lambda o: (o.problem is not None, o.required_atol))
        if worst.problem:
            return verdict("failed", f"output '{worst.name}': {worst.problem}")
        return verdict(
            "failed",
            f"output '{worst.name}' differs by up to {worst.max_abs_error:.3g} (allowed "
            f"{worst.atol:.3g} + {worst.rtol:g}·|A|)",
        )

    def reference(self) -> dict:
        """Where the reference outputs came from: model A run here, or a file of saved ones."""
        if self.reference_outputs is not None:
            return {"source": "saved outputs", "path": self.reference_outputs}
        return {"source": "model", "path": self.a_path}

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "verify",
            "verdict": self.verdict(),
            "passed": self.passed,
            "a_path": self.a_path,
            "b_path": self.b_path,
            "seed": self.seed,
            "batches": self.batches,
            "rtol": self.rtol,
            "atol": self.atol,
            "output_atol": dict(self.output_atol),
            "output_rtol": dict(self.output_rtol),
            "reference": self.reference(),
            "input_shapes": self.input_shapes,
            "outputs": [output.to_dict() for output in self.outputs],
            "warnings": list(self.warnings),
            "localization": self.localization.to_dict() if self.localization else None,
        }


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


@dataclass(frozen=True)
class Inlining:
    """The local functions inlined before the passes (``functions``, in the model's order),
    how many calls of them disappeared (``calls``), and the functions kept as they were."""

    functions: tuple[str, ...] = ()
    calls: int = 0
    kept: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.functions)

    def describe(self) -> str:
        """``"inlined 7 calls of 2 functions: RepVGGBlock, RepVGGBlock.1"``."""
        calls = f"{self.calls} call{'s' if self.calls != 1 else ''}"
        count = len(self.functions)
        of = f"{count} function{'s' if count != 1 else ''}"
        text = f"inlined {calls} of {of}: {', '.join(self.functions)}"
        if self.kept:
            text += f" (kept as functions: {', '.join(self.kept)})"
        return text

    def to_dict(self) -> dict:
        return {
            "functions": list(self.functions),
            "calls": self.calls,
            "kept": list(self.kept),
            "message": self.describe() if self else "",
        }


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


def report_schema() -> dict:
    """The JSON schema every report's ``to_dict()`` follows (``schema_version`` 2)."""
    text = resources.files("repvgg_onnx").joinpath("schema/report.schema.json").read_text()
    return json.loads(text)
