"""The vectorized ScatterND computes exactly what onnx's reference loop computes; the flatten
idiom folds without an evaluator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from repvgg_onnx.passes.reference_evaluator import reference_evaluator, scatter_nd


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


def test_the_flatten_idiom_folds_without_an_evaluator(monkeypatch):
    """The index ops are numpy: neither onnx's reference nor onnxruntime starts for them."""
    from onnx import parser

    from repvgg_onnx.graph.crossing import import_graph
    from repvgg_onnx.passes import constant_evaluation, fold_constants

    model = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[2, 3, 1, 1] x) => (float[2, 3] y) {
            shape = Shape(x)
            zero = Constant<value = int64 {0}>()
            batch = Gather<axis = 0>(shape, zero)
            axes = Constant<value = int64[1] {0}>()
            batch1 = Unsqueeze(batch, axes)
            rest = Constant<value = int64[1] {-1}>()
            target = Concat<axis = 0>(batch1, rest)
            y = Reshape(x, target)
        }"""
    )
    graph, _ = import_graph(model)
    from repvgg_onnx.passes.canonicalize import canonicalize

    canonicalize(graph)
    monkeypatch.setattr(constant_evaluation, "reference_evaluator", None)  # a call would fail
    runtime = lambda *_: pytest.fail("onnxruntime started")  # noqa: E731
    assert fold_constants.fold_constants(graph, runtime).rewrites
    [reshape] = graph.nodes
    np.testing.assert_array_equal(reshape.inputs[1].values, [2, -1])


def test_a_scatter_nd_with_a_repeated_index_falls_back_to_writing_in_order():
    """The vectorized ScatterND cannot order two writes to one place: onnx's own runs then,
    and the later write stands."""
    from onnx import numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ScatterND", ["data", "indices", "updates"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [
            numpy_helper.from_array(np.zeros(4, np.float32), "data"),
            numpy_helper.from_array(np.array([[1], [1]], np.int64), "indices"),
            numpy_helper.from_array(np.array([5.0, 7.0], np.float32), "updates"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    [y] = reference_evaluator(model).run(None, {})
    np.testing.assert_array_equal(y, [0.0, 7.0, 0.0, 0.0])
    # numpy happens to keep the later write too, but does not promise it: not vectorized
    indices = np.array([[2], [0], [-2]], np.int64)  # -2 is 2
    assert scatter_nd(np.zeros(4), indices, np.ones(3)) is None
    assert scatter_nd(np.zeros(4), indices[:2], np.ones(2)) is not None


def _border_write_model(body: str) -> onnx.ModelProto:
    """A model of ``x`` (float[1, 2, 3, 3]) with the constants a border write needs: ``pads``
    (1 around H and W), ``rows`` (row 0 of both channels), ``ones`` (its updates)."""
    from onnx import parser

    return parser.parse_model(
        f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 2, 3, 3] x) => ({body.split("=>")[0]}) {{
            pads = Constant<value = int64[8] {{0, 0, 1, 1, 0, 0, 1, 1}}>()
            rows = Constant<value = int64[2, 1, 4, 4] {{
                0,0,0,0, 0,0,0,1, 0,0,0,2, 0,0,0,3, 0,1,0,0, 0,1,0,1, 0,1,0,2, 0,1,0,3}}>()
            ones = Constant<value = float[2, 1, 4] {{1, 1, 1, 1, 1, 1, 1, 1}}>()
            {body.split("=>")[1]}
        }}"""
    )


#: Models in which a ScatterND must not write into its data: read again elsewhere (by a Neg,
#: as a graph output, through a Reshape's view), the graph input itself, or a Fortran-ordered
#: padded map (its reshape would be a copy, so the writes would be lost); and a chain of
#: writes, which may.
IN_PLACE_TRAPS = {
    "read twice": """float[1, 2, 5, 5] y, float[1, 2, 5, 5] z =>
        t = Pad(x, pads)
        y = ScatterND(t, rows, ones)
        z = Neg(t)""",
    "a graph output": """float[1, 2, 5, 5] y, float[1, 2, 5, 5] t =>
        t = Pad(x, pads)
        y = ScatterND(t, rows, ones)""",
    "a reshape's view": """float[1, 2, 5, 5] y, float[1, 2, 5, 5] z =>
        shape = Constant<value = int64[4] {1, 2, 5, 5}>()
        t = Pad(x, pads)
        u = Reshape(t, shape)
        y = ScatterND(u, rows, ones)
        z = Neg(t)""",
    "the input": """float[1, 2, 3, 3] y =>
        rows3 = Constant<value = int64[1, 1, 4] {0, 0, 0, 0}>()
        ones3 = Constant<value = float[1, 1] {5}>()
        y = ScatterND(x, rows3, ones3)""",
    "fortran order": """float[1, 2, 5, 5] y =>
        xt = Transpose<perm = [3, 2, 1, 0]>(x)
        xc = Identity(xt)
        back = Transpose<perm = [3, 2, 1, 0]>(xc)
        c = Pad(back, pads)
        y = ScatterND(c, rows, ones)""",
    "a chain of writes": """float[1, 2, 5, 5] y =>
        twos = Constant<value = float[2, 1, 4] {2, 2, 2, 2, 2, 2, 2, 2}>()
        t = Pad(x, pads)
        u = ScatterND(t, rows, ones)
        y = ScatterND(u, rows, twos)""",
}


@pytest.mark.parametrize("case", IN_PLACE_TRAPS)
def test_scatter_nd_writes_in_place_only_into_arrays_nothing_else_reads(case):
    """Evaluated twice with intermediates overwritten, the outputs are onnx's own, and the
    input fed in is unchanged."""
    model = _border_write_model(IN_PLACE_TRAPS[case])
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    want = ReferenceEvaluator(model).run(None, {"x": x.copy()})
    evaluator = reference_evaluator(model, overwrite_intermediates=True)
    for _ in range(2):
        fed = x.copy()
        got = evaluator.run(None, {"x": fed})
        np.testing.assert_array_equal(fed, x)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
