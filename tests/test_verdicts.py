"""Every report states its verification verdict truly (passed, failed with numbers, skipped
with the reason, or error) in every format, and the defaults never lose a user's file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from helpers import REPVGG_BRANCHES, block_model
from repvgg_onnx.cli import main
from repvgg_onnx.reports.render.schema import report_schema

SAMPLE = Path(__file__).resolve().parent.parent / "models" / "samples" / "repvgg_a0_half.onnx"
FORMATS = (".json", ".md", ".html", ".txt")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def block_path(tmp_path: Path) -> Path:
    path = tmp_path / "block.onnx"
    onnx.save(block_model(REPVGG_BRANCHES), path)
    return path


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_failed_verification_is_reported_as_failed_with_numbers(block_path, tmp_path, suffix):
    """The issue's command: tolerances nobody can meet. Exit 1, nothing written, and every
    format says FAILED with the error it measured, never "skipped"."""
    out, report = tmp_path / "t.onnx", tmp_path / f"f{suffix}"
    result = invoke("fuse", block_path, out, "--atol", "1e-12", "--rtol", "0", "--report", report)
    assert result.exit_code == 1
    assert not out.exists()
    text = report.read_text()
    assert "not requested" not in text and "Not verified" not in text
    if suffix == ".json":
        data = json.loads(text)
        jsonschema.validate(data, report_schema())
        assert data["verdict"]["status"] == "failed"
        assert data["verification"]["passed"] is False
        assert data["verification"]["outputs"][0]["max_abs_error"] > 0
        assert "differs by up to" in data["verdict"]["reason"]
    else:
        assert "FAILED" in text and ("differs by up to" in text or "max abs err" in text)


@pytest.mark.parametrize("suffix", FORMATS)
def test_no_verify_is_reported_as_skipped_with_the_reason(block_path, tmp_path, suffix):
    report = tmp_path / f"r{suffix}"
    result = invoke("fuse", block_path, tmp_path / "o.onnx", "--no-verify", "--report", report)
    assert result.exit_code == 0
    text = report.read_text()
    assert "not requested (--no-verify)" in text
    if suffix == ".json":
        data = json.loads(text)
        assert data["verdict"] == {"status": "skipped", "reason": "not requested (--no-verify)"}
        assert data["verification"] is None


def test_a_passed_verification_says_passed_everywhere(block_path, tmp_path):
    for suffix in FORMATS:
        report = tmp_path / f"p{suffix}"
        out = tmp_path / f"o{suffix}.onnx"
        assert invoke("fuse", block_path, out, "--report", report).exit_code == 0
        text = report.read_text()
        assert "passed" in text.lower() or "verified" in text.lower(), suffix
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["verdict"]["status"] == "passed"


@pytest.mark.parametrize("command", ["fuse", "verify", "diff", "inspect"])
def test_a_report_is_written_when_loading_fails(tmp_path, command):
    missing = tmp_path / "missing.onnx"
    report = tmp_path / "r.json"
    args = {
        "fuse": [missing, tmp_path / "o.onnx"],
        "verify": [missing, missing],
        "diff": [missing, missing],
        "inspect": [missing],
    }[command]
    result = invoke(command, *args, "--report", report)
    assert result.exit_code == 2
    data = json.loads(report.read_text())
    jsonschema.validate(data, report_schema())
    assert data["kind"] == command and data["error"]["exit_code"] == 2
    assert "not found" in data["error"]["message"]
    assert data["verdict"]["status"] == "error"


def test_diff_and_inspect_say_they_verify_nothing(block_path, tmp_path):
    for args in (["diff", block_path, block_path], ["inspect", block_path]):
        data = json.loads(invoke(*args, "--format", "json").output)
        assert data["verdict"]["status"] == "skipped" and data["verdict"]["reason"]


def _with_outputs(shape: list[int], dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """``y = Reshape(x, shape)`` (and a Cast when ``dtype`` is not float)."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"])]
    nodes.append(helper.make_node("Cast", ["r"], ["y"], to=dtype))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", dtype, shape)],
        [numpy_helper.from_array(np.array(shape, np.int64), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("b_shape", "b_type", "named"),
    [([3, 4], TensorProto.FLOAT, "shapes differ"), ([2, 6], TensorProto.FLOAT16, "types differ")],
)
def test_verify_names_shape_and_type_mismatches(tmp_path, b_shape, b_type, named):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_with_outputs([2, 6]), a)
    onnx.save(_with_outputs(b_shape, b_type), b)
    result = invoke("verify", a, b)
    assert result.exit_code == 1
    assert named in result.output and "n/a" not in result.output
    data = json.loads(invoke("verify", a, b, "--format", "json").output)
    jsonschema.validate(data, report_schema())
    assert named in data["verdict"]["reason"]


def test_swapped_arguments_overwrite_nothing(block_path, tmp_path):
    """``fuse deploy.onnx train.onnx``: the training model is an existing output; exit 2."""
    deploy = tmp_path / "deploy.onnx"
    assert invoke("fuse", block_path, deploy, "-q").exit_code == 0
    train_digest, deploy_digest = digest(block_path), digest(deploy)
    result = invoke("fuse", deploy, block_path, "-q")
    assert result.exit_code == 2
    assert "already exists; pass --force" in result.output
    assert (digest(block_path), digest(deploy)) == (train_digest, deploy_digest)


def test_force_replaces_and_in_place_needs_no_force(block_path, tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    assert invoke("fuse", block_path, out, "--force", "-q").exit_code == 0
    assert digest(out) != hashlib.sha256(b"old").hexdigest()
    assert invoke("fuse", block_path, block_path, "-q").exit_code == 0


def test_fusing_nothing_warns(tmp_path):
    deploy = tmp_path / "deploy.onnx"
    onnx.save(block_model(REPVGG_BRANCHES[:1], relu=False), deploy)
    first = invoke("fuse", deploy, tmp_path / "d1.onnx", "-q")
    assert first.exit_code == 0
    result = invoke("fuse", tmp_path / "d1.onnx", tmp_path / "d2.onnx", "-q")
    assert result.exit_code == 0
    assert "warning:" in result.output and "nothing was fused" in result.output


def test_verify_prints_each_name_warning_once(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_with_outputs([2, 6]), a)
    renamed = _with_outputs([2, 6])
    renamed.graph.node[-1].output[0] = "z"
    renamed.graph.output[0].name = "z"
    onnx.save(renamed, b)
    output = invoke("verify", a, b).output
    assert output.count("warning:") == 1


def _with_unknown_op(model: onnx.ModelProto) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[0].op_type = "NotAnOnnxOp"
    return broken


def test_a_fused_model_that_fails_the_checker_is_a_bug_not_a_pass():
    from helpers import REPVGG_BRANCHES, block_model
    from repvgg_onnx.api import check_fused_model
    from repvgg_onnx.errors import CheckFailedError

    original = block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=3)
    with pytest.raises(CheckFailedError, match=r"fused model fails onnx\.checker \(.*NotAnOnnxOp"):
        check_fused_model(_with_unknown_op(original), original)
    check_fused_model(original, original)  # a valid result passes
    broken = _with_unknown_op(original)
    check_fused_model(broken, broken)  # an original that fails it too: not made worse


def _inspect_verdict_models(folder: Path) -> dict[str, Path]:
    """A training form, one whose BNs fuse must leave, one with a sum fuse cannot merge, and a
    deploy form."""
    from helpers import BranchSpec, fuse_model

    models = Path(__file__).resolve().parent.parent / "models" / "fixtures"
    same = [
        BranchSpec("conv_bn", stride=2, auto_pad="SAME_UPPER"),
        BranchSpec("conv_bn", kernel=(1, 1), stride=2, auto_pad="SAME_UPPER"),
    ]
    branch_sum, _ = fuse_model(block_model(same, size="h"))
    onnx.save(branch_sum, folder / "sums.onnx")
    onnx.save(block_model(REPVGG_BRANCHES), folder / "training.onnx")
    return {
        "training": folder / "training.onnx",
        "batchnorms": models / "families" / "prebn_padded" / "ts17_nofold.onnx",
        "sums": folder / "sums.onnx",
        "deploy": models / "tiny_block" / "reference.onnx",
    }


VERDICTS = {
    "training": (
        "1 fusable block (repvgg-onnx fuse would fuse):",
        "❌ 1 fusable block (training form)",
    ),
    "batchnorms": (
        "No fusable block, but BatchNormalization remains: not deploy form.",
        "⚠️ no fusable block, 2 BatchNormalizations left",
    ),
    "sums": (
        "No fusable block, but sums of linear branches remain: not deploy form.",
        "⚠️ no fusable block, 1 sum of linear branches left",
    ),
    "deploy": (
        "No fusable block and no BatchNormalization: the model is in deploy form.",
        "✅ no fusable block, no BatchNormalization (deploy form)",
    ),
}


@pytest.mark.parametrize("state", list(VERDICTS))
def test_inspect_states_each_verdict_truly_in_text_and_markdown(tmp_path, state):
    """Exactly one verdict per model, and the right one: a training form is never called
    deploy form, nor a model whose BNs or sums would remain."""
    path = _inspect_verdict_models(tmp_path)[state]
    text_verdict, markdown_verdict = VERDICTS[state]
    text = invoke("inspect", path).stdout
    markdown = invoke("inspect", path, "--format", "markdown").stdout
    assert text_verdict in text and markdown_verdict in markdown
    for other, (other_text, other_markdown) in VERDICTS.items():
        if other != state:
            assert other_text not in text and other_markdown not in markdown
    details = DETAILS.get(state)
    if details is not None:  # what would remain is listed, with its reason
        assert details[0] in text and details[1] in markdown


DETAILS = {
    "batchnorms": (
        "2 BatchNormalizations would remain:",
        "BatchNormalization that would remain",
    ),
    "sums": ("1 sum of linear branches would remain:", "Sums of linear branches that would remain"),
}


@pytest.mark.parametrize(("suffix", "words"), [(".md", "❌ error (exit 2)"), (".txt", "not found")])
def test_an_error_report_in_markdown_or_text_says_error(tmp_path, suffix, words):
    report = tmp_path / f"r{suffix}"
    result = invoke("inspect", tmp_path / "missing.onnx", "--report", report)
    assert result.exit_code == 2
    written = report.read_text()
    assert words in written and "passed" not in written and "deploy form" not in written


def test_the_fuse_text_report_states_what_it_did(block_path, tmp_path):
    """Blocks fused are counted by rule, never "Fused nothing"; the candidates left alone are
    listed with their reasons, as are the nodes canonicalized and the time taken."""
    fused = invoke("fuse", block_path, tmp_path / "out.onnx").stdout
    assert "Fused 1 block (affine_region: 1):" in fused and "Fused nothing" not in fused
    assert "Time:       load " in fused
    families = Path(__file__).resolve().parent.parent / "models" / "fixtures" / "families"
    padded = invoke("fuse", families / "prebn_padded" / "ts17_nofold.onnx", tmp_path / "p.onnx")
    assert "Skipped 2 candidates:" in padded.stdout
    assert "cannot absorb the BN" in padded.stdout and "Canonicalized" not in padded.stdout
    dbb = invoke("fuse", families / "dbb" / "ts17_nofold.onnx", tmp_path / "d.onnx", "--no-verify")
    assert "Canonicalized: " in dbb.stdout and "(no-ops, Constant nodes" in dbb.stdout
