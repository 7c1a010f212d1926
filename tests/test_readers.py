"""Readers: what a node is read as, and why a node that looks linear is refused."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from repvgg_onnx.algebra.linear_forms import ChannelAffine
from repvgg_onnx.passes.readers import Kind, LinearOp, Refusal, read_node

PARAMETERS = ("gamma", "beta", "mean", "var")


def batchnorm(values: dict[str, np.ndarray | None], epsilon: float = 1e-5) -> gs.Node:
    """A BatchNormalization of a ``[1, C, 4, 4]`` input; a ``None`` parameter is a graph
    input (not a constant)."""
    x = gs.Variable("x", np.float32, [1, 3, 4, 4])
    inputs = [x]
    for name in PARAMETERS:
        value = values[name]
        inputs.append(
            gs.Variable(name, np.float32, [3]) if value is None else gs.Constant(name, value)
        )
    y = gs.Variable("y", np.float32, [1, 3, 4, 4])
    return gs.Node("BatchNormalization", "bn", {"epsilon": epsilon}, inputs, [y])


def parameters(**changes) -> dict[str, np.ndarray | None]:
    values = {
        "gamma": np.array([0.5, 2.0, -1.5], np.float32),
        "beta": np.array([0.1, -0.2, 0.3], np.float32),
        "mean": np.array([1.0, 0.0, -2.0], np.float32),
        "var": np.array([0.25, 4.0, 1e-3], np.float32),
    }
    return values | changes


def test_batchnorm_reads_as_its_channel_affine_in_float64():
    values = parameters()
    reading = read_node(batchnorm(values, epsilon=1e-3))
    assert isinstance(reading, LinearOp) and reading.kind is Kind.BATCHNORM
    assert reading.dtype == np.float32
    form = reading.form
    assert isinstance(form, ChannelAffine)
    assert form.scale.dtype == np.float64 and form.shift.dtype == np.float64
    g, b, m, v = (values[n].astype(np.float64) for n in PARAMETERS)
    scale = g / np.sqrt(v + 1e-3)
    np.testing.assert_array_equal(form.scale, scale)
    np.testing.assert_array_equal(form.shift, b - m * scale)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", PARAMETERS)
def test_a_parameter_holding_inf_or_nan_is_named(name, bad):
    value = parameters()[name].copy()
    value[1] = bad
    reading = read_node(batchnorm(parameters(**{name: value})))
    assert isinstance(reading, Refusal)
    what = {"gamma": "scale", "beta": "bias", "mean": "mean", "var": "variance"}[name]
    assert reading.reason == f"BatchNormalization 'bn' has a {what} holding inf or NaN ('{name}')"


def test_the_first_faulty_parameter_is_named_whatever_the_fault():
    """A non-finite mean comes before a variance that is not constant, and before unequal
    shapes: the reason names the first parameter at fault, in input order."""
    nan_mean = np.array([np.nan, 0.0, 0.0], np.float32)
    reading = read_node(batchnorm(parameters(mean=nan_mean, var=None)))
    assert "mean holding inf or NaN" in reading.reason
    reading = read_node(batchnorm(parameters(mean=nan_mean, var=np.ones(4, np.float32))))
    assert "mean holding inf or NaN" in reading.reason
    reading = read_node(batchnorm(parameters(var=None)))
    assert "variance that is not constant ('var')" in reading.reason


def test_unequal_shapes_and_a_non_positive_variance_are_refused():
    reading = read_node(batchnorm(parameters(beta=np.zeros(4, np.float32))))
    assert reading.reason == "BatchNormalization 'bn' has parameters of unequal shape"
    negative = np.array([1.0, -2e-5, 1.0], np.float32)
    reading = read_node(batchnorm(parameters(var=negative), epsilon=1e-5))
    assert reading.reason == "BatchNormalization 'bn' has var + epsilon <= 0"
    reading = read_node(batchnorm(parameters(var=negative), epsilon=3e-5))
    assert isinstance(reading, LinearOp)
    exactly_zero = np.array([1.0, -0.5, 1.0], np.float32)  # var + eps == 0: a division by 0
    reading = read_node(batchnorm(parameters(var=exactly_zero), epsilon=0.5))
    assert reading.reason == "BatchNormalization 'bn' has var + epsilon <= 0"


# ---- every reader's refusals: a node that looks linear but is not exactly one ---------------

RNG = np.random.default_rng(0)
CONSTANT_NAMES = (f"c{index}" for index in itertools.count())


def _x(shape=(1, 4, 6, 6), dtype=np.float32, name="x") -> gs.Variable:
    return gs.Variable(name, dtype, None if shape is None else list(shape))


def _c(value, dtype=np.float32, name=None) -> gs.Constant:
    value = np.asarray(value, dtype)
    return gs.Constant(name or next(CONSTANT_NAMES), value)


def _node(op: str, inputs, **attrs) -> gs.Node:
    return gs.Node(op, f"{op.lower()}_node", attrs, list(inputs), [gs.Variable("y", np.float32)])


def _weight(*shape) -> gs.Constant:
    return _c(RNG.normal(size=shape))


def _overridable_weight() -> gs.Constant:
    from repvgg_onnx.graph.constant_views import mark_overridable

    weight = _weight(4, 4, 3, 3)
    mark_overridable(weight)
    return weight


def _conv(**attrs) -> gs.Node:
    return _node("Conv", [_x(), _weight(4, 4, 3, 3)], **attrs)


#: ``(node builder, what the reading says)``: a reason's words, or ``None`` for "not read".
REFUSED_NODES = {
    "Conv without a weight": (lambda: _node("Conv", [_x()]), "has no weight"),
    "Conv weight also a graph input": (
        lambda: _node("Conv", [_x(), _overridable_weight()]),
        "that is also a graph input",
    ),
    "Conv weight of integers": (
        lambda: _node("Conv", [_x(), _c(np.ones((4, 4, 3, 3)), np.int32)]),
        "int32 weight, not floating point",
    ),
    "Conv weight holding NaN": (
        lambda: _node("Conv", [_x(), _c(np.full((4, 4, 3, 3), np.nan))]),
        "holding inf or NaN",
    ),
    "Conv strides of another rank": (lambda: _conv(strides=[1]), "do not fit its kernel"),
    "Conv stride 0": (lambda: _conv(strides=[0, 1]), "below 1"),
    "Conv pads of another rank": (lambda: _conv(pads=[1, 1]), "pads [1, 1] that do not fit"),
    "Conv negative pads": (lambda: _conv(pads=[-1, 0, 0, 0]), "that do not fit its kernel"),
    "Conv unknown auto_pad": (lambda: _conv(auto_pad="MIRROR"), "unknown auto_pad 'MIRROR'"),
    "Conv weight of rank 2": (lambda: _node("Conv", [_x(), _weight(4, 4)]), "weight of rank 2"),
    "Conv group that does not fit": (lambda: _conv(group=3), "does not fit its weight"),
    "ConvTranspose weight of rank 2": (
        lambda: _node("ConvTranspose", [_x(), _weight(4, 4)]),
        "has a weight that does not fit it",
    ),
    "BatchNormalization spatial=0": (
        lambda: gs.Node(
            "BatchNormalization",
            "bn",
            {"spatial": 0},
            [_x(), *(_c(np.ones(4)) for _ in range(4))],
            [gs.Variable("y", np.float32)],
        ),
        "spatial=0",
    ),
    "Mul by a constant of more dims": (
        lambda: _node("Mul", [_x(), _c(np.ones((1, 1, 4, 1, 1)))]),
        "its constant has more dims",
    ),
    "Mul broadcasting the data": (
        lambda: _node("Mul", [_x((1, 1, 6, 6)), _c(np.ones((1, 4, 1, 1)))]),
        "its constant would broadcast",
    ),
    "Mul by integers": (
        lambda: _node("Mul", [_x(), _c(np.ones((1, 4, 1, 1)), np.int64)]),
        "has a int64 constant",
    ),
    "Div by zero": (
        lambda: _node("Div", [_x(), _c(np.array([1.0, 0.0, 2.0, 3.0]).reshape(1, 4, 1, 1))]),
        "holding inf, NaN or 0",
    ),
    "Add of one input": (lambda: _node("Add", [_x()]), None),
    "Mul of two constants": (lambda: _node("Mul", [_c([1.0]), _c([2.0])]), None),
    "Div of a constant by the data": (lambda: _node("Div", [_c([1.0]), _x()]), None),
    "Sum with a constant": (lambda: _node("Sum", [_x(), _c(np.ones((1, 4, 6, 6)))]), None),
    "Sum of one input": (lambda: _node("Sum", [_x()]), None),
    "AveragePool of unknown channels": (
        lambda: _node("AveragePool", [_x(None)], kernel_shape=[3, 3]),
        "channel count or kernel unknown",
    ),
    "AveragePool SAME with stride 2": (
        lambda: _node(
            "AveragePool", [_x()], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        "pads by the input size",
    ),
    "AveragePool count_include_pad=0": (
        lambda: _node("AveragePool", [_x()], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        "count_include_pad=0",
    ),
    "Pad of unknown rank": (
        lambda: _node("Pad", [_x(None), _c([0, 0, 1, 1, 0, 0, 1, 1], np.int64)]),
        "the rank of its input is unknown",
    ),
    "Pad by computed pads": (
        lambda: _node("Pad", [_x(), _x((8,), np.int64, "pads")]),
        "pads that are not constant",
    ),
    "Pad by two fill values": (
        lambda: _node("Pad", [_x(), _c([0, 0, 1, 1, 0, 0, 1, 1], np.int64), _c([1.0, 2.0])]),
        "fill value that is not one constant",
    ),
    "Pad over computed axes": (
        lambda: _node(
            "Pad", [_x(), _c([1, 1, 1, 1], np.int64), _c(0.0), _x((2,), np.int64, "axes")]
        ),
        "axes that are not constant",
    ),
    "Pad reflecting": (
        lambda: _node("Pad", [_x(), _c([0, 0, 1, 1, 0, 0, 1, 1], np.int64)], mode="reflect"),
        "uses mode 'reflect'",
    ),
    "Pad of a matrix": (
        lambda: _node("Pad", [_x((4, 6)), _c([1, 1, 1, 1], np.int64)]),
        "is not a spatial pad",
    ),
    "Pad of the channels": (
        lambda: _node("Pad", [_x(), _c([0, 1, 0, 0, 0, 1, 0, 0], np.int64)]),
        "pads the batch or channel axis, or crops",
    ),
    "Pad cropping": (
        lambda: _node("Pad", [_x(), _c([0, 0, -1, 0, 0, 0, 0, 0], np.int64)]),
        "pads the batch or channel axis, or crops",
    ),
    "Gemm weight of rank 3": (
        lambda: _node("Gemm", [_x((2, 4)), _weight(4, 4, 1)]),
        "has a weight of rank 3",
    ),
    "Gemm bias of another size": (
        lambda: _node("Gemm", [_x((2, 4)), _weight(4, 5), _c(np.ones(3))]),
        "adds a bias that is not per output",
    ),
    "Gemm bias per row": (
        lambda: _node("Gemm", [_x((2, 4)), _weight(4, 2), _c(np.ones((2, 1)))]),
        "adds a bias that is not per output",
    ),
    "MatMul of a constant by the data": (
        lambda: _node("MatMul", [_c(np.ones((3, 2))), _x((2, 4))]),
        None,
    ),
    "MatMul by a 3-d constant": (
        lambda: _node("MatMul", [_x((2, 4)), _weight(2, 4, 3)]),
        "is not x·W with a 2-d constant W",
    ),
    "Reshape without a shape": (lambda: _node("Reshape", [_x()]), None),
    "Concat of two computed tensors": (
        lambda: _node("Concat", [_x(name="a"), _x(name="b")], axis=1),
        None,
    ),
    "Concat of an integer constant": (
        lambda: _node("Concat", [_x(), _c(np.ones((1, 4, 6, 1)), np.int64)], axis=3),
        None,
    ),
    "Concat of constants only": (
        lambda: _node("Concat", [_c(np.ones((1, 4, 6, 1))), _c(np.ones((1, 4, 6, 1)))], axis=3),
        None,
    ),
    "Slice of integers": (
        lambda: _node("Slice", [_x((4,), np.int64), _c([0], np.int64), _c([2], np.int64)]),
        None,
    ),
    "Slice at computed starts": (
        lambda: _node("Slice", [_x(), _x((1,), np.int64, "starts"), _c([2], np.int64)]),
        None,
    ),
    "ScatterND adding": (
        lambda: _node(
            "ScatterND", [_x(), _c([[0]], np.int64), _c(np.ones((1, 4, 6, 6)))], reduction="add"
        ),
        None,
    ),
}


@pytest.mark.parametrize("case", REFUSED_NODES, ids=str)
def test_a_node_that_is_not_exactly_linear_is_refused_or_not_read(case):
    """Each reader's guard: without it the node would be read as a linear map it is not (or
    the reader would fail); the reason names what is wrong."""
    build, reason = REFUSED_NODES[case]
    reading = read_node(build())
    if reason is None:
        assert reading is None
    else:
        assert isinstance(reading, Refusal), reading
        assert reason in reading.reason, reading.reason


def _pad_border(reading) -> tuple[tuple[int, ...], np.ndarray | None]:
    return tuple(reading.form.pads), reading.form.pad_value


def test_what_a_reader_reads_it_reads_whole():
    """Attributes and optional inputs that change the map are read, not dropped."""
    from repvgg_onnx.passes.readers import cost_of, is_training_batchnorm

    valid = read_node(_conv(auto_pad="VALID"))
    assert tuple(valid.form.pads) == (0, 0, 0, 0)
    bias = np.array([1.0, 2.0, 3.0, 4.0])
    transposed = read_node(_node("ConvTranspose", [_x(), _weight(4, 4, 3, 3), _c(bias)]))
    np.testing.assert_array_equal(transposed.form.bias, bias)
    gemm = read_node(_node("Gemm", [_x((2, 4)), _weight(4, 3), _c([1.0, 2.0, 3.0])], beta=2.0))
    np.testing.assert_array_equal(gemm.form.bias, [2.0, 4.0, 6.0])
    old_pad = read_node(_node("Pad", [_x()], pads=[0, 0, 1, 2, 0, 0, 3, 4], value=0.5))
    assert _pad_border(old_pad)[0] == (1, 2, 3, 4)
    np.testing.assert_array_equal(_pad_border(old_pad)[1], [0.5] * 4)
    filled = read_node(_node("Pad", [_x(), _c([0, 0, 1, 1, 0, 0, 1, 1], np.int64), _c(0.25)]))
    np.testing.assert_array_equal(_pad_border(filled)[1], [0.25] * 4)
    axes = _c([3], np.int64)
    along_w = read_node(_node("Pad", [_x(), _c([1, 2], np.int64), _c(0.0), axes]))
    assert _pad_border(along_w)[0] == (0, 1, 0, 2)
    assert cost_of(along_w, 4) == 0.0, "a pad moves data, it multiplies nothing"
    dropout = gs.Node(
        "Dropout", "d", {}, [_x()], [gs.Variable("y", np.float32), gs.Variable("mask", np.bool_)]
    )
    assert not is_training_batchnorm(dropout)
