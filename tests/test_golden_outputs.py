"""Golden outputs: `verify A B --save-outputs`, then `verify B --reference-outputs`, on the
README sample; per-output tolerances; the .npz written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import repvgg_onnx
from helpers import run
from repvgg_onnx.cli import _per_output, main
from repvgg_onnx.errors import InputSpecError, ModelSaveError
from repvgg_onnx.reports.render.schema import report_schema
from repvgg_onnx.verification import golden
from repvgg_onnx.verification.compare import RunResult, Tolerances

SAMPLE = Path(__file__).resolve().parent.parent / "models" / "samples" / "repvgg_a0_half.onnx"


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command in its own process (onnxruntime in a child, as users run it)."""
    return subprocess.run(
        [sys.executable, "-m", "repvgg_onnx", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A folder with deploy.onnx (the sample fused by `repvgg-onnx fuse`) and ref.npz (the
    sample's run on two random batches, saved by `verify --save-outputs`)."""
    folder = tmp_path_factory.mktemp("golden")
    done = cli("fuse", SAMPLE, "deploy.onnx", "--quiet", cwd=folder)
    assert done.returncode == 0, done.stderr
    done = cli("verify", SAMPLE, "deploy.onnx", "--batches", "2", "--save-outputs", "ref.npz",
               cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


def test_saved_file_holds_the_samples_inputs_and_its_outputs(recorded):
    with np.load(recorded / "ref.npz") as data:
        arrays = {key: data[key] for key in data.files}
    metadata = json.loads(str(arrays.pop("metadata")[()]))
    assert metadata["model_path"] == str(SAMPLE) and metadata["seed"] == 0
    assert metadata["batches"] == 2 and metadata["tool_version"] == repvgg_onnx.__version__
    assert sorted(arrays) == ["input/0/input", "input/1/input", "output/0/output",
                              "output/1/output"]  # fmt: skip
    sample = onnx.load(SAMPLE)
    for batch in (0, 1):
        feeds = {"input": arrays[f"input/{batch}/input"]}
        (expected,) = run(sample, feeds)
        np.testing.assert_array_equal(arrays[f"output/{batch}/output"], expected)
    assert not np.array_equal(arrays["input/0/input"], arrays["input/1/input"])


def test_deploy_model_passes_against_the_saved_outputs(recorded):
    done = cli("verify", "deploy.onnx", "--reference-outputs", "ref.npz", "--format", "json",
               cwd=recorded)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    jsonschema.validate(report, report_schema())
    assert report["passed"] and report["batches"] == 2
    assert report["reference"] == {"source": "saved outputs", "path": "ref.npz"}
    assert report["a_path"] == str(SAMPLE) and report["b_path"] == "deploy.onnx"
    # our own check: the deploy model, run here on the saved inputs, gives the saved outputs
    saved = golden.load_outputs(recorded / "ref.npz").run
    deploy = onnx.load(recorded / "deploy.onnx")
    for inputs, outputs in zip(saved.inputs, saved.outputs, strict=True):
        (actual,) = run(deploy, inputs)
        np.testing.assert_allclose(actual, outputs["output"], rtol=1e-4, atol=1e-4)


def test_text_markdown_and_html_name_the_saved_outputs(recorded):
    text = cli("verify", "deploy.onnx", "--reference-outputs", "ref.npz", cwd=recorded)
    assert f"the outputs saved in ref.npz by {SAMPLE} vs deploy.onnx" in text.stdout
    markdown = cli("verify", "deploy.onnx", "--reference-outputs", "ref.npz", "--format",
                   "markdown", cwd=recorded)  # fmt: skip
    assert "the outputs saved in `ref.npz`" in markdown.stdout
    done = cli("verify", "deploy.onnx", "--reference-outputs", "ref.npz", "--report", "v.html",
               cwd=recorded)  # fmt: skip
    assert done.returncode == 0
    assert "the outputs saved in ref.npz" in (recorded / "v.html").read_text()
    model_run = cli("verify", SAMPLE, "deploy.onnx", "--format", "json", cwd=recorded)
    assert json.loads(model_run.stdout)["reference"] == {"source": "model", "path": str(SAMPLE)}


def tampered(folder: Path) -> Path:
    """deploy.onnx with one weight of its first Conv changed."""
    model = onnx.load(folder / "deploy.onnx")
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    path = folder / "tampered.onnx"
    onnx.save(model, path)
    return path


def test_a_tampered_deploy_model_fails(recorded):
    done = cli("verify", tampered(recorded), "--reference-outputs", "ref.npz", cwd=recorded)
    assert done.returncode == 1, done.stderr
    assert "FAILED" in done.stdout and "the outputs saved in ref.npz" in done.stdout


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_missing_corrupt_or_output_less_file_is_one_line_exit_2(recorded):
    (recorded / "corrupt.npz").write_bytes((recorded / "ref.npz").read_bytes()[:300])
    with np.load(recorded / "ref.npz") as data:
        np.savez(recorded / "no_outputs.npz",
                 **{k: data[k] for k in data.files if not k.startswith("output/")})  # fmt: skip
        np.savez(recorded / "plain.npz", input=data["input/0/input"])
    expected = {
        "missing.npz": "file not found",
        "corrupt.npz": "not an .npz archive",
        "no_outputs.npz": "lacks the array 'output/0/output'",
        "plain.npz": "no repvgg-onnx metadata",
    }
    for name, reason in expected.items():
        done = cli("verify", "deploy.onnx", "--reference-outputs", name, cwd=recorded)
        assert reason in one_line_error(done)


def test_a_model_with_another_input_shape_is_one_line_exit_2(recorded):
    model = onnx.load(recorded / "deploy.onnx")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 112
    onnx.save(model, recorded / "small.onnx")
    done = cli("verify", "small.onnx", "--reference-outputs", "ref.npz", cwd=recorded)
    assert "input" in one_line_error(done) and "224" in done.stderr


def test_usage_errors(recorded, monkeypatch):
    monkeypatch.chdir(recorded)
    cases = [
        (["deploy.onnx", "deploy.onnx", "--reference-outputs", "ref.npz"], "place of A.onnx"),
        (["deploy.onnx"], "needs two models"),
        (["deploy.onnx", "--reference-outputs", "ref.npz", "--batches", "2"], "drop --batches"),
        (["deploy.onnx", "--reference-outputs", "ref.npz", "--seed", "1"], "drop --seed"),
        (["deploy.onnx", "--reference-outputs", "ref.npz", "--atol", "logits:1"], "'logits'"),
        ([SAMPLE, "deploy.onnx", "--rtol", "nope:1e-3"], "'nope'"),
    ]
    for args, words in cases:
        result = CliRunner().invoke(main, ["verify", *map(str, args)])
        assert result.exit_code == 2, result.output
        assert words in result.output


def test_per_output_tolerance_parsing():
    assert _per_output("--atol", ()) == (None, {})
    assert _per_output("--atol", ("1e-3",)) == (1e-3, {})
    parsed = _per_output("--atol", ("logits:0.5", "1e-3", "a:b:2"))
    assert parsed == (1e-3, {"logits": 0.5, "a:b": 2.0})
    for specs in [("x",), ("logits:",), ("logits:-1",), ("1", "2"), ("a:1", "a:2"), ("nan",)]:
        with pytest.raises(InputSpecError):
            _per_output("--atol", specs)


def test_per_output_tolerances_apply_to_their_output_only(recorded):
    """The tampered model passes only with a loose atol for its one output, given by name."""
    bad = str(tampered(recorded))
    reference = str(recorded / "ref.npz")
    loose = repvgg_onnx.verify(bad, reference_outputs=reference, output_atol={"output": 1e3})
    assert loose.passed and loose.outputs[0].atol == 1e3
    assert loose.to_dict()["output_atol"] == {"output": 1e3}
    strict = repvgg_onnx.verify(bad, reference_outputs=reference, atol=1e3,
                                output_atol={"output": 0.0})  # fmt: skip
    assert not strict.passed
    assert Tolerances(1.0, 2.0, {"a": 3.0}, {"b": 4.0}).for_output("a") == (3.0, 2.0)
    with pytest.raises(InputSpecError, match="'zzz'"):
        repvgg_onnx.verify(bad, reference_outputs=reference, output_rtol={"zzz": 1.0})


def test_api_saves_and_replays(tmp_path, recorded):
    path = tmp_path / "api.npz"
    result = repvgg_onnx.verify(SAMPLE, recorded / "deploy.onnx", save_outputs=path, seed=5)
    assert result.passed and result.to_dict()["reference"]["source"] == "model"
    saved = golden.load_outputs(path)
    assert saved.seed == 5 and saved.model_path == str(SAMPLE)
    (expected,) = run(onnx.load(SAMPLE), saved.run.inputs[0])
    np.testing.assert_array_equal(saved.run.outputs[0]["output"], expected)
    assert repvgg_onnx.verify(recorded / "deploy.onnx", reference_outputs=path).passed
    with pytest.raises(InputSpecError):
        repvgg_onnx.verify(SAMPLE, recorded / "deploy.onnx", reference_outputs=path)


def test_the_npz_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves no file (and an old file as it was)."""
    run_result = RunResult(
        ({"x": np.ones((2, 3), np.float32)},), ({"y": np.zeros((2,), np.float32)},)
    )
    path = tmp_path / "ref.npz"

    def half_then_fail(file, **arrays):
        with contextlib.ExitStack() as stack:
            if isinstance(file, str | os.PathLike):  # a writer that opens the path itself
                file = stack.enter_context(open(file, "wb"))
            file.write(b"PK partial")
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises((ModelSaveError, OSError)) as caught:
        golden.save_outputs(run_result, path, model_path=None, seed=0)
    assert os.listdir(tmp_path) == []
    assert caught.type is ModelSaveError  # a one-line error for the user
    monkeypatch.undo()
    golden.save_outputs(run_result, path, model_path=None, seed=0)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(ModelSaveError):
        golden.save_outputs(run_result, path, model_path=None, seed=0)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ref.npz"]


def test_cli_leaves_no_npz_when_verification_cannot_run(recorded, tmp_path):
    """Unusable input (a missing model B) stops before anything is written."""
    done = cli("verify", SAMPLE, "nowhere.onnx", "--save-outputs", tmp_path / "x.npz",
               cwd=recorded)  # fmt: skip
    assert done.returncode == 2 and not (tmp_path / "x.npz").exists()


def golden_recipe() -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    match = re.search(r"<!-- recipe: golden-outputs.sh -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert match, "docs/ci.md lost its golden-outputs recipe"
    return match.group(1)


def test_docs_ci_golden_recipe_records_then_holds_the_deploy_model(recorded, tmp_path):
    script = tmp_path / "golden-outputs.sh"
    script.write_text(golden_recipe())

    def recipe(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=300, check=False)  # fmt: skip

    deploy = str(recorded / "deploy.onnx")
    first = recipe(TRAINED=str(SAMPLE), DEPLOY=deploy)
    assert first.returncode == 0, first.stderr
    with np.load(tmp_path / "golden" / "outputs.npz") as data:
        assert json.loads(str(data["metadata"][()]))["batches"] == 4
    assert "the outputs saved in `golden/outputs.npz`" in (tmp_path / "golden.md").read_text()
    again = recipe(DEPLOY=deploy)  # no training model any more
    assert again.returncode == 0, again.stderr
    assert recipe(DEPLOY=str(tampered(recorded))).returncode == 1
