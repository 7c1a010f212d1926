"""Where ``fuse`` spends its time inside one process: each pass call of each round, and the
phases around the passes.

Usage: ``python benchmarks/pass_times.py MODEL.onnx [--repeats N]`` (the models ``bench.py``
generates are in ``benchmarks/.cache``). The model is loaded once; the passes run ``N`` times
(default 3) on fresh copies and each figure is the lowest of the runs, in seconds of wall
time: this machine's speed drifts by a quarter within a minute, so compare runs made side by
side. ``floors.py`` and ``bench.py`` time whole processes; this says which pass a change
moved, e.g. the region pass's second round on a chain of RepVGG blocks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from repvgg_onnx.api import load
from repvgg_onnx.pipeline import fuse_model
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES

#: The phases of :func:`repvgg_onnx.pipeline.fuse_model.fuse_graph` timed around the passes.
PHASES = ("import_graph", "_annotate_shapes", "export_like", "dismantle")


def timed_runs(path: str, repeats: int) -> tuple[dict[str, float], int]:
    """The lowest time of each pass call (``"round 2: fuse_affine_regions"``) and of each
    phase over ``repeats`` runs, and the number of nodes."""
    model = load(path)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for key, seconds in one_run(model).items():
            best[key] = min(best.get(key, seconds), seconds)
    return best, len(model.graph.node)


def one_run(model) -> dict[str, float]:
    """Each pass call's and each phase's time in one ``fuse_graph`` of ``model``."""
    times: dict[str, float] = {}
    rounds = [0]

    def timing(name: str, function: Callable, per_round: bool) -> Callable:
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                key = f"round {rounds[0]}: {name}" if per_round else name
                times[key] = times.get(key, 0.0) + time.perf_counter() - start

        return run

    def counting_rounds(graph, run=DEFAULT_PASSES[0]):
        rounds[0] += 1
        return run(graph)

    functions = (counting_rounds, *DEFAULT_PASSES[1:])
    passes = [timing(p.__name__, f, True) for p, f in zip(DEFAULT_PASSES, functions, strict=True)]
    originals = {name: getattr(fuse_model, name) for name in PHASES}
    try:
        for name, function in originals.items():
            setattr(fuse_model, name, timing(name, function, False))
        start = time.perf_counter()
        fuse_model.fuse_graph(model, passes)
        times["fuse_graph (all)"] = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(fuse_model, name, function)
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    best, nodes = timed_runs(args.model, args.repeats)
    print(f"{args.model}: {nodes} nodes, lowest of {args.repeats} runs")
    for key, seconds in best.items():
        print(f"  {key:44s} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
