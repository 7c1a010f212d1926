"""``benchmarks/bench.py --peers``: the time limit and the table, on fake jobs (no peer tool, no
torch, no model is run; the real measurements are the benchmark's own)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench
import peers


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (killed, waiting to be reaped)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the grandchild")
def test_time_limit_kills_the_whole_process_group(tmp_path):
    """The child and a grandchild it started are both killed at the limit, not at their end."""
    pid_file = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.perf_counter()
    with pytest.raises(bench.ChildTimedOutError, match="over 1 s"):
        bench.run_child([sys.executable, "-c", script], timeout=1)
    assert time.perf_counter() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.perf_counter() + 5
    while process_alive(grandchild) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not process_alive(grandchild)


def test_a_failing_child_keeps_its_stderr():
    with pytest.raises(bench.ChildFailedError) as raised:
        bench.run_child([sys.executable, "-c", "raise ValueError('boom')"])
    assert peers.last_line(raised.value.stderr) == "ValueError: boom"


def fake_run(walls: dict[str, float], calls: list[tuple[str, float | None]]):
    """A ``run_child`` stand-in: job ``slow`` times out, ``crash`` fails, the others take
    ``walls[job]`` seconds and twice that many KiB."""

    def run(command: list[str], timeout: float | None = None) -> bench.ChildRun:
        job = command[0]
        calls.append((job, timeout))
        if job == "slow":
            raise bench.ChildTimedOutError(f"{job}: over {timeout:g} s")
        if job == "crash":
            raise bench.ChildFailedError("crash failed", "Traceback\n  ...\nValueError: boom\n")
        return bench.ChildRun(walls[job], int(2 * walls[job]), "")

    return run


def fake_jobs() -> dict[str, peers.PeerJob]:
    """Load + save, ours, two floors and the four peers: two fine, one slow, one crashing."""
    names = {
        bench.LOAD_SAVE: bench.LOAD_SAVE,
        bench.CLI_NO_VERIFY: bench.CLI_NO_VERIFY,
        bench.CLI_VERIFY: bench.CLI_VERIFY,
        "onnxsim": "slow",
        "onnxslim": "crash",
        "onnxoptimizer": "onnxoptimizer",
        "onnxscript": "onnxscript",
        **{floor: floor for floor in peers.FLOOR_JOBS},
    }
    return {job: peers.PeerJob([command], Path(job)) for job, command in names.items()}


WALLS = {
    bench.LOAD_SAVE: 1.0,
    bench.CLI_NO_VERIFY: 1.5,
    bench.CLI_VERIFY: 2.0,
    "onnxoptimizer": 3.0,
    "onnxscript": 4.0,
    "checked-float64": 1.2,
    "graphsurgeon": 1.25,
}


def test_a_slow_or_failing_job_stops_and_the_others_run_every_round():
    calls: list[tuple[str, float | None]] = []
    records = peers.run_rounds(fake_jobs(), 3, 240, random.Random(0), fake_run(WALLS, calls))
    assert records["onnxsim"].timed_out and not records["onnxsim"].runs
    assert records["onnxslim"].failure == "ValueError: boom"
    assert [job for job, _ in calls].count("slow") == 1
    assert [job for job, _ in calls].count("crash") == 1
    for job in (bench.LOAD_SAVE, bench.CLI_NO_VERIFY, "onnxscript", *peers.FLOOR_JOBS):
        assert sorted(records[job].runs) == [0, 1, 2]
    assert all(limit is None for job, limit in calls if job == bench.LOAD_SAVE)
    assert all(limit == 240 for job, limit in calls if job != bench.LOAD_SAVE)


def test_the_table_gives_ratios_counts_limits_and_failures():
    records = peers.run_rounds(fake_jobs(), 2, 240, random.Random(0), fake_run(WALLS, []))
    for job in (bench.CLI_NO_VERIFY, bench.CLI_VERIFY):
        records[job].counts = {"Conv": 22, "Add": 0, "BatchNormalization": 0}
    for job in ("onnxoptimizer", "onnxscript"):
        records[job].counts = {"Conv": 44, "Add": 39, "BatchNormalization": 17}
    training = {"Conv": 44, "Add": 39, "BatchNormalization": 61}
    table = peers.peers_table([peers.PeerResult("a0", training, records, 240)])
    row = table.splitlines()[2].split(" | ")
    assert row[0] == "| a0 (44 / 39 / 61)"
    assert row[1] == "1.00 s, 0 MiB"
    assert row[2:8] == [
        "1.50×, 1.50×; 22 / 0 / 0",
        "2.00×, 2.00×; 22 / 0 / 0",
        "> 240 s",
        "failed: ValueError: boom",
        "3.00×, 3.00×; 44 / 39 / 17",
        "4.00×, 4.00×; 44 / 39 / 17",
    ]
    assert row[8] == "1.20× (checked-float64 1.20×, graphsurgeon 1.25×) |"
