"""onnxruntime latency of several forms of one model, measured the way ../shared/DESIGN.md asks.

Single-threaded CPU sessions with the default graph optimizations (``ORT_ENABLE_ALL``, what a
user deploys with); after a warm-up, each round runs every form ``iterations`` times in a
shuffled order and keeps each form's mean. Ratios are taken within a round, then the median
over rounds is reported: on a 2-vCPU machine the speed drifts by tens of percent between
rounds, but both forms of a ratio see the same drift.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import onnxruntime as ort

WARMUP_RUNS = 3
INPUT_SEED = 0


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of a sample."""

    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The median and the first and third quartiles of ``values`` (at least two)."""
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3)

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.q1:.3f}–{self.q3:.3f}]"


@dataclass(frozen=True)
class LatencyResult:
    """Per-form median latency over rounds, and per-round ratios of pairs of forms."""

    rounds: int
    iterations: int
    median_ms: dict[str, float]
    ratios: dict[tuple[str, str], Spread]
    """``(a, b) -> spread of latency(a) / latency(b)`` over rounds."""


def single_thread_session(path: Path) -> ort.InferenceSession:
    """A CPU session with one intra-op and one inter-op thread and default optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_feed(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """A seeded standard-normal float32 input for each graph input; symbolic dims become 1."""
    generator = np.random.default_rng(INPUT_SEED)
    return {
        value.name: generator.standard_normal(
            [dim if isinstance(dim, int) else 1 for dim in value.shape], dtype=np.float32
        )
        for value in session.get_inputs()
    }


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max|expected|``."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def output_differences(paths: Mapping[str, Path], baseline: str) -> dict[str, float]:
    """Relative difference of each form's first output to ``baseline``'s, on one random input."""
    sessions = {form: single_thread_session(path) for form, path in paths.items()}
    feed = random_feed(sessions[baseline])
    outputs = {form: session.run(None, feed)[0] for form, session in sessions.items()}
    return {
        form: relative_difference(output, outputs[baseline])
        for form, output in outputs.items()
        if form != baseline
    }


def mean_seconds(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    """Mean wall time of ``runs`` consecutive inferences."""
    start = perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (perf_counter() - start) / runs


def measure_latency(
    paths: Mapping[str, Path],
    pairs: Sequence[tuple[str, str]],
    rounds: int,
    iterations: int,
    seed: int = 0,
) -> LatencyResult:
    """Interleaved, shuffled rounds over the forms in ``paths``; ratios for each of ``pairs``.

    All forms must take the same inputs (the feed is built from the first one).
    """
    sessions = {form: single_thread_session(path) for form, path in paths.items()}
    feed = random_feed(next(iter(sessions.values())))
    for session in sessions.values():
        mean_seconds(session, feed, WARMUP_RUNS)
    shuffler = random.Random(seed)
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        order = list(sessions)
        shuffler.shuffle(order)
        per_round.append({form: mean_seconds(sessions[form], feed, iterations) for form in order})
    return LatencyResult(
        rounds=rounds,
        iterations=iterations,
        median_ms={form: 1e3 * statistics.median(r[form] for r in per_round) for form in paths},
        ratios={(a, b): Spread.of([r[a] / r[b] for r in per_round]) for a, b in pairs},
    )
