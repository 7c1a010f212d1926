"""Run two models in onnxruntime on the same inputs and compare every output.

The reference is run with graph optimizations off (so onnxruntime's own fusions do not
rewrite it), on seeded random inputs. An output passes iff ``|a − b| ≤ atol + rtol·|b|``
element-wise, ``b`` the reference. By default ``atol`` is relative to the output's scale,
``DEFAULT_ATOL_SCALE · max|b|``: a fold with a wrong ε or a misplaced kernel moves outputs by
far more than that, float32 rounding of a deep network by far less.

Running and comparing are apart (Polygraphy's model): :func:`run_model` gives one model's
:class:`RunResult` (inputs and outputs per batch), :func:`compare_runs` compares two of them
under :class:`Tolerances` (global and per output). :func:`verify_runs` is run A, run B,
compare; :func:`verify_against_run` runs B alone against a saved run (:mod:`golden`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from repvgg_onnx.errors import InputSpecError
from repvgg_onnx.verification.inputs import (
    check_feeds,
    model_inputs,
    resolve_input_shapes,
    synthesize_inputs,
)
from repvgg_onnx.verification.results import OutputComparison, Verification
from repvgg_onnx.verification.sessions import create_session, run_session

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL_SCALE = 1e-5
#: Half-precision outputs carry ~3 significant digits; their defaults are looser to match.
HALF_PRECISION_RTOL = 1e-2
HALF_PRECISION_ATOL_SCALE = 1e-3


def compare_output(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    atol: float | None,
    rtol: float | None,
) -> OutputComparison:
    """Compare one output; ``None`` tolerances take the defaults for the output's precision:
    ``rtol = DEFAULT_RTOL``, ``atol = DEFAULT_ATOL_SCALE · max|reference|`` (looser for float16).
    """
    half = np.asarray(reference).dtype == np.float16
    if rtol is None:
        rtol = HALF_PRECISION_RTOL if half else DEFAULT_RTOL
    atol_scale = HALF_PRECISION_ATOL_SCALE if half else DEFAULT_ATOL_SCALE
    reference64 = np.asarray(reference, np.float64)
    candidate64 = np.asarray(candidate, np.float64)
    finite = np.abs(reference64[np.isfinite(reference64)])
    scale = float(finite.max()) if finite.size else 0.0
    effective_atol = atol_scale * scale if atol is None else atol
    problem = None
    if reference64.shape != candidate64.shape:
        problem = f"shapes differ: A {list(reference64.shape)}, B {list(candidate64.shape)}"
    elif np.asarray(reference).dtype != np.asarray(candidate).dtype:
        problem = (
            f"element types differ: A {np.asarray(reference).dtype}, "
            f"B {np.asarray(candidate).dtype}"
        )
    if problem:
        return OutputComparison(
            name, tuple(reference64.shape), np.nan, np.nan, scale, effective_atol, rtol, False,
            np.inf, np.nan, np.nan, None, problem=problem,
        )  # fmt: skip
    both_nan = np.isnan(reference64) & np.isnan(candidate64)
    same_special = both_nan | (np.isinf(reference64) & (reference64 == candidate64))
    with np.errstate(invalid="ignore"):
        error = np.abs(candidate64 - reference64)
    error = np.where(same_special, 0.0, np.where(np.isfinite(error), error, np.inf))
    magnitude = np.where(np.isfinite(reference64), np.abs(reference64), 0.0)
    max_abs = float(error.max()) if error.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(error == 0, 0.0, error / magnitude)
    max_rel = float(relative.max()) if relative.size else 0.0
    mean_abs = float(error.mean()) if error.size else 0.0
    excess = error - rtol * magnitude
    required = float(max(excess.max(), 0.0)) if excess.size else 0.0
    passed = bool(np.all(error <= effective_atol + rtol * magnitude))
    return OutputComparison(
        name,
        tuple(reference64.shape),
        max_abs,
        max_rel,
        scale,
        effective_atol,
        rtol,
        passed,
        required,
        mean_abs,
        _cosine_similarity(reference64, candidate64),
        _top1_agreement(reference64, candidate64),
    )


def _cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the two outputs as vectors (NaN read as 0, ±inf as the largest float).
    Each is divided by its largest magnitude first, which leaves the cosine unchanged and keeps
    the sums of squares from overflowing."""
    a, b = (_unit_peak(np.nan_to_num(x.reshape(-1))) for x in (a, b))
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def _unit_peak(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x), initial=0.0)
    return x / peak if peak > 0 else x


def _top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of rows with the same arg-max, for 2-D ``[N, classes]`` score outputs."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


@dataclass(frozen=True)
class RunResult:
    """What one model computed: for each batch, the inputs it ran on and every output, by
    name. ``inputs`` and ``outputs`` have one entry per batch, in the order they ran."""

    inputs: tuple[dict[str, np.ndarray], ...]
    outputs: tuple[dict[str, np.ndarray], ...]

    @property
    def output_names(self) -> list[str]:
        """The outputs in the model's order (the first batch's keys)."""
        return list(self.outputs[0])

    def joined(self, name: str) -> np.ndarray:
        """Output ``name`` of every batch as one array: batches joined along the first axis,
        or, for a scalar output, stacked along a new one (every batch's value is compared)."""
        values = [batch[name] for batch in self.outputs]
        if len(values) == 1:
            return values[0]
        if values[0].ndim == 0:
            return np.stack(values)
        return np.concatenate(values, axis=0)


@dataclass(frozen=True)
class Tolerances:
    """``atol``/``rtol`` for every output (``None``: the defaults of :func:`compare_output`),
    and per-output values that override them, by output name."""

    atol: float | None = None
    rtol: float | None = None
    output_atol: Mapping[str, float] = field(default_factory=dict)
    output_rtol: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = [("atol", self.atol), ("rtol", self.rtol)]
        values += [(f"atol of '{k}'", v) for k, v in self.output_atol.items()]
        values += [(f"rtol of '{k}'", v) for k, v in self.output_rtol.items()]
        for what, value in values:
            if value is not None and not value >= 0:
                raise InputSpecError(f"{what} must be a number >= 0, not {value}.")

    def for_output(self, name: str) -> tuple[float | None, float | None]:
        """``(atol, rtol)`` for output ``name``."""
        return self.output_atol.get(name, self.atol), self.output_rtol.get(name, self.rtol)

    def check_names(self, names: Sequence[str]) -> None:
        """Every per-output tolerance names one of ``names`` (the reference's outputs)."""
        unknown = sorted((set(self.output_atol) | set(self.output_rtol)) - set(names))
        if unknown:
            raise InputSpecError(
                f"a tolerance is given for {unknown}, which the reference has no output "
                f"named; its outputs are {list(names)}."
            )


def run_model(
    model: onnx.ModelProto,
    batches: Sequence[Mapping[str, np.ndarray]],
    role: str,
    progress: Callable[[str], None] | None = None,
    reference_ran: bool = False,
) -> RunResult:
    """Run ``model`` on each batch of inputs (by the model's input names). Its session is
    gone on return, so two models' sessions never coexist: verifying a model of several GB
    holds one copy of its weights in onnxruntime at a time, not two. ``reference_ran``: the
    inputs are known to be good (another model ran on them), so a failure is this model's."""
    session = create_session(model, role)
    outputs = []
    for index, batch in enumerate(batches, start=1):
        if progress is not None:
            progress(f"{role} model, batch {index}/{len(batches)}")
        outputs.append(run_session(session, batch, role, reference_ran))
    return RunResult(tuple(dict(batch) for batch in batches), tuple(outputs))


def compare_runs(
    reference: RunResult,
    candidate: RunResult,
    pairs: Sequence[tuple[str, str]],
    tolerances: Tolerances,
) -> tuple[OutputComparison, ...]:
    """Compare each ``(reference name, candidate name)`` pair of outputs over all batches."""
    return tuple(
        replace(
            compare_output(a, reference.joined(a), candidate.joined(b), *tolerances.for_output(a)),
            shape=tuple(reference.outputs[0][a].shape),
            b_name=None if a == b else b,
        )
        for a, b in pairs
    )


def verify_models(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    batches: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    roles: tuple[str, str] = ("original", "fused"),
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Run both models on the same inputs and compare every output (see :func:`verify_runs`)."""
    return verify_runs(
        reference,
        candidate,
        input_shapes=input_shapes,
        seed=seed,
        tolerances=Tolerances(atol, rtol),
        batches=batches,
        feeds=feeds,
        roles=roles,
        progress=progress,
    )[0]


def verify_runs(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    tolerances: Tolerances = Tolerances(),
    batches: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    roles: tuple[str, str] = ("original", "fused"),
    progress: Callable[[str], None] | None = None,
) -> tuple[Verification, RunResult]:
    """Run the reference, then the candidate, on the same inputs and compare every output;
    also return the reference's run (to save as golden outputs).

    Inputs are ``feeds`` if given, else ``batches`` seeded random batches (seeds ``seed``,
    ``seed + 1``…). Outputs are matched by name, or by position (with a warning) when the
    names differ. ``roles`` name the models in errors (:class:`ModelRunError`); ``progress``
    hears about each batch.
    """
    if batches < 1:
        raise InputSpecError(f"the number of batches must be at least 1, not {batches}.")
    warnings: list[str] = []
    if feeds is not None:
        batch_feeds = [check_feeds(reference, feeds)]
    else:
        shapes = resolve_input_shapes(reference, input_shapes)
        batch_feeds = [synthesize_inputs(reference, shapes, seed + i) for i in range(batches)]
    candidate_feeds = _candidate_feed_names(reference, candidate, warnings)
    pairs = _output_pairs(reference, candidate, warnings)
    tolerances.check_names([a for a, _ in pairs])
    expected = run_model(reference, batch_feeds, roles[0], progress)
    renamed = [{candidate_feeds[k]: v for k, v in batch.items()} for batch in batch_feeds]
    actual = run_model(candidate, renamed, roles[1], progress, reference_ran=True)
    comparisons = compare_runs(expected, actual, pairs, tolerances)
    return _verification(comparisons, batch_feeds, seed, tolerances, warnings), expected


def verify_against_run(
    candidate: onnx.ModelProto,
    reference: RunResult,
    *,
    seed: int,
    tolerances: Tolerances = Tolerances(),
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Run ``candidate`` on the inputs ``reference`` recorded and compare with its outputs.

    The recorded inputs must fit the candidate's inputs by name, element type and shape
    (:class:`InputSpecError` if not); outputs are matched as by :func:`verify_runs`.
    """
    warnings: list[str] = []
    feeds = [check_feeds(candidate, batch) for batch in reference.inputs]
    b_names = [output.name for output in candidate.graph.output]
    pairs = _matched_names("outputs", reference.output_names, b_names, "compared", warnings)
    tolerances.check_names(reference.output_names)
    actual = run_model(candidate, feeds, "B", progress, reference_ran=True)
    comparisons = compare_runs(reference, actual, pairs, tolerances)
    return _verification(comparisons, feeds, seed, tolerances, warnings)


def _verification(
    comparisons: tuple[OutputComparison, ...],
    batches: Sequence[Mapping[str, np.ndarray]],
    seed: int,
    tolerances: Tolerances,
    warnings: list[str],
) -> Verification:
    """The verdict: passed iff every output is within its tolerances."""
    return Verification(
        passed=all(c.passed for c in comparisons),
        outputs=comparisons,
        input_shapes={name: list(value.shape) for name, value in batches[0].items()},
        seed=seed,
        rtol=tolerances.rtol,
        atol=tolerances.atol,
        output_atol=dict(tolerances.output_atol),
        output_rtol=dict(tolerances.output_rtol),
        batches=len(batches),
        warnings=tuple(warnings),
        feeds=batches[0],
    )


def _output_pairs(
    a: onnx.ModelProto, b: onnx.ModelProto, warnings: list[str]
) -> list[tuple[str, str]]:
    """``(A name, B name)`` of the outputs to compare: by name, else by position."""
    a_names = [output.name for output in a.graph.output]
    b_names = [output.name for output in b.graph.output]
    return _matched_names("outputs", a_names, b_names, "compared", warnings)


def _candidate_feed_names(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, warnings: list[str]
) -> dict[str, str]:
    """The candidate's input name for each reference input: the same, else by position."""
    a_names = [value.name for value in model_inputs(reference)]
    b_names = [value.name for value in model_inputs(candidate)]
    return dict(_matched_names("inputs", a_names, b_names, "fed", warnings))


def _matched_names(
    what: str, a_names: list[str], b_names: list[str], verb: str, warnings: list[str]
) -> list[tuple[str, str]]:
    """Pair each of A's names with B's: the same name if B has all of A's, else by position
    (with a warning) if the counts agree; else the models cannot be compared."""
    if set(a_names) <= set(b_names):
        return [(name, name) for name in a_names]
    if len(a_names) != len(b_names):
        raise InputSpecError(
            f"the models' {what} differ: A has {a_names}, B has {b_names}; they cannot be compared."
        )
    warnings.append(f"{what[:-1]} names differ (A: {a_names}, B: {b_names}); {verb} by position.")
    return list(zip(a_names, b_names, strict=True))
