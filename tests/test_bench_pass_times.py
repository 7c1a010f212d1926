"""``benchmarks/pass_times.py``: each pass call of each round and the phases around them,
timed on the sample, and the passes it times are the ones ``fuse`` runs."""

from __future__ import annotations

import sys

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import pass_times

from repvgg_onnx.pipeline import fuse_model
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES

SAMPLE = REPO_ROOT / "models" / "samples" / "repvgg_a0_half.onnx"


def test_every_pass_of_every_round_and_every_phase_is_timed(capsys):
    pass_times.main([str(SAMPLE), "--repeats", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{SAMPLE}: 178 nodes, lowest of 2 runs"
    rows = {line.rsplit(maxsplit=2)[0].strip(): float(line.split()[-2]) for line in lines[1:]}
    passes = [p.__name__ for p in DEFAULT_PASSES]
    expected = [f"round {r}: {name}" for r in (1, 2) for name in passes]
    assert [key for key in rows if key.startswith("round")] == expected
    assert set(rows) == {*expected, *pass_times.PHASES, "fuse_graph (all)"}
    assert all(seconds >= 0 for seconds in rows.values())
    assert rows["fuse_graph (all)"] >= rows["round 1: fuse_affine_regions"] > 0


def test_the_timed_phases_are_restored():
    before = {name: getattr(fuse_model, name) for name in pass_times.PHASES}
    pass_times.timed_runs(str(SAMPLE), 1)
    assert {name: getattr(fuse_model, name) for name in pass_times.PHASES} == before
