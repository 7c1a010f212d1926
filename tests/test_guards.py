"""Behaviours a mutation run found unguarded: each test fails when its behaviour breaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import repvgg_onnx
from helpers import (
    REPVGG_BRANCHES,
    BranchSpec,
    assert_same_function,
    block_model,
    fuse_model,
    op_counts,
    run,
)
from repvgg_onnx import api
from repvgg_onnx.cli import main
from repvgg_onnx.passes.pass_result import PassResult, Skipped
from repvgg_onnx.pipeline.pass_fixpoint import run_passes
from repvgg_onnx.verification.compare import verify_models


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("pads", [(0, 0, 2, 2), (2, 2, 0, 0), (0, 2, 2, 0)])
def test_merge_windows_follow_the_pads_not_the_kernel_centre(pads):
    """A 3x3 with asymmetric pads beside an unpadded 1x1: the 1x1 lands where the pads put
    it (a corner of the 3x3 here), not at its centre, and begin/end are not swapped."""
    branches = [BranchSpec("conv", pads=pads), BranchSpec("conv", kernel=(1, 1), pads=(0,) * 4)]
    model = block_model(branches, size=7)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert_same_function(model, fused)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_of_an_even_kernel_beside_a_1x1(mode):
    """A 2x2 SAME_UPPER pads at the end, SAME_LOWER at the start: swapping them moves the
    merged window by one tap."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w2"], ["a"], auto_pad=mode),
        helper.make_node("Conv", ["x", "w1"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 4, 2, 2)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w1"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert_same_function(model, fused)


def test_mixed_float16_weights_and_float32_batchnorm_fuse_or_skip_cleanly():
    """BatchNormalization-15 lets the scale and statistics be float32 on float16 data."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"]),
    ]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float16), "w")]
    for name, value in (
        ("g", rng.uniform(0.5, 1.5, 4)),
        ("b", rng.normal(size=4)),
        ("m", rng.normal(size=4)),
        ("v", rng.uniform(0.5, 2, 4)),
    ):
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, 6, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert fused.graph.initializer[0].data_type == TensorProto.FLOAT16
    feeds = {"x": rng.normal(size=(1, 4, 6, 6)).astype(np.float16)}
    [expected], [actual] = run(model, feeds), run(fused, feeds)
    np.testing.assert_allclose(actual, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())


def _two_outputs(scale_second: float = 1.0) -> onnx.ModelProto:
    model = block_model(REPVGG_BRANCHES, relu=False, seed=5)
    last = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Mul", [last, "k"], ["second"]))
    model.graph.initializer.append(numpy_helper.from_array(np.float32(scale_second), "k"))
    model.graph.output.append(
        helper.make_tensor_value_info("second", TensorProto.FLOAT, [1, 4, None, None])
    )
    return model


def test_verification_compares_every_output():
    reference = _two_outputs()
    wrong_second = _two_outputs(scale_second=1.5)
    result = verify_models(reference, wrong_second)
    assert [o.passed for o in result.outputs] == [True, False]
    assert not result.passed


def test_verification_inputs_are_not_zeros():
    """A kernel scaled by 1.5 with its bias unchanged agrees with the original on zeros."""
    model = block_model(REPVGG_BRANCHES, seed=6)
    fused, _ = fuse_model(model)
    weight = next(t for t in fused.graph.initializer if t.name.endswith(".weight"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    assert not verify_models(model, fused).passed


def test_the_reference_session_runs_without_graph_optimizations(monkeypatch):
    levels = []
    real = ort.InferenceSession

    def spy(model, options, **kwargs):
        levels.append(options.graph_optimization_level)
        return real(model, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    model = block_model(REPVGG_BRANCHES)
    verify_models(model, model)
    assert levels == [ort.GraphOptimizationLevel.ORT_DISABLE_ALL] * 2


def test_a_conv_with_two_readers_is_not_duplicated():
    model = block_model([BranchSpec("conv_bn")], relu=False, seed=7)
    conv_out = next(n for n in model.graph.node if n.op_type == "Conv").output[0]
    model.graph.node.append(helper.make_node("Relu", [conv_out], ["tap"]))
    model.graph.output.append(helper.make_tensor_value_info("tap", TensorProto.FLOAT, None))
    fused, _ = fuse_model(model)
    assert op_counts(fused)["Conv"] == 1 and op_counts(fused)["BatchNormalization"] == 1
    assert_same_function(model, fused)


def test_only_the_final_rounds_skips_are_reported():
    rounds = iter([True, False])

    def first_skips_then_not(graph):
        if next(rounds, False):
            return PassResult(skipped=[Skipped("test", "n", "round 1 only")], rewrites=1)
        return PassResult()

    import onnx_graphsurgeon as gs

    result = run_passes(gs.import_onnx(block_model(REPVGG_BRANCHES)), [first_skips_then_not])
    assert result.rounds == 2 and result.skipped == []


def test_an_internal_error_exits_3_in_one_line(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "fuse", broken)
    path = tmp_path / "m.onnx"
    onnx.save(block_model(REPVGG_BRANCHES), path)
    result = invoke("fuse", path, tmp_path / "o.onnx")
    assert result.exit_code == 3
    assert result.output.strip().count("\n") == 0 and "internal error: RuntimeError: boom" in (
        result.output
    )


def test_fused_nodes_are_tagged_and_model_metadata_is_kept():
    model = block_model(REPVGG_BRANCHES)
    model.ir_version = 10
    model.metadata_props.add(key="author", value="us")
    fused = repvgg_onnx.fuse(model, verify=False).model
    conv = next(n for n in fused.graph.node if n.op_type == "Conv")
    tags = {p.key: p.value for p in conv.metadata_props}
    assert tags["repvgg_onnx.rule"] == "affine_region"
    assert tags["repvgg_onnx.branches"] == "Conv3x3+BN, Conv1x1+BN, BN"
    assert {p.key: p.value for p in fused.metadata_props} == {"author": "us"}


def test_verification_runs_when_only_canonicalization_changed_the_graph():
    model = block_model([BranchSpec("conv")], relu=True, seed=8)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.input[0], original_input = "through_identity", relu.input[0]
    model.graph.node.insert(
        len(model.graph.node) - 1,
        helper.make_node("Identity", [original_input], ["through_identity"]),
    )
    result = repvgg_onnx.fuse(model)
    assert result.report.fused == [] and result.report.canonicalized == 1
    assert result.report.verdict()["status"] == "passed"


def test_an_original_that_onnxruntime_cannot_run_exits_2_and_writes_nothing(tmp_path):
    model = block_model(REPVGG_BRANCHES)
    relu = model.graph.node[-1]
    relu.op_type, relu.domain = "Unknown", "com.example"  # valid ONNX, unknown to onnxruntime
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, path)
    result = invoke("fuse", path, out)
    assert result.exit_code == 2 and not out.exists()
    assert "onnxruntime cannot load the original model" in result.output
    assert "Use --no-verify" in result.output


def test_family_equivalence_is_checked_outside_the_tool():
    """The family test compares in onnxruntime itself (it never reads fuse's verdict)."""
    source = (Path(__file__).parent / "test_families.py").read_text()
    assert "verification" not in source and "run(training, feeds)" in source
