"""Benchmark repvgg-onnx: fuse time and peak memory against a plain ``onnx.load`` +
``onnx.save``, op and parameter counts of each form, and onnxruntime latency of the training
form, our fused form and the PyTorch re-parameterized reference.

Run from anywhere: ``python benchmarks/bench.py [--quick | --scaling | --all | --big]
[--peers] [--out benchmarks/results.md]``; the scaling section times synthetic RepVGG chains
(``models/synthetic.py``) by depth and by bytes of weights and draws ``scaling.png``; the
peers section (``peers.py``) runs onnxsim, onnxslim, onnxoptimizer and onnxscript on the same
files as our fuse. ``benchmarks/README.md`` says how to read the tables.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import onnx
import onnxruntime as ort
from latency import LatencyResult, measure_latency, output_differences

import repvgg_onnx
from repvgg_onnx.reports.fuse_report import ModelStats

if TYPE_CHECKING:
    from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "models" / "samples"
TIMED_JOB = Path(__file__).resolve().parent / "timed_job.py"
DEFAULT_CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results.md"
DEFAULT_PLOT = REPO_ROOT / "benchmarks" / "scaling.png"

TOOL_ROOT = Path(repvgg_onnx.__file__).resolve().parent.parent
"""Where the measured tool code lives (an editable install may point at another checkout)."""

GNU_TIME = shutil.which("time")
"""GNU time reports each child's own peak RSS; see :func:`run_child` for why not ``getrusage``."""

GENERATED_INPUT_SHAPE = (1, 3, 224, 224)
GENERATED_WEIGHT_GAIN = 0.5
"""Conv/linear weight gain of every generated model: keeps activations O(1)-O(10) (the largest
|activation| between stages is 7-23 in FastViT-T8 and DBB-ResNet-18; gain 1 gives 3e3 and 8e4)."""
MOBILEONE_WEIGHT_GAIN = 0.25
"""MobileOne-S0's six-branch blocks grow activations faster: gain 0.5 gives max|y| ~ 2e4."""
SHUFFLE_SEED = 0

TRAINING, FUSED, REFERENCE = "training", "fused", "reference"
LATENCY_PAIRS = ((TRAINING, FUSED), (FUSED, REFERENCE))
TABLE_OPS = ("Conv", "Add", "BatchNormalization", "Sub", "Mul")
"""Op counts of the forms table; a fused form with more of one than the reference is flagged."""

# The fuse jobs, each timed in a fresh subprocess.
LOAD_SAVE, CLI_NO_VERIFY, CLI_VERIFY = "load_save", "cli_no_verify", "cli_verify"
API_NO_VERIFY, API_VERIFY = "api_no_verify", "api_verify"
PHASES = ("load", "fuse", "verify", "other", "save")
"""Phases of a verified fuse job, in order; see ``timed_job.fuse_save``."""


@dataclass(frozen=True)
class Plan:
    """How much to measure: subprocess repeats per fuse job, latency rounds and runs per round."""

    fuse_repeats: int
    latency_rounds: int
    latency_iterations: int
    warm_up_all: bool = True
    """Warm up with one untimed run of every fuse job; else of the load + save job only (enough
    to bring the file into the page cache when each fuse job takes tens of seconds)."""

    def describe(self) -> str:
        warm_up = "" if self.warm_up_all else " (warm-up: load + save only)"
        latency = (
            f"{self.latency_rounds} latency rounds × {self.latency_iterations} runs"
            if self.latency_rounds
            else "no latency"
        )
        return f"{self.fuse_repeats} repeats per fuse job{warm_up}; {latency}"


FULL_PLAN = Plan(fuse_repeats=5, latency_rounds=30, latency_iterations=5)
QUICK_PLAN = Plan(fuse_repeats=3, latency_rounds=10, latency_iterations=3)
BIG_MODEL_PLAN = Plan(fuse_repeats=5, latency_rounds=30, latency_iterations=3)
"""For RepVGG-B1g4 (~0.2 s per inference): 3 runs per round keep the full run under 10 min."""
SLOW_FUSE_PLAN = Plan(fuse_repeats=2, latency_rounds=30, latency_iterations=3, warm_up_all=False)
"""For DBB-ResNet-18 (TorchScript export), whose fuse jobs take 15-20 s each (start-up noise is
small next to that): 2 repeats and no warm-up of the fuse jobs keep the full run under 15 min."""
EXPORT_COMPARISON_PLAN = Plan(
    fuse_repeats=2, latency_rounds=0, latency_iterations=0, warm_up_all=False
)
"""The dynamo18 export of DBB-ResNet-18: four of the fuse jobs, no latency."""


@dataclass(frozen=True)
class BenchModel:
    """A training-form model, its PyTorch re-parameterized reference, and how to measure it."""

    name: str
    training: Path
    reference: Path
    plan: Plan
    training_form: str = "ts17_nofold"
    """The export form of the training file (see ``models.export.FORMS``)."""


@dataclass(frozen=True)
class GeneratedSpec:
    """How one generated model is built and exported.

    ``pytorch_deploy``: the reference is :func:`models.reparam.deploy_copy` of the network (every
    block's ``deploy()``); otherwise the ``reference`` export form re-parameterizes the RepVGG
    blocks itself.
    """

    build: Callable[[], nn.Module]
    plan: Plan
    training_form: str = "ts17_nofold"
    pytorch_deploy: bool = False
    weight_gain: float = GENERATED_WEIGHT_GAIN

    def settings(self) -> dict[str, object]:
        """What the cached files depend on besides the builder's code."""
        return {
            "training_form": self.training_form,
            "pytorch_deploy": self.pytorch_deploy,
            "weight_gain": self.weight_gain,
            "input_shape": list(GENERATED_INPUT_SHAPE),
        }


@dataclass(frozen=True)
class ExportChecks:
    """Checks of one generated model at export time (relative errors to the PyTorch training
    form's output, ``max|y - y_torch| / max|y_torch|``) and its output scale."""

    settings: dict[str, object]
    pytorch_deploy_error: float | None
    """The PyTorch deploy network against the training network (None: not checked)."""
    onnx_errors: dict[str, float]
    """Per exported file (training form, reference): onnxruntime against PyTorch."""
    output_max: float
    """``max|y|`` of the PyTorch training form on the check input: finite and O(1)-O(10)."""
    export_seconds: float

    def describe(self, name: str) -> str:
        deploy = (
            ""
            if self.pytorch_deploy_error is None
            else f"PyTorch deploy vs training {self.pytorch_deploy_error:.1e}; "
        )
        onnx_errors = ", ".join(f"{form} {error:.1e}" for form, error in self.onnx_errors.items())
        return (
            f"- {name}: exported as `{self.settings['training_form']}` + `reference`; "
            f"max|y| = {self.output_max:.3g}; {deploy}onnxruntime vs PyTorch: {onnx_errors}"
        )


@dataclass(frozen=True)
class ChildRun:
    """One finished subprocess: wall time, its own peak RSS (None without GNU time), stdout."""

    wall_seconds: float
    peak_rss_kib: int | None
    stdout: str


@dataclass(frozen=True)
class JobSummary:
    """Medians over the repeats of one fuse job."""

    wall_seconds: float
    peak_rss_kib: float | None
    in_process_seconds: float | None
    """Only for ``timed_job.py`` jobs: the work alone, start-up and imports excluded."""
    phases: dict[str, float]


@dataclass(frozen=True)
class ModelResult:
    """Everything measured on one model."""

    model: BenchModel
    stats: dict[str, tuple[ModelStats, int]]
    """Per form: stats of the graph, and bytes on disk."""
    jobs: dict[str, JobSummary]
    latency: LatencyResult
    differences: dict[str, float]
    """Per form: relative difference of its output to the training form's."""


@dataclass(frozen=True)
class ComparisonResult:
    """Fuse jobs only, on another export of a benchmarked model (``base``)."""

    model: BenchModel
    base: str
    training: ModelStats
    fused: ModelStats
    jobs: dict[str, JobSummary]


class ChildFailedError(RuntimeError):
    """A timed subprocess exited with an error; ``stderr`` is what it printed there."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class ChildTimedOutError(RuntimeError):
    """A timed subprocess ran past its time limit and was killed with its process group."""


def sample_model(plan: Plan) -> BenchModel:
    """The README sample (half-width RepVGG-A0, 10 classes) and its committed deploy form."""
    return BenchModel(
        name="repvgg_a0_half (sample)",
        training=SAMPLES_DIR / "repvgg_a0_half.onnx",
        reference=SAMPLES_DIR / "repvgg_a0_half.deploy.onnx",
        plan=plan,
    )


def models_on_path() -> None:
    """Make the repository's ``models`` package importable from this script."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def synthetic_chains():
    """``models.synthetic``: the chains of the scaling section (onnx only, no torch)."""
    models_on_path()
    from models import synthetic

    return synthetic


def generated_specs() -> dict[str, GeneratedSpec]:
    """The generated models by name (imports torch and ``models``)."""
    models_on_path()
    from models import bench_nets, blocks

    return {
        "repvgg_a0": GeneratedSpec(blocks.repvgg_a0, FULL_PLAN),
        "repvgg_b1g4": GeneratedSpec(blocks.repvgg_b1g4, BIG_MODEL_PLAN),
        "fastvit_t8": GeneratedSpec(bench_nets.fastvit_t8, FULL_PLAN, pytorch_deploy=True),
        "mobileone_s0": GeneratedSpec(
            bench_nets.mobileone_s0,
            FULL_PLAN,
            pytorch_deploy=True,
            weight_gain=MOBILEONE_WEIGHT_GAIN,
        ),
        "dbb_resnet18": GeneratedSpec(bench_nets.dbb_resnet18, SLOW_FUSE_PLAN, pytorch_deploy=True),
    }


DBB_EXPORT_COMPARISON = ("dbb_resnet18", "dynamo18")
"""The DBB model's training form is also exported by dynamo and fused (fuse jobs only): the
TorchScript export writes each BNAndPadLayer as ~280 nodes of index bookkeeping, dynamo as ~10."""


def generated_models(
    cache_dir: Path,
) -> tuple[list[BenchModel], list[BenchModel], list[str], dict[str, ExportChecks]]:
    """The generated models, exported once into ``cache_dir``: the benchmarked models, the
    export-comparison models (fuse jobs only), the names of those exported now (the others were
    in the cache with the same settings), and each model's export checks.

    The training form is ``ts17_nofold`` (BatchNormalization nodes kept), the reference the
    ``reference`` export of the same weights (of the PyTorch deploy network where the spec says
    so), both at 1x3x224x224.
    """
    specs = generated_specs()
    base, comparison_form = DBB_EXPORT_COMPARISON
    specs[f"{base}_{comparison_form}"] = GeneratedSpec(
        specs[base].build,
        EXPORT_COMPARISON_PLAN,
        training_form=comparison_form,
        pytorch_deploy=specs[base].pytorch_deploy,
        weight_gain=specs[base].weight_gain,
    )
    models, comparisons, exported, checks = [], [], [], {}
    for name, spec in specs.items():
        model = BenchModel(
            name,
            cache_dir / f"{name}.onnx",
            cache_dir / f"{name}.deploy.onnx",
            spec.plan,
            spec.training_form,
        )
        checks_path = cache_dir / f"{name}.checks.json"
        cached = read_checks(checks_path)
        if (
            cached is None
            or cached.settings != spec.settings()
            or not (model.training.exists() and model.reference.exists())
        ):
            cached = export_generated(spec, model)
            checks_path.write_text(json.dumps(asdict(cached), indent=2) + "\n")
            exported.append(name)
        checks[name] = cached
        (comparisons if spec.plan is EXPORT_COMPARISON_PLAN else models).append(model)
    return models, comparisons, exported, checks


def read_checks(path: Path) -> ExportChecks | None:
    """The export checks written next to a cached model, or None."""
    if not path.exists():
        return None
    try:
        return ExportChecks(**json.loads(path.read_text()))
    except (TypeError, ValueError):
        return None


def export_generated(spec: GeneratedSpec, model: BenchModel) -> ExportChecks:
    """Build ``spec``'s network, randomize its BN and weights, export both forms (each file
    appears whole) and check them: the PyTorch deploy network and both files must equal the
    training network (``models.export.RELATIVE_TOLERANCE``), and its output must be finite."""
    import torch

    from models import blocks, export, reparam

    started = perf_counter()
    network = blocks.randomize_batchnorm_(
        spec.build(), export.SEED, weight_gain=spec.weight_gain
    ).eval()
    x = export.random_input(GENERATED_INPUT_SHAPE)
    with torch.no_grad():
        expected = network(x).numpy()
    output_max = float(abs(expected).max())
    if not math.isfinite(output_max) or output_max > MAX_GENERATED_OUTPUT:
        raise RuntimeError(f"{model.name}: max|y| = {output_max:.3g}, lower the weight gain")
    deploy_error = None
    reference_network = network
    if spec.pytorch_deploy:
        reference_network = reparam.deploy_copy(network)
        with torch.no_grad():
            deployed = reference_network(x).numpy()
        deploy_error = export.check_close(f"{model.name} PyTorch deploy", deployed, expected)
    print(f"exporting {model.name} to {model.training.parent}", file=sys.stderr)
    onnx_errors = {}
    for path, form, source in (
        (model.training, spec.training_form, network),
        (model.reference, "reference", reference_network),
    ):
        partial = path.with_suffix(".partial.onnx")
        export.export_onnx(source, partial, form, GENERATED_INPUT_SHAPE)
        onnx_errors[form] = export.check_export(partial, network, GENERATED_INPUT_SHAPE, (1,))
        os.replace(partial, path)
    return ExportChecks(
        settings=spec.settings(),
        pytorch_deploy_error=deploy_error,
        onnx_errors=onnx_errors,
        output_max=output_max,
        export_seconds=perf_counter() - started,
    )


MAX_GENERATED_OUTPUT = 1e3
"""A generated model's output above this means the weight gain lets activations explode."""


def byte_compile_tool() -> str:
    """Compile the tool's modules to bytecode once, as a regular ``pip install`` does, so no
    timed start-up compiles them (an editable install under ``PYTHONDONTWRITEBYTECODE`` never
    caches them: 0.2 s on every start here); the header line that says so."""
    import repvgg_onnx.passes

    for package in (repvgg_onnx, repvgg_onnx.passes):
        for directory in package.__path__:
            compileall.compile_dir(directory, maxlevels=0, quiet=1)
    return "- The tool's modules were byte-compiled before timing, as `pip install` does."


def cli_command() -> list[str]:
    """The installed ``repvgg-onnx`` script next to this interpreter (no pyenv shim in between),
    else ``python -m repvgg_onnx``."""
    script = Path(sys.executable).with_name("repvgg-onnx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "repvgg_onnx"]


def fused_path(model: BenchModel, out_dir: Path) -> Path:
    """Where the verified CLI run writes the fused model (used for latency and counts)."""
    return out_dir / f"{model.training.stem}.fused.onnx"


def job_commands(model: BenchModel, out_dir: Path) -> dict[str, list[str]]:
    """The command of each fuse job; every output goes to ``out_dir``."""
    source = str(model.training)
    stem = model.training.stem

    def timed(job: str, suffix: str) -> list[str]:
        return [sys.executable, str(TIMED_JOB), job, source, str(out_dir / f"{stem}.{suffix}.onnx")]

    cli = [*cli_command(), "fuse", source, "-f"]  # -f: replace the previous run's output
    return {
        LOAD_SAVE: timed("load-save", "copy"),
        CLI_NO_VERIFY: [*cli, str(out_dir / f"{stem}.cli-noverify.onnx"), "--no-verify", "-q"],
        CLI_VERIFY: [*cli, str(fused_path(model, out_dir)), "-q"],
        API_NO_VERIFY: timed("fuse", "api-noverify"),
        API_VERIFY: timed("fuse-verify", "api-verify"),
    }


def run_child(command: Sequence[str], timeout: float | None = None) -> ChildRun:
    """Run ``command`` to completion; its wall time and own peak RSS.

    The peak RSS comes from GNU time, not from ``getrusage(RUSAGE_CHILDREN)`` or ``wait4``:
    Linux charges a child, at ``exec``, the peak RSS of the address space it was forked (or
    vforked) from, so a child of this process would report at least this process's peak.
    ``timeout``: after that many seconds the child's whole process group (GNU time, the command
    and anything it started) is killed and :class:`ChildTimedOutError` raised.
    """
    with tempfile.TemporaryDirectory() as temp_dir:
        rss_file = Path(temp_dir) / "rss"
        prefix = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if GNU_TIME else []
        start = perf_counter()
        with subprocess.Popen(
            [*prefix, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, killed whole on a timeout
        ) as child:
            try:
                stdout, stderr = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.communicate()
                raise ChildTimedOutError(f"{shlex.join(command)}: over {timeout:g} s") from None
        wall_seconds = perf_counter() - start
        if child.returncode != 0:
            raise ChildFailedError(f"{shlex.join(command)} failed:\n{stderr}", stderr)
        peak = int(rss_file.read_text().split()[-1]) if GNU_TIME else None
    return ChildRun(wall_seconds, peak, stdout)


def summarize_job(runs: Sequence[ChildRun]) -> JobSummary:
    """Medians of wall time, peak RSS and (for ``timed_job.py``) in-process times and phases."""
    reports = [json.loads(run.stdout) for run in runs if run.stdout.strip()]
    peaks = [run.peak_rss_kib for run in runs if run.peak_rss_kib is not None]
    phase_names = reports[0]["phases"] if reports else {}
    return JobSummary(
        wall_seconds=statistics.median(run.wall_seconds for run in runs),
        peak_rss_kib=statistics.median(peaks) if peaks else None,
        in_process_seconds=statistics.median(r["total"] for r in reports) if reports else None,
        phases={
            name: statistics.median(r["phases"][name] for r in reports) for name in phase_names
        },
    )


def measure_fuse_jobs(
    model: BenchModel,
    out_dir: Path,
    shuffler: random.Random,
    jobs: Sequence[str] | None = None,
    commands: dict[str, list[str]] | None = None,
) -> dict[str, JobSummary]:
    """Untimed warm-up runs (see :attr:`Plan.warm_up_all`), then ``fuse_repeats`` rounds of
    ``jobs`` (default: all) in a shuffled order; ``commands``: default :func:`job_commands`."""
    if commands is None:
        commands = job_commands(model, out_dir)
    if jobs is not None:
        commands = {job: commands[job] for job in jobs}
    for job, command in commands.items():
        if model.plan.warm_up_all or job == LOAD_SAVE:
            run_child(command)
    runs: dict[str, list[ChildRun]] = {job: [] for job in commands}
    for _ in range(model.plan.fuse_repeats):
        order = list(commands)
        shuffler.shuffle(order)
        for job in order:
            runs[job].append(run_child(commands[job]))
    return {job: summarize_job(job_runs) for job, job_runs in runs.items()}


def form_stats(path: Path) -> tuple[ModelStats, int]:
    """The tool's own graph statistics of the model at ``path``, and its size on disk."""
    return ModelStats.of(onnx.load(path)), path.stat().st_size


def benchmark_model(model: BenchModel, out_dir: Path, shuffler: random.Random) -> ModelResult:
    """Fuse jobs first (they write the fused model), then counts, output check and latency."""
    print(f"{model.name}: fuse jobs ({model.plan.describe()})", file=sys.stderr)
    jobs = measure_fuse_jobs(model, out_dir, shuffler)
    paths = {
        TRAINING: model.training,
        FUSED: fused_path(model, out_dir),
        REFERENCE: model.reference,
    }
    print(f"{model.name}: latency", file=sys.stderr)
    latency = measure_latency(
        paths, LATENCY_PAIRS, model.plan.latency_rounds, model.plan.latency_iterations
    )
    return ModelResult(
        model=model,
        stats={form: form_stats(path) for form, path in paths.items()},
        jobs=jobs,
        latency=latency,
        differences=output_differences(paths, baseline=TRAINING),
    )


COMPARISON_JOBS = (LOAD_SAVE, CLI_NO_VERIFY, CLI_VERIFY, API_VERIFY)


def measure_comparison(
    model: BenchModel, base: str, out_dir: Path, shuffler: random.Random
) -> ComparisonResult:
    """The fuse jobs of :data:`COMPARISON_JOBS` on ``model``, another export of ``base``."""
    print(f"{model.name}: fuse jobs ({model.plan.describe()})", file=sys.stderr)
    jobs = measure_fuse_jobs(model, out_dir, shuffler, COMPARISON_JOBS)
    return ComparisonResult(
        model=model,
        base=base,
        training=form_stats(model.training)[0],
        fused=form_stats(fused_path(model, out_dir))[0],
        jobs=jobs,
    )


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int = 1
) -> str:
    """A GitHub Markdown table, the first ``left_columns`` left-aligned, the others right."""
    align = [":---" if index < left_columns else "---:" for index in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f}"


def seconds_and_ratio(job: JobSummary, baseline: JobSummary, in_process: bool = False) -> str:
    """``"1.234 s (5.6×)"``: the job's median time and its ratio to the baseline's."""
    if in_process:
        assert job.in_process_seconds is not None and baseline.in_process_seconds is not None
        value, base = job.in_process_seconds, baseline.in_process_seconds
    else:
        value, base = job.wall_seconds, baseline.wall_seconds
    return f"{value:.3f} s ({value / base:.1f}×)"


def forms_table(results: Sequence[ModelResult]) -> str:
    """Op counts, parameters, file size and output agreement of each form of each model."""
    rows = []
    for result in results:
        for form, (stats, size) in result.stats.items():
            difference = result.differences.get(form)
            rows.append(
                [
                    result.model.name,
                    form,
                    *(str(stats.op_counts.get(op, 0)) for op in TABLE_OPS),
                    str(sum(stats.op_counts.values())),
                    f"{stats.parameters:,}",
                    f"{size / 1e6:.1f}",
                    "—" if difference is None else f"{difference:.1e}",
                ]
            )
    ops = ["BatchNorm" if op == "BatchNormalization" else op for op in TABLE_OPS]
    headers = ["model", "form", *ops, "all nodes", "parameters", "MB"]
    return markdown_table([*headers, "rel. diff to training"], rows, left_columns=2)


def op_count_check(results: Sequence[ModelResult]) -> str:
    """Where a fused form has more (a regression) or fewer :data:`TABLE_OPS` than its reference."""
    lines = []
    for result in results:
        fused = result.stats[FUSED][0].op_counts
        reference = result.stats[REFERENCE][0].op_counts
        counts = {op: (fused.get(op, 0), reference.get(op, 0)) for op in TABLE_OPS}
        more = [f"{op} {f} > {r}" for op, (f, r) in counts.items() if f > r]
        fewer = [f"{op} {f} < {r}" for op, (f, r) in counts.items() if f < r]
        if more:
            lines.append(
                f"- **{result.model.name}: fused has more than the reference: "
                f"{', '.join(more)}** (something was left unfused)"
            )
        if fewer:
            lines.append(
                f"- {result.model.name}: fused has fewer than the reference: {', '.join(fewer)}"
            )
    ops = ", ".join(TABLE_OPS)
    if not any(line.startswith("- **") for line in lines):
        lines.insert(0, f"No fused form has more {ops} nodes than its reference.")
    return "\n".join(lines)


def mib_and_ratio(job: JobSummary, baseline: JobSummary) -> str:
    """``"292 (2.0×)"``: the job's median peak RSS in MiB and its ratio to the baseline's."""
    if job.peak_rss_kib is None or baseline.peak_rss_kib is None:
        return "n/a"
    return f"{job.peak_rss_kib / 1024:.0f} ({job.peak_rss_kib / baseline.peak_rss_kib:.1f}×)"


def verify_seconds(jobs: dict[str, JobSummary]) -> str:
    """The ``verify`` phase of the in-process verified job and its ratio to the whole
    in-process ``fuse(verify=False)`` + save job."""
    verify = jobs[API_VERIFY].phases["verify"]
    no_verify = jobs[API_NO_VERIFY].in_process_seconds
    assert no_verify is not None
    return f"{verify:.2f} s ({verify / no_verify:.1f}×)"


VERIFY_HEADER = "verify (× fuse without)"


def subprocess_table(results: Sequence[ModelResult]) -> str:
    """Wall time and peak RSS of whole subprocesses: what a user of the CLI waits for; and the
    verification phase of the in-process verified job."""
    rows = []
    for result in results:
        jobs = result.jobs
        rows.append(
            [
                result.model.name,
                f"{jobs[LOAD_SAVE].wall_seconds:.3f} s",
                seconds_and_ratio(jobs[CLI_NO_VERIFY], jobs[LOAD_SAVE]),
                seconds_and_ratio(jobs[CLI_VERIFY], jobs[LOAD_SAVE]),
                verify_seconds(jobs),
                mib(jobs[LOAD_SAVE].peak_rss_kib),
                *(mib_and_ratio(jobs[job], jobs[LOAD_SAVE]) for job in (CLI_NO_VERIFY, CLI_VERIFY)),
            ]
        )
    headers = ["model", "python: onnx.load + onnx.save", "CLI fuse --no-verify", "CLI fuse"]
    rss = ["RSS MiB: load + save", "RSS MiB: fuse --no-verify", "RSS MiB: fuse"]
    return markdown_table([*headers, VERIFY_HEADER, *rss], rows)


def in_process_table(results: Sequence[ModelResult]) -> str:
    """In-process times (start-up and imports excluded) and the phases of a verified fuse."""
    rows = []
    for result in results:
        jobs = result.jobs
        phases = jobs[API_VERIFY].phases
        rows.append(
            [
                result.model.name,
                f"{jobs[LOAD_SAVE].in_process_seconds:.3f} s",
                seconds_and_ratio(jobs[API_NO_VERIFY], jobs[LOAD_SAVE], in_process=True),
                seconds_and_ratio(jobs[API_VERIFY], jobs[LOAD_SAVE], in_process=True),
                " / ".join(f"{phases[name]:.3f}" for name in PHASES),
            ]
        )
    headers = ["model", "onnx.load + onnx.save", "fuse(verify=False) + save"]
    phase_header = f"phases: {' / '.join(PHASES)} (s)"
    return markdown_table([*headers, "fuse(verify=True) + save", phase_header], rows)


def comparison_table(
    results: Sequence[ModelResult], comparisons: Sequence[ComparisonResult]
) -> str:
    """Fuse cost of each export of the models in ``comparisons``: the benchmarked export's
    medians (from ``results``) and the other export's."""
    by_name = {result.model.name: result for result in results}
    rows = []

    def row(
        model: BenchModel, training: ModelStats, fused: ModelStats, jobs: dict[str, JobSummary]
    ) -> list[str]:
        phases = jobs[API_VERIFY].phases
        return [
            model.name,
            f"`{model.training_form}`",
            f"{sum(training.op_counts.values()):,}",
            str(sum(fused.op_counts.values())),
            str(model.plan.fuse_repeats),
            f"{jobs[LOAD_SAVE].wall_seconds:.2f} s",
            seconds_and_ratio(jobs[CLI_NO_VERIFY], jobs[LOAD_SAVE]),
            seconds_and_ratio(jobs[CLI_VERIFY], jobs[LOAD_SAVE]),
            mib(jobs[CLI_VERIFY].peak_rss_kib),
            " / ".join(f"{phases[name]:.2f}" for name in PHASES),
        ]

    for comparison in comparisons:
        base = by_name[comparison.base]
        rows.append(row(base.model, base.stats[TRAINING][0], base.stats[FUSED][0], base.jobs))
        rows.append(row(comparison.model, comparison.training, comparison.fused, comparison.jobs))
    headers = ["model", "training export", "training nodes", "fused nodes", "repeats"]
    times = ["onnx.load + onnx.save", "CLI fuse --no-verify", "CLI fuse", "RSS MiB: fuse"]
    phase_header = f"verified fuse phases: {' / '.join(PHASES)} (s)"
    return markdown_table([*headers, *times, phase_header], rows, left_columns=2)


def latency_table(results: Sequence[ModelResult]) -> str:
    """Median latencies and median per-round ratios [interquartile range] of the three forms."""
    rows = []
    for result in results:
        latency = result.latency
        rows.append(
            [
                result.model.name,
                f"{latency.rounds} × {latency.iterations}",
                *(f"{latency.median_ms[form]:.2f}" for form in (TRAINING, FUSED, REFERENCE)),
                *(str(latency.ratios[pair]) for pair in LATENCY_PAIRS),
            ]
        )
    headers = ["model", "rounds × runs", "training ms", "fused ms", "reference ms"]
    return markdown_table([*headers, "training / fused", "fused / reference"], rows)


# --- Scaling: synthetic RepVGG chains (models/synthetic.py), fuse jobs only -----------------

LOAD_SAVE_EXTERNAL = "load_save_external"
SCALING_JOBS = (LOAD_SAVE, API_NO_VERIFY, API_VERIFY)
"""The scaling points time the in-process jobs of ``timed_job.py``: each subprocess gives the
wall time and peak RSS of the whole process and the tool's phase timers in one run."""
SCALING_CHANNELS = 8
SCALING_SIZE = 8
SCALING_BLOCKS = ((250, 5), (1_000, 3), (4_000, 2), (16_000, 1))
"""(blocks, repeats) of the node-scaling curve, 8 channels: the 16,000-block verified fuse
takes minutes, so it runs once."""
BYTES_BLOCKS = 15
SCALING_WIDTHS = ((256, 3), (512, 2), (1024, 2))
"""(channels, repeats) of the byte-scaling curve, 15 blocks each: 39, 157 and 629 MB."""
BIG_WIDTH = 2048
"""``--big``: 15 blocks of 2048 channels, 2.52 GB of weights in an external data file (as in
``tests/test_external_data.py``), every job run once."""


@dataclass(frozen=True)
class ScalingPoint:
    """One synthetic chain and how often its jobs run."""

    series: str
    blocks: int
    channels: int
    repeats: int
    external: bool = False

    @property
    def name(self) -> str:
        return f"chain_{self.blocks}x{self.channels}"

    @property
    def weight_bytes(self) -> int:
        return synthetic_chains().weight_bytes(self.blocks, self.channels)

    def path(self, cache_dir: Path) -> Path:
        return cache_dir / f"{self.name}.v{synthetic_chains().BUILDER_VERSION}.onnx"


@dataclass(frozen=True)
class ScalingResult:
    point: ScalingPoint
    nodes: int
    jobs: dict[str, JobSummary]


def scaling_points(big: bool) -> list[ScalingPoint]:
    """The node curve (8 channels), the byte curve (15 blocks) and, with ``big``, the 2.5 GB
    model."""
    points = [ScalingPoint("blocks", n, SCALING_CHANNELS, r) for n, r in SCALING_BLOCKS]
    points += [ScalingPoint("bytes", BYTES_BLOCKS, c, r) for c, r in SCALING_WIDTHS]
    if big:
        points.append(ScalingPoint("bytes", BYTES_BLOCKS, BIG_WIDTH, 1, external=True))
    return points


def built_chain(point: ScalingPoint, cache_dir: Path) -> Path:
    """The chain of ``point`` in ``cache_dir``, built first if it is not there."""
    source = point.path(cache_dir)
    if not source.exists():
        print(f"{point.name}: building {source}", file=sys.stderr)
        synthetic_chains().write_chain(
            source, point.blocks, point.channels, SCALING_SIZE, external=point.external
        )
    return source


def measure_scaling_point(
    point: ScalingPoint, cache_dir: Path, out_dir: Path, shuffler: random.Random
) -> ScalingResult:
    """Build the chain if it is not cached, then its fuse jobs; outputs of the external-data
    model are deleted afterwards (7.5 GB)."""
    source = built_chain(point, cache_dir)
    plan = Plan(
        fuse_repeats=point.repeats, latency_rounds=0, latency_iterations=0, warm_up_all=False
    )
    model = BenchModel(point.name, source, source, plan)
    commands = job_commands(model, out_dir)
    if point.external:
        copy = str(out_dir / f"{source.stem}.copy.onnx")
        commands[LOAD_SAVE] = [
            sys.executable,
            str(TIMED_JOB),
            "load-save-external",
            str(source),
            copy,
        ]
    print(f"{point.name}: fuse jobs ({plan.describe()})", file=sys.stderr)
    jobs = measure_fuse_jobs(model, out_dir, shuffler, SCALING_JOBS, commands)
    if point.external:
        for path in out_dir.glob(f"{source.stem}.*"):
            path.unlink()
    nodes = 8 * point.blocks  # two Conv, three BN, two Add, one Relu per block
    return ScalingResult(point, nodes, jobs)


def scaling_rows(results: Sequence[ScalingResult]) -> list[list[str]]:
    """One row per chain: size, load + save, both fuses with ratios, the verify phase, peak RSS
    with ratios and the passes per 1,000 blocks."""
    rows = []
    for result in results:
        point, jobs = result.point, result.jobs
        base = jobs[LOAD_SAVE]
        passes = jobs[API_NO_VERIFY].phases["fuse"]
        rows.append(
            [
                f"{point.blocks:,} × {point.channels}"
                + (" (external data)" if point.external else ""),
                f"{result.nodes:,}",
                f"{point.weight_bytes / 1e6:,.{1 if point.weight_bytes < 1e7 else 0}f}",
                str(point.repeats),
                f"{base.wall_seconds:.2f} s",
                seconds_and_ratio(jobs[API_NO_VERIFY], base),
                seconds_and_ratio(jobs[API_VERIFY], base),
                verify_seconds(jobs),
                mib(base.peak_rss_kib),
                mib_and_ratio(jobs[API_NO_VERIFY], base),
                mib_and_ratio(jobs[API_VERIFY], base),
                f"{passes * 1000 / point.blocks:.2f} s",
            ]
        )
    return rows


def scaling_table(results: Sequence[ScalingResult]) -> str:
    headers = ["blocks × channels", "nodes", "weights MB", "repeats", "load + save"]
    times = ["fuse --no-verify", "fuse (verified)", VERIFY_HEADER]
    rss = ["RSS MiB: load + save", "RSS MiB: fuse --no-verify", "RSS MiB: fuse"]
    return markdown_table(
        [*headers, *times, *rss, "passes per 1,000 blocks"], scaling_rows(results)
    )


def plot_scaling(results: Sequence[ScalingResult], path: Path) -> None:
    """Two log-log panels: whole-process time against blocks (8 channels) and against weight
    bytes (15 blocks). Imports matplotlib here: the rest of the benchmark runs without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = (
        (LOAD_SAVE, "onnx.load + onnx.save", "o-"),
        (API_NO_VERIFY, "fuse --no-verify", "s-"),
        (API_VERIFY, "fuse (verified)", "^-"),
    )
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    panels = (
        ("blocks", lambda r: r.point.blocks, f"RepVGG blocks ({SCALING_CHANNELS} channels)"),
        ("bytes", lambda r: r.point.weight_bytes / 1e6, f"MB of weights ({BYTES_BLOCKS} blocks)"),
    )
    for axis, (series, x_of, label) in zip(axes, panels, strict=True):
        points = [r for r in results if r.point.series == series]
        for job, name, style in lines:
            xs = [x_of(r) for r in points]
            axis.plot(xs, [r.jobs[job].wall_seconds for r in points], style, label=name, ms=4)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("seconds, whole process")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("repvgg-onnx fuse: time against model size (median, 2 vCPUs)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def scaling_section(results: Sequence[ScalingResult], plot: Path | None) -> str:
    picture = f"\n\n![scaling]({plot.name})" if plot is not None else ""
    return (
        "## Scaling\n\n"
        "Synthetic RepVGG chains (`models/synthetic.py`: per block a 3x3 and a 1x1 conv-BN "
        f"and an identity BN, summed, ReLU; 8 nodes; 1x{{channels}}x{SCALING_SIZE}x"
        f"{SCALING_SIZE} input): {SCALING_CHANNELS} channels at growing depth, then "
        f"{BYTES_BLOCKS} blocks at growing width. Each job is `timed_job.py` in a fresh process "
        "(`fuse` = `repvgg_onnx.fuse` + `save_model`, what the CLI does): median wall time of "
        "the whole process, (×) = ratio to `onnx.load` + `onnx.save` (with "
        "`save_as_external_data=True` for the external-data model); verify = the in-process "
        "`verify` phase, (×) its ratio to the whole in-process `fuse(verify=False)` + save; "
        "peak RSS from GNU time, (×) ratio to load + save; passes = the `fuse` phase of the "
        "unverified job per 1,000 blocks. Warm-up: load + save only.\n\n"
        + scaling_table(results)
        + picture
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_revision(root: Path = REPO_ROOT) -> str:
    """``git describe --always --dirty`` of the repository at ``root``, or ``unknown``."""
    done = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def machine_lines() -> list[str]:
    """What the numbers were measured on."""
    torch_version = "not installed"
    if importlib.util.find_spec("torch") is not None:
        from importlib.metadata import version

        torch_version = version("torch")
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}",
        f"- Python {platform.python_version()}, onnx {onnx.__version__}, "
        f"onnxruntime {ort.__version__}, torch {torch_version}",
        f"- Benchmark at `{git_revision()}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"repvgg_onnx imported from `{TOOL_ROOT}` at `{git_revision(TOOL_ROOT)}`",
        f"- Load average at the start: {load_average()}",
    ]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (this benchmark alone keeps about one CPU busy)."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " / ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1 / 5 / 15 min)"


def render_report(
    results: Sequence[ModelResult],
    header: Sequence[str],
    run_seconds: float,
    comparisons: Sequence[ComparisonResult] = (),
    scaling: str | None = None,
    peers: str | None = None,
) -> str:
    """The whole Markdown report: command, ``header`` lines, plans, then the tables of
    ``results`` (if any), the ``scaling`` section and the ``peers`` section (if any)."""
    measured = [*(result.model for result in results), *(c.model for c in comparisons)]
    plans = [f"- {model.name}: {model.plan.describe()}" for model in measured]
    sections = [
        "# repvgg-onnx benchmark",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "\n".join([*header, *plans]),
        *(model_sections(results, comparisons) if results else []),
        *([scaling] if scaling else []),
        *([peers] if peers else []),
        f"Run time: {run_seconds / 60:.1f} min. Load average at the end: {load_average()}; "
        "the benchmark itself accounts for about 1.",
    ]
    return "\n\n".join(sections) + "\n"


def model_sections(
    results: Sequence[ModelResult], comparisons: Sequence[ComparisonResult]
) -> list[str]:
    """The forms, fuse-time and latency sections of the benchmarked models."""
    rss_note = "GNU time `%M`" if GNU_TIME else "not measured (GNU time not found)"
    return [
        "## Forms\n\n"
        "`fused` is the output of `repvgg-onnx fuse` (verified); `reference` the PyTorch "
        "re-parameterized export of the same weights. Parameters count initializers and "
        "Constant nodes. Relative difference: `max|y - y_training| / max|y_training|` in "
        "onnxruntime on one random input.\n\n"
        + forms_table(results)
        + "\n\n"
        + op_count_check(results),
        "## Fuse time, whole subprocess\n\n"
        "Median wall time of a fresh process, interpreter start-up and imports included; "
        f"(×) = ratio to the plain `onnx.load` + `onnx.save` process. Peak RSS: {rss_note}, "
        "median, (×) = ratio to load + save. Verify: the `verify` phase of the in-process "
        "`verify=True` job (two onnxruntime sessions and one inference of each model), (×) = "
        "its ratio to the whole in-process `fuse(verify=False)` + save job.\n\n"
        + subprocess_table(results),
        "## Fuse time, in process\n\n"
        "Median time of the work alone inside a fresh process (start-up and imports "
        "excluded); (×) = ratio to `onnx.load` + `onnx.save`. Phases are the tool's own timers "
        "of the `verify=True` job (`load` includes `onnx.checker`, `fuse` the passes and the "
        "check of the result); `other` is the rest of `fuse()`, outside the tool's timers; "
        "`save` is atomic and fsynced, unlike `onnx.save`.\n\n" + in_process_table(results),
        *(
            [
                "## Fuse time by exporter\n\n"
                "The same weights exported by TorchScript (`ts17_nofold`, the benchmarked row, "
                "whose BNAndPadLayer slice assignments become ~280 nodes of index bookkeeping "
                "each) and by dynamo (`dynamo18`, ~10 nodes each), fuse jobs only: median wall "
                "time of the whole subprocess, (×) = ratio to `onnx.load` + `onnx.save`; peak "
                "RSS of the verified CLI run; phases of the in-process `verify=True` job.\n\n"
                + comparison_table(results, comparisons)
            ]
            if comparisons
            else []
        ),
        "## onnxruntime latency\n\n"
        "CPU provider, 1 intra-op and 1 inter-op thread, `ORT_ENABLE_ALL`, batch 1. Each round "
        "runs the three forms in a shuffled order; latencies are medians over rounds of each "
        "round's mean, ratios medians over rounds of per-round ratios "
        "[interquartile range].\n\n" + latency_table(results),
    ]


# --- Peers: the same files through the tools a user would run instead (peers.py) ----------

PEER_CHAIN = ScalingPoint("blocks", 4_000, SCALING_CHANNELS, 1)
"""The synthetic chain of the peers section: 4,000 RepVGG blocks, 32,000 nodes."""
PEER_MODEL_NAMES = (
    "repvgg_a0_half",
    "repvgg_a0",
    "repvgg_b1g4",
    "fastvit_t8",
    "mobileone_s0",
    "dbb_resnet18",
    PEER_CHAIN.name,
)
"""The peers section's models by file stem (the sample's, the generated ones', the chain's)."""
DEFAULT_PEER_TIMEOUT = 240.0
DEFAULT_PEER_ROUNDS = 3


def peers_report(
    args: argparse.Namespace, models: Sequence[BenchModel], out_dir: Path, shuffler: random.Random
) -> str:
    """The peers section on ``--peer-models`` (default: every model of ``models`` and, unless
    ``--quick``, the 4,000-block chain). Imports ``peers`` here: it imports this module back."""
    import peers

    sources = {model.training.stem: (model.name, model.training) for model in models}
    if not args.quick:
        sources[PEER_CHAIN.name] = (PEER_CHAIN.name, PEER_CHAIN.path(args.cache_dir))
    wanted = args.peer_models or list(sources)
    unknown = [name for name in wanted if name not in sources]
    if unknown:
        raise SystemExit(
            f"--peer-models: no model {', '.join(unknown)} here ({', '.join(sources)})"
        )
    if PEER_CHAIN.name in wanted:
        built_chain(PEER_CHAIN, args.cache_dir)
    results = [
        peers.measure_peers(*sources[name], out_dir, shuffler, args.peer_rounds, args.peer_timeout)
        for name in wanted
    ]
    return peers.peers_section(results, args.peer_rounds, args.peer_timeout)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="the committed sample only, fewer repeats and rounds"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="the scaling section only (synthetic chains)"
    )
    parser.add_argument(
        "--all", action="store_true", help="the models, then the scaling section (~27 min)"
    )
    parser.add_argument(
        "--big",
        action="store_true",
        help="run the scaling section (after the models, unless --scaling) with a 2.5 GB "
        "external-data chain added (~7 GB RAM, ~2 min more)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="the peers section only: our fuse against onnxsim, onnxslim, onnxoptimizer and "
        "onnxscript on the same files (with --all: after the models and the scaling section)",
    )
    parser.add_argument(
        "--peer-models",
        nargs="+",
        metavar="NAME",
        help="the peers section's models by file stem (default: all of "
        f"{', '.join(PEER_MODEL_NAMES)}; the generated ones need torch)",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=DEFAULT_PEER_TIMEOUT,
        help="seconds before a peers-section job is killed and reported as '> N s' "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--peer-rounds",
        type=int,
        default=DEFAULT_PEER_ROUNDS,
        help="shuffled rounds of the peers section (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=DEFAULT_PLOT,
        help="scaling picture, needs matplotlib (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default: %(default)s)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="generated models and fuse outputs (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Benchmark every model, print the report and write it to ``--out``."""
    args = parse_args(argv)
    started = perf_counter()
    header = machine_lines()
    header.append(byte_compile_tool())
    benchmark = args.all or not (args.scaling or args.peers)
    models = (
        [sample_model(QUICK_PLAN if args.quick else FULL_PLAN)] if benchmark or args.peers else []
    )
    comparison_models: list[BenchModel] = []
    if not benchmark:
        sections = [name for name, on in (("scaling", args.scaling), ("peers", args.peers)) if on]
        plural = "s" if len(sections) > 1 else ""
        header.append(
            f"- `--{' --'.join(sections)}`: the {' and '.join(sections)} section{plural} only."
        )
    if args.quick:
        header.append("- `--quick`: the committed sample only, with fewer repeats and rounds.")
    elif models and importlib.util.find_spec("torch") is None:
        header.append("- torch is not installed: only the committed sample was benchmarked.")
    elif models:
        export_started = perf_counter()
        generated, comparison_models, exported, checks = generated_models(args.cache_dir)
        models += generated
        header.append(
            f"- Generated models: {', '.join(exported)} exported (and checked) with torch in "
            f"{perf_counter() - export_started:.0f} s, any others reused from {args.cache_dir}"
            if exported
            else f"- Generated models reused from {args.cache_dir}"
        )
        header += [result.describe(name) for name, result in checks.items()]
    out_dir = args.cache_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    shuffler = random.Random(SHUFFLE_SEED)
    results = [benchmark_model(model, out_dir, shuffler) for model in models if benchmark]
    base = DBB_EXPORT_COMPARISON[0]
    comparisons = [
        measure_comparison(model, base, out_dir, shuffler)
        for model in comparison_models
        if benchmark
    ]
    scaling = None
    if not args.quick and (args.scaling or args.all or args.big):
        points = [
            measure_scaling_point(point, args.cache_dir, out_dir, shuffler)
            for point in scaling_points(args.big)
        ]
        plot: Path | None = args.plot
        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not installed: no scaling picture", file=sys.stderr)
            plot = None
        else:
            plot_scaling(points, args.plot)
        scaling = scaling_section(points, plot)
    peers = peers_report(args, models, out_dir, shuffler) if args.peers else None
    report = render_report(results, header, perf_counter() - started, comparisons, scaling, peers)
    print(report, end="")
    args.out.write_text(report)


if __name__ == "__main__":
    main()
