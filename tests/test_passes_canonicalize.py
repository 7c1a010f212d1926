"""canonicalize: exporter noise removed, function unchanged, blocks then fuse."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from helpers import assert_same_function, fuse_model, op_counts
from repvgg_onnx.passes.canonicalize import canonicalize


def parse(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(value.astype(np.float32), name))
    onnx.checker.check_model(model)
    return model


RNG = np.random.default_rng(0)
HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_identity_shared_weights_and_sum_fuse():
    """TorchScript shares equal initializers through Identity; Sum adds all branches at once."""
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          w1 = Identity(w)
          a = Conv<pads = [1,1,1,1]>(x, w, b)
          c = Conv<pads = [1,1,1,1]>(x, w1, b)
          d = Conv(x, k)
          s = Sum(a, d, x, c)
          y = Relu(s)
        }""",
        w=RNG.normal(size=(4, 4, 3, 3)),
        b=RNG.normal(size=4),
        k=RNG.normal(size=(4, 4, 1, 1)),
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert outcome.fused[0].branches == ("Conv3x3", "Conv1x1", "Identity", "Conv3x3")
    assert_same_function(model, fused)
    assert {t.name for t in model.graph.initializer} >= {"w", "b"}, "input model was changed"


def test_constant_nodes_and_neutral_ops():
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          zero = Constant<value = float[1] {0.0}>()
          one = Constant<value_float = 1.0>()
          wc = Constant<value = float[4,4,1,1] {1,0,0,0, 0,1,0,0, 0,0,2,0, 0,0,0,3}>()
          a = Conv<pads = [1,1,1,1]>(x, w)
          a0 = Add(a, zero)
          c = Conv(x, wc)
          c1 = Mul(one, c)
          s = Add(c1, a0)
          y = Relu(s)
        }""",
        w=RNG.normal(size=(4, 4, 3, 3)),
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert_same_function(model, fused)


def test_add_of_a_broadcasting_zero_is_kept():
    """``x + zeros[1,4,1,1]`` with ``x`` of unknown rank could broadcast: leave it."""
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          s = Add(x, z)
          y = Relu(s)
        }""",
        z=np.zeros((1, 1, 1, 1, 1)),
    )
    graph = gs.import_onnx(model)
    assert canonicalize(graph).rewrites == 0


def test_an_identity_before_a_graph_output_goes_and_the_output_keeps_its_name():
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y, float[1,4,6,6] z) {
          r = Relu(x)
          y = Identity(r)
          z = Neg(r)
        }"""
    )
    graph = gs.import_onnx(model)
    canonicalize(graph)
    assert [t.name for t in graph.outputs] == ["y", "z"]
    relu, neg = graph.nodes
    assert (relu.op, relu.outputs[0].name, neg.inputs[0].name) == ("Relu", "y", "y")
    assert_same_function(model, gs.export_onnx(graph))


def test_an_identity_between_a_graph_input_and_output_stays():
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          y = Identity(x)
        }"""
    )
    graph = gs.import_onnx(model)
    canonicalize(graph)
    assert [n.op for n in graph.nodes] == ["Identity"]
