"""The peers section of ``bench.py --peers``: our fuse against the tools a user would run instead.

Each tool runs as its own fresh process on the same file, in shuffled rounds, next to a plain
``onnx.load`` + ``onnx.save`` process (the physical reference every ratio divides by) and the
two floor jobs of ``floors.py`` (what our own guarantees and graphsurgeon cost before any
pass). Every job but load + save has a time limit: past it the job's process group is killed,
the job is reported as "> N s" and not run again on that model; a job that crashes is reported
as "failed: <its last line of stderr>" and not run again either.

Ratios are medians over rounds of per-round ratios (time and peak RSS to the same round's
load + save; ``--no-verify`` to the same round's slower floor job), which cancels most of the
machine's drift between rounds.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import floors
import onnx
from bench import (
    CLI_NO_VERIFY,
    CLI_VERIFY,
    LOAD_SAVE,
    TIMED_JOB,
    ChildFailedError,
    ChildRun,
    ChildTimedOutError,
    cli_command,
    markdown_table,
    run_child,
)
from timed_job import PEERS

from repvgg_onnx.reports.fuse_report import ModelStats

FLOOR_JOBS = ("checked-float64", "graphsurgeon")
"""``floors.py``'s jobs: checker + float64 weights + fsynced save, and checker + graphsurgeon +
shape inference + save. ``--no-verify`` is divided by the slower of the two in each round."""
COLUMNS = (CLI_NO_VERIFY, CLI_VERIFY, *PEERS)
"""The table's job columns, in order (load + save and the floors come first and last)."""
LABELS = {
    CLI_NO_VERIFY: "ours `--no-verify`",
    CLI_VERIFY: "ours verified",
    "onnxsim": "onnxsim",
    "onnxslim": "onnxslim",
    "onnxoptimizer": "onnxoptimizer",
    "onnxscript": "onnxscript optimizer + rewriter",
}
COUNTED_OPS = ("Conv", "Add", "BatchNormalization")


@dataclass(frozen=True)
class PeerJob:
    """One job of the peers section: its command and the model file it writes."""

    command: list[str]
    output: Path


@dataclass
class JobRecord:
    """Every round of one job on one model: a run per round it ran in, or why it stopped."""

    runs: dict[int, ChildRun] = field(default_factory=dict)
    """Round index -> the finished run."""
    timed_out: bool = False
    failure: str | None = None
    """The last line the job printed on stderr when it crashed."""
    counts: dict[str, int] | None = None
    """:data:`COUNTED_OPS` in its output (jobs that write a model and never stopped)."""

    @property
    def stopped(self) -> bool:
        return self.timed_out or self.failure is not None


@dataclass(frozen=True)
class PeerResult:
    """The peers section's measurements on one model."""

    name: str
    training_counts: dict[str, int]
    records: dict[str, JobRecord]
    timeout: float


def peer_jobs(source: Path, out_dir: Path) -> dict[str, PeerJob]:
    """Load + save, our CLI fuse with and without verification, each peer and each floor job,
    all reading ``source`` and writing into ``out_dir``."""
    stem = source.stem

    def target(suffix: str) -> Path:
        return out_dir / f"{stem}.{suffix}.onnx"

    def timed(job: str) -> PeerJob:
        return PeerJob(
            [sys.executable, str(TIMED_JOB), job, str(source), str(target(job))], target(job)
        )

    cli = [*cli_command(), "fuse", str(source), "-f"]
    jobs = {
        LOAD_SAVE: timed("load-save"),
        CLI_NO_VERIFY: PeerJob(
            [*cli, str(target("peers-noverify")), "--no-verify", "-q"], target("peers-noverify")
        ),
        CLI_VERIFY: PeerJob([*cli, str(target("peers-verify")), "-q"], target("peers-verify")),
        **{peer: timed(peer) for peer in PEERS},
    }
    for floor in FLOOR_JOBS:
        jobs[floor] = PeerJob(floors.command(floor, source, target(floor)), target(floor))
    return jobs


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a traceback's exception), cut to 120 characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "no message"
    return line if len(line) <= 120 else line[:117] + "..."


def run_rounds(
    jobs: dict[str, PeerJob],
    rounds: int,
    timeout: float,
    shuffler: random.Random,
    run: Callable[..., ChildRun] = run_child,
) -> dict[str, JobRecord]:
    """One untimed load + save (the file into the page cache), then ``rounds`` shuffled rounds
    of every job that has neither timed out nor failed. Load + save has no time limit; ``run``
    is :func:`bench.run_child` (a stand-in in the tests)."""
    run(jobs[LOAD_SAVE].command)
    records = {job: JobRecord() for job in jobs}
    for index in range(rounds):
        order = [job for job in jobs if not records[job].stopped]
        shuffler.shuffle(order)
        for job in order:
            record = records[job]
            try:
                record.runs[index] = run(jobs[job].command, None if job == LOAD_SAVE else timeout)
            except ChildTimedOutError:
                record.timed_out = True
            except ChildFailedError as error:
                record.failure = last_line(error.stderr or str(error))
    return records


def op_counts(path: Path) -> dict[str, int]:
    """:data:`COUNTED_OPS` in the main graph of the model at ``path`` (the tool's census)."""
    counts = ModelStats.of(onnx.load(path, load_external_data=False)).op_counts
    return {op: counts.get(op, 0) for op in COUNTED_OPS}


def measure_peers(
    name: str,
    source: Path,
    out_dir: Path,
    shuffler: random.Random,
    rounds: int,
    timeout: float,
) -> PeerResult:
    """Every job of :func:`peer_jobs` on ``source``, then what each output still contains."""
    print(f"{name}: peers ({rounds} rounds, limit {timeout:g} s a job)", file=sys.stderr)
    jobs = peer_jobs(source, out_dir)
    records = run_rounds(jobs, rounds, timeout, shuffler)
    for job in COLUMNS:
        if not records[job].stopped:
            records[job].counts = op_counts(jobs[job].output)
    for job in jobs.values():
        job.output.unlink(missing_ok=True)
    return PeerResult(name, op_counts(source), records, timeout)


def median_ratio(
    numerator: JobRecord, denominators: Sequence[JobRecord], rss: bool = False
) -> float | None:
    """Median over the rounds all of them ran in of ``numerator`` / the largest denominator,
    in wall time or (``rss``) peak RSS; None if no round has them all."""

    def value(run: ChildRun | None) -> float | None:
        if run is None:
            return None
        return run.peak_rss_kib if rss else run.wall_seconds

    ratios = []
    for index, run in numerator.runs.items():
        top = value(run)
        bottoms = [value(d.runs.get(index)) for d in denominators]
        if top is not None and None not in bottoms:
            ratios.append(top / max(bottoms))
    return statistics.median(ratios) if ratios else None


def counts_text(counts: dict[str, int]) -> str:
    return " / ".join(str(counts[op]) for op in COUNTED_OPS)


def job_cell(record: JobRecord, baseline: JobRecord, timeout: float) -> str:
    """``"1.50×, 1.23×; 22 / 0 / 0"`` (time, RSS; Conv / Add / BN left), ``"> 240 s"`` or
    ``"failed: <line>"``."""
    if record.timed_out:
        return f"> {timeout:g} s"
    if record.failure is not None:
        return "failed: " + record.failure.replace("|", "\\|")
    time = median_ratio(record, [baseline])
    rss = median_ratio(record, [baseline], rss=True)
    parts = [
        "n/a" if time is None else f"{time:.2f}×",
        "n/a" if rss is None else f"{rss:.2f}×",
    ]
    counts = "" if record.counts is None else f"; {counts_text(record.counts)}"
    return ", ".join(parts) + counts


def floor_cell(records: dict[str, JobRecord]) -> str:
    """``--no-verify`` over the slower floor job of each round, and the floors over load + save."""
    ours = records[CLI_NO_VERIFY]
    if ours.stopped or any(records[floor].stopped for floor in FLOOR_JOBS):
        return "n/a"
    ratio = median_ratio(ours, [records[floor] for floor in FLOOR_JOBS])
    floors_text = ", ".join(
        f"{floor} {median_ratio(records[floor], [records[LOAD_SAVE]]):.2f}×" for floor in FLOOR_JOBS
    )
    return ("n/a" if ratio is None else f"{ratio:.2f}×") + f" ({floors_text})"


def peers_table(results: Sequence[PeerResult]) -> str:
    """One row per model: load + save in seconds and MiB, then each job's cell and the floor."""
    rows = []
    for result in results:
        baseline = result.records[LOAD_SAVE]
        seconds = statistics.median(run.wall_seconds for run in baseline.runs.values())
        peaks = [run.peak_rss_kib for run in baseline.runs.values() if run.peak_rss_kib]
        memory = f", {statistics.median(peaks) / 1024:.0f} MiB" if peaks else ""
        rows.append(
            [
                f"{result.name} ({counts_text(result.training_counts)})",
                f"{seconds:.2f} s{memory}",
                *(job_cell(result.records[job], baseline, result.timeout) for job in COLUMNS),
                floor_cell(result.records),
            ]
        )
    headers = ["model (Conv / Add / BN)", "load + save", *(LABELS[job] for job in COLUMNS)]
    return markdown_table([*headers, "`--no-verify` / floor (floors / load + save)"], rows)


def peers_section(results: Sequence[PeerResult], rounds: int, timeout: float) -> str:
    return (
        "## Against peers\n\n"
        "Each tool in its own fresh process on the same file (`timed_job.py`: `onnx.load`, the "
        "tool's Python call with its defaults, `onnx.save`; ours: the `repvgg-onnx fuse` CLI), "
        f"interleaved in {rounds} shuffled rounds with a plain `onnx.load` + `onnx.save` "
        "process and `floors.py`'s two floor jobs. Each cell: wall time, peak RSS (GNU time) "
        "as multiples of the same round's load + save (median of per-round ratios); then the "
        "Conv / Add / BatchNormalization nodes its output still contains. "
        f'"> {timeout:g} s": killed at the time limit (`--peer-timeout`), not run again. '
        "Last column: `fuse --no-verify` over the slower of `floors.py`'s `checked-float64` "
        "(checker, float64 weights, fsynced save) and `graphsurgeon` (checker, graphsurgeon's "
        "graph, shape inference) jobs of the same round, and each floor over load + save.\n\n"
        + peers_table(results)
    )
