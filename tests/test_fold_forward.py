"""fold_forward: a BN read by several linear ops, or by one through axis moves, folds into
all of them (NextViT's norm before q/k/v, FastViT's norm before qkv); checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers import assert_same_function, fuse_model, op_counts

RNG = np.random.default_rng(0)
C, H, W = 8, 4, 4


def batchnorm_inits(prefix: str) -> list[onnx.TensorProto]:
    values = {
        "gamma": RNG.uniform(0.5, 1.5, C),
        "beta": RNG.normal(0, 0.5, C),
        "mean": RNG.normal(0, 0.5, C),
        "var": RNG.uniform(0.2, 3.0, C),
    }
    return [
        numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in values.items()
    ]


def tensor(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def model(nodes, inits, outputs, input_shape=(1, C, H, W)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    m.graph.output.extend(inferred[o] for o in outputs)
    onnx.checker.check_model(m, full_check=True)
    return m


def bn_node(x: str, out: str) -> onnx.NodeProto:
    names = [f"bn_{k}" for k in ("gamma", "beta", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [out], name="norm", epsilon=1e-3)


def test_nextvit_norm_before_q_k_v_after_rearrange_folds_into_all_three():
    """``norm1(x)`` → ``b c h w -> b (h w) c`` → q, k, v Linear layers (MatMul + bias Add)."""
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Reshape", ["n", "flat_shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
    ]
    inits = [*batchnorm_inits("bn"), tensor("flat_shape", np.array([1, C, H * W]))]
    outputs = []
    for name in ("q", "k", "v"):
        inits += [
            tensor(f"{name}_w", RNG.normal(size=(C, C)).astype(np.float32)),
            tensor(f"{name}_b", RNG.normal(size=C).astype(np.float32)),
        ]
        nodes += [
            helper.make_node("MatMul", ["tokens", f"{name}_w"], [f"{name}_mm"], name=name),
            helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [name]),
        ]
        outputs.append(name)
    original = model(nodes, inits, outputs)
    fused, outcome = fuse_model(original)
    assert op_counts(fused) == {"Reshape": 1, "Transpose": 1, "MatMul": 3, "Add": 3}
    assert any(b.rule == "fold_forward" for b in outcome.fused)
    assert_same_function(original, fused)


def test_fastvit_attention_norm_through_flatten_and_transpose():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Flatten", ["n"], ["f"], axis=2),
    ]
    original_flat = model(nodes, batchnorm_inits("bn"), ["f"])
    assert op_counts(original_flat)["Flatten"] == 1  # Flatten(axis=2) of [1,C,H,W] is [1·C, H·W]
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Reshape", ["n", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["t", "w"], ["qkv"], name="qkv"),
    ]
    inits = [
        *batchnorm_inits("bn"),
        tensor("shape", np.array([1, C, -1])),
        tensor("w", RNG.normal(size=(C, 3 * C)).astype(np.float32)),
    ]
    original = model(nodes, inits, ["qkv"])
    fused, _ = fuse_model(original)
    assert op_counts(fused) == {"Reshape": 1, "Transpose": 1, "MatMul": 1, "Add": 1}
    assert_same_function(original, fused)


def test_bn_read_by_two_unpadded_convs_folds_into_both():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Conv", ["n", "w1"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"]),
    ]
    inits = [
        *batchnorm_inits("bn"),
        tensor("w1", RNG.normal(size=(C, C, 1, 1)).astype(np.float32)),
        tensor("w2", RNG.normal(size=(C, C, 1, 1)).astype(np.float32)),
    ]
    original = model(nodes, inits, ["a", "b"])
    fused, _ = fuse_model(original)
    assert op_counts(fused) == {"Conv": 2}
    assert_same_function(original, fused)


def test_a_padded_reader_keeps_the_bn_for_every_reader_with_a_reason():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Conv", ["n", "w1"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"], pads=[1, 1, 1, 1], name="padded"),
    ]
    inits = [
        *batchnorm_inits("bn"),
        tensor("w1", RNG.normal(size=(C, C, 1, 1)).astype(np.float32)),
        tensor("w2", RNG.normal(size=(C, C, 3, 3)).astype(np.float32)),
    ]
    original = model(nodes, inits, ["a", "b"])
    fused, outcome = fuse_model(original)
    assert op_counts(fused) == op_counts(original)
    [skip] = outcome.skipped
    assert "Conv 'padded'" in skip.reason and "padding would see" in skip.reason


def test_a_non_linear_reader_keeps_the_bn():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Conv", ["n", "w1"], ["a"]),
        helper.make_node("Relu", ["n"], ["b"]),
    ]
    inits = [*batchnorm_inits("bn"), tensor("w1", RNG.normal(size=(C, C, 1, 1)).astype(np.float32))]
    original = model(nodes, inits, ["a", "b"])
    fused, _ = fuse_model(original)
    assert op_counts(fused) == op_counts(original)


def test_a_reshape_that_splits_the_channel_axis_keeps_the_bn():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Reshape", ["n", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    inits = [
        *batchnorm_inits("bn"),
        tensor("shape", np.array([1, C // 2, 2 * H * W])),
        tensor("w", RNG.normal(size=(2 * H * W, 4)).astype(np.float32)),
    ]
    original = model(nodes, inits, ["y"])
    fused, _ = fuse_model(original)
    assert op_counts(fused)["BatchNormalization"] == 1
    assert_same_function(original, fused)


def _weights(*names: str, shape=(C, C, 1, 1)) -> list[onnx.TensorProto]:
    return [tensor(name, RNG.normal(size=shape).astype(np.float32)) for name in names]


def test_a_bn_read_by_matmuls_on_another_axis_stays():
    """Two MatMuls read the BN's output along its last axis, not its channels: nothing to
    fold into (each would need a bias per row)."""
    nodes = [
        bn_node("x", "n"),
        helper.make_node("MatMul", ["n", "w1"], ["a"]),
        helper.make_node("MatMul", ["n", "w2"], ["b"]),
    ]
    inits = [*batchnorm_inits("bn"), *_weights("w1", "w2", shape=(C, C))]
    original = model(nodes, inits, "ab", input_shape=(1, C, H, C))  # last axis as wide as C
    fused, _ = fuse_model(original)
    assert op_counts(fused) == op_counts(original)
    assert_same_function(original, fused)


def test_a_scalar_read_by_two_matmuls_stays_without_a_channel_axis():
    """A scalar ``Mul`` has no channel axis of its own to follow: it is left alone."""
    nodes = [
        helper.make_node("Mul", ["x", "half"], ["n"]),
        helper.make_node("MatMul", ["n", "w1"], ["a"]),
        helper.make_node("MatMul", ["n", "w2"], ["b"]),
    ]
    inits = [tensor("half", np.float32(0.5)), *_weights("w1", "w2", shape=(W, W))]
    original = model(nodes, inits, "ab")
    fused, _ = fuse_model(original)
    assert op_counts(fused) == op_counts(original)
    assert_same_function(original, fused)


def test_a_scale_after_a_conv_after_a_gelu_is_not_a_gelu_tail():
    """Only per-channel Mul/Div/Add/Sub right after a GELU are its tail (kept for onnxruntime's
    fusion): a per-channel ``Mul`` after a conv after the GELU (the conv's output also a graph
    output, so the Mul cannot fold back into it) folds into the two convs reading it."""
    erf = [
        helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["x", "erf1"], ["xerf"]),
        helper.make_node("Mul", ["xerf", "half"], ["gelu"]),
    ]
    nodes = [
        *erf,
        helper.make_node("Conv", ["gelu", "w0"], ["c"]),
        helper.make_node("Mul", ["c", "gains"], ["n"]),
        helper.make_node("Conv", ["n", "w1"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"]),
    ]
    scalars = [tensor(k, np.float32(v)) for k, v in (("sqrt2", 2**0.5), ("one", 1), ("half", 0.5))]
    gains = tensor("gains", RNG.uniform(0.5, 1.5, (1, C, 1, 1)).astype(np.float32))
    inits = [*scalars, gains, *_weights("w0", "w1", "w2")]
    original = model(nodes, inits, "abc")
    fused, outcome = fuse_model(original)
    assert op_counts(fused) == {"Div": 1, "Erf": 1, "Add": 1, "Mul": 2, "Conv": 3}
    assert any(block.rule == "fold_forward" for block in outcome.fused)
    assert_same_function(original, fused)


def test_a_transposed_bn_whose_moved_copy_is_a_graph_output_stays():
    """The Transposed BN output is itself a graph output: it must keep its value, so the BN
    cannot fold into the convs that read it (through the Transpose, and directly)."""
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Transpose", ["n"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Conv", ["t", "w1"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"]),
    ]
    original = model(nodes, [*batchnorm_inits("bn"), *_weights("w1", "w2")], ["a", "b", "t"])
    fused, _ = fuse_model(original)
    assert op_counts(fused) == op_counts(original)
    assert_same_function(original, fused)


def test_a_path_through_two_moves_ending_in_a_non_linear_op_keeps_the_bn():
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Transpose", ["n"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 1, 3, 2]),
        helper.make_node("Relu", ["tt"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"]),
    ]
    original = model(nodes, [*batchnorm_inits("bn"), *_weights("w2")], ["a", "b"])
    fused, _ = fuse_model(original)
    assert op_counts(fused)["BatchNormalization"] == 1
    assert_same_function(original, fused)


def test_a_move_of_unknown_shape_keeps_the_bn():
    """``x`` has no static size, so where a Reshape puts the channel axis is not known."""
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Reshape", ["n", "flat_shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "w1"], ["a"]),
        helper.make_node("MatMul", ["tokens", "w2"], ["b"]),
    ]
    inits = [
        *batchnorm_inits("bn"),
        tensor("flat_shape", np.array([0, C, -1])),
        *_weights("w1", "w2", shape=(C, C)),
    ]
    original = model(nodes, inits, "ab", input_shape=("N", C, "H", "W"))
    fused, _ = fuse_model(original)
    assert op_counts(fused)["BatchNormalization"] == 1
    assert_same_function(original, fused)


def test_a_fold_whose_weights_overflow_float16_keeps_the_bn_with_the_reason():
    """float16 convs after a BN that scales by 2,000: the folded weights pass 65,504."""
    gamma = np.full(C, 2000.0)
    bn = [tensor(f"bn_{k}", np.full(C, v, np.float16)) for k, v in (("beta", 0), ("mean", 0))]
    bn += [tensor("bn_gamma", gamma.astype(np.float16)), tensor("bn_var", np.ones(C, np.float16))]
    weights = [tensor(n, np.full((C, C, 1, 1), 40.0, np.float16)) for n in ("w1", "w2")]
    nodes = [
        bn_node("x", "n"),
        helper.make_node("Conv", ["n", "w1"], ["a"]),
        helper.make_node("Conv", ["n", "w2"], ["b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, C, H, W])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT16, [1, C, H, W]) for o in "ab"],
        [*bn, *weights],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, outcome = fuse_model(original)
    assert op_counts(fused) == op_counts(original)
    reasons = [skip.reason for skip in outcome.skipped]
    assert any("BatchNormalization 'norm' is left as it is" in r for r in reasons), reasons
