"""Must-not-fuse cases: the graph is left as it was and the skip reason is reported."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import (
    BranchSpec,
    GraphBuilder,
    assert_same_function,
    block_model,
    fuse_model,
    op_counts,
)
from repvgg_onnx.errors import UnsupportedModelError


def only_skip(model: onnx.ModelProto) -> str:
    """Fuse; assert no branch merged (BNs may fold); return the single skip reason."""
    fused, outcome = fuse_model(model)
    assert op_counts(fused).get("Add") == op_counts(model).get("Add")
    assert op_counts(fused)["Conv"] == op_counts(model)["Conv"]
    assert_same_function(model, fused)
    [skip] = outcome.skipped
    return skip.reason


def io_model(builder, y, cin=4, size=8, extra_inputs=(), extra_outputs=()):
    return builder.model(
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size]),
            *extra_inputs,
        ],
        [
            helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, None, None, None]),
            *extra_outputs,
        ],
    )


def test_branches_of_different_inputs():
    builder = GraphBuilder(1)
    x2 = builder.branch("x", 4, 4, BranchSpec("conv", kernel=(1, 1)))
    relu = builder.name("r")
    builder.nodes.append(helper.make_node("Relu", [x2], [relu]))
    a = builder.branch(relu, 4, 4, BranchSpec("conv_bn"))
    y = builder.add_chain([a, "x"])
    reason = only_skip(io_model(builder, y))
    assert "read different tensors" in reason


def test_stride_mismatch():
    """A stride-2 3x3 and a stride-1 1x1 agree in output size only on a 1x1 input."""
    model = block_model([BranchSpec("conv", stride=2), BranchSpec("conv", kernel=(1, 1))], size=1)
    assert "strides differ" in only_skip(model)


def test_dilation_mismatch():
    model = block_model([BranchSpec("conv", dilation=2), BranchSpec("conv", dilation=1)])
    assert "dilations differ" in only_skip(model)


def test_groups_that_would_densify_the_main_branch():
    model = block_model([BranchSpec("conv", groups=4), BranchSpec("conv", kernel=(1, 1))])
    assert "groups differ" in only_skip(model)


def test_pads_aligned_only_for_some_input_sizes():
    """A 1x1 on the 3x3's top-left tap whose output is as long as the 3x3's on odd inputs
    only: on an input of unknown size the merge cannot be proven (the algebra's tests cover
    the static sizes where the outputs differ)."""
    model = block_model(
        [
            BranchSpec("conv", stride=2),
            BranchSpec("conv", kernel=(1, 1), stride=2, pads=(1, 1, 0, 0)),
        ],
        size="h",
    )
    assert "this input's size is not static" in only_skip(model)


def test_tapped_branch_output_keeps_its_value():
    builder = GraphBuilder(2)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    b = builder.branch("x", 4, 4, BranchSpec("conv_bn", kernel=(1, 1)))
    y = builder.add_chain([a, b])
    tap = helper.make_tensor_value_info(b, TensorProto.FLOAT, [1, 4, 8, 8])
    reason = only_skip(io_model(builder, y, extra_outputs=[tap]))
    assert f"'{b}'" in reason and "is also read by the graph output" in reason


def test_relu_inside_a_branch():
    """RepVGG's own ablation: a non-linear branch cannot be folded."""
    builder = GraphBuilder(3)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    relu = builder.name("relu")
    builder.nodes.append(helper.make_node("Relu", [a], [relu], name="branch_relu"))
    b = builder.branch("x", 4, 4, BranchSpec("conv_bn", kernel=(1, 1)))
    c = builder.branch("x", 4, 4, BranchSpec("bn"))
    y = builder.add_chain([relu, b, c])
    model = io_model(builder, y)
    fused, outcome = fuse_model(model)
    assert_same_function(model, fused)
    # The two linear branches of x merge; the ReLU branch stays in a smaller Add.
    assert op_counts(fused) == {"Conv": 2, "Relu": 1, "Add": 1}
    relu_node = next(n for n in fused.graph.node if n.op_type == "Relu")
    add = next(n for n in fused.graph.node if n.op_type == "Add")
    assert relu_node.output[0] in add.input
    [skip] = outcome.skipped
    assert f"term '{relu}' comes from Relu 'branch_relu', which is not linear" in skip.reason


def test_weights_fed_as_graph_inputs():
    builder = GraphBuilder(4)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    builder.nodes.append(
        helper.make_node("Conv", ["x", "w_in"], ["dyn"], name="dyn_conv", pads=[0, 0, 0, 0])
    )
    y = builder.add_chain([a, "dyn"])
    w_in = helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 4, 1, 1])
    model = io_model(builder, y, extra_inputs=[w_in])
    fused, outcome = fuse_model(model)
    assert op_counts(fused)["Add"] == 1
    [skip] = outcome.skipped
    assert "weight that is not constant ('w_in')" in skip.reason


def test_training_mode_batchnorm_is_refused():
    builder = GraphBuilder(5)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    model = io_model(builder, a)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    bn.output.extend(["running_mean", "running_var"])
    with pytest.raises(UnsupportedModelError, match="training mode"):
        fuse_model(model)


def test_plain_residual_add_is_not_a_block():
    """ResNet-style ``x + conv(relu(conv(x)))`` stays, reported as reading different tensors."""
    builder = GraphBuilder(6)
    a = builder.branch("x", 4, 4, BranchSpec("conv_bn"))
    relu = builder.name("relu")
    builder.nodes.append(helper.make_node("Relu", [a], [relu]))
    b = builder.branch(relu, 4, 4, BranchSpec("conv_bn"))
    y = builder.add_chain([b, "x"])
    fused, outcome = fuse_model(io_model(builder, y))
    assert op_counts(fused) == {"Conv": 2, "Relu": 1, "Add": 1}  # both BNs folded
    assert any("read different tensors" in s.reason for s in outcome.skipped)


def _conv_bn_model(domain: str = "", weight_dtype=np.float32, gamma_scale: float = 1.0):
    """``BN(Conv(x))`` in ``domain`` (a model-local function when custom, so it still runs)."""
    rng = np.random.default_rng(9)
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", domain=domain)
    bn = helper.make_node(
        "BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn", domain=domain
    )
    values = {
        "w": rng.normal(size=(4, 4, 1, 1)).astype(weight_dtype),
        "g": (rng.uniform(0.5, 1.5, 4) * gamma_scale).astype(weight_dtype),
        "b": rng.normal(size=4).astype(weight_dtype),
        "m": rng.normal(size=4).astype(weight_dtype),
        "v": rng.uniform(0.2, 3, 4).astype(weight_dtype),
    }
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(weight_dtype))
    graph = helper.make_graph(
        [conv, bn],
        "g",
        [helper.make_tensor_value_info("x", elem, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", elem, [1, 4, 5, 5])],
        [onnx.numpy_helper.from_array(v, k) for k, v in values.items()],
    )
    opsets = [helper.make_opsetid("", 17)]
    functions = []
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
        functions = [
            helper.make_function(
                domain,
                op,
                ["X", *extra],
                ["Y"],
                [helper.make_node(op, ["X", *extra], ["Y"])],
                [helper.make_opsetid("", 17)],
            )
            for op, extra in (("Conv", ["W"]), ("BatchNormalization", ["G", "B", "M", "V"]))
        ]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    model.ir_version = 8
    return model


def test_ops_of_a_custom_domain_are_not_read_as_standard_ops():
    model = _conv_bn_model(domain="local")
    fused, _ = fuse_model(model)
    assert [n.op_type for n in fused.graph.node] == ["Conv", "BatchNormalization"]
    assert all(n.domain == "local" for n in fused.graph.node)
    assert_same_function(model, fused)


def test_a_float16_fold_that_overflows_is_refused_with_a_reason():
    model = _conv_bn_model(weight_dtype=np.float16, gamma_scale=3e4)
    model.graph.initializer[4].CopyFrom(
        onnx.numpy_helper.from_array(np.full(4, 1e-6, np.float16), "v")
    )
    fused, outcome = fuse_model(model)
    assert [n.op_type for n in fused.graph.node] == ["Conv", "BatchNormalization"]
    [skip] = outcome.skipped
    assert "overflow float16" in skip.reason


def test_batchnorm_parameters_listed_as_graph_inputs_stay_overridable():
    model = _conv_bn_model()
    model.graph.input.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, [4]))
    fused, _ = fuse_model(model)
    assert [n.op_type for n in fused.graph.node] == ["Conv", "BatchNormalization"]
    assert [i.name for i in fused.graph.input] == ["x", "g"]
    assert_same_function(model, fused)


def test_a_sum_of_linear_branches_fuse_refused_is_not_called_deploy_form(tmp_path):
    """A stride-2 ``SAME_UPPER`` block on an input of unknown size stays two convs and an Add:
    ``inspect`` of the fused model lists the sum with the refusal's reason and does not call
    the model deploy form; a ReLU-in-branch sum (not linear) is not such a sum."""
    import repvgg_onnx

    same = [
        BranchSpec("conv_bn", stride=2, auto_pad="SAME_UPPER"),
        BranchSpec("conv_bn", kernel=(1, 1), stride=2, auto_pad="SAME_UPPER"),
    ]
    fused, _ = fuse_model(block_model(same, size="h"))
    inspection = repvgg_onnx.inspect(fused)
    [remaining] = inspection.branch_sums
    assert "not static" in remaining.reason
    assert not inspection.deploy_form and inspection.fusable == []
    assert "sums of linear branches remain: not deploy form" in inspection.to_text()
    assert inspection.to_dict()["branch_sums"] == [
        {"node": remaining.node, "reason": remaining.reason}
    ]
    builder = GraphBuilder(3)
    relu = builder.name("r")
    builder.nodes.append(
        helper.make_node("Relu", [builder.branch("x", 4, 4, BranchSpec("conv"))], [relu])
    )
    y = builder.add_chain([relu, builder.branch("x", 4, 4, BranchSpec("conv", kernel=(1, 1)))])
    relu_in_branch, _ = fuse_model(io_model(builder, y))
    assert repvgg_onnx.inspect(relu_in_branch).branch_sums == ()
    assert repvgg_onnx.inspect(relu_in_branch).deploy_form


def test_a_model_without_graph_outputs_is_refused():
    from repvgg_onnx.errors import UnsupportedModelError

    model = _conv_bn_model()
    del model.graph.output[:]
    with pytest.raises(UnsupportedModelError, match="declares no graph outputs"):
        fuse_model(model)


def test_below_ir_version_4_listed_initializers_are_constants_and_fold():
    """Before IR version 4 every initializer had to be listed as a graph input: the listing
    says nothing about overriding, so the BN still folds into the conv (and stays listed)."""
    model = _conv_bn_model()
    model.ir_version = 3
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 8))
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert {t.name for t in fused.graph.initializer} <= {i.name for i in fused.graph.input}
    assert_same_function(model, fused)


def test_a_listed_initializer_no_node_reads_keeps_its_default():
    """An initializer listed as a graph input (IR >= 4: a default a caller may override) that
    no node reads stays an input with its initializer: the fused model never asks for it."""
    model = _conv_bn_model()
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(2, np.float32), "spare"))
    model.graph.input.append(helper.make_tensor_value_info("spare", TensorProto.FLOAT, [2]))
    fused, _ = fuse_model(model)
    assert [i.name for i in fused.graph.input] == ["x", "spare"]
    assert "spare" in {t.name for t in fused.graph.initializer}
    assert_same_function(model, fused)
