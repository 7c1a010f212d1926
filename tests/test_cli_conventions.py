"""The CLI takes inputs the way users type them and refuses bad ones in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from helpers import REPVGG_BRANCHES, block_model
from repvgg_onnx import cli
from repvgg_onnx.cli import main
from repvgg_onnx.errors import InputSpecError
from repvgg_onnx.verification.inputs import parse_input_shapes


@pytest.fixture
def block_path(tmp_path: Path) -> Path:
    path = tmp_path / "block.onnx"
    onnx.save(block_model(REPVGG_BRANCHES), path)
    return path


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repvgg_onnx", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "dims", ["1x3x224x224", "1,3,224,224", "[1,3,224,224]", "[1, 3, 224, 224]"]
)
def test_shapes_in_every_usual_spelling(dims):
    assert parse_input_shapes([f"in:put:{dims}"]) == {"in:put": [1, 3, 224, 224]}


@pytest.mark.parametrize("spec", ["x:", "x:1x", "x:1;2", ":1x2", "x:[1,2"])
def test_unreadable_shapes_are_refused(spec):
    with pytest.raises(InputSpecError, match="cannot read input shape"):
        parse_input_shapes([spec])


def test_one_input_given_two_shapes_is_refused():
    with pytest.raises(InputSpecError, match="two shapes"):
        parse_input_shapes(["x:1x2", "x:1x3"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--atol", "-1"], "--atol must be a number >= 0"),
        (["--rtol", "-0.5"], "--rtol must be a number >= 0"),
        (["--bogus"], "No such option"),
        (["--input-shape", "x:1x1", "--input-shape", "x:1x2"], "two shapes"),
    ],
)
def test_bad_fuse_options_are_one_line_and_exit_2(block_path, tmp_path, args, message):
    done = run("fuse", block_path, tmp_path / "o.onnx", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o.onnx").exists()


def test_inputs_and_batches_together_are_refused(block_path, tmp_path):
    feeds = tmp_path / "x.npz"
    np.savez(feeds, x=np.zeros((1, 4, 8, 8), np.float32))
    done = run("verify", block_path, block_path, "--inputs", feeds, "--batches", "3")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--inputs and --batches" in done.stderr


def test_an_npy_file_feeds_a_one_input_model(block_path, tmp_path):
    feeds = tmp_path / "x.npy"
    np.save(feeds, np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32))
    done = run("verify", block_path, block_path, "--inputs", feeds, "-q")
    assert done.returncode == 0, done.stderr


def test_an_npy_file_for_a_two_input_model_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    feeds = tmp_path / "x.npy"
    np.save(feeds, np.zeros(2, np.float32))
    done = run("verify", model, model, "--inputs", feeds)
    assert done.returncode == 2 and "one array" in done.stderr


def test_a_model_b_that_cannot_run_is_not_blamed_on_the_shapes(block_path, tmp_path):
    broken = block_model(REPVGG_BRANCHES)
    broken.graph.node[0].input[1] = "missing_weight"  # a Conv without its weight at run time
    broken.graph.input.append(
        helper.make_tensor_value_info("missing_weight", TensorProto.FLOAT, [4, 4, 3, 3])
    )
    b = tmp_path / "b.onnx"
    onnx.save(broken, b)
    done = run("verify", block_path, b)
    assert done.returncode == 2
    assert "--input-shape" not in done.stderr and "--no-verify" not in done.stderr


def test_a_terminal_sees_the_phases_move(block_path, tmp_path, monkeypatch):
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    seen: list[str] = []
    monkeypatch.setattr(cli, "_progress", lambda message, quiet: seen.append(message))
    result = CliRunner().invoke(main, ["fuse", str(block_path), str(tmp_path / "o.onnx")])
    assert result.exit_code == 0
    phases = " | ".join(seen)
    for phase in ("loading", "passes, round 1", "verifying, fused model, batch 1/1", "saving"):
        assert phase in phases


def test_no_status_line_without_a_terminal(block_path, tmp_path):
    done = run("fuse", block_path, tmp_path / "o.onnx")
    assert done.returncode == 0 and done.stderr == ""
