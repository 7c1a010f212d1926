"""The CLI: exit codes, one-line errors, nothing written on failure, input never changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from helpers import REPVGG_BRANCHES, assert_same_function, block_model, op_counts
from repvgg_onnx.cli import main


@pytest.fixture
def block_path(tmp_path: Path) -> Path:
    path = tmp_path / "block.onnx"
    onnx.save(block_model(REPVGG_BRANCHES, batch="N"), path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fuse_writes_a_verified_deploy_model(block_path, tmp_path):
    out = tmp_path / "out.onnx"
    before = digest(block_path)
    result = invoke("fuse", block_path, out)
    assert result.exit_code == 0, result.output
    assert "Conv3x3+BN, Conv1x1+BN, BN → Conv3x3" in result.output
    assert "Verified:   passed" in result.output
    assert digest(block_path) == before
    fused = onnx.load(out)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert_same_function(onnx.load(block_path), fused)


def test_fuse_json_report(block_path, tmp_path):
    result = invoke("fuse", block_path, tmp_path / "out.onnx", "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["schema_version"] == 2
    assert report["before"]["op_counts"]["BatchNormalization"] == 3
    assert report["after"]["op_counts"] == {"Conv": 1, "Relu": 1}
    assert report["verification"]["passed"] is True
    assert report["fused"][0]["branches"] == ["Conv3x3+BN", "Conv1x1+BN", "BN"]


def test_fuse_in_place_replaces_only_with_the_verified_model(block_path):
    result = invoke("fuse", block_path, block_path, "-q")
    assert result.exit_code == 0 and result.output == ""
    assert op_counts(onnx.load(block_path)) == {"Conv": 1, "Relu": 1}
    assert [p.name for p in block_path.parent.iterdir()] == ["block.onnx"]


def test_failed_verification_exits_1_and_writes_nothing(block_path, tmp_path, monkeypatch):
    import repvgg_onnx.passes.readers as readers

    real = readers.batchnorm_scale_shift

    def wrong_eps(gamma, beta, mean, var, eps):
        return real(gamma, beta, mean, var, eps * 100)

    monkeypatch.setattr(readers, "batchnorm_scale_shift", wrong_eps)
    out = tmp_path / "out.onnx"
    result = invoke("fuse", block_path, out)
    assert result.exit_code == 1
    assert "verification failed: output 'y' differs by up to" in result.output
    assert not out.exists()


def test_no_verify_skips_onnxruntime(block_path, tmp_path):
    result = invoke("fuse", block_path, tmp_path / "o.onnx", "--no-verify")
    assert result.exit_code == 0
    assert "Verified:   skipped: not requested (--no-verify)" in result.output


def test_input_shape_option(block_path, tmp_path):
    result = invoke("fuse", block_path, tmp_path / "o.onnx", "--input-shape", "x:3x4x8x8")
    assert result.exit_code == 0, result.output
    assert "x:3x4x8x8" in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("x:1x4", "does not fit input 'x'"),
        ("nope:1x4x8x8", "no input named 'nope'"),
        ("x=1x4x8x8", "write it as NAME:DIMS"),
    ],
)
def test_bad_input_shape_is_exit_2(block_path, tmp_path, spec, message):
    out = tmp_path / "o.onnx"
    result = invoke("fuse", block_path, out, "--input-shape", spec)
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_dynamic_spatial_dims_need_an_input_shape(tmp_path):
    model = block_model(REPVGG_BRANCHES)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    result = invoke("fuse", path, tmp_path / "o.onnx")
    assert result.exit_code == 2
    assert "--input-shape x:1x4xNx8" in result.output


def write_training_model(path: Path) -> None:
    model = block_model(REPVGG_BRANCHES)
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            node.attribute.append(onnx.helper.make_attribute("training_mode", 1))
    onnx.save(model, path)


def write_dangling(path: Path) -> None:
    model = block_model(REPVGG_BRANCHES)
    model.graph.node[0].input[1] = "missing_weight"
    onnx.save(model, path)


BAD_INPUTS = {
    "missing": lambda p: None,
    "directory": lambda p: p.mkdir(),
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "text": lambda p: p.write_text("this is not a model\n"),
    "truncated": lambda p: p.write_bytes(block_model(REPVGG_BRANCHES).SerializeToString()[:300]),
    "dangling weight": write_dangling,
    "training mode": write_training_model,
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, kind):
    path = tmp_path / "bad.onnx"
    BAD_INPUTS[kind](path)
    out = tmp_path / "out.onnx"
    result = invoke("fuse", path, out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bad.onnx"] if kind != "missing" else [])


def test_external_data_escaping_the_folder_is_refused(tmp_path):
    model = block_model(REPVGG_BRANCHES)
    weight = model.graph.initializer[0]
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="../secret.bin")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    result = invoke("fuse", path, tmp_path / "o.onnx")
    assert result.exit_code == 2
    assert ".." in result.output and result.output.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "t.onnx"
    path.write_text("nope")
    result = CliRunner().invoke(main, ["fuse", str(path), str(tmp_path / "o.onnx"), "--debug"])
    assert result.exit_code != 0
    assert result.exception is not None and type(result.exception).__name__ == "ModelLoadError"


def test_real_subprocess_and_version(block_path, tmp_path):
    out = tmp_path / "out.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "repvgg_onnx", "fuse", str(block_path), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() and done.stderr == ""
    bad = subprocess.run(
        ["repvgg-onnx", "fuse", str(tmp_path / "missing.onnx"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "file not found" in bad.stderr
    assert "repvgg-onnx, version" in invoke("--version").output


def test_debug_shows_the_traceback_of_an_internal_error(block_path, tmp_path, monkeypatch):
    from repvgg_onnx import api

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api, "inspect", broken)
    plain = invoke("inspect", block_path)
    assert plain.exit_code == 3
    assert plain.stderr.strip() == (
        "internal error: RuntimeError: a bug; rerun with --debug and report it."
    )
    debugged = invoke("inspect", block_path, "--debug")
    assert isinstance(debugged.exception, RuntimeError)


def test_an_error_still_writes_the_report_asked_for(tmp_path):
    """A CI job always has a report to show: a failed command writes an error report."""
    report = tmp_path / "report.json"
    result = invoke("fuse", tmp_path / "missing.onnx", tmp_path / "out.onnx", "--report", report)
    assert result.exit_code == 2
    written = json.loads(report.read_text())
    assert written["error"]["exit_code"] == 2 and written["verdict"]["status"] == "error"
    assert "file not found" in written["error"]["message"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--atol", "-1"], "--atol must be a number >= 0, not -1."),
        (["--atol", "1e-3", "--atol", "1e-4"], "--atol VALUE is given 2 times; give it once."),
        (["--rtol", "y:1e-3", "--rtol", "y:1e-2"], "--rtol gives output 'y' two values"),
    ],
)
def test_verify_refuses_tolerances_that_contradict_themselves(block_path, options, message):
    result = invoke("verify", block_path, block_path, *options)
    assert result.exit_code == 2 and message in result.stderr


def test_verify_refuses_inputs_with_input_shapes_and_a_missing_model_b(block_path, tmp_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input=np.zeros((1, 4, 8, 8), np.float32))
    both = invoke(
        "verify", block_path, block_path, "--inputs", inputs, "--input-shape", "x:1x4x8x8"
    )
    assert both.exit_code == 2 and "--inputs fixes the shapes itself" in both.stderr
    alone = invoke("verify", block_path)
    assert alone.exit_code == 2 and "verify needs two models" in alone.stderr


def test_fuse_of_a_deploy_form_warns_that_nothing_was_fused(tmp_path):
    fused = tmp_path / "fused.onnx"
    first = invoke("fuse", _write_block(tmp_path), fused)
    assert first.exit_code == 0 and f"Wrote {fused}" in first.stdout
    again = invoke("fuse", fused, tmp_path / "twice.onnx")
    assert again.exit_code == 0
    assert "nothing was fused" in again.stderr and "computes the same graph" in again.stderr


def _write_block(folder: Path) -> Path:
    path = folder / "block.onnx"
    onnx.save(block_model(REPVGG_BRANCHES), path)
    return path
