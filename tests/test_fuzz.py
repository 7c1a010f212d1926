"""Hostile input at volume: every command, on mutated fixtures, behaves.

For every case and each of ``fuse IN OUT``, ``inspect IN``, ``verify IN IN`` and ``diff IN IN``,
run as its own process (see ``fuzz_cases.py``):

- the exit code is 0, 1 or 2 (a known-bug case must ``fuse`` to 0 or 2: a correct fuse or a
  clean refusal), within the timeout: no crash, no exit 3;
- stderr holds at most one line, the tool's own (``error: ...`` or ``warning: ...``), and no
  traceback: no onnxruntime log line, no numpy warning;
- a failing ``fuse`` writes no OUT; IN's bytes never change; no file is left beside IN (other
  than OUT and its data file) or in ``$TMPDIR``;
- when ``fuse`` exits 0, OUT loads and computes what IN computes in onnxruntime (optimizations
  off, seeded random inputs, |OUT − IN| ≤ 1e-3 × max|IN|, NaN equal to NaN), unless
  onnxruntime cannot run IN at all.

The seeded cases are ``fz<seed>.<index>-<fixture>-<mutations>``; the known-bug cases are named
after the bug. ``REPVGG_FUZZ_CASES=1000 pytest tests/test_fuzz.py`` runs more cases,
``REPVGG_FUZZ_SEED`` draws another set, ``REPVGG_FUZZ_EXEC=spawn`` starts a fresh
``python -m repvgg_onnx`` per command, ``REPVGG_FUZZ_LOG=run.jsonl`` records every run, and
``python tests/fuzz_cases.py SEED INDEX case.onnx`` writes one case to a file to reproduce it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import fuzz_cases as fc
import onnx
import pytest

SEED = fc.env_int("REPVGG_FUZZ_SEED", 0)
CASE_COUNT = fc.env_int("REPVGG_FUZZ_CASES", 80)
FUZZ_CASES = [fc.fuzz_case(SEED, index) for index in range(CASE_COUNT)]
KNOWN_IDS = list(fc.KNOWN_CASES)

#: Known-bug cases must become a clean refusal (2) or a correct fuse (0), not a failed check.
KNOWN_FUSE_CODES = (0, 2)
BIG_GRAPH_NODES = 100_000
BIG_GRAPH_SECONDS = 120.0
NESTED_IF_DEPTH = 50


def _parses(data: bytes) -> bool:
    try:
        onnx.ModelProto().ParseFromString(data)
    except Exception:
        return False
    return True


#: The deepest nest protobuf parses (it stops at 100 nested messages, and each If adds 3),
#: which the tool must handle, and the depth of the issue, past it, which it must refuse.
MAX_PARSED_DEPTH = max(d for d in range(1, NESTED_IF_DEPTH) if _parses(fc.nested_if_model(d)))
NESTED_IF_DEPTHS = [MAX_PARSED_DEPTH, NESTED_IF_DEPTH]


class Scheduler:
    """Runs the selected cases of this module in the background, a few at a time, in the order
    pytest will ask for them, so both cores stay busy across cases; each test waits for its
    own case."""

    def __init__(self, runner: fc.Runner, folder: Path, keys: list[str]) -> None:
        self.runner = runner
        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self._futures: dict[str, Future] = {}
        for key in keys:
            self._futures[key] = self._pool.submit(self._run, key)

    def _run(self, key: str) -> tuple[fc.CaseResult, tuple[str, ...]]:
        kind, name = key.split(":", 1)
        if kind == "fuzz":
            case = FUZZ_BY_ID[name]
            data, mutations, fuse_codes = case.data, case.mutations, (0, 1, 2)
        else:
            data, mutations, fuse_codes = fc.KNOWN_CASES[name](), (name,), KNOWN_FUSE_CODES
        folder = self.folder / re.sub(r"[^\w.^-]", "_", name)[:80]
        result = fc.run_case(self.runner, data, folder, fuse_codes=fuse_codes)
        fc.log_result(name, mutations, result)
        if not result.violations:
            shutil.rmtree(folder, ignore_errors=True)
        return result, mutations

    def result(self, key: str) -> fc.CaseResult:
        if key not in self._futures:  # not selected up front (e.g. run by its node id)
            self._futures[key] = self._pool.submit(self._run, key)
        return self._futures[key].result()[0]

    def drain(self) -> None:
        for future in list(self._futures.values()):
            future.exception()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


FUZZ_BY_ID = {case.id: case for case in FUZZ_CASES}


@pytest.fixture(scope="session")
def runner():
    active = fc.make_runner()
    yield active
    active.close()


@pytest.fixture(scope="session")
def scheduler(request, runner, tmp_path_factory):
    keys = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is not None and item.module.__name__ == __name__ and "key" in params:
            keys.append(params["key"])
    active = Scheduler(runner, tmp_path_factory.mktemp("fuzz"), keys)
    yield active
    active.close()


@pytest.mark.parametrize(
    "key", [f"fuzz:{case.id}" for case in FUZZ_CASES], ids=[case.id for case in FUZZ_CASES]
)
def test_fuzz_case(key, scheduler):
    _check(scheduler.result(key), key)


@pytest.mark.parametrize("key", [f"known:{name}" for name in KNOWN_IDS], ids=KNOWN_IDS)
def test_known_hostile_case(key, scheduler):
    _check(scheduler.result(key), key)


def _check(result: fc.CaseResult, key: str) -> None:
    if result.violations:
        pytest.fail(result.report(key.split(":", 1)[1]), pytrace=False)


def test_cases_are_deterministic():
    """The same seed gives the same bytes and ids, in this process as in a fresh one."""
    again = [fc.fuzz_case(SEED, index) for index in range(min(CASE_COUNT, 20))]
    assert [(c.id, c.data) for c in again] == [(c.id, c.data) for c in FUZZ_CASES[:20]]
    case = FUZZ_CASES[min(7, CASE_COUNT - 1)]
    index = int(case.id.split(".", 1)[1].split("-", 1)[0])
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "case.onnx"
        shown = subprocess.run(
            [sys.executable, fc.__file__, str(SEED), str(index), str(out)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "123"},
        ).stdout.strip()
        assert shown == case.id
        assert out.read_bytes() == case.data


def test_cases_cover_every_mutation_kind():
    """Enough cases draw every kind of mutation at least once (over the first 300)."""
    cases = FUZZ_CASES if CASE_COUNT >= 300 else [fc.fuzz_case(SEED, i) for i in range(300)]
    drawn = {m.split(":", 1)[0] for case in cases for m in case.mutations}
    kinds = {name for name, _, _ in fc.MODEL_MUTATORS}
    assert kinds <= drawn, kinds - drawn
    assert any(m.startswith(("flip", "truncate", "utf8", "insert", "delete")) for m in drawn)


def test_the_fork_runner_behaves_like_python_m(runner, tmp_path, scheduler):
    """The default runner forks a zygote that imported the CLI; a fresh ``python -m
    repvgg_onnx`` must give the same exit codes and stderr on a clean, a refused and a
    crashing input."""
    if runner.mode != "fork":
        pytest.skip("already running every command with python -m repvgg_onnx")
    scheduler.drain()
    spawn = fc.SpawnRunner()
    inputs = {
        "clean": fc.fixture_bytes("tiny_block"),
        "refused": fc.fixture_bytes("tiny_block")[:100],
        "utf8": fc.KNOWN_CASES["checker_utf8_op_type"](),
        "group_3": fc.KNOWN_CASES["group_3"](),
    }
    for name, data in inputs.items():
        forked = fc.run_case(runner, data, tmp_path / "fork" / name, ("fuse", "inspect"))
        spawned = fc.run_case(spawn, data, tmp_path / "spawn" / name, ("fuse", "inspect"))
        for command in ("fuse", "inspect"):
            a, b = forked.runs[command], spawned.runs[command]
            assert (a.code, _stable(a.stderr_text)) == (b.code, _stable(b.stderr_text)), name


def _stable(stderr: str) -> list[str]:
    """stderr without onnxruntime's timestamps."""
    return [line.split(" [", 1)[-1] for line in stderr.strip().splitlines()]


def test_inspect_of_a_100000_node_graph_finishes_in_bounded_time(
    runner, scheduler, tmp_path, record_property
):
    scheduler.drain()  # time this alone
    data = fc.chain_model(BIG_GRAPH_NODES).SerializeToString()
    start = time.perf_counter()
    result = fc.run_case(runner, data, tmp_path, ("inspect",), timeout=BIG_GRAPH_SECONDS)
    seconds = time.perf_counter() - start
    record_property("inspect_seconds", round(seconds, 2))
    print(
        f"inspect of a {BIG_GRAPH_NODES}-node chain: {result.runs['inspect'].describe()} "
        f"in {seconds:.1f} s"
    )
    fc.log_result(f"chain{BIG_GRAPH_NODES}", ["inspect"], result)
    _check(result, f"big:{BIG_GRAPH_NODES}-node chain")
    assert result.runs["inspect"].code == 0, result.report(f"{BIG_GRAPH_NODES}-node chain")


@pytest.mark.parametrize("depth", NESTED_IF_DEPTHS)
def test_deeply_nested_if_subgraphs(depth, runner, scheduler, tmp_path, record_property):
    """Ifs nested ``depth`` deep: as deep as protobuf parses (the tool must handle it) and 50,
    past that (it must refuse it cleanly)."""
    scheduler.drain()
    data = fc.nested_if_model(depth)
    if depth <= MAX_PARSED_DEPTH:
        model = onnx.ModelProto()
        model.ParseFromString(data)
        assert fc.subgraph_depth(model) == depth
    start = time.perf_counter()
    result = fc.run_case(runner, data, tmp_path, timeout=BIG_GRAPH_SECONDS)
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 2))
    print(
        f"If nested {depth} deep: "
        + ", ".join(f"{c} {r.describe()} {r.seconds:.1f} s" for c, r in result.runs.items())
    )
    fc.log_result(f"nested_if{depth}", list(fc.COMMANDS), result)
    _check(result, f"big:If nested {depth} deep")
