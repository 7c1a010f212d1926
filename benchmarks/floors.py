"""Floors: what parts of ``fuse`` cost on their own, against a plain ``onnx.load`` + ``onnx.save``.

Usage: ``python benchmarks/floors.py MODEL.onnx [MODEL.onnx ...] [--repeats N]`` (the models
``bench.py`` generates are in ``benchmarks/.cache``). Each repeat runs, in a fresh process
each and in a shuffled order:

- ``load-save``: ``onnx.load`` + ``onnx.save``, the baseline;
- ``checked-float64``: what the guarantees cost with no graphsurgeon and no pass: loading
  with the checker (``io.load_model``), a float64 round trip of every floating weight, and
  the atomic, fsynced ``io.save_model``;
- ``graphsurgeon``: what the IR costs before any pass: loading with the checker, graphsurgeon's
  graph (our direct import), the shape inference the passes need, and a save of the loaded
  model; collection off, as in ``fuse``;
- ``hand-fused``: the least code that fuses RepVGG blocks with the same guarantees and graph
  API (:mod:`hand_fused`: one hard-coded pattern instead of the passes, nothing explained), so
  the floor of the edit itself; on a model with no such block it only loads and saves;
- ``fuse``: ``repvgg-onnx fuse --no-verify``.

It prints, per model and job, the median wall time of the whole process with its ratio to
``load-save``, and the median peak RSS (GNU time).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench import ChildRun

JOBS = ("load-save", "checked-float64", "graphsurgeon", "hand-fused", "fuse")


def run_job(job: str, source: str, target: str) -> None:
    """One floor job, in this process (``floors.py job NAME IN OUT``): it imports what the job
    needs and nothing of ``bench.py`` (onnxruntime, the report code), which ``fuse --no-verify``
    does not import either."""
    if job == "load-save":
        import onnx

        onnx.save(onnx.load(source), target)
    elif job == "checked-float64":
        import numpy as np
        from onnx import numpy_helper

        from repvgg_onnx import io

        model = io.load_model(source)
        for tensor in model.graph.initializer:
            values = numpy_helper.to_array(tensor)
            if values.dtype.kind == "f":
                tensor.raw_data = values.astype(np.float64).astype(values.dtype).tobytes()
        io.save_model(model, target)
    elif job == "graphsurgeon":
        import gc

        gc.disable()
        import onnx

        from repvgg_onnx import io
        from repvgg_onnx.graph.fast_import import import_onnx
        from repvgg_onnx.graph.shapes import inferred_shapes

        model = io.load_model(source)
        import_onnx(model)
        inferred_shapes(model)
        onnx.save(model, target)
    elif job == "hand-fused":
        import gc

        gc.disable()  # as in fuse
        from hand_fused import hand_fuse

        hand_fuse(source, target)
    else:
        raise SystemExit(f"unknown job {job!r}")


def command(job: str, source: Path, target: Path) -> list[str]:
    if job == "fuse":
        from bench import cli_command

        return [*cli_command(), "fuse", str(source), str(target), "--no-verify", "-q", "-f"]
    return [sys.executable, __file__, "job", job, str(source), str(target)]


def measure(model: Path, repeats: int, shuffler: random.Random) -> dict[str, list[ChildRun]]:
    from bench import run_child

    runs: dict[str, list[ChildRun]] = {job: [] for job in JOBS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            for job in shuffler.sample(JOBS, len(JOBS)):
                target = Path(folder) / f"{job}.onnx"
                runs[job].append(run_child(command(job, model, target)))
    return runs


def report(model: Path, runs: dict[str, list[ChildRun]]) -> str:
    base = statistics.median(run.wall_seconds for run in runs["load-save"])
    lines = [f"{model.name}:"]
    for job in JOBS:
        wall = statistics.median(run.wall_seconds for run in runs[job])
        peaks = [run.peak_rss_kib for run in runs[job] if run.peak_rss_kib is not None]
        rss = f", peak RSS {statistics.median(peaks) / 1024:.0f} MiB" if peaks else ""
        lines.append(f"  {job:16s} {wall:6.2f} s ({wall / base:.2f}x){rss}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["job"]:
        run_job(*argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from bench import byte_compile_tool

    print(byte_compile_tool())
    shuffler = random.Random(0)
    for model in args.models:
        print(report(model, measure(model, args.repeats, shuffler)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
