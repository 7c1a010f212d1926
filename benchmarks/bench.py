"""Benchmark repvgg-onnx: fuse time and peak memory against a plain ``onnx.load`` +
``onnx.save``, op and parameter counts of each form, and onnxruntime latency of the training
form, our fused form and the PyTorch re-parameterized reference.

Run from anywhere: ``python benchmarks/bench.py [--quick] [--out benchmarks/results.md]``.
``benchmarks/README.md`` says how to read the tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import onnx
import onnxruntime as ort
from latency import LatencyResult, measure_latency, output_differences

from repvgg_onnx.report import ModelStats

if TYPE_CHECKING:
    from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "models" / "samples"
TIMED_JOB = Path(__file__).resolve().parent / "timed_job.py"
DEFAULT_CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results.md"

GNU_TIME = shutil.which("time")
"""GNU time reports each child's own peak RSS; see :func:`run_child` for why not ``getrusage``."""

GENERATED_INPUT_SHAPE = (1, 3, 224, 224)
GENERATED_WEIGHT_GAIN = 0.5
SHUFFLE_SEED = 0

TRAINING, FUSED, REFERENCE = "training", "fused", "reference"
LATENCY_PAIRS = ((TRAINING, FUSED), (FUSED, REFERENCE))

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

    def describe(self) -> str:
        return (
            f"{self.fuse_repeats} repeats per fuse job; "
            f"{self.latency_rounds} latency rounds × {self.latency_iterations} runs"
        )


FULL_PLAN = Plan(fuse_repeats=5, latency_rounds=30, latency_iterations=5)
QUICK_PLAN = Plan(fuse_repeats=3, latency_rounds=10, latency_iterations=3)
BIG_MODEL_PLAN = Plan(fuse_repeats=5, latency_rounds=30, latency_iterations=3)
"""For RepVGG-B1g4 (~0.2 s per inference): 3 runs per round keep the full run under 10 min."""


@dataclass(frozen=True)
class BenchModel:
    """A training-form model, its PyTorch re-parameterized reference, and how to measure it."""

    name: str
    training: Path
    reference: Path
    plan: Plan


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


class ChildFailedError(RuntimeError):
    """A timed subprocess exited with an error."""


def sample_model(plan: Plan) -> BenchModel:
    """The README sample (half-width RepVGG-A0, 10 classes) and its committed deploy form."""
    return BenchModel(
        name="repvgg_a0_half (sample)",
        training=SAMPLES_DIR / "repvgg_a0_half.onnx",
        reference=SAMPLES_DIR / "repvgg_a0_half.deploy.onnx",
        plan=plan,
    )


def generated_models(cache_dir: Path) -> tuple[list[BenchModel], list[str]]:
    """Full-width RepVGG-A0 and RepVGG-B1g4 with randomized BN, exported once into ``cache_dir``;
    the models, and the names of those exported now (the others were in the cache).

    The training form is ``ts17_nofold`` (BatchNormalization nodes kept), the reference the
    ``reference`` export of the same weights, both at 1x3x224x224.
    """
    sys.path.insert(0, str(REPO_ROOT))
    from models import blocks

    builders = {
        "repvgg_a0": (blocks.repvgg_a0, FULL_PLAN),
        "repvgg_b1g4": (blocks.repvgg_b1g4, BIG_MODEL_PLAN),
    }
    models, exported = [], []
    for name, (build, plan) in builders.items():
        model = BenchModel(
            name, cache_dir / f"{name}.onnx", cache_dir / f"{name}.deploy.onnx", plan
        )
        if not (model.training.exists() and model.reference.exists()):
            export_generated(build(), model)
            exported.append(name)
        models.append(model)
    return models, exported


def export_generated(network: nn.Module, model: BenchModel) -> None:
    """Randomize ``network``'s BN and weights, export both forms; each file appears whole."""
    from models import blocks, export

    blocks.randomize_batchnorm_(network, export.SEED, weight_gain=GENERATED_WEIGHT_GAIN).eval()
    print(f"exporting {model.name} to {model.training.parent}", file=sys.stderr)
    for path, form in ((model.training, "ts17_nofold"), (model.reference, "reference")):
        partial = path.with_suffix(".partial.onnx")
        export.export_onnx(network, partial, form, GENERATED_INPUT_SHAPE)
        os.replace(partial, path)


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

    cli = [*cli_command(), "fuse", source]
    return {
        LOAD_SAVE: timed("load-save", "copy"),
        CLI_NO_VERIFY: [*cli, str(out_dir / f"{stem}.cli-noverify.onnx"), "--no-verify", "-q"],
        CLI_VERIFY: [*cli, str(fused_path(model, out_dir)), "-q"],
        API_NO_VERIFY: timed("fuse", "api-noverify"),
        API_VERIFY: timed("fuse-verify", "api-verify"),
    }


def run_child(command: Sequence[str]) -> ChildRun:
    """Run ``command`` to completion; its wall time and own peak RSS.

    The peak RSS comes from GNU time, not from ``getrusage(RUSAGE_CHILDREN)`` or ``wait4``:
    Linux charges a child, at ``exec``, the peak RSS of the address space it was forked (or
    vforked) from, so a child of this process would report at least this process's peak.
    """
    with tempfile.TemporaryDirectory() as temp_dir:
        rss_file = Path(temp_dir) / "rss"
        prefix = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if GNU_TIME else []
        start = perf_counter()
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
        wall_seconds = perf_counter() - start
        if done.returncode != 0:
            raise ChildFailedError(f"{shlex.join(command)} failed:\n{done.stderr}")
        peak = int(rss_file.read_text().split()[-1]) if GNU_TIME else None
    return ChildRun(wall_seconds, peak, done.stdout)


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
    model: BenchModel, out_dir: Path, shuffler: random.Random
) -> dict[str, JobSummary]:
    """One untimed warm-up run of each job, then ``fuse_repeats`` rounds in a shuffled order."""
    commands = job_commands(model, out_dir)
    for command in commands.values():
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
                    *(
                        str(stats.op_counts.get(op, 0))
                        for op in ("Conv", "Add", "BatchNormalization")
                    ),
                    str(sum(stats.op_counts.values())),
                    f"{stats.parameters:,}",
                    f"{size / 1e6:.1f}",
                    "—" if difference is None else f"{difference:.1e}",
                ]
            )
    headers = ["model", "form", "Conv", "Add", "BatchNorm", "all nodes", "parameters", "MB"]
    return markdown_table([*headers, "rel. diff to training"], rows, left_columns=2)


def subprocess_table(results: Sequence[ModelResult]) -> str:
    """Wall time and peak RSS of whole subprocesses: what a user of the CLI waits for."""
    rows = []
    for result in results:
        jobs = result.jobs
        rows.append(
            [
                result.model.name,
                f"{jobs[LOAD_SAVE].wall_seconds:.3f} s",
                seconds_and_ratio(jobs[CLI_NO_VERIFY], jobs[LOAD_SAVE]),
                seconds_and_ratio(jobs[CLI_VERIFY], jobs[LOAD_SAVE]),
                *(mib(jobs[job].peak_rss_kib) for job in (LOAD_SAVE, CLI_NO_VERIFY, CLI_VERIFY)),
            ]
        )
    headers = ["model", "python: onnx.load + onnx.save", "CLI fuse --no-verify", "CLI fuse"]
    rss = ["RSS MiB: load + save", "RSS MiB: fuse --no-verify", "RSS MiB: fuse"]
    return markdown_table([*headers, *rss], rows)


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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_revision() -> str:
    """``git describe --always --dirty`` of the repository, or ``unknown``."""
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
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
        f"- repvgg-onnx at `{git_revision()}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]


def render_report(results: Sequence[ModelResult], header: Sequence[str], run_seconds: float) -> str:
    """The whole Markdown report: command, ``header`` lines, plans, then the four tables."""
    plans = [f"- {result.model.name}: {result.model.plan.describe()}" for result in results]
    rss_note = "GNU time `%M`" if GNU_TIME else "not measured (GNU time not found)"
    sections = [
        "# repvgg-onnx benchmark",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "\n".join([*header, *plans]),
        "## Forms\n\n"
        "`fused` is the output of `repvgg-onnx fuse` (verified); `reference` the PyTorch "
        "re-parameterized export of the same weights. Parameters count initializers and "
        "Constant nodes. Relative difference: `max|y - y_training| / max|y_training|` in "
        "onnxruntime on one random input.\n\n" + forms_table(results),
        "## Fuse time, whole subprocess\n\n"
        "Median wall time of a fresh process, interpreter start-up and imports included; "
        f"(×) = ratio to the plain `onnx.load` + `onnx.save` process. Peak RSS: {rss_note}, "
        "median.\n\n" + subprocess_table(results),
        "## Fuse time, in process\n\n"
        "Median time of the work alone inside a fresh process (start-up and imports "
        "excluded); (×) = ratio to `onnx.load` + `onnx.save`. Phases are the tool's own timers "
        "of the `verify=True` job (`load` includes `onnx.checker`, `fuse` the passes and the "
        "check of the result); `other` is the rest of `fuse()`, outside the tool's timers; "
        "`save` is atomic and fsynced, unlike `onnx.save`.\n\n" + in_process_table(results),
        "## onnxruntime latency\n\n"
        "CPU provider, 1 intra-op and 1 inter-op thread, `ORT_ENABLE_ALL`, batch 1. Each round "
        "runs the three forms in a shuffled order; latencies are medians over rounds of each "
        "round's mean, ratios medians over rounds of per-round ratios "
        "[interquartile range].\n\n" + latency_table(results),
        f"Run time: {run_seconds / 60:.1f} min.",
    ]
    return "\n\n".join(sections) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="the committed sample only, fewer repeats and rounds"
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
    models = [sample_model(QUICK_PLAN if args.quick else FULL_PLAN)]
    if args.quick:
        header.append("- `--quick`: the committed sample only, with fewer repeats and rounds.")
    elif importlib.util.find_spec("torch") is None:
        header.append("- torch is not installed: only the committed sample was benchmarked.")
    else:
        export_started = perf_counter()
        generated, exported = generated_models(args.cache_dir)
        models += generated
        header.append(
            f"- Generated models: {', '.join(exported)} exported with torch in "
            f"{perf_counter() - export_started:.0f} s"
            if exported
            else f"- Generated models reused from {args.cache_dir}"
        )
    out_dir = args.cache_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    shuffler = random.Random(SHUFFLE_SEED)
    results = [benchmark_model(model, out_dir, shuffler) for model in models]
    report = render_report(results, header, perf_counter() - started)
    print(report, end="")
    args.out.write_text(report)


if __name__ == "__main__":
    main()
