"""``diff`` of a pair no repvgg-onnx run wrote (no block is tagged): what it reads itself."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

import repvgg_onnx

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
RNG = np.random.default_rng(0)


def parse(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    for name, value in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model


def _f32(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def test_an_untagged_conv_bn_pair_is_a_block_and_a_changed_activation_is_not():
    """B (a hand-made deploy form) writes ``b`` with one Conv where A has Conv + BN: a block,
    labelled from the weight's kernel (no ``kernel_shape``), its terms read from A's chain (no
    Add). The Sigmoid in place of the Relu writes ``r`` too, but replaces no linear op: not a
    block. The input's new batch dim is an interface change."""
    a = parse(
        """
        g (float[1,4,6,6] x) => (float[1,4,36] y) {
          h = Conv<pads=[1,1,1,1]>(x, w)
          b = BatchNormalization(h, s, t, m, v)
          r = Relu(b)
          shape = Constant<value_ints=[1,4,36]>()
          y = Reshape(r, shape)
        }""",
        w=_f32(4, 4, 3, 3),
        s=np.ones(4, np.float32),
        t=np.zeros(4, np.float32),
        m=np.zeros(4, np.float32),
        v=np.ones(4, np.float32),
    )
    b = parse(
        """
        g (float[N,4,6,6] x) => (float[1,4,36] y) {
          b = Conv<pads=[1,1,1,1]>(x, w2, bias)
          r = Sigmoid(b)
          y = Reshape(r, shape_value)
        }""",
        w2=_f32(4, 4, 3, 3),
        bias=np.zeros(4, np.float32),
        shape_value=np.array([1, 4, 36]),
    )
    difference = repvgg_onnx.diff(a, b)
    assert difference.changes["inputs"] == [
        "input 'x': float32[1, 4, 6, 6] → float32['N', 4, 6, 6]"
    ]
    [block] = difference.blocks
    assert (block.output, block.summary) == ("b", "Conv3x3+BN → Conv3x3")
    assert [node.label for node in block.a_nodes] == ["Conv3x3", "BatchNormalization"]
