"""``benchmarks/hand_fused.py``, the floor ``floors.py`` times: it must compute what the model
computes and reach the same deploy form as ``fuse`` on RepVGG blocks, or the floor is not one."""

from __future__ import annotations

import sys

import onnx
import pytest

from helpers import REPO_ROOT, BranchSpec, assert_same_function, block_model, op_counts

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from hand_fused import hand_fuse

SAMPLE = REPO_ROOT / "models" / "samples" / "repvgg_a0_half.onnx"


def hand_fused(model: onnx.ModelProto, folder) -> tuple[int, onnx.ModelProto]:
    """The blocks :func:`hand_fuse` fused in ``model``, and its output."""
    source, target = folder / "in.onnx", folder / "out.onnx"
    onnx.save(model, source)
    count = hand_fuse(str(source), str(target))
    return count, onnx.load(target)


def test_the_sample_reaches_the_deploy_form_and_computes_the_same(tmp_path):
    target = tmp_path / "hand.onnx"
    assert hand_fuse(str(SAMPLE), str(target)) == 22
    fused, original = onnx.load(target), onnx.load(SAMPLE)
    counts = op_counts(fused)
    deploy = op_counts(onnx.load(SAMPLE.with_name("repvgg_a0_half.deploy.onnx")))
    assert counts["Conv"] == deploy["Conv"] == 22
    assert "Add" not in counts and "BatchNormalization" not in counts
    assert_same_function(original, fused)


@pytest.mark.parametrize(
    "branches",
    [
        # The 1x1 reads the 3x3's first tap, not its centre: not the hard-coded pattern.
        [BranchSpec("conv_bn", (3, 3), pads=(0, 0, 2, 2)), BranchSpec("conv_bn", (1, 1))],
        # Groups that differ would densify the grouped kernel: not the pattern.
        [BranchSpec("conv_bn", (3, 3), groups=2), BranchSpec("conv_bn", (1, 1))],
        [BranchSpec("conv_bn", (3, 3), dilation=2), BranchSpec("conv_bn", (1, 1))],
    ],
    ids=["off-centre", "groups differ", "dilated"],
)
def test_a_block_outside_the_pattern_is_left_as_it_is(tmp_path, branches):
    model = block_model(branches)
    count, output = hand_fused(model, tmp_path)
    assert count == 0
    assert op_counts(output) == op_counts(model)


@pytest.mark.parametrize(
    "branches",
    [
        [BranchSpec("conv_bn"), BranchSpec("conv_bn", (1, 1)), BranchSpec("bn")],
        [
            BranchSpec("conv", groups=2),
            BranchSpec("conv", (1, 1), groups=2),
            BranchSpec("identity"),
        ],
        [BranchSpec("conv_bn", (5, 5)), BranchSpec("conv_bn"), BranchSpec("conv_bn", (1, 1))],
    ],
    ids=["repvgg", "grouped, biased, raw identity", "5x5 + 3x3 + 1x1"],
)
def test_a_block_of_the_pattern_becomes_one_conv(tmp_path, branches):
    model = block_model(branches)
    count, fused = hand_fused(model, tmp_path)
    assert count == 1
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert_same_function(model, fused)


def test_a_block_whose_sum_is_read_elsewhere_is_left_as_it_is(tmp_path):
    """The Add tree's result is also a graph output: it must keep its value and its nodes."""
    model = block_model([BranchSpec("conv_bn"), BranchSpec("conv_bn", (1, 1)), BranchSpec("bn")])
    total = model.graph.node[-1].input[0]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(total, onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    )
    count, output = hand_fused(model, tmp_path)
    assert count == 0
    assert_same_function(model, output)
