"""One timed job in a fresh interpreter, run by ``bench.py``; not meant to be run by hand.

Usage: ``python benchmarks/timed_job.py JOB IN OUT``, JOB one of ``load-save``,
``load-save-external``, ``fuse``, ``fuse-verify``, or a peer tool of :data:`PEERS`.

Imports happen first and are not timed; then the job runs and one JSON object is printed on
stdout: ``{"total": seconds, "phases": {phase: seconds}}``. ``total`` is the in-process time of
the work alone (interpreter start-up and imports excluded); the phases of the fuse jobs are the
tool's own (``load``, ``fuse``, ``verify``), ``other`` (the rest of ``fuse``) and ``save``;
those of a peer ``load``, ``run`` and ``save``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from time import perf_counter

Timing = tuple[float, dict[str, float]]
"""Seconds of the whole job after its imports, and of each of its phases."""


def load_save(source: str, target: str, external: bool = False) -> Timing:
    """Plain ``onnx.load`` then ``onnx.save``: the baseline every fuse time is divided by.
    ``external``: save the weights as external data (one data file), for models over 2 GiB."""
    import os

    import onnx

    if external and os.path.exists(target + ".data"):
        os.remove(target + ".data")  # onnx.save appends to an existing data file
    start = perf_counter()
    model = onnx.load(source)
    loaded = perf_counter()
    location = {"location": os.path.basename(target) + ".data"} if external else {}
    onnx.save(model, target, save_as_external_data=external, **location)
    end = perf_counter()
    return end - start, {"load": loaded - start, "save": end - loaded}


def fuse_save(source: str, target: str, verify: bool) -> Timing:
    """``repvgg_onnx.fuse(source, target)``: what the CLI does, minus printing (the fused model
    is written to ``target``, and verified there before it is published).

    Phase ``other`` is the time spent inside ``fuse`` outside the tool's own phase timers.
    """
    import repvgg_onnx

    start = perf_counter()
    result = repvgg_onnx.fuse(source, target, verify=verify)
    end = perf_counter()
    timed = result.report.seconds
    return end - start, {**timed, "other": end - start - sum(timed.values())}


def onnxsim_run(model):
    import onnxsim

    simplified, _ = onnxsim.simplify(model)  # defaults: no numeric check (check_n=0)
    return simplified


def onnxslim_run(model):
    import onnxslim

    return onnxslim.slim(model)


def onnxoptimizer_run(model):
    import onnxoptimizer

    return onnxoptimizer.optimize(model)  # its default fuse-and-eliminate passes


def onnxscript_run(model):
    from onnxscript import optimizer, rewriter

    return rewriter.rewrite(optimizer.optimize(model))  # its default rules


PEERS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "onnxsim": (("onnxsim",), onnxsim_run),
    "onnxslim": (("onnxslim",), onnxslim_run),
    "onnxoptimizer": (("onnxoptimizer",), onnxoptimizer_run),
    "onnxscript": (("onnxscript.optimizer", "onnxscript.rewriter"), onnxscript_run),
}
"""Peer tools by job name: the modules to import before timing, and the call on a ModelProto."""


def peer(name: str, source: str, target: str) -> Timing:
    """``onnx.load``, the peer's own call with its defaults, ``onnx.save``: what a user of its
    Python API runs (imports before the clock, as for every job)."""
    import importlib

    import onnx

    modules, call = PEERS[name]
    for module in modules:
        importlib.import_module(module)
    start = perf_counter()
    model = onnx.load(source)
    loaded = perf_counter()
    result = call(model)
    ran = perf_counter()
    onnx.save(result, target)
    end = perf_counter()
    return end - start, {"load": loaded - start, "run": ran - loaded, "save": end - ran}


def main(argv: list[str]) -> None:
    """Run the job named by ``argv[0]`` on ``argv[1]`` -> ``argv[2]``; print its times as JSON."""
    job, source, target = argv
    jobs: dict[str, Callable[[], Timing]] = {
        "load-save": lambda: load_save(source, target),
        "load-save-external": lambda: load_save(source, target, external=True),
        "fuse": lambda: fuse_save(source, target, verify=False),
        "fuse-verify": lambda: fuse_save(source, target, verify=True),
        **{name: lambda name=name: peer(name, source, target) for name in PEERS},
    }
    total, phases = jobs[job]()
    print(json.dumps({"total": total, "phases": phases}))


if __name__ == "__main__":
    main(sys.argv[1:])
