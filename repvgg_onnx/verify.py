"""Run two models in onnxruntime on the same inputs and compare every output.

The reference is run with graph optimizations off (so onnxruntime's own fusions do not
rewrite it), on seeded random inputs. An output passes iff ``|a − b| ≤ atol + rtol·|b|``
element-wise, ``b`` the reference. By default ``atol`` is relative to the output's scale,
``DEFAULT_ATOL_SCALE · max|b|``: a fold with a wrong ε or a misplaced kernel moves outputs by
far more than that, float32 rounding of a deep network by far less.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from repvgg_onnx import io
from repvgg_onnx.errors import InputSpecError, UnsupportedModelError
from repvgg_onnx.render import SCHEMA_VERSION, Rendered, verdict

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL_SCALE = 1e-5
#: Half-precision outputs carry ~3 significant digits; their defaults are looser to match.
HALF_PRECISION_RTOL = 1e-2
HALF_PRECISION_ATOL_SCALE = 1e-3
DEFAULT_BATCH = 1

_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


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
            "input_shapes": self.input_shapes,
            "outputs": [output.to_dict() for output in self.outputs],
            "warnings": list(self.warnings),
            "localization": self.localization.to_dict() if self.localization else None,
        }


class ModelRunError(UnsupportedModelError):
    """onnxruntime cannot load or run one of the two models; ``role`` says which."""

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        self.role = role


def parse_input_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["x:1x3x224x224"]`` → ``{"x": [1, 3, 224, 224]}``; the name may contain colons."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims):
            raise InputSpecError(
                f"cannot read input shape '{spec}'; write it as NAME:DIMS, e.g. input:1x3x224x224."
            )
        shapes[name] = [int(d) for d in dims.split("x")]
    return shapes


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller must feed (not initializers listed as inputs)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, Sequence[int]] | None = None
) -> dict[str, list[int]]:
    """Concrete shapes for every input: ``overrides`` first, then static dims, then a batch of
    ``DEFAULT_BATCH`` for a dynamic first dim. Any other dynamic dim must be given."""
    overrides = dict(overrides or {})
    inputs = model_inputs(model)
    unknown = set(overrides) - {value.name for value in inputs}
    if unknown:
        names = ", ".join(repr(value.name) for value in inputs)
        raise InputSpecError(
            f"the model has no input named {sorted(unknown)[0]!r}; its inputs are {names}."
        )
    return {value.name: _input_shape(value, overrides.get(value.name)) for value in inputs}


def _input_shape(value: onnx.ValueInfoProto, override: Sequence[int] | None) -> list[int]:
    dims = value.type.tensor_type.shape.dim
    if override is not None:
        override = [int(d) for d in override]
        static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        fits = len(override) == len(static) and all(
            s is None or s == o for s, o in zip(static, override, strict=True)
        )
        if dims and not fits:
            raise InputSpecError(
                f"shape {'x'.join(map(str, override))} does not fit input '{value.name}' "
                f"of shape {_show_dims(dims)}."
            )
        return override
    shape = []
    for index, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif index == 0:
            shape.append(DEFAULT_BATCH)
        else:
            raise InputSpecError(
                f"input '{value.name}' has a dynamic dimension {index} "
                f"({dim.dim_param or '?'}); give its size with "
                f"--input-shape {value.name}:{_example_dims(dims)}."
            )
    return shape


def _show_dims(dims) -> str:
    return "x".join(
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
    )


def _example_dims(dims) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else "N" for d in dims)


def synthesize_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model_inputs(model):
        elem_type = value.type.tensor_type.elem_type
        dtype = _ONNX_TO_NUMPY.get(elem_type)
        if dtype is None:
            raise UnsupportedModelError(
                f"input '{value.name}' has type {onnx.TensorProto.DataType.Name(elem_type)}, "
                "for which no random data can be made; pass --no-verify to skip verification."
            )
        shape = list(shapes[value.name])
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[value.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


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
    a, b = np.nan_to_num(a.reshape(-1)), np.nan_to_num(b.reshape(-1))
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def _top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of rows with the same arg-max, for 2-D ``[N, classes]`` score outputs."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def create_session(model: onnx.ModelProto, role: str) -> ort.InferenceSession:
    """A CPU session with graph optimizations off; ``role`` names the model in errors.

    A model too large for one protobuf goes through a temporary file with external data.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        if not io.needs_external_data(model):
            return ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        with tempfile.TemporaryDirectory(prefix="repvgg-onnx-") as folder:
            path = Path(folder) / f"{role}.onnx"
            io.save_model(model, path, external_data=True)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types
        raise ModelRunError(
            f"onnxruntime cannot load the {role} model ({_first_line(error)}); "
            "pass --no-verify to skip verification.",
            role,
        ) from error


def run_session(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], role: str
) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as error:  # onnxruntime raises several unrelated types
        raise ModelRunError(
            f"onnxruntime cannot run the {role} model on inputs of shape "
            f"{ {k: list(v.shape) for k, v in feeds.items()} } ({_first_line(error)}); "
            "give the right sizes with --input-shape NAME:DIMS.",
            role,
        ) from error
    return dict(zip(names, values, strict=True))


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
    """Run both models on the same inputs and compare every output.

    Inputs are ``feeds`` if given, else ``batches`` seeded random batches (seeds ``seed``,
    ``seed + 1``…). Outputs are matched by name, or by position (with a warning) when the
    names differ. ``roles`` name the models in errors (:class:`ModelRunError`); ``progress``
    hears about each batch.
    """
    if batches < 1:
        raise InputSpecError(f"--batches must be at least 1, not {batches}.")
    warnings: list[str] = []
    if feeds is not None:
        batch_feeds = [check_feeds(reference, feeds)]
        shapes = {name: list(value.shape) for name, value in batch_feeds[0].items()}
    else:
        shapes = resolve_input_shapes(reference, input_shapes)
        batch_feeds = [synthesize_inputs(reference, shapes, seed + i) for i in range(batches)]
    candidate_feeds = _candidate_feed_names(reference, candidate, warnings)
    a_session = create_session(reference, roles[0])
    b_session = create_session(candidate, roles[1])
    pairs = _output_pairs(a_session, b_session, warnings)
    expected: dict[str, list[np.ndarray]] = {a: [] for a, _ in pairs}
    actual: dict[str, list[np.ndarray]] = {b: [] for _, b in pairs}
    for index, batch in enumerate(batch_feeds, start=1):
        if progress is not None:
            progress(f"batch {index}/{len(batch_feeds)}")
        for name, value in run_session(a_session, batch, roles[0]).items():
            expected[name].append(value)
        renamed = {candidate_feeds[name]: value for name, value in batch.items()}
        for name, value in run_session(b_session, renamed, roles[1]).items():
            if name in actual:
                actual[name].append(value)
    comparisons = [
        replace(
            compare_output(a, _joined(expected[a]), _joined(actual[b]), atol, rtol),
            shape=tuple(expected[a][0].shape),
            b_name=None if a == b else b,
        )
        for a, b in pairs
    ]
    return Verification(
        passed=all(c.passed for c in comparisons),
        outputs=tuple(comparisons),
        input_shapes=shapes,
        seed=seed,
        rtol=rtol,
        atol=atol,
        batches=len(batch_feeds),
        warnings=tuple(warnings),
        feeds=batch_feeds[0],
    )


def _joined(values: list[np.ndarray]) -> np.ndarray:
    """The outputs of several batches as one array, batches stacked along the first axis."""
    if len(values) == 1 or values[0].ndim == 0:
        return values[0]
    return np.concatenate(values, axis=0)


def _output_pairs(
    a: ort.InferenceSession, b: ort.InferenceSession, warnings: list[str]
) -> list[tuple[str, str]]:
    """``(A name, B name)`` of the outputs to compare: by name, else by position."""
    a_names = [o.name for o in a.get_outputs()]
    b_names = [o.name for o in b.get_outputs()]
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


def load_feeds(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, keyed by input name."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError as error:
        raise InputSpecError(f"{path}: file not found; check the --inputs path.") from error
    except (OSError, ValueError) as error:
        raise InputSpecError(
            f"{path}: not a readable .npz file ({_first_line(error)}); save the inputs with "
            "numpy.savez(path, input_name=array)."
        ) from error


def check_feeds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` if they name exactly the model's inputs with fitting dtypes and shapes."""
    inputs = {value.name: value for value in model_inputs(model)}
    missing = [name for name in inputs if name not in feeds]
    extra = [name for name in feeds if name not in inputs]
    if missing or extra:
        raise InputSpecError(
            f"the inputs file does not match the model: missing {missing}, unexpected {extra}; "
            f"the model's inputs are {list(inputs)}."
        )
    for name, value in inputs.items():
        array = np.asarray(feeds[name])
        expected = _ONNX_TO_NUMPY.get(value.type.tensor_type.elem_type)
        if expected is not None and array.dtype != np.dtype(expected):
            raise InputSpecError(
                f"input '{name}' in the inputs file is {array.dtype}, the model wants "
                f"{np.dtype(expected)}; convert it with array.astype(numpy.{np.dtype(expected)})."
            )
        _input_shape(value, list(array.shape))
    return {name: np.asarray(feeds[name]) for name in inputs}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
