"""``Add(MatMul(A, B), C)`` → ``Gemm(A, B, C)``: exact cases fuse, the rest stay."""

from __future__ import annotations

import onnx
import pytest

from helpers import assert_same_function, fuse_model, op_counts


def _model(text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def test_a_computed_weight_and_a_full_shape_bias_become_one_gemm():
    model = _model(
        HEADER
        + """
        g (float[4, 6] a, float[6, 3] w, float[4, 3] c, float[4, 3] d) => (float[4, 3] y) {
            bias = Mul(c, d)
            p = MatMul(a, w)
            y = Add(bias, p)
        }"""
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Mul": 1, "Gemm": 1}
    assert [b.rule for b in outcome.fused] == ["matmul_add_to_gemm"]
    assert fused.graph.node[-1].output[0] == "y"
    assert_same_function(model, fused)


@pytest.mark.parametrize(
    "body",
    [
        # the product is also read by a Relu: a Gemm would compute it twice
        "p = MatMul(a, w)\n y0 = Add(p, c)\n r = Relu(p)\n y = Add(y0, r)",
        # the bias would broadcast the product to a larger shape
        "p = MatMul(a1, w)\n y = Add(p, c)",
    ],
    ids=["product-read-twice", "two-way-broadcast"],
)
def test_inexact_or_costlier_cases_stay(body):
    model = _model(
        HEADER
        + """
        g (float[4, 6] a, float[1, 6] a1, float[6, 3] w, float[4, 3] c) => (float[4, 3] y) {
            BODY
        }""".replace("BODY", body)
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert outcome.fused == []
    assert_same_function(model, fused)


def test_a_product_of_unknown_shape_stays():
    """A custom op's output has no inferred shape: whether ``A`` is a matrix is not known."""
    model = _model(
        '<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>'
        + """
        g (float[4, 6] a, float[6, 3] w, float[4, 3] c) => (float[4, 3] y) {
            q = com.example.Scramble(a)
            p = MatMul(q, w)
            y = Add(p, c)
        }"""
    )
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model) and outcome.fused == []
