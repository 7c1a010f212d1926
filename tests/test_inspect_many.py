"""``inspect`` of several models: folders, patterns, one line per model, the worst exit code,
the gate exactly as for one model, a schema-valid JSON report and GitHub annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import onnx
import pytest
from click.testing import CliRunner
from test_functions import if_model

import repvgg_onnx
from helpers import ci_doc_block
from repvgg_onnx.cli import main
from repvgg_onnx.reports.render.formats import render
from repvgg_onnx.reports.render.github import escape_data, escape_property, workflow_command
from repvgg_onnx.reports.render.schema import report_schema

MODELS = Path(__file__).resolve().parent.parent / "models"
TINY = MODELS / "fixtures" / "tiny_block"
PREBN_PADDED = MODELS / "fixtures" / "families" / "prebn_padded"  # BNs fuse leaves: passes
SAMPLE = MODELS / "samples" / "repvgg_a0_half.onnx"
SAMPLE_DEPLOY = MODELS / "samples" / "repvgg_a0_half.deploy.onnx"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def validated(text: str) -> dict:
    report = json.loads(text)
    jsonschema.validate(report, report_schema())
    return report


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A training form and a deploy form at the top, a training form one folder down, a
    model with a BatchNormalization inside an If body, and a file that is not a model."""
    root = tmp_path_factory.mktemp("models")
    shutil.copy(TINY / "ts17.onnx", root / "b_training.onnx")
    shutil.copy(TINY / "reference.onnx", root / "a_deploy.onnx")
    (root / "sub").mkdir()
    shutil.copy(TINY / "ts13.onnx", root / "sub" / "c_training.onnx")
    onnx.save(if_model(), root / "sub" / "d_if.onnx")
    (root / "notes.txt").write_text("not a model, not .onnx: not inspected")
    return root


def model_lines(output: str) -> list[str]:
    """The per-model lines of the text summary (after the last report)."""
    return [line for line in output.splitlines() if line.startswith("  ") and ".onnx" in line]


def test_a_folder_is_its_models_recursively_sorted_one_line_each(folder):
    result = invoke("inspect", folder, "--fail-if-fusable")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-5:] == [
        f"  deploy form    {folder}/a_deploy.onnx",
        f"  training form  {folder}/b_training.onnx: 1 fusable block remains",
        f"  training form  {folder}/sub/c_training.onnx: 1 fusable block remains",
        f"  training form  {folder}/sub/d_if.onnx: 1 BatchNormalization and 1 sum of linear "
        "branches inside the then_branch of If 'if_0': not fused by this tool",
        f"4 models: 3 in training form ({folder}/b_training.onnx, "
        f"{folder}/sub/c_training.onnx, {folder}/sub/d_if.onnx), 1 in deploy form",
    ]
    # each model's own report comes first, exactly as inspect of that model alone prints it
    for name in ("a_deploy.onnx", "b_training.onnx", "sub/c_training.onnx", "sub/d_if.onnx"):
        alone = invoke("inspect", folder / name)
        assert alone.stdout.rstrip("\n") + "\n\n" in result.stdout
    errors = result.stderr.splitlines()
    assert errors == [
        f"error: {folder}/b_training.onnx: 1 fusable block remains; run repvgg-onnx fuse "
        f"{folder}/b_training.onnx {folder}/b_training.deploy.onnx before shipping.",
        f"error: {folder}/sub/c_training.onnx: 1 fusable block remains; run repvgg-onnx fuse "
        f"{folder}/sub/c_training.onnx {folder}/sub/c_training.deploy.onnx before shipping.",
        f"error: {folder}/sub/d_if.onnx: 1 BatchNormalization and 1 sum of linear branches "
        "inside the then_branch of If 'if_0': not fused by this tool; re-parameterize these "
        "blocks before export (fuse does not rewrite control-flow bodies).",
    ]


def test_without_the_gate_several_models_exit_0(folder):
    result = invoke("inspect", folder)
    assert result.exit_code == 0 and result.stderr == ""


def test_a_pattern_the_shell_left_alone_is_expanded_sorted(folder):
    result = invoke("inspect", f"{folder}/**/*_training.onnx", "--format", "json")
    assert result.exit_code == 0
    report = validated(result.stdout)
    assert [m["path"] for m in report["models"]] == [
        f"{folder}/b_training.onnx",
        f"{folder}/sub/c_training.onnx",
    ]
    folders = invoke("inspect", f"{folder}/su?", f"{folder}/b_*", "--format", "json")
    assert [m["path"] for m in validated(folders.stdout)["models"]] == [
        f"{folder}/sub/c_training.onnx",  # a folder the pattern matches: its models
        f"{folder}/sub/d_if.onnx",
        f"{folder}/b_training.onnx",
    ]


def test_the_gate_refuses_exactly_what_it_refuses_for_one_model(folder):
    """Every model: listed in ``gate_failed`` iff ``inspect MODEL --fail-if-fusable`` exits 1
    (training forms, deploy forms, BNs fuse leaves alone, a BN inside an If body)."""
    directories = (TINY, PREBN_PADDED, MODELS / "fixtures" / "tiny_relu_in_branch")
    paths = [p for d in directories for p in sorted(d.glob("*.onnx"))]
    paths.append(folder / "sub" / "d_if.onnx")
    many = invoke("inspect", *paths, "--fail-if-fusable", "--format", "json")
    report = validated(many.stdout)
    alone = {str(p): invoke("inspect", p, "--fail-if-fusable", "-q").exit_code for p in paths}
    assert sorted(set(alone.values())) == [0, 1]
    assert report["gate_failed"] == [p for p, code in alone.items() if code == 1]
    assert many.exit_code == 1


def test_unusable_models_are_reported_and_exit_2_beats_1(folder, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_text("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing.onnx"
    args = [corrupt, folder / "b_training.onnx", missing, empty, f"{tmp_path}/*.none.onnx"]
    result = invoke("inspect", *args, "--fail-if-fusable", "--format", "json")
    assert result.exit_code == 2
    report = validated(result.stdout)
    assert report["gate_failed"] == [f"{folder}/b_training.onnx"]
    assert report["unusable"] == [str(corrupt), str(missing), str(empty), f"{tmp_path}/*.none.onnx"]
    errors = [m["error"] for m in report["models"] if "error" in m]
    assert [e["exit_code"] for e in errors] == [2, 2, 2, 2]
    assert "not an ONNX model" in errors[0]["message"]
    assert "file not found" in errors[1]["message"]
    assert errors[2]["message"] == f"{empty}: this folder names no .onnx file."
    assert errors[3]["message"] == f"{tmp_path}/*.none.onnx: this pattern names no .onnx file."
    stderr = result.stderr.splitlines()
    assert len(stderr) == 5 and all(line.startswith("error: ") for line in stderr)
    assert "b_training.onnx: 1 fusable block remains" in stderr[1]
    text = invoke("inspect", *args).stdout
    assert text.splitlines()[-1] == (
        f"5 models: 1 in training form ({folder}/b_training.onnx), 4 unusable ({corrupt}, "
        f"{missing}, {empty}, {tmp_path}/*.none.onnx)"
    )


def test_one_model_is_reported_as_before(folder):
    """One file: the report of that model alone, not a many-model report."""
    path = folder / "b_training.onnx"
    inspection = repvgg_onnx.inspect(path)
    for output_format in ("text", "markdown", "json"):
        result = invoke("inspect", path, "--format", output_format)
        assert result.stdout == render(inspection.to_dict(), output_format).rstrip("\n") + "\n"
    gated = invoke("inspect", path, "--fail-if-fusable", "-q")
    assert gated.exit_code == 1
    assert gated.stderr == (
        f"error: 1 fusable block remains; run repvgg-onnx fuse {path} "
        f"{folder / 'b_training.deploy.onnx'} before shipping.\n"
    )
    in_body = invoke("inspect", folder / "sub" / "d_if.onnx", "--fail-if-fusable", "-q")
    assert in_body.exit_code == 1
    assert in_body.stderr == (
        "error: 1 BatchNormalization and 1 sum of linear branches inside the then_branch of If "
        "'if_0': not fused by this tool; re-parameterize these blocks before export (fuse does "
        "not rewrite control-flow bodies).\n"
    )


def test_a_folder_with_one_model_is_still_a_summary(folder):
    result = invoke("inspect", folder / "sub", "--format", "json")
    assert validated(result.stdout)["kind"] == "inspect_many"


@pytest.mark.parametrize("extension", [".md", ".html", ".txt", ".json"])
def test_report_file_of_several_models(folder, tmp_path, extension):
    report = tmp_path / f"report{extension}"
    result = invoke("inspect", folder, "--report", report, "-q")
    assert result.exit_code == 0 and result.stdout == ""
    text = report.read_text()
    if extension == ".md":
        first = text.splitlines()[0]
        assert first == "### repvgg-onnx inspect: ❌ 4 models: 3 in training form (" + (
            f"{folder}/b_training.onnx, {folder}/sub/c_training.onnx, {folder}/sub/d_if.onnx), "
            "1 in deploy form"
        )
        assert f"| `{folder}/a_deploy.onnx` | ✅ deploy form |  |" in text
        assert text.count("### repvgg-onnx inspect `") == 4  # each model's own page
    elif extension == ".html":
        assert "4 models: 3 in training form" in text and text.count("<h1>") == 5
    elif extension == ".json":
        assert validated(text)["kind"] == "inspect_many"


def test_markdown_of_deploy_forms_says_so(folder):
    result = invoke("inspect", folder / "a_deploy.onnx", SAMPLE_DEPLOY, "--format", "markdown")
    assert result.stdout.startswith("### repvgg-onnx inspect: ✅ 2 models: 2 in deploy form\n"), (
        result.stdout[:200]
    )


def test_github_annotations_one_per_model(folder):
    result = invoke("inspect", folder, "--format", "github", "--fail-if-fusable")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"::notice file={folder}/a_deploy.onnx,title=repvgg-onnx::deploy form: nothing left to "
        "fuse.",
        f"::error file={folder}/b_training.onnx,title=repvgg-onnx%3A training-form model::"
        f"1 fusable block remains; run repvgg-onnx fuse {folder}/b_training.onnx "
        f"{folder}/b_training.deploy.onnx before shipping.",
        f"::error file={folder}/sub/c_training.onnx,title=repvgg-onnx%3A training-form model::"
        f"1 fusable block remains; run repvgg-onnx fuse {folder}/sub/c_training.onnx "
        f"{folder}/sub/c_training.deploy.onnx before shipping.",
        f"::error file={folder}/sub/d_if.onnx,title=repvgg-onnx%3A training-form model::"
        "1 BatchNormalization and 1 sum of linear branches inside the then_branch of If "
        "'if_0': not fused by this tool; re-parameterize these blocks before export (fuse "
        "does not rewrite control-flow bodies).",
    ]


def test_github_annotations_escape_what_the_runner_reads(tmp_path):
    odd = tmp_path / "50%, a:b.onnx"  # the space makes the fix quote the path
    shutil.copy(TINY / "ts17.onnx", odd)
    result = invoke("inspect", odd, "--format", "github")
    escaped = str(tmp_path).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert result.stdout.startswith(
        f"::error file={escaped}/50%25%2C a%3Ab.onnx,title=repvgg-onnx%3A training-form model::"
        f"1 fusable block remains; run repvgg-onnx fuse '{str(odd).replace('%', '%25')}' "
    )
    assert result.stdout.count("\n") == 1


def test_workflow_command_escaping():
    assert escape_data("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b"
    assert escape_property("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext%3A a%2Cb"
    assert escape_data("%0A") == "%250A"  # an escape in the text is not read as one
    assert workflow_command("error", "x\ny", file="a:b.onnx", title="t,1") == (
        "::error file=a%3Ab.onnx,title=t%2C1::x%0Ay"
    )
    assert workflow_command("notice", "plain") == "::notice::plain"


def test_the_documented_many_model_output(monkeypatch):
    """docs/ci.md's ``inspect models/samples --fail-if-fusable``: its last lines as printed."""
    monkeypatch.chdir(MODELS.parent)
    result = CliRunner().invoke(main, ["inspect", "models/samples", "--fail-if-fusable"])
    assert result.exit_code == 1
    printed = result.stdout.splitlines()[-3:] + result.stderr.splitlines()
    documented = ci_doc_block("inspect-many").splitlines()
    assert documented[0] == "$ repvgg-onnx inspect models/samples --fail-if-fusable"
    assert documented[1] == "…" and documented[2:] == printed


def test_what_fuse_leaves_makes_a_model_not_deploy_form(tmp_path):
    """BatchNormalizations fuse must leave (before zero-padded convs) and a sum of linear
    branches it cannot merge (stride-2 ``SAME`` on an input of unknown size) each make a
    model "not deploy form", with what would remain, never "deploy form"."""
    from helpers import BranchSpec, block_model, fuse_model

    same = [
        BranchSpec("conv_bn", stride=2, auto_pad="SAME_UPPER"),
        BranchSpec("conv_bn", kernel=(1, 1), stride=2, auto_pad="SAME_UPPER"),
    ]
    branch_sum, _ = fuse_model(block_model(same, size="h"))
    onnx.save(branch_sum, tmp_path / "branch_sum.onnx")
    batchnorms = PREBN_PADDED / "ts17_nofold.onnx"
    result = invoke("inspect", batchnorms, tmp_path / "branch_sum.onnx", TINY / "reference.onnx")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-4:-1] == [
        f"  not deploy form  {batchnorms}: 2 BatchNormalizations would remain",
        f"  not deploy form  {tmp_path}/branch_sum.onnx: 1 sum of linear branches would remain",
        f"  deploy form      {TINY / 'reference.onnx'}",
    ]
