"""Committed exports of our own PyTorch models, end to end: every exporter form fuses to the
PyTorch-reparameterized reference's op counts and computes the same function."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import repvgg_onnx
from helpers import op_counts, random_feeds, run

MODELS = Path(__file__).resolve().parent.parent / "models"
MANIFEST = json.loads((MODELS / "fixtures" / "manifest.json").read_text())
TRAINING_FORMS = ["ts11", "ts13", "ts17", "ts17_nofold", "ts17_dynbatch", "dynamo18"]
FUSABLE = [name for name in MANIFEST["models"] if name != "tiny_relu_in_branch"]
COUNTED = ("Conv", "BatchNormalization", "Add")


def load_fixture(model: str, form: str) -> onnx.ModelProto:
    return onnx.load(MODELS / MANIFEST["models"][model]["forms"][form]["file"])


def counted(model: onnx.ModelProto) -> dict[str, int]:
    counts = op_counts(model)
    return {op: counts.get(op, 0) for op in COUNTED}


@pytest.mark.parametrize("form", TRAINING_FORMS)
@pytest.mark.parametrize("name", FUSABLE)
def test_every_export_form_fuses_to_the_reference(name, form):
    original = load_fixture(name, form)
    reference = load_fixture(name, "reference")
    result = repvgg_onnx.fuse(original)
    assert result.verification.passed
    assert counted(result.model) == counted(reference)
    assert result.report.skipped == []
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_feeds(reference, batch=2)
    [expected] = run(reference, feeds)
    [actual] = run(result.model, feeds)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("form", ["ts17", "ts17_nofold", "dynamo18"])
def test_block_branches_are_named_by_what_the_export_holds(form):
    result = repvgg_onnx.fuse(load_fixture("tiny_block", form), verify=False)
    merged = [b for b in result.report.fused if len(b.branches) > 1]
    [block] = merged
    if form == "ts17_nofold":
        assert sorted(block.branches) == ["BN", "Conv1x1+BN", "Conv3x3+BN"]
    else:
        assert sorted(block.branches) == ["BN", "Conv1x1", "Conv3x3"]


@pytest.mark.parametrize("form", TRAINING_FORMS)
def test_relu_in_branch_ablation_keeps_the_relu_branch_with_a_reason(form):
    """``relu(BN(conv3(x))) + BN(conv1(x)) + BN(x)``: the two linear branches of ``x`` merge
    into one conv; the ReLU branch stays in a smaller Add, and the report says why."""
    original = load_fixture("tiny_relu_in_branch", form)
    result = repvgg_onnx.fuse(original, verify=False)
    counts = op_counts(result.model)
    assert (counts["Add"], counts["Relu"], counts.get("BatchNormalization", 0)) == (1, 3, 0)
    assert counts["Conv"] == 3  # stem, the 3x3 branch (its BN folded), the merged 1x1 + identity
    [skip] = result.report.skipped
    assert "comes from Relu" in skip.reason
    feeds = random_feeds(original, batch=2)
    [expected], [actual] = run(original, feeds), run(result.model, feeds)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("form", TRAINING_FORMS)
def test_model_level_fields_are_kept(form):
    original = load_fixture("tiny_repvgg_se", form)
    fused = repvgg_onnx.fuse(original, verify=False).model
    assert fused.ir_version == original.ir_version
    assert list(fused.opset_import) == list(original.opset_import)
    assert fused.producer_name == original.producer_name
    assert [i.name for i in fused.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in fused.graph.output] == [o.name for o in original.graph.output]
    assert fused.graph.input[0].type == original.graph.input[0].type
    assert fused.graph.output[0].type == original.graph.output[0].type


def test_readme_sample_fuses_to_its_deploy_form():
    training = onnx.load(MODELS / "samples" / "repvgg_a0_half.onnx")
    deploy = onnx.load(MODELS / "samples" / "repvgg_a0_half.deploy.onnx")
    result = repvgg_onnx.fuse(training)
    assert (
        counted(result.model) == counted(deploy) == {"Conv": 22, "BatchNormalization": 0, "Add": 0}
    )
    assert len([b for b in result.report.fused if len(b.branches) > 1]) == 22


@pytest.mark.parametrize("form", ["ts17_nofold", "dynamo18"])
def test_the_callers_model_is_not_modified(form):
    original = load_fixture("tiny_repvgg_g4", form)
    before = original.SerializeToString()
    repvgg_onnx.fuse(original)
    assert original.SerializeToString() == before


@pytest.mark.parametrize("name", FUSABLE)
def test_pytorch_deploy_exports_have_nothing_left_to_fuse(name):
    inspection = repvgg_onnx.inspect(
        MODELS / MANIFEST["models"][name]["forms"]["reference"]["file"]
    )
    assert inspection.fusable == []


def test_surviving_nodes_keep_their_metadata_and_doc_strings():
    original = load_fixture("tiny_repvgg_se", "dynamo18")
    relu = next(n for n in original.graph.node if n.op_type == "Relu")
    relu.doc_string = "kept"
    relu.metadata_props.add(key="origin", value="se block")
    fused = repvgg_onnx.fuse(original, verify=False).model
    [survivor] = [n for n in fused.graph.node if n.name == relu.name]
    assert survivor.doc_string == "kept"
    assert {p.key: p.value for p in survivor.metadata_props}["origin"] == "se block"
