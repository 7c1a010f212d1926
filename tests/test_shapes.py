"""No-ops and ``Shape`` folds are decided on shapes the tool infers, never on a claim.

Each model declares a wrong shape for a tensor (in ``value_info`` or on a graph output) that
would make a node look like a no-op, or fold ``Shape`` to the claimed shape; ``fuse`` without
verification must write a model whose outputs have the original's shapes and values in
onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import repvgg_onnx
from helpers import op_counts, random_feeds, run
from repvgg_onnx.graph.shapes import inferred_shapes

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'

#: (name, graph text, the node that only looks like a no-op)
LIES = [
    (
        "add of zeros[1,1,1] to a [1,C] tensor claimed [1,1,1,C]",
        """g (float[1,4] x) => (float y) <float[1,1,1,4] t, float[1,1,1] z = {0}> {
            t = Relu(x)
            y = Add(t, z)
        }""",
        "Add",
    ),
    (
        "mul by ones[1,1,1] of a [1,C] tensor claimed [1,1,1,C]",
        """g (float[1,4] x) => (float y) <float[1,1,1,4] t, float[1,1,1] one = {1}> {
            t = Relu(x)
            y = Mul(one, t)
        }""",
        "Mul",
    ),
    (
        "sub of zeros[1,1] from a [C] tensor claimed [1,C]",
        """g (float[4] x) => (float y) <float[1,4] t, float[1,1] z = {0}> {
            t = Relu(x)
            y = Sub(t, z)
        }""",
        "Sub",
    ),
    (
        "div by ones[1,1,1] of a [1,C] tensor claimed [1,1,1,C]",
        """g (float[1,4] x) => (float y) <float[1,1,1,4] t, float[1,1,1] one = {1}> {
            t = Relu(x)
            y = Div(t, one)
        }""",
        "Div",
    ),
    (
        "reshape of a [1,C] tensor claimed [1,1,C] to [1,1,C]",
        """g (float[1,4] x) => (float y) <float[1,1,4] t, float[1,1,4] y, int64[3] s = {1,1,4}> {
            t = Relu(x)
            y = Reshape(t, s)
        }""",
        "Reshape",
    ),
    (
        "reshape to [1,1,C] of a [1,C] tensor, the graph output claimed [1,C]",
        """g (float[1,4] x) => (float[1,4] y) <float[1,4] t, int64[3] s = {1,1,4}> {
            t = Relu(x)
            y = Reshape(t, s)
        }""",
        "Reshape",
    ),
    (
        "shape of a [1,C] tensor claimed [1,1,1,C], read by ConstantOfShape",
        """g (float[1,4] x) => (float y) <float[1,1,1,4] t> {
            t = Relu(x)
            s = Shape(t)
            y = ConstantOfShape(s)
        }""",
        "ConstantOfShape",
    ),
    (
        "transpose without perm of a [2,2] tensor claimed [4]",
        """g (float[2,2] x) => (float y) <float[4] t> {
            t = Relu(x)
            y = Transpose(t)
        }""",
        "Transpose",
    ),
]


def _model(text: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(f"{HEADER}\n{text}")


@pytest.mark.parametrize(("text", "kept"), [case[1:] for case in LIES], ids=[c[0] for c in LIES])
def test_a_lying_shape_changes_no_output(text, kept):
    model = _model(text)
    fused = repvgg_onnx.fuse(model, verify=False).model
    assert op_counts(fused).get(kept) == 1
    feeds = random_feeds(model)
    for want, got in zip(run(model, feeds), run(fused, feeds), strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_the_true_no_op_still_goes():
    """The same Add with ``t`` really ``[1,1,1,C]`` (and nothing claimed) is ``x + 0``."""
    model = _model(
        """g (float[1,1,1,4] x) => (float y) <float[1,1,1] z = {0}> {
            t = Relu(x)
            y = Add(t, z)
        }"""
    )
    fused = repvgg_onnx.fuse(model, verify=False).model
    assert op_counts(fused) == {"Relu": 1}
    feeds = random_feeds(model)
    assert run(fused, feeds)[0].shape == run(model, feeds)[0].shape == (1, 1, 1, 4)


def test_inferred_shapes_ignore_value_info_and_declared_outputs():
    model = _model(LIES[5][1])  # the graph output claimed [1,C]
    shapes = inferred_shapes(model)
    dims = {name: [d.dim_value for d in v.type.tensor_type.shape.dim] for name, v in shapes.items()}
    assert dims == {"t": [1, 4], "y": [1, 1, 4]}


def _generated_then_sliced(op: str, length: int) -> onnx.ModelProto:
    """``op`` makes a 1-D tensor of ``length`` elements from constants; a Slice reads it."""
    const = lambda value, name: onnx.numpy_helper.from_array(np.array(value, np.int64), name)  # noqa: E731
    inputs = {
        "Range": ["zero", "length", "one"],
        "ConstantOfShape": ["shape"],
        "Expand": ["three", "shape"],
        "Tile": ["three", "shape"],
    }[op]
    nodes = [
        onnx.helper.make_node(op, inputs, ["made"]),
        onnx.helper.make_node("Slice", ["made", "one_v", "five_v"], ["part"]),
        onnx.helper.make_node("Shape", ["part"], ["y"]),
    ]
    inits = [
        const(0, "zero"),
        const(1, "one"),
        const(length, "length"),
        const([length], "shape"),
        const([3], "three"),
        const([1], "one_v"),
        const([5], "five_v"),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, None)],
        inits,
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.fixture
def propagated(monkeypatch) -> list[bool]:
    """Whether each shape inference from here on propagates data, in order."""
    calls: list[bool] = []
    infer = onnx.shape_inference.infer_shapes

    def recording(model, *args, data_prop=False, **kwargs):
        calls.append(data_prop)
        return infer(model, *args, data_prop=data_prop, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", recording)
    return calls


@pytest.mark.parametrize("op", ["Range", "ConstantOfShape", "Expand", "Tile"])
def test_a_long_vector_made_from_constants_is_not_propagated(propagated, op):
    """onnx's data propagation builds such a vector element by element (a Range to 10^8
    then sliced: 8 s; to 2^32, from a damaged conv's pads: out of memory). Past 2^20 elements
    inference runs without it, and still finds the shapes."""
    from repvgg_onnx.graph import shapes

    long_one = inferred_shapes(_generated_then_sliced(op, shapes.MAX_PROPAGATED_ELEMENTS + 1))
    short_one = inferred_shapes(_generated_then_sliced(op, 64))
    assert propagated == [False, True]
    assert long_one["part"].type.tensor_type.shape.dim[0].dim_value == 4
    assert short_one["part"].type.tensor_type.shape.dim[0].dim_value == 4


def test_a_vector_length_given_by_a_constant_node_or_unknown(propagated):
    """A Constant node's value counts like an initializer's; a length fed at run time is not
    known, so it does not stop propagation (and inference still types the result)."""
    from repvgg_onnx.graph import shapes

    by_node = _generated_then_sliced("Range", 1)
    length = np.array(shapes.MAX_PROPAGATED_ELEMENTS + 1, np.int64)
    by_node.graph.node.insert(
        0,
        onnx.helper.make_node(
            "Constant", [], ["length"], value=onnx.numpy_helper.from_array(length)
        ),
    )
    del by_node.graph.initializer[2]  # the initializer "length"
    fed = _generated_then_sliced("Range", 1)
    del fed.graph.initializer[2]
    fed.graph.input.append(onnx.helper.make_tensor_value_info("length", onnx.TensorProto.INT64, []))
    inferred_shapes(by_node)
    typed = inferred_shapes(fed)
    assert propagated == [False, True]
    assert typed["made"].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_a_lying_shape_of_a_tensor_inference_cannot_type_is_dropped():
    """A custom op's output claimed ``[1,1,1,C]``: inference finds nothing for it, so it has
    no shape (not the claimed one), and ``t + zeros[1,1,1]`` is not taken for ``t + 0``."""
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>\n'
        """g (float[1,4] x) => (float y) <float[1,1,1,4] t, float[1,1,1] z = {0}> {
            t = com.example.Scramble(x)
            s = Add(t, z)
            y = Relu(s)
        }"""
    )
    fused = repvgg_onnx.fuse(model, verify=False).model
    assert op_counts(fused) == {"Scramble": 1, "Add": 1, "Relu": 1}
