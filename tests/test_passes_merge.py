"""merge_parallel_branches and fold_batchnorm on small graphs, checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from helpers import (
    REPVGG_BRANCHES,
    BranchSpec,
    GraphBuilder,
    assert_same_function,
    block_model,
    fuse_model,
    op_counts,
)

REPVGG = REPVGG_BRANCHES


def test_repvgg_block_becomes_one_conv():
    model = block_model(REPVGG)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert_same_function(model, fused)
    [block] = outcome.fused
    assert block.branches == ("Conv3x3+BN", "Conv1x1+BN", "BN")
    assert block.result == "Conv3x3"
    assert outcome.skipped == []


def test_block_output_keeps_its_name_and_relu_is_untouched():
    model = block_model(REPVGG)
    add_output = model.graph.node[-2].output[0]
    fused, _ = fuse_model(model)
    conv, relu = fused.graph.node
    assert conv.output[0] == add_output
    assert relu.op_type == "Relu" and relu.input[0] == add_output


@pytest.mark.parametrize(
    "branches",
    [
        [BranchSpec("conv"), BranchSpec("conv", kernel=(1, 1)), BranchSpec("identity")],
        [BranchSpec("conv", stride=2), BranchSpec("conv", kernel=(1, 1), stride=2)],
        [
            BranchSpec("conv_bn", groups=4),
            BranchSpec("conv_bn", kernel=(1, 1), groups=4),
            BranchSpec("bn"),
        ],
        [BranchSpec("conv", kernel=(3, 3), groups=4) for _ in range(3)]
        + [BranchSpec("conv", kernel=(1, 1), groups=4), BranchSpec("bn")],
        [BranchSpec("conv", kernel=(5, 5)), BranchSpec("conv", kernel=(3, 3))],
        [BranchSpec("conv"), BranchSpec("conv", kernel=(1, 3)), BranchSpec("conv", kernel=(3, 1))],
        [BranchSpec("conv", dilation=2), BranchSpec("identity")],
        [BranchSpec("bn"), BranchSpec("identity"), BranchSpec("conv", kernel=(1, 1))],
    ],
    ids=["identity", "stride2", "g4", "mobileone", "replk", "acnet", "dilated", "bn-first"],
)
def test_block_families_fuse_exactly(branches):
    model = block_model(branches, cin=4, cout=4, size=9)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert len(outcome.fused) == 1
    assert_same_function(model, fused)


def _tf_same(kernel, stride=2, auto_pad="SAME_UPPER"):
    return BranchSpec("conv_bn", kernel=kernel, stride=stride, auto_pad=auto_pad)


def _explicit_tf_same(kernel, size, stride=2):
    """TF's ``SAME`` as tf2onnx writes it: explicit pads, the odd one at the end."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return BranchSpec(
        "conv_bn", (kernel, kernel), stride, pads=(total // 2,) * 2 + (total - total // 2,) * 2
    )


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize(
    "branches",
    [
        lambda size: [_explicit_tf_same(3, size), _explicit_tf_same(1, size)],
        lambda size: [_tf_same((3, 3)), _tf_same((1, 1))],
        lambda size: [
            _tf_same((3, 3), auto_pad="SAME_LOWER"),
            _tf_same((1, 1), auto_pad="SAME_LOWER"),
        ],
        lambda size: [_tf_same((3, 3)), _tf_same((1, 3)), _tf_same((3, 1))],
        lambda size: [
            BranchSpec("conv", stride=2, pads=(2, 2, 1, 1) if size % 2 == 0 else (1, 1, 2, 2)),
            BranchSpec("conv", (1, 1), 2, pads=(2, 2, 0, 0) if size % 2 == 0 else (1, 1, 0, 0)),
        ],
    ],
    ids=["tf-explicit", "same-upper", "same-lower", "acnet-same", "asymmetric"],
)
def test_stride_2_branches_are_placed_by_their_begin_pads(branches, size):
    """Kernels placed by begin pads (not centres) on a static input: a TF ``SAME`` 1x1 lands
    on the 3x3's top-left tap on an even input and on its centre on an odd one; ``auto_pad``
    is resolved for the static size; asymmetric explicit pads likewise."""
    model = block_model(branches(size), cin=4, cout=4, size=size)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}, outcome.skipped
    assert_same_function(model, fused)


def test_stride_2_auto_pad_on_an_input_of_unknown_size_is_refused():
    model = block_model([_tf_same((3, 3)), _tf_same((1, 1))], size="h")
    fused, outcome = fuse_model(model)
    assert op_counts(fused)["Conv"] == 2
    assert any("auto_pad=SAME_UPPER" in skip.reason for skip in outcome.skipped), outcome.skipped
    assert_same_function(model, fused)


def test_add_tree_in_any_association():
    """``c + (a + b)`` with the nested Add as the second operand."""
    builder = GraphBuilder(3)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    b = builder.branch("x", 4, 4, BranchSpec("conv_bn", kernel=(1, 1)))
    c = builder.branch("x", 4, 4, BranchSpec("bn"))
    inner = builder.add_chain([a, b])
    builder.nodes.append(helper.make_node("Add", [c, inner], ["y"], name="outer"))
    model = builder.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert fused.graph.output[0].name == "y"
    assert_same_function(model, fused)


def test_conv_bn_outside_blocks_is_folded():
    builder = GraphBuilder(4)
    y = builder.branch("x", 3, 8, BranchSpec("conv_bn", stride=2))
    model = builder.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 8, 4, 4])],
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    [block] = outcome.fused
    assert (block.rule, block.branches, block.result) == (
        "affine_region",
        ("Conv3x3/s2x2+BN",),
        "Conv3x3/s2x2",
    )
    assert_same_function(model, fused)


def test_batchnorm_after_the_sum_folds_into_the_merged_conv():
    """RepViT: raw identity + conv, BN after the sum."""
    builder = GraphBuilder(5)
    a = builder.branch("x", 4, 4, BranchSpec("conv", kernel=(3, 3), groups=4))
    total = builder.add_chain([a, "x"])
    y = builder.batchnorm(total, 4)
    model = builder.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, 6, 6])],
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    [block] = outcome.fused
    assert block.branches == ("Conv3x3/g4+BN", "BN")
    assert_same_function(model, fused)


@st.composite
def branch_lists(draw):
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 4]))
    kinds = st.sampled_from(["conv", "conv_bn"])
    kernels = st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7)])
    specs = [
        BranchSpec(
            draw(kinds), kernel=draw(kernels), stride=stride, dilation=dilation, groups=groups
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    if stride == 1:
        specs += [
            BranchSpec(kind)
            for kind in draw(st.lists(st.sampled_from(["bn", "identity"]), max_size=2))
        ]
    if len(specs) < 2:
        specs.append(BranchSpec("conv", kernel=(1, 1), stride=stride, groups=groups))
    return draw(st.permutations(specs))


@settings(max_examples=40, deadline=None)
@given(branch_lists(), st.integers(0, 2**16))
def test_random_blocks_fuse_to_one_conv_with_equal_outputs(branches, seed):
    model = block_model(branches, cin=8, cout=8, size=11, seed=seed)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}, outcome.skipped
    assert_same_function(model, fused)


@pytest.mark.parametrize("identity", ["bn", "identity"])
def test_block_whose_input_is_a_conv_output(identity):
    """The identity term ``BN(x)`` (or ``x``) with ``x = Conv(stem)`` is read as a branch of
    ``x``, not as a Conv+BN branch of the stem's input."""
    builder = GraphBuilder(7)
    x = builder.branch("input", 3, 4, BranchSpec("conv"))
    terms = [
        builder.branch(x, 4, 4, BranchSpec("conv_bn")),
        builder.branch(x, 4, 4, BranchSpec("conv_bn", kernel=(1, 1))),
        builder.branch(x, 4, 4, BranchSpec(identity)),
    ]
    y = builder.add_chain(terms)
    model = builder.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, 6, 6])],
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2}
    [block] = outcome.fused
    assert block.branches == ("Conv3x3+BN", "Conv1x1+BN", "BN" if identity == "bn" else "Identity")
    assert_same_function(model, fused)


def test_sum_of_a_tensor_with_itself_is_not_a_block():
    builder = GraphBuilder(8)
    x = builder.branch("input", 3, 4, BranchSpec("conv"))
    y = builder.add_chain([x, x])
    model = builder.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, 6, 6])],
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Add": 1}
    assert outcome.fused == []


def scaled_model(op: str, constant: np.ndarray, first: str = "conv") -> onnx.ModelProto:
    """``relu(conv3(x) + op(conv1(x), constant))`` (PP-YOLOE's alpha-scaled 1x1 branch)."""
    builder = GraphBuilder(9)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    b = builder.branch("x", 4, 4, BranchSpec("conv_bn", kernel=(1, 1)))
    c = builder.constant("c", constant)
    scaled = builder.name("scaled")
    inputs = [b, c] if first == "conv" else [c, b]
    builder.nodes.append(helper.make_node(op, inputs, [scaled], name="scale_op"))
    total = builder.add_chain([a, scaled])
    builder.nodes.append(helper.make_node("Relu", [total], ["y"]))
    return builder.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
    )


@pytest.mark.parametrize(
    ("op", "constant", "first"),
    [
        ("Mul", np.array(0.7), "conv"),
        ("Mul", np.array(1.3), "constant"),
        ("Mul", np.array([0.5, 1.5, -2.0, 3.0]).reshape(4, 1, 1), "conv"),
        ("Div", np.array([0.5, 1.5, -2.0, 3.0]).reshape(1, 4, 1, 1), "conv"),
        ("Add", np.array([0.5, 1.5, -2.0, 3.0]).reshape(4, 1, 1), "constant"),
        ("Sub", np.array([0.5]), "conv"),
        ("Sub", np.array(0.5), "constant"),  # 0.5 − conv(x): a scale of −1 and a shift
    ],
)
def test_per_channel_constant_op_on_a_branch_folds_and_merges(op, constant, first):
    model = scaled_model(op, constant, first)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}, outcome.skipped
    assert_same_function(model, fused)


@pytest.mark.parametrize(
    ("op", "constant"),
    [
        ("Mul", np.full((1, 4, 6, 6), 0.5)),  # per position, not per channel
        ("Div", np.array([0.5, 0.0, 1.0, 2.0]).reshape(4, 1, 1)),  # division by zero
        ("Mul", np.array([0.5, 1.5, -2.0, 3.0, 1.0, 2.0])),  # [W]: broadcasts over width
    ],
)
def test_constant_ops_that_are_not_per_channel_scales_stay(op, constant):
    model = scaled_model(op, constant)
    fused, _ = fuse_model(model)
    assert op_counts(fused)[op] == 1
    assert_same_function(model, fused)


def test_fuse_inspect_and_diff_label_a_block_alike():
    """One label per conv (``conv_label``): a grouped stride-2 block is ``Conv3x3/g4/s2x2`` in
    fuse's report, inspect's fusable list and diff's block summary alike, and so in their HTML
    pages."""
    import repvgg_onnx

    model = block_model(
        [BranchSpec("conv_bn", stride=2, groups=4), BranchSpec("conv_bn", (1, 1), 2, groups=4)],
        size=9,
    )
    fused = repvgg_onnx.fuse(model, verify=False)
    [block] = fused.report.fused
    [planned] = repvgg_onnx.inspect(model).fusable
    [diffed] = repvgg_onnx.diff(model, fused.model).blocks
    assert block.result == planned.result == "Conv3x3/g4/s2x2"
    assert block.branches == planned.branches == ("Conv3x3/g4/s2x2+BN", "Conv1x1/g4/s2x2+BN")
    assert diffed.summary == "Conv3x3/g4/s2x2+BN, Conv1x1/g4/s2x2+BN → Conv3x3/g4/s2x2"
    for page in (fused.report.to_html(), repvgg_onnx.inspect(model).to_html()):
        assert "Conv3x3/g4/s2x2+BN" in page and "Conv3x3/g4/s2x2</" in page
    assert "Conv3x3/g4/s2x2+BN, Conv1x1/g4/s2x2+BN → Conv3x3/g4/s2x2" in (
        repvgg_onnx.diff(model, fused.model).to_html()
    )


def test_a_diff_is_identical_only_when_nothing_changed():
    import repvgg_onnx

    model = block_model([BranchSpec("conv_bn"), BranchSpec("conv_bn", (1, 1))], size=6)
    assert repvgg_onnx.diff(model, model).identical
    assert not repvgg_onnx.diff(model, repvgg_onnx.fuse(model, verify=False).model).identical
