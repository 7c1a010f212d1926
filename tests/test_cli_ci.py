"""verify, diff and inspect: exit codes, formats, --report, and JSON valid against the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import repvgg_onnx
from repvgg_onnx.cli import main
from repvgg_onnx.reports.render.schema import report_schema

MODELS = Path(__file__).resolve().parent.parent / "models"
TRAINING = MODELS / "fixtures" / "tiny_repvgg_se" / "ts17_nofold.onnx"
SCHEMA = report_schema()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def validated(text: str) -> dict:
    report = json.loads(text)
    jsonschema.validate(report, SCHEMA)
    return report


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(training form, its fused form, the fused form with one fused weight nudged by 1e-2)."""
    folder = tmp_path_factory.mktemp("pair")
    fused = folder / "fused.onnx"
    repvgg_onnx.fuse(TRAINING).save(fused)
    model = onnx.load(fused)
    tensor = next(
        t
        for t in model.graph.initializer
        if t.name.endswith("reparam.weight") and "stage2" in t.name
    )
    tensor.CopyFrom(
        numpy_helper.from_array(numpy_helper.to_array(tensor) + np.float32(1e-2), tensor.name)
    )
    tampered = folder / "tampered.onnx"
    onnx.save(model, tampered)
    return TRAINING, fused, tampered


def test_verify_honest_pair_exits_0_with_valid_json(pair):
    training, fused, _ = pair
    result = invoke("verify", training, fused, "--format", "json", "--batches", "2")
    assert result.exit_code == 0, result.output
    report = validated(result.output)
    assert report["passed"] and report["batches"] == 2
    [output] = report["outputs"]
    assert output["top1_agreement"] == 1.0 and output["cosine_similarity"] > 0.999999


def test_verify_tampered_pair_exits_1_and_localizes_the_block(pair):
    training, _, tampered = pair
    result = invoke("verify", training, tampered, "--localize", "--format", "json")
    assert result.exit_code == 1
    report = validated(result.output)
    assert not report["passed"]
    localization = report["localization"]
    assert localization["tensor"].startswith("/stage2/")
    assert "Conv" in localization["b_producer"] and "reparam" in localization["b_producer"]


def test_verify_with_the_users_inputs(pair, tmp_path):
    training, fused, _ = pair
    data = tmp_path / "inputs.npz"
    np.savez(data, input=np.random.default_rng(5).normal(size=(1, 3, 32, 32)).astype(np.float32))
    result = invoke("verify", training, fused, "--inputs", data, "--format", "json")
    assert result.exit_code == 0, result.output
    assert validated(result.output)["input_shapes"] == {"input": [1, 3, 32, 32]}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"wrong": np.zeros((1, 3, 32, 32), np.float32)}, "missing ['input']"),
        ({"input": np.zeros((1, 3, 32, 32), np.float64)}, "is float64, the model wants float32"),
        ({"input": np.zeros((1, 3, 16, 32), np.float32)}, "does not fit input 'input'"),
    ],
)
def test_verify_rejects_inputs_that_do_not_fit(pair, tmp_path, arrays, message):
    training, fused, _ = pair
    data = tmp_path / "inputs.npz"
    np.savez(data, **arrays)
    result = invoke("verify", training, fused, "--inputs", data)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1


def test_verify_matches_renamed_outputs_by_position_with_a_warning(pair, tmp_path):
    training, fused, _ = pair
    model = onnx.load(fused)
    old = model.graph.output[0].name
    model.graph.output[0].name = "logits"
    for node in model.graph.node:
        node.output[:] = ["logits" if o == old else o for o in node.output]
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    result = CliRunner().invoke(main, ["verify", str(training), str(renamed), "--format", "json"])
    assert result.exit_code == 0
    report = validated(result.stdout)
    assert report["outputs"][0]["b_name"] == "logits"
    assert "compared by position" in report["warnings"][0]


def test_verify_unusable_input_exits_2(pair, tmp_path):
    training, _, _ = pair
    result = invoke("verify", training, tmp_path / "missing.onnx")
    assert result.exit_code == 2 and "file not found" in result.output


@pytest.mark.parametrize("output_format", ["text", "markdown", "json"])
def test_diff_names_the_fused_blocks_in_every_format(pair, output_format):
    training, fused, _ = pair
    result = invoke("diff", training, fused, "--format", output_format)
    assert result.exit_code == 0, result.output
    assert "Conv3x3+BN, Conv1x1+BN, BN → Conv3x3" in result.output
    if output_format == "json":
        report = validated(result.output)
        assert len(report["blocks"]) == 7  # the seven RepVGG blocks of tiny_repvgg_se
        counts = {row["op"]: (row["a"], row["b"]) for row in report["op_changes"]}
        assert counts["BatchNormalization"] == (16, 0) and counts["Add"] == (9, 0)
    else:
        assert "BatchNormalization" in result.output


def test_inspect_gates_training_form_models(pair):
    training, fused, _ = pair
    failing = invoke("inspect", training, "--fail-if-fusable", "--format", "json")
    assert failing.exit_code == 1
    report = validated(failing.stdout)
    assert len(report["fusable"]) > 0
    passing = invoke("inspect", fused, "--fail-if-fusable", "--format", "json")
    assert passing.exit_code == 0
    assert validated(passing.output)["fusable"] == []


def test_fuse_json_is_valid_against_the_schema(tmp_path):
    result = invoke("fuse", TRAINING, tmp_path / "o.onnx", "--format", "json")
    assert result.exit_code == 0
    validated(result.output)


@pytest.mark.parametrize("extension", [".json", ".md", ".txt"])
@pytest.mark.parametrize("command", ["fuse", "verify", "diff", "inspect"])
def test_report_file_in_the_format_its_extension_names(pair, tmp_path, command, extension):
    training, fused, _ = pair
    report = tmp_path / f"report{extension}"
    args = {
        "fuse": ["fuse", training, tmp_path / "o.onnx"],
        "verify": ["verify", training, fused],
        "diff": ["diff", training, fused],
        "inspect": ["inspect", training],
    }[command]
    result = invoke(*args, "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    text = report.read_text()
    if extension == ".json":
        assert validated(text)["kind"] == command
    elif extension == ".md":
        assert text.startswith(f"### repvgg-onnx {command}")


def test_report_with_an_unknown_extension_is_refused_before_any_work(pair, tmp_path):
    training, _, _ = pair
    out = tmp_path / "o.onnx"
    result = invoke("fuse", training, out, "--report", tmp_path / "r.pdf")
    assert result.exit_code == 2 and "unknown extension '.pdf'" in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["fuse", "verify", "diff", "inspect"])
def test_every_command_exits_2_on_an_unusable_model(tmp_path, command):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    args = [command, bad] + (
        [] if command == "inspect" else [bad if command != "fuse" else tmp_path / "o.onnx"]
    )
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_diff_html_report_pictures_every_block(pair, tmp_path):
    training, fused, _ = pair
    page = tmp_path / "diff.html"
    result = invoke("diff", training, fused, "--report", page, "-q")
    assert result.exit_code == 0
    html = page.read_text()
    assert html.count("<svg") >= 2 * 7
    assert "Conv3x3+BN, Conv1x1+BN, BN → Conv3x3" in html
    assert "http://" not in html and "https://" not in html


def test_verify_text_and_markdown_name_the_agreement_and_the_divergence(pair):
    """The text report shows a classifier's top-1 agreement, and with --localize the tensor
    where the tampered model first diverges; Markdown shows each output compared."""
    training, fused, tampered = pair
    honest = invoke("verify", training, fused).stdout
    assert "top-1 agreement 100.0%" in honest
    localized = invoke("verify", training, tampered, "--localize").stdout
    assert "FAILED: the models differ" in localized
    assert "localized: " in localized and "/stage2/" in localized
    localized_markdown = invoke(
        "verify", training, tampered, "--localize", "--format", "markdown"
    ).stdout
    [line] = [line for line in localized_markdown.splitlines() if "Localized" in line]
    assert line.startswith("**Localized:** ") and "/stage2/" in line
    assert "Localized" not in invoke("verify", training, fused, "--format", "markdown").stdout
    markdown = invoke("fuse", training, fused.parent / "again.onnx", "--format", "markdown")
    assert "'output' ok: max abs" in markdown.stdout
