"""Regions of any depth: an Add tree of 3,000 terms, a ``Sum`` of 3,000 inputs and a chain of
1,000 linear ops with nothing non-linear between them fuse (they ended ``fuse`` and
``inspect`` with ``RecursionError`` before), with planning work linear in their size.

Planning cuts a region at ``MAX_REGION_DEPTH`` ops below its root; the pieces are regions of
their own and merge in the next round.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import repvgg_onnx
from helpers import assert_same_function, op_counts
from repvgg_onnx.passes import regions

CHANNELS = 2


def _conv(name: str, x: str, y: str, rng: np.random.Generator) -> tuple[onnx.NodeProto, list]:
    """A 1x1 conv with an orthogonal weight (a chain of them keeps its values O(1))."""
    q, _ = np.linalg.qr(rng.standard_normal((CHANNELS, CHANNELS)))
    weight = numpy_helper.from_array(
        q.reshape(CHANNELS, CHANNELS, 1, 1).astype(np.float32), f"{name}_w"
    )
    bias = numpy_helper.from_array(
        (0.01 * rng.standard_normal(CHANNELS)).astype(np.float32), f"{name}_b"
    )
    return helper.make_node("Conv", [x, weight.name, bias.name], [y], name=name), [weight, bias]


def _model(nodes: list[onnx.NodeProto], initializers: list, output: str) -> onnx.ModelProto:
    shape = [1, CHANNELS, 4, 4]
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def add_tree(terms: int) -> onnx.ModelProto:
    """``((c0(x) + c1(x)) + c2(x)) + …``: an Add chain ``terms`` deep."""
    rng = np.random.default_rng(0)
    nodes, initializers, total = [], [], ""
    for i in range(terms):
        node, weights = _conv(f"c{i}", "x", f"t{i}", rng)
        nodes.append(node)
        initializers += weights
        if total:
            nodes.append(helper.make_node("Add", [total, f"t{i}"], [f"s{i}"], name=f"a{i}"))
            total = f"s{i}"
        else:
            total = f"t{i}"
    return _model(nodes, initializers, total)


def sum_of(inputs: int) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes, initializers = [], []
    for i in range(inputs):
        node, weights = _conv(f"c{i}", "x", f"t{i}", rng)
        nodes.append(node)
        initializers += weights
    nodes.append(helper.make_node("Sum", [f"t{i}" for i in range(inputs)], ["y"], name="sum"))
    return _model(nodes, initializers, "y")


def chain(length: int) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes, initializers, x = [], [], "x"
    for i in range(length):
        node, weights = _conv(f"c{i}", x, f"y{i}", rng)
        nodes.append(node)
        initializers += weights
        x = f"y{i}"
    return _model(nodes, initializers, x)


SHAPES = {"add_tree": (add_tree, 3000), "sum": (sum_of, 3000), "chain": (chain, 1000)}


@pytest.fixture(params=sorted(SHAPES))
def deep_model(request) -> onnx.ModelProto:
    build, size = SHAPES[request.param]
    return build(size)


def test_a_deep_region_fuses_into_one_conv(deep_model, monkeypatch):
    expansions = []
    real = regions._Attempt.express

    def counted(self, tensor):
        expansions.append(1)
        return real(self, tensor)

    monkeypatch.setattr(regions._Attempt, "express", counted)
    fused = repvgg_onnx.fuse(deep_model, verify=False)
    assert op_counts(fused.model) == {"Conv": 1}
    assert_same_function(deep_model, fused.model)
    nodes = len(deep_model.graph.node)
    assert len(expansions) <= 4 * nodes, "planning work grows linearly with the region"


def test_inspect_reads_a_deep_region(deep_model):
    inspection = repvgg_onnx.inspect(deep_model)
    assert inspection.fusable and not inspection.deploy_form


def test_a_region_is_cut_at_the_depth_limit(monkeypatch):
    """Below the limit a chain is one region and one round; above it, pieces and more
    rounds, with the same function."""
    model = chain(12)
    whole = repvgg_onnx.fuse(model, verify=False)
    monkeypatch.setattr(regions, "MAX_REGION_DEPTH", 4)
    cut = repvgg_onnx.fuse(model, verify=False)
    assert op_counts(whole.model) == op_counts(cut.model) == {"Conv": 1}
    assert cut.report.rounds > whole.report.rounds
    assert_same_function(model, cut.model)
