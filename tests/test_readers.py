"""Readers: what a node is read as, and why a node that looks linear is refused."""

from __future__ import annotations

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
