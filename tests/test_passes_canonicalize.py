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
        kept = value if value.dtype.kind in "iub" else value.astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(kept, name))
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


def _no_op_model(body: str, **weights: np.ndarray) -> onnx.ModelProto:
    return parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          r = Relu(x)
          BODY
        }""".replace("BODY", body),
        **weights,
    )


def test_unit_vectors_pow_one_and_zero_pads_are_no_ops():
    """``x·1``/``x+0`` written with a vector of neutral elements (not one value), ``Pow(x, 1)``,
    and a Pad of zeros right before the graph output all go; the output keeps its name."""
    model = _no_op_model(
        """
          a = Div(r, ones)
          b = Pow(a, one)
          c = Mul(b, ones4)
          d = Add(zeros, c)
          y = Pad(d, pads)
        """,
        ones=np.ones((4, 1, 1)),
        one=np.ones(()),
        ones4=np.ones((1, 4, 1, 1)),
        zeros=np.zeros(6),
        pads=np.zeros(8, np.int64),
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Relu": 1}
    assert fused.graph.node[0].output[0] == "y"
    assert_same_function(model, fused)


def test_neutral_constants_that_broadcast_or_are_not_neutral_stay():
    """``ones[2,1,1,1]`` makes the batch 2; ``Pow(1, x)`` is not ``x``; a non-zero pad pads."""
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[2,4,6,6] y, float[1,4,6,6] z, float[1,4,7,7] w) {
          r = Relu(x)
          y = Mul(r, ones2)
          z = Pow(one, r)
          w = Pad(r, pads)
        }""",
        ones2=np.ones((2, 1, 1, 1)),
        one=np.ones(()),
        pads=np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64),
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert_same_function(model, fused)


def test_no_ops_inside_a_loop_body_go_but_its_signature_stays():
    """An Identity (and an ``x·1``) inside a Loop body is bypassed; the Identity that writes a
    body output (the loop-carried value passed through) stays, as does the body's signature."""
    body = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            onnx.helper.make_node("Identity", ["v_in"], ["v_copy"]),
            onnx.helper.make_node("Mul", ["v_copy", "one"], ["v_same"]),
            onnx.helper.make_node("Add", ["v_same", "x"], ["v_out"]),
        ],
        "body",
        [
            onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("v_in", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        [
            onnx.helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("v_out", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        [onnx.numpy_helper.from_array(np.ones((), np.float32), "one")],
    )
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Loop", ["n", "cond", "v0"], ["y"], body=body)],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [
            onnx.numpy_helper.from_array(np.array(3, np.int64), "n"),
            onnx.numpy_helper.from_array(np.array(True), "cond"),
            onnx.numpy_helper.from_array(RNG.normal(size=(1, 4)).astype(np.float32), "v0"),
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    fused, _ = fuse_model(model)
    [loop] = fused.graph.node
    ops = [node.op_type for node in loop.attribute[0].g.node]
    assert ops == ["Identity", "Add"], ops
    assert [o.name for o in loop.attribute[0].g.output] == ["cond_out", "v_out"]
    assert_same_function(model, fused)


def test_no_ops_between_non_linear_ops_go():
    """An inference Dropout, an identity Transpose and a Reshape to its own shape, where no
    region would take them (between a Relu and a Sigmoid), are removed by canonicalize."""
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,36] y) {
          r = Relu(x)
          d = Dropout(r)
          t = Transpose<perm = [0,1,2,3]>(d)
          s = Reshape(t, same)
          q = Sigmoid(s)
          y = Reshape(q, flat)
        }""",
        same=np.array([1, 4, 6, 6]),
        flat=np.array([1, 4, 36]),
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Relu": 1, "Sigmoid": 1, "Reshape": 1}
    assert_same_function(model, fused)


def test_a_dropout_that_trains_or_whose_mask_is_read_stays():
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y, bool[1,4,6,6] m, float[1,4,6,6] z) {
          r = Relu(x)
          d, m = Dropout(r)
          y = Relu(d)
          t = Dropout(r, ratio, training)
          z = Relu(t)
        }""",
        ratio=np.array(0.5, np.float32),
        training=np.array(True),
    )
    fused, _ = fuse_model(model)
    onnx.checker.check_model(fused, full_check=True)
    assert op_counts(fused) == {"Relu": 3, "Dropout": 2}


def test_an_identity_of_a_custom_domain_is_not_an_identity():
    model = parse(
        '<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>'
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          r = Relu(x)
          i = com.example.Identity(r)
          y = Relu(i)
        }"""
    )
    fused, _ = fuse_model(model)
    assert [(n.domain, n.op_type) for n in fused.graph.node] == [
        ("", "Relu"),
        ("com.example", "Identity"),
        ("", "Relu"),
    ]


def test_a_reshape_of_a_reshape_to_a_shape_known_only_at_run_time_stays_two():
    """``Reshape(Reshape(x, [6, 4]), s)`` with ``s = [0, -1]`` fed at run time: the 0 copies
    the inner result's first dim (6), not ``x``'s (2), so the two are not one Reshape."""
    import onnxruntime as ort

    model = parse(
        HEADER
        + """
        g (float[2,3,4] x, int64[2] s) => (float[?,?] y) {
          inner = Reshape(x, six_by_four)
          y = Reshape(inner, s)
        }""",
        six_by_four=np.array([6, 4]),
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Reshape": 2}
    feeds = {"x": RNG.normal(size=(2, 3, 4)).astype(np.float32), "s": np.array([0, -1])}
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, feeds)[0].shape == (6, 4)


def test_constant_nodes_of_every_numeric_form_become_initializers():
    model = parse(
        HEADER
        + """
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) {
          gains = Constant<value_floats = [1.5, 0.5, 2.0, 1.0]>()
          shape = Constant<value_ints = [1, 4, 1, 1]>()
          g4 = Reshape(gains, shape)
          two = Constant<value_int = 2>()
          r = Pow(x, two)
          y = Mul(r, g4)
        }""",
    )
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Pow": 1, "Mul": 1}
    assert_same_function(model, fused)


def test_a_string_constant_stays_a_node():
    model = parse(
        HEADER
        + """
        g (float[1,4] x) => (float[1,4] y, string u) {
          y = Relu(x)
          t = Constant<value_string = "kept">()
          u = Identity(t)
        }"""
    )
    fused, _ = fuse_model(model)
    onnx.checker.check_model(fused, full_check=True)
    assert op_counts(fused) == {"Relu": 1, "Constant": 1}


def test_a_sum_split_into_adds_leaves_the_graph_in_topological_order():
    """The Adds that replace a Sum are appended to the graph's nodes; the pass sorts them in
    before the Relu that reads the sum (passes may rely on the order, and export keeps it)."""
    model = parse(
        HEADER
        + """
        g (float[1,4] x, float[1,4] y, float[1,4] z) => (float[1,4] r) {
          s = Sum(x, y, z)
          r = Relu(s)
        }"""
    )
    graph = gs.import_onnx(model)
    canonicalize(graph)
    assert [node.op for node in graph.nodes] == ["Add", "Add", "Relu"]
