"""The vectorized ScatterND computes exactly what onnx's reference loop computes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from repvgg_onnx.passes.reference import reference_evaluator


def _scatter_model(shape, depth, count, reduction):
    node = helper.make_node("ScatterND", ["data", "indices", "updates"], ["out"])
    if reduction is not None:
        node.attribute.append(helper.make_attribute("reduction", reduction))
    graph = helper.make_graph(
        [node],
        "scatter",
        [
            helper.make_tensor_value_info("data", TensorProto.DOUBLE, shape),
            helper.make_tensor_value_info("indices", TensorProto.INT64, [count, depth]),
            helper.make_tensor_value_info("updates", TensorProto.DOUBLE, [count, *shape[depth:]]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("reduction", [None, "none", "add", "max"])
@pytest.mark.parametrize("seed", range(40))
def test_scatternd_matches_the_reference_loop(seed, reduction):
    rng = np.random.default_rng(seed)
    shape = [int(s) for s in rng.integers(1, 5, size=rng.integers(1, 5))]
    depth = int(rng.integers(1, len(shape) + 1))
    count = int(rng.integers(0, 7))  # small index ranges: duplicates occur, order matters
    indices = np.stack(
        [rng.integers(-size, size, size=count) for size in shape[:depth]], axis=-1
    ).reshape(count, depth)
    feeds = {
        "data": rng.normal(size=shape),
        "indices": indices.astype(np.int64),
        "updates": rng.normal(size=(count, *shape[depth:])),
    }
    model = _scatter_model(shape, depth, count, reduction)
    [want] = ReferenceEvaluator(model).run(None, feeds)
    [got] = reference_evaluator(model).run(None, feeds)
    np.testing.assert_array_equal(got, want)
