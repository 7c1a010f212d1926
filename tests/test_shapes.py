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
