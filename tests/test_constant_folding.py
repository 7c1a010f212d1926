"""Constant folding writes what onnxruntime computes, at every opset.

Each op kind the folder meets in exported models is folded at every opset where its signature
changes (axes as attributes at the TorchScript opsets 9 and 11, as inputs from 13 on) and
compared with onnxruntime running the node itself; onnx's reference evaluator, which folds
alone where onnxruntime cannot, must agree with onnxruntime on every op it is trusted with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import op_counts, random_feeds, run
from repvgg_onnx.graph.crossing import import_graph
from repvgg_onnx.passes import constant_evaluation
from repvgg_onnx.passes.constant_evaluation import constant_model, evaluate_constants
from repvgg_onnx.passes.fold_constants import fold_constants
from repvgg_onnx.passes.reference_evaluator import CHECKED_OPS
from repvgg_onnx.pipeline.constant_folding import onnxruntime_values
from repvgg_onnx.pipeline.fuse_model import fuse_graph

RNG = np.random.default_rng(0)
F = np.float32
I64 = np.int64


def f32(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(F)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=I64)


#: (op, opset, inputs, attributes, number of outputs): each op at the opsets where its
#: signature changes, with negative axes wherever the opset allows them.
CASES = [
    ("Unsqueeze", 9, [f32(3)], {"axes": [0, 2]}, 1),
    ("Unsqueeze", 9, [f32(3)], {"axes": [-2, -1]}, 1),
    ("Unsqueeze", 11, [f32(3)], {"axes": [-2, -1]}, 1),
    ("Unsqueeze", 11, [f32(3, 2)], {"axes": [-1, 0]}, 1),
    ("Unsqueeze", 13, [f32(3), i64(-2, -1)], {}, 1),
    ("Squeeze", 9, [f32(1, 3, 1)], {"axes": [0, 2]}, 1),
    ("Squeeze", 11, [f32(1, 3, 1)], {"axes": [-1, 0]}, 1),
    ("Squeeze", 13, [f32(1, 3, 1), i64(-1, 0)], {}, 1),
    ("Squeeze", 13, [f32(1, 3, 1)], {}, 1),
    ("Gather", 9, [f32(3, 4), i64(2, 0)], {"axis": 1}, 1),
    ("Gather", 11, [f32(3, 4), i64(-1, 0)], {"axis": -1}, 1),
    ("Gather", 13, [i64(5, 6, 7), np.array(-2, I64)], {"axis": 0}, 1),
    ("Concat", 9, [f32(2, 1), f32(2, 3)], {"axis": 1}, 1),
    ("Concat", 11, [i64(1, 2), i64(-1)], {"axis": -1}, 1),
    ("Concat", 13, [f32(1, 2), f32(3, 2)], {"axis": 0}, 1),
    ("Reshape", 9, [f32(2, 3, 4), i64(0, -1)], {}, 1),
    ("Reshape", 13, [f32(2, 3, 4), i64(4, 0, -1)], {}, 1),
    ("Reshape", 14, [f32(2, 3, 4), i64(6, 4)], {"allowzero": 1}, 1),
    ("Expand", 9, [f32(3, 1), i64(2, 3, 4)], {}, 1),
    ("Expand", 13, [f32(1, 4), i64(3, 1)], {}, 1),
    ("ConstantOfShape", 9, [i64(2, 3)], {"value": numpy_helper.from_array(np.array([1.5], F))}, 1),
    ("ConstantOfShape", 13, [i64(4)], {}, 1),
    ("Mul", 9, [f32(3, 1, 1), f32(3, 4)], {}, 1),
    ("Mul", 14, [i64(3, -4), i64(5)], {}, 1),
    ("Add", 9, [f32(3, 1), f32(4)], {}, 1),
    ("Add", 14, [i64(3, 4), i64(-1, 1)], {}, 1),
    ("Sub", 9, [f32(4), f32(3, 1)], {}, 1),
    ("Sub", 14, [i64(3, 4), i64(5)], {}, 1),
    ("Div", 9, [f32(3, 4), np.abs(f32(4)) + 0.5], {}, 1),
    ("Div", 14, [i64(7, -7, 6), i64(2)], {}, 1),
    ("Pow", 9, [np.abs(f32(4)), f32(4)], {}, 1),
    ("Pow", 12, [f32(4), i64(2)], {}, 1),
    ("Pow", 15, [np.abs(f32(2, 3)), np.array(0.5, F)], {}, 1),
    ("Sqrt", 9, [np.abs(f32(5))], {}, 1),
    ("Sqrt", 13, [np.abs(f32(5)) + 1e-3], {}, 1),
    ("Neg", 9, [f32(4)], {}, 1),
    ("Neg", 13, [i64(3, -2)], {}, 1),
    ("Reciprocal", 9, [np.abs(f32(4)) + 0.1], {}, 1),
    ("Reciprocal", 13, [np.abs(f32(4)) + 0.1], {}, 1),
    ("Sigmoid", 9, [f32(6) * 4], {}, 1),
    ("Sigmoid", 13, [f32(6) * 4], {}, 1),
    ("Equal", 9, [i64(1, 2, 3), i64(2)], {}, 1),
    ("Equal", 11, [np.array([1.0, 2.0], F), np.array([1.0], F)], {}, 1),
    ("Equal", 13, [i64(-1, 4), i64(-1, 5)], {}, 1),
    ("Where", 9, [np.array([True, False, True]), f32(3), f32(1)], {}, 1),
    ("Where", 16, [np.array([[True], [False]]), i64(1, 2), i64(7)], {}, 1),
    ("Cast", 9, [np.array([1.7, -1.7, 0.0], F)], {"to": TensorProto.INT64}, 1),
    ("Cast", 13, [i64(1, 0, 3)], {"to": TensorProto.BOOL}, 1),
    ("Cast", 19, [i64(1, -2, 3)], {"to": TensorProto.FLOAT}, 1),
    ("Range", 11, [np.array(0, I64), np.array(7, I64), np.array(2, I64)], {}, 1),
    ("Range", 13, [np.array(1.0, F), np.array(-2.0, F), np.array(-0.5, F)], {}, 1),
    ("Slice", 9, [f32(4, 5)], {"starts": [1, -3], "ends": [3, 100], "axes": [0, 1]}, 1),
    ("Slice", 10, [f32(4, 5), i64(1), i64(-1), i64(1)], {}, 1),
    ("Slice", 11, [f32(4, 5), i64(0), i64(100), i64(-1)], {}, 1),
    ("Slice", 13, [f32(4, 5), i64(-1), i64(-100), i64(0), i64(-2)], {}, 1),
    ("Transpose", 9, [f32(2, 3, 4)], {"perm": [2, 0, 1]}, 1),
    ("Transpose", 13, [f32(2, 3)], {}, 1),
    ("Split", 9, [f32(5, 2)], {"axis": 0, "split": [2, 3]}, 2),
    ("Split", 11, [f32(2, 6)], {"axis": -1}, 2),
    ("Split", 13, [f32(2, 5), i64(1, 4)], {"axis": 1}, 2),
    ("Split", 18, [f32(5, 2)], {"axis": 0, "num_outputs": 2}, 2),
    ("Pad", 9, [f32(2, 3)], {"pads": [0, 1, 1, 0], "value": 2.0}, 1),
    ("Pad", 9, [f32(2, 3)], {"pads": [1, 1, 1, 1], "mode": "reflect"}, 1),
    ("Pad", 11, [f32(2, 3), i64(1, 0, 0, 2), np.array(-1.0, F)], {}, 1),
    ("Pad", 13, [f32(2, 3), i64(1, 1, 0, 1)], {"mode": "edge"}, 1),
    ("Pad", 18, [f32(2, 3), i64(1, 2), np.array(0.5, F), i64(-1)], {}, 1),
    ("Clip", 9, [f32(6) * 3], {"min": -1.0, "max": 2.0}, 1),
    ("Clip", 11, [f32(6) * 3, np.array(-0.5, F), np.array(0.5, F)], {}, 1),
    ("Clip", 13, [i64(-5, 0, 5), np.array(-2, I64), np.array(3, I64)], {}, 1),
    ("ReduceSum", 11, [f32(2, 3, 4)], {"axes": [-1, 0], "keepdims": 0}, 1),
    ("ReduceSum", 13, [f32(2, 3, 4), i64(-2)], {"keepdims": 1}, 1),
    ("ReduceMean", 11, [f32(2, 3, 4)], {"axes": [1], "keepdims": 1}, 1),
    ("ReduceMean", 13, [f32(2, 3, 4)], {"axes": [-1, -2]}, 1),
    ("ReduceMean", 18, [f32(2, 3, 4), i64(0, -1)], {"keepdims": 0}, 1),
    ("Tile", 9, [f32(2, 3), i64(2, 1)], {}, 1),
    ("Tile", 13, [i64(1, 2), i64(3)], {}, 1),
    ("Flatten", 9, [f32(2, 3, 4)], {"axis": 2}, 1),
    ("Flatten", 11, [f32(2, 3, 4)], {"axis": -1}, 1),
    ("Flatten", 13, [f32(2, 3, 4)], {"axis": 0}, 1),
    ("Identity", 9, [f32(3)], {}, 1),
    ("Identity", 13, [i64(1, 2)], {}, 1),
    ("ScatterND", 11, [f32(4, 3), i64(2, 0).reshape(2, 1), f32(2, 3)], {}, 1),
    ("ScatterND", 16, [f32(4), i64(1, 1).reshape(2, 1), f32(2)], {"reduction": "add"}, 1),
    ("ScatterND", 18, [f32(2, 2), i64(0, 1).reshape(1, 2), f32(1)], {"reduction": "max"}, 1),
]


@pytest.fixture
def no_exact_ops(monkeypatch):
    """Constant evaluation without :mod:`~repvgg_onnx.passes.exact_ops`: every node goes to
    onnxruntime and the reference evaluator, whose agreement these tests are about."""
    monkeypatch.setattr(constant_evaluation, "evaluate_exact_ops", lambda *_: {})


def _case_id(case) -> str:
    op, opset, _, attributes, _ = case
    return f"{op}-{opset}-{'-'.join(sorted(attributes))}"


def _node_model(op, opset, inputs, attributes, outputs, *, as_initializers: bool):
    """One ``op`` node; its inputs are initializers or graph inputs, each output goes through
    an Identity to a graph output (graph outputs themselves are never folded)."""
    names = [f"in{i}" for i in range(len(inputs))]
    results = [f"value{i}" for i in range(outputs)]
    nodes = [helper.make_node(op, names, results, name="folded", **attributes)]
    nodes += [helper.make_node("Identity", [r], [f"out{i}"]) for i, r in enumerate(results)]
    values = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, inputs, strict=True)]
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs, strict=True)
    ]
    graph = helper.make_graph(
        nodes,
        "case",
        [] if as_initializers else graph_inputs,
        [helper.make_empty_tensor_value_info(f"out{i}") for i in range(outputs)],
        values if as_initializers else [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _onnxruntime_results(case) -> list[np.ndarray]:
    op, opset, inputs, attributes, outputs = case
    model = _node_model(op, opset, inputs, attributes, outputs, as_initializers=False)
    feeds = {f"in{i}": np.asarray(v) for i, v in enumerate(inputs)}
    return run(model, feeds)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_folding_writes_what_onnxruntime_computes(case):
    op, opset, inputs, attributes, outputs = case
    model = _node_model(op, opset, inputs, attributes, outputs, as_initializers=True)
    graph, _ = import_graph(model)
    outcome = fold_constants(graph, runtime=onnxruntime_values)
    assert outcome.rewrites == 1 and not outcome.skipped
    assert [node.op for node in graph.nodes] == ["Identity"] * outputs
    for node, want in zip(graph.nodes, _onnxruntime_results(case), strict=True):
        _assert_same(np.asarray(node.inputs[0].values), want)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.usefixtures("no_exact_ops")
def test_the_reference_agrees_with_onnxruntime_on_every_checked_op(case):
    """What justifies :data:`CHECKED_OPS`: the reference alone folds them as onnxruntime would."""
    op, opset, inputs, attributes, outputs = case
    node = helper.make_node(op, [f"in{i}" for i in range(len(inputs))], ["a", "b"][:outputs])
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
    values = {f"in{i}": np.asarray(v) for i, v in enumerate(inputs)}
    [decision] = evaluate_constants([node], values, opset, runtime=None)
    assert decision.outputs is not None, decision.refusal
    for got, want in zip(decision.outputs, _onnxruntime_results(case), strict=True):
        _assert_same(got, want)


def test_every_checked_op_has_cases_at_the_torchscript_opsets_and_after():
    covered = {op: {opset for o, opset, *_ in CASES if o == op} for op, *_ in CASES}
    assert set(covered) == CHECKED_OPS
    for op, opsets in covered.items():
        assert min(opsets) <= 11 and max(opsets) >= 13, op


def _conv_bn_scale_shift(opset: int, scale_first: bool = False) -> onnx.ModelProto:
    """onnxruntime's ``conv_bn_mul_add_unsqueeze_neg_axes``: Conv → BatchNormalization →
    ``Mul(·, Unsqueeze(s, axes=[-2, -1]))`` → ``Add(·, Unsqueeze(b, axes=[-2, -1]))``.
    ``scale_first`` computes ``s`` as ``|s0|`` in the graph (``s0`` is positive), an op the
    exact ops (:mod:`~repvgg_onnx.passes.exact_ops`) leave to onnxruntime, so the constant
    subgraph runs through onnxruntime and the reference evaluator."""
    channels = 4
    rng = np.random.default_rng(11)
    weights = {
        "W": rng.normal(size=(channels, 3, 3, 3)),
        "B": rng.normal(size=channels),
        "gamma": rng.uniform(0.5, 2, channels),
        "beta": rng.normal(size=channels),
        "mean": rng.normal(1, 1, channels),
        "var": rng.uniform(0.2, 3, channels),
        "s0": rng.uniform(0.5, 2, channels),
        "b": rng.normal(size=channels),
        "two": np.array(2.0),
    }
    unsqueeze = {"axes": [-2, -1]} if opset < 13 else {}
    axes = [] if opset < 13 else ["axes"]
    if opset >= 13:
        weights["axes"] = np.array([-2, -1])
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Abs", ["s0"], ["s"])
        if scale_first
        else helper.make_node("Identity", ["s0"], ["s"]),
        helper.make_node("Unsqueeze", ["s", *axes], ["s3"], **unsqueeze),
        helper.make_node("Mul", ["bn", "s3"], ["scaled"]),
        helper.make_node("Unsqueeze", ["b", *axes], ["b3"], **unsqueeze),
        helper.make_node("Add", ["scaled", "b3"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(v.astype(I64 if k == "axes" else F), k) for k, v in weights.items()
    ]
    # the spatial size equals the channel count, so the wrong [1, C, 1] still broadcasts
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, channels, channels])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, channels, channels])
    graph = helper.make_graph(nodes, "conv_bn_mul_add", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 6
    return model


def _assert_same_outputs(original: onnx.ModelProto, fused: onnx.ModelProto) -> None:
    feeds = random_feeds(original)
    for want, got in zip(run(original, feeds), run(fused, feeds), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scale_first", [False, True])
@pytest.mark.parametrize("opset", [9, 11, 13])
def test_negative_unsqueeze_axes_fold_as_onnxruntime_reads_them(opset, scale_first):
    """At HEAD before this fix, opset 11 folded ``Unsqueeze(s, [-2, -1])`` to ``[1, C, 1]``
    (onnx's reference) and ``fuse --no-verify`` wrote a model off by 9.0."""
    model = _conv_bn_scale_shift(opset, scale_first)
    fused, outcome = fuse_graph(model)
    assert op_counts(fused) == {"Conv": 1}
    assert not [skip for skip in outcome.skipped if skip.rule == "fold_constants"]
    _assert_same_outputs(model, fused)


def _onnx_reference(model: onnx.ModelProto):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model)


def test_a_disagreement_with_the_reference_is_refused_with_the_reason(monkeypatch):
    """onnx's own evaluator (negative axes inserted one at a time) against onnxruntime on
    ``Unsqueeze(|s0|)``, which reads an ``Abs`` (so numpy's exact ops do not compute it): the
    Unsqueeze stays, with both shapes in the skip reason, and the model stays right.
    ``Unsqueeze(b)`` of a stored weight is an exact op and folds as specified."""
    monkeypatch.setattr(constant_evaluation, "reference_evaluator", _onnx_reference)
    model = _conv_bn_scale_shift(11, scale_first=True)
    fused, outcome = fuse_graph(model)
    [skip] = [skip for skip in outcome.skipped if skip.rule == "fold_constants"]
    assert "disagree on this constant Unsqueeze" in skip.reason
    assert "shape [4, 1, 1], the reference [1, 4, 1]" in skip.reason
    assert op_counts(fused)["Unsqueeze"] == 1
    _assert_same_outputs(model, fused)


def test_an_op_onnxruntime_cannot_run_is_refused_unless_the_reference_is_checked_on_it():
    """onnxruntime has no ``Max`` on uint16 and the reference is not checked on ``Max``."""
    values = {"a": np.array([3, 4], np.uint16), "b": np.array([2, 3], np.uint16)}
    nodes = [helper.make_node("Max", ["a", "b"], ["larger"])]
    [larger] = evaluate_constants(nodes, values, 17, onnxruntime_values)
    assert larger.outputs is None
    assert larger.refusal.startswith("onnxruntime cannot evaluate this constant Max")


@pytest.mark.usefixtures("no_exact_ops")
def test_without_onnxruntime_only_checked_ops_fold_by_the_reference():
    """A runtime that computes nothing (onnxruntime crashed): ``Mul`` is checked and folds,
    ``Max`` after it is not and stays, with the reason."""
    values = {"a": np.array([3.0, 4.0], F), "b": np.array([2.0, 5.0], F)}
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["product"]),
        helper.make_node("Max", ["product", "b"], ["larger"]),
    ]
    product, larger = evaluate_constants(nodes, values, 17, lambda *_: dict)
    np.testing.assert_array_equal(product.outputs[0], [6.0, 20.0])
    assert larger.outputs is None and "not checked against onnxruntime on Max" in larger.refusal


def test_an_op_the_reference_is_not_checked_on_folds_by_onnxruntime():
    values = {"a": np.array([3.0, -4.0], F), "b": np.array([2.0, 5.0], F)}
    nodes = [helper.make_node("Max", ["a", "b"], ["larger"])]
    [larger] = evaluate_constants(nodes, values, 17, onnxruntime_values)
    np.testing.assert_array_equal(larger.outputs[0], [3.0, 5.0])


@pytest.mark.parametrize(
    ("op", "inputs", "kept"),
    [
        # a per-channel value broadcast over a 64x64 map: 262,144 elements from 16
        ("Expand", [f32(1, 16, 1, 1), i64(1, 16, 128, 128)], True),
        ("Tile", [f32(1, 16, 1, 1), i64(1, 1, 128, 128)], True),
        ("ConstantOfShape", [i64(1, 16, 128, 128)], True),
        # within the limit of 65,536 elements: folded
        ("Expand", [f32(1, 16, 1, 1), i64(1, 16, 64, 64)], False),
        # as large as what it reads: folded
        ("Tile", [f32(1, 16, 128, 128), i64(1, 1, 1, 1)], False),
    ],
    ids=["Expand", "Tile", "ConstantOfShape", "Expand within the limit", "Tile by ones"],
)
def test_a_result_much_larger_than_its_inputs_stays_computed(op, inputs, kept):
    """A blow-up would put a large constant in the file for a node that costs nothing to run;
    a result within ``MAX_FOLDED_ELEMENTS``, or no larger than its inputs together, folds."""
    model = _node_model(op, 17, inputs, {}, 1, as_initializers=True)
    graph, _ = import_graph(model)
    outcome = fold_constants(graph, runtime=onnxruntime_values)
    assert [node.op for node in graph.nodes] == ([op] if kept else []) + ["Identity"]
    assert outcome.rewrites == (0 if kept else 1)


def _run_script(script: str) -> list[str]:
    """``script``'s printed lines, run by a fresh interpreter (onnxruntime not yet loaded)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_dbb_folds_its_computed_weights_without_onnxruntime(tmp_path):
    """A DBB whose border weights are computed in the graph (Equal, Where, Expand, Range, and
    a BatchNormalization's shift from Sqrt, Div, Mul, Sub) folds them with the exact ops
    alone: no onnxruntime child starts, and onnxruntime is never imported in the fusing
    process itself (so verification can still fork)."""
    fixture = Path(__file__).resolve().parent.parent / "models/fixtures/families/dbb"
    script = (
        "import sys, repvgg_onnx, repvgg_onnx.pipeline.constant_folding as runtime\n"
        "starts, start = [], runtime._start_child\n"
        "runtime._start_child = lambda: starts.append(1) or start()\n"
        f"result = repvgg_onnx.fuse({str(fixture / 'ts17_nofold.onnx')!r}, verify=False)\n"
        "assert not [s for s in result.report.skipped if s.rule == 'fold_constants']\n"
        "print(len(starts))\n"
        "print(sorted(m for m in sys.modules if m.startswith('onnxruntime')))"
    )
    assert _run_script(script) == ["0", "[]"]


def test_folding_runs_onnxruntime_in_one_child_process(tmp_path):
    """Constants that only onnxruntime computes (``Sigmoid``, a float ``Cast``), in two rounds of
    folding (the second reads the shape the first made known), are served by one child;
    onnxruntime is never imported in the fusing process itself."""
    from onnx import parser

    model = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[4] y) {
            z = Constant<value = float[1] {0.2}>()
            three = Constant<value = float[1] {3.6}>()
            sz = Sigmoid(z)
            f = Add(sz, three)
            shape = Cast<to = 7>(f)
            r = Reshape(x, shape)
            size = Shape(r)
            beta = ConstantOfShape<value = float[1] {1.5}>(size)
            gate = Sigmoid(beta)
            y = Mul(r, gate)
        }"""
    )
    path = tmp_path / "gated.onnx"
    onnx.save(model, path)
    script = (
        "import sys, repvgg_onnx, repvgg_onnx.pipeline.constant_folding as runtime\n"
        "starts, start = [], runtime._start_child\n"
        "runtime._start_child = lambda: starts.append(1) or start()\n"
        "submits, submit = [], runtime._Worker.submit\n"
        "runtime._Worker.submit = lambda *a: submits.append(1) or submit(*a)\n"
        f"result = repvgg_onnx.fuse({str(path)!r}, verify=False)\n"
        "assert not [s for s in result.report.skipped if s.rule == 'fold_constants']\n"
        "print(len(starts), len(submits) > 1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('onnxruntime')))"
    )
    assert _run_script(script) == ["1 True", "[]"]


def test_a_child_that_dies_answers_nothing_and_the_next_call_starts_another():
    script = """
import os, signal, sys
import numpy as np
from onnx import helper
import repvgg_onnx.pipeline.constant_folding as runtime

nodes = [helper.make_node("Max", ["a", "b"], ["larger"])]
values = {"a": np.array([1.0, 5.0], np.float32), "b": np.array([2.0, 3.0], np.float32)}
real, start, starts = runtime.run_on_onnxruntime, runtime._start_child, []
runtime._start_child = lambda: starts.append(1) or start()
def crash(model):
    os.kill(os.getpid(), signal.SIGKILL)
def larger():
    return runtime.onnxruntime_values(nodes, values, 17)().get("larger", "none")
print(larger())  # outside a worker's block: a child of its own
runtime.run_on_onnxruntime = crash
print(larger())
with runtime.onnxruntime_worker():
    print(larger())  # the worker dies on it
    runtime.run_on_onnxruntime = real
    print(larger())  # another worker
    print(larger())  # the same one
print(len(starts), "onnxruntime" in sys.modules)
"""
    assert _run_script(script) == ["[2. 5.]", "none", "none", "[2. 5.]", "[2. 5.]", "2 False"]


def test_a_sequence_output_is_not_folded():
    values = {"a": np.arange(4, dtype=F)}
    nodes = [helper.make_node("SplitToSequence", ["a"], ["parts"], keepdims=0)]
    [parts] = evaluate_constants(nodes, values, 17, onnxruntime_values)
    assert parts.outputs is None


def test_a_node_reading_one_tensor_twice_is_evaluated_alone():
    """A batch onnxruntime cannot run (Max on uint16) falls back to one node at a time, where
    ``Min(f, f)`` (the reference is not checked on Min) still runs on onnxruntime."""
    values = {"a": np.array([3, 4], np.uint16), "f": np.array([1.5, -2.0], F)}
    nodes = [
        helper.make_node("Max", ["a", "a"], ["larger"]),
        helper.make_node("Min", ["f", "f"], ["smaller"]),
    ]
    larger, smaller = evaluate_constants(nodes, values, 17, onnxruntime_values)
    assert larger.outputs is None
    np.testing.assert_array_equal(smaller.outputs[0], [1.5, -2.0])


def test_fuse_no_verify_writes_onnxruntimes_reading_of_negative_axes(tmp_path):
    """The issue's report: ``repvgg-onnx fuse --no-verify`` on the opset-11 case wrote a
    model off by 8.3 (no check ran to catch it)."""
    from click.testing import CliRunner

    from repvgg_onnx.cli import main

    model = _conv_bn_scale_shift(11)
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    done = CliRunner().invoke(main, ["fuse", "--no-verify", str(source), str(target)])
    assert done.exit_code == 0, done.output
    fused = onnx.load(target)
    assert op_counts(fused) == {"Conv": 1}
    _assert_same_outputs(model, fused)


@pytest.mark.parametrize(("opset", "ir_version"), [(9, 4), (11, 6), (13, 7), (18, 8)])
def test_the_constant_model_has_the_oldest_ir_version_its_opset_allows(opset, ir_version):
    """onnxruntime 1.18 (the oldest we support) refuses IR versions newer than 10."""
    assert constant_model([], {}, [], opset).ir_version == ir_version


# --- repeated index bookkeeping is evaluated once ----------------------------------------------


def _layer_bookkeeping(layer: int, scale: str) -> list[onnx.NodeProto]:
    """What a TorchScript export repeats per layer: the same index ops on the same values."""
    return [
        helper.make_node("Mul", [scale, "two"], [f"scaled{layer}"]),
        helper.make_node("Unsqueeze", [f"scaled{layer}", "axes"], [f"column{layer}"]),
        helper.make_node("Add", [f"column{layer}", "one"], [f"shifted{layer}"]),
    ]


def _bookkeeping_values() -> dict[str, np.ndarray]:
    return {
        "s": np.array([1.5, -2.0, 0.25], np.float32),
        "t": np.array([1.5, -2.0, 0.25], np.float32),  # equal to s: the same value
        "u": np.array([1.5, -2.0, 0.5], np.float32),
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "axes": np.array([1], np.int64),
    }


def test_repeated_nodes_on_equal_values_are_evaluated_once():
    nodes = _layer_bookkeeping(0, "s") + _layer_bookkeeping(1, "t") + _layer_bookkeeping(2, "u")
    distinct, same_as = constant_evaluation.distinct_nodes(nodes, _bookkeeping_values())
    assert len(distinct) == 6  # layer 1 repeats layer 0; layer 2 reads another value
    assert same_as == {"scaled1": "scaled0", "column1": "column0", "shifted1": "shifted0"}
    assert [list(node.input) for node in distinct[3:]] == [
        ["u", "two"],
        ["scaled2", "axes"],
        ["column2", "one"],
    ]


def test_different_attributes_are_different_computations():
    values = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    nodes = [
        helper.make_node("Flatten", ["x"], ["a"], axis=0),
        helper.make_node("Flatten", ["x"], ["b"], axis=1),
        helper.make_node("Flatten", ["x"], ["c"], axis=0),
    ]
    distinct, same_as = constant_evaluation.distinct_nodes(nodes, values)
    assert [node.output[0] for node in distinct] == ["a", "b"]
    assert same_as == {"c": "a"}


def test_a_kept_node_reads_the_original_of_a_repeat():
    values = _bookkeeping_values()
    nodes = [
        *_layer_bookkeeping(0, "s"),
        *_layer_bookkeeping(1, "t"),
        helper.make_node("Sub", ["shifted1", "u"], ["difference"]),
    ]
    distinct, _ = constant_evaluation.distinct_nodes(nodes, values)
    assert list(distinct[-1].input) == ["shifted0", "u"]
    assert list(nodes[-1].input) == ["shifted1", "u"], "the caller's node is not changed"


def test_every_repeat_gets_the_values_its_own_evaluation_gives(monkeypatch):
    """Decisions with repeats evaluated once equal those of every node evaluated alone."""
    values = _bookkeeping_values()
    nodes = [
        *_layer_bookkeeping(0, "s"),
        *_layer_bookkeeping(1, "t"),
        *_layer_bookkeeping(2, "u"),
        helper.make_node("Sub", ["shifted1", "shifted2"], ["difference"]),
    ]
    once = evaluate_constants(nodes, values, 17, onnxruntime_values)
    monkeypatch.setattr(
        constant_evaluation, "distinct_nodes", lambda nodes, values: (list(nodes), {})
    )
    alone = evaluate_constants(nodes, values, 17, onnxruntime_values)
    assert len(once) == len(alone) == len(nodes)
    for mine, theirs in zip(once, alone, strict=True):
        assert mine.refusal == theirs.refusal
        for a, b in zip(mine.outputs, theirs.outputs, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(
        once[-1].outputs[0], (2 * values["t"] + 1 - 2 * values["u"] - 1)[:, None]
    )


def test_equal_bytes_of_another_type_or_shape_are_another_value():
    values = {
        "a": np.zeros(4, np.float32),
        "b": np.zeros(4, np.int32),  # the same 16 bytes
        "c": np.zeros((2, 2), np.float32),
    }
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in values]
    distinct, same_as = constant_evaluation.distinct_nodes(nodes, values)
    assert len(distinct) == 3 and not same_as


def test_the_shape_of_a_computed_constant_folds_in_the_same_round():
    """``Shape(Tile(w))`` and what reads it fold in one call (before, the ``Shape`` waited for a
    second round and a shape inference), the shape as onnxruntime gives it."""
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Tile", ["w", "repeats"], ["tiled"]),
                helper.make_node("Shape", ["tiled"], ["size"], start=1),
                helper.make_node("Shape", ["w"], ["stored"]),
                helper.make_node("Concat", ["size", "stored"], ["both"], axis=0),
                helper.make_node("Reshape", ["x", "both"], ["y"]),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [
                numpy_helper.from_array(f32(2, 3), "w"),
                numpy_helper.from_array(i64(1, 4), "repeats"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph, _ = import_graph(model)
    outcome = fold_constants(graph, runtime=onnxruntime_values)
    assert [node.op for node in graph.nodes] == ["Reshape"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].values, [12, 2, 3])
    assert outcome.rewrites == 4 and outcome.shapes_stale and not outcome.skipped


# --- shapes made inferable by folding are inferred for those nodes alone -----------------------


def _pad_by_computed_pads() -> onnx.ModelProto:
    """DBB's border bookkeeping in small: ``Pad`` by pads computed from constants, and the
    ``Shape`` of its output feeding a ``Reshape``."""
    return helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Add", ["half", "half"], ["pads"]),
                helper.make_node("Pad", ["x", "pads"], ["padded"]),
                helper.make_node("Shape", ["padded"], ["size"]),
                helper.make_node("Reshape", ["padded", "size"], ["y"]),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(i64(0, 0, 1, 0, 0, 0, 1, 2), "half")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )


def test_the_shape_of_a_pad_by_folded_pads_folds_in_the_same_call():
    graph, _ = import_graph(_pad_by_computed_pads())
    graph.nodes[1].outputs[0].shape = None  # as inference leaves it: the pads were unknown
    outcome = fold_constants(graph, runtime=onnxruntime_values)
    assert [node.op for node in graph.nodes] == ["Pad", "Reshape"]
    np.testing.assert_array_equal(graph.nodes[1].inputs[1].values, [1, 2, 8, 8])
    assert outcome.rewrites == 2 and outcome.shapes_stale


def test_inferring_the_folded_nodes_alone_fuses_every_model_to_the_same_bytes(monkeypatch):
    """The shapes found for the nodes alone are the ones the pipeline's inference of the whole
    graph finds in the next round: each model that takes the new path fuses to the same bytes
    without it."""
    from repvgg_onnx.passes import fold_constants as folding

    paths = [
        Path(__file__).resolve().parent.parent / "models" / "fixtures" / "families" / name
        for name in ("dbb/ts13.onnx", "dbb/ts17_nofold.onnx", "levit_linearnorm/ts13.onnx")
    ]
    found = [fuse_graph(onnx.load(path))[0].SerializeToString() for path in paths]
    monkeypatch.setattr(folding, "infer_shapes_read_by_shape_nodes", lambda graph, made: False)
    assert found == [fuse_graph(onnx.load(path))[0].SerializeToString() for path in paths]


def test_a_result_read_from_a_written_result_has_that_results_budget():
    """``Neg(Concat(u, v))`` of 80,000 elements folds: the Concat's result counts as a constant
    the Neg reads (as large as its result), though no constant is made for it."""
    u, v = f32(40_000), f32(40_000)
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Concat", ["u", "v"], ["joined"], axis=0),
                helper.make_node("Neg", ["joined"], ["negated"]),
                helper.make_node("Add", ["x", "negated"], ["y"]),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [80_000])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [80_000])],
            [numpy_helper.from_array(u, "u"), numpy_helper.from_array(v, "v")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph, _ = import_graph(model)
    outcome = fold_constants(graph, runtime=onnxruntime_values)
    assert [node.op for node in graph.nodes] == ["Add"] and outcome.rewrites == 2
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].values, -np.concatenate([u, v]))


def _reference_through(monkeypatch, change) -> None:
    """onnx's reference evaluator, its results passed through ``change(results)``."""
    run_reference = constant_evaluation.run_reference
    monkeypatch.setattr(
        constant_evaluation, "run_reference", lambda model: change(run_reference(model))
    )


def _product(monkeypatch, change) -> constant_evaluation.NodeValues:
    """``a · b`` of two float32 constants, with the reference's result changed by ``change``
    (the exact ops, which would compute it, left out)."""
    monkeypatch.setattr(constant_evaluation, "evaluate_exact_ops", lambda *_: {})
    _reference_through(monkeypatch, change)
    values = {"a": np.array([3.0, 4.0], F), "b": np.array([2.0, 0.1], F)}
    [product] = evaluate_constants(
        [helper.make_node("Mul", ["a", "b"], ["product"])], values, 17, onnxruntime_values
    )
    return product


def test_values_that_differ_beyond_a_few_units_in_the_last_place_are_refused(monkeypatch):
    product = _product(monkeypatch, lambda results: [r + np.float32(1e-3) for r in results])
    assert product.outputs is None
    assert product.refusal == (
        "onnxruntime and onnx's reference evaluator disagree on this constant Mul (values "
        "differ by up to 0.001), so it is left to compute at run time."
    )


def test_values_within_a_few_units_in_the_last_place_agree(monkeypatch):
    """onnxruntime's vectorized math and numpy round differently: 8 ulps is agreement."""
    nudged = lambda results: [r * np.float32(1 + 8 * np.finfo(F).eps) for r in results]  # noqa: E731
    product = _product(monkeypatch, nudged)
    np.testing.assert_array_equal(product.outputs[0], np.array([6.0, 0.4], F))


def test_values_of_another_type_are_refused(monkeypatch):
    product = _product(monkeypatch, lambda results: [r.astype(np.float64) for r in results])
    assert product.outputs is None
    assert "(onnxruntime gives float32, the reference float64)" in product.refusal


def test_a_constant_only_onnxruntime_computes_is_folded_with_its_values(monkeypatch):
    def no_reference(model):
        raise RuntimeError("the reference cannot run this")

    monkeypatch.setattr(constant_evaluation, "run_reference", no_reference)
    monkeypatch.setattr(constant_evaluation, "evaluate_exact_ops", lambda *_: {})
    values = {"a": np.array([3.0, 4.0], F), "b": np.array([2.0, 0.5], F)}
    nodes = [helper.make_node("Mul", ["a", "b"], ["product"])]
    [product] = evaluate_constants(nodes, values, 17, onnxruntime_values)
    np.testing.assert_array_equal(product.outputs[0], np.array([6.0, 2.0], F))
    assert product.refusal is None


def test_a_constant_nothing_computes_is_left_without_a_reason(monkeypatch):
    """Neither evaluator computed it: not a disagreement nor an unchecked op; the node stays
    (a reason, if any, belongs to the node it reads)."""

    def no_reference(model):
        raise RuntimeError("the reference cannot run this")

    monkeypatch.setattr(constant_evaluation, "run_reference", no_reference)
    values = {"a": np.array([3.0, 4.0], F), "b": np.array([2.0, 0.5], F)}
    nodes = [helper.make_node("Max", ["a", "b"], ["larger"])]  # the reference is unchecked
    [larger] = evaluate_constants(nodes, values, 17, lambda *_: dict)
    assert larger.outputs is None and larger.refusal is None


def test_node_by_node_evaluation_skips_the_readers_of_a_node_that_failed():
    """When the whole constant model fails, each node runs alone: one that fails leaves its
    readers unknown (not run on missing inputs), and the others are still computed."""
    values = {"a": np.array([3.0, 4.0], F)}
    nodes = [
        helper.make_node("Neg", ["a"], ["broken"]),
        helper.make_node("Abs", ["broken"], ["after"]),
        helper.make_node("Sqrt", ["a"], ["root"]),
    ]

    def run_without_neg(model: onnx.ModelProto) -> list[np.ndarray]:
        if any(node.op_type == "Neg" for node in model.graph.node):
            raise RuntimeError("no Neg here")
        return constant_evaluation.run_reference(model)

    results = constant_evaluation.evaluate_in_order(run_without_neg, nodes, values, 17)
    assert sorted(results) == ["root"]
    np.testing.assert_allclose(results["root"], np.sqrt([3.0, 4.0]).astype(F))


def test_shapes_read_by_a_shape_node_wait_when_an_input_has_no_type():
    """``Shape(Pad(x, folded pads))`` where ``x`` has no type: no model of the nodes between
    can be typed, so nothing is inferred here (the whole graph's inference comes next)."""
    import onnx_graphsurgeon as gs

    from repvgg_onnx.passes.computed_shapes import infer_shapes_read_by_shape_nodes

    x = gs.Variable("x")
    pads = gs.Constant("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    padded, shape = gs.Variable("padded"), gs.Variable("shape", np.int64, [4])
    nodes = [
        gs.Node("Pad", inputs=[x, pads], outputs=[padded]),
        gs.Node("Shape", inputs=[padded], outputs=[shape]),
    ]
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[shape], opset=17)
    assert infer_shapes_read_by_shape_nodes(graph, {id(pads)}) is False
    assert padded.shape is None and padded.dtype is None


def test_exact_ops_and_runtime_ops_interleaved_fold_to_onnxruntime_values():
    """A constant chain that alternates numpy's exact ops and ops only onnxruntime computes
    (``Reshape → Sigmoid → Add → Exp → Unsqueeze``) folds whole, to onnxruntime's values."""
    from onnx import parser

    model = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[2, 3, 1] x) => (float[2, 3, 1] y) {
            w = Constant<value = float[3] {0.5, -1.25, 2.0}>()
            shape = Constant<value = int64[2] {1, 3}>()
            b = Constant<value = float[1] {0.1}>()
            axes = Constant<value = int64[1] {2}>()
            row = Reshape(w, shape)
            gate = Sigmoid(row)
            shifted = Add(gate, b)
            grown = Exp(shifted)
            scale = Unsqueeze(grown, axes)
            y = Mul(x, scale)
        }"""
    )
    fused, outcome = fuse_graph(model)
    assert op_counts(fused) == {"Mul": 1}, outcome.skipped
    _assert_same_outputs(model, fused)
    [scale] = [t for t in fused.graph.initializer]
    [ones_times_scale] = run(model, {"x": np.ones((2, 3, 1), F)})  # onnxruntime's own scale
    np.testing.assert_array_equal(
        numpy_helper.to_array(scale).reshape(-1), ones_times_scale[0, :, 0]
    )


def test_only_what_the_exact_ops_leave_goes_to_the_runtime_with_only_what_it_reads():
    """The runtime gets the nodes numpy did not compute, and the values those nodes read (a
    DBB's weights would otherwise be pickled to the child whole)."""
    seen = {}

    def runtime(nodes, values, opset):
        seen.update(ops=[node.op_type for node in nodes], values=sorted(values))
        return dict

    values = {
        "w": np.array([0.5, -1.0], F),
        "unread": np.ones(1000, F),
        "shape": np.array([2, 1], I64),
    }
    nodes = [
        helper.make_node("Reshape", ["w", "shape"], ["column"]),
        helper.make_node("Sigmoid", ["column"], ["gate"]),
        helper.make_node("Add", ["unread", "unread"], ["twice"]),
    ]
    evaluate_constants(nodes, values, 17, runtime)
    assert seen == {"ops": ["Sigmoid"], "values": ["column"]}


def test_exact_ops_are_computed_on_the_graph_without_writing_protos(monkeypatch):
    """Folding's exact ops read graphsurgeon's nodes: no proto is written for them."""
    from repvgg_onnx.passes import fold_constants as folding

    def no_proto(node):
        raise AssertionError(f"a proto was written for {node.op}")

    monkeypatch.setattr(folding, "node_proto", no_proto)
    model = _node_model("Concat", 13, [i64(1, 2), i64(3)], {"axis": 0}, 1, as_initializers=True)
    graph, _ = import_graph(model)
    assert folding.fold_constants(graph, runtime=None).rewrites == 1
