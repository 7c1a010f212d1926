"""What a verification found: per-output comparisons, the first diverging tensor, the verdict.

Records only; :mod:`.compare` makes them and ``repvgg_onnx.reports.render`` renders their
``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from repvgg_onnx.reports.render.formats import Rendered
from repvgg_onnx.reports.render.schema import SCHEMA_VERSION, verdict


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
