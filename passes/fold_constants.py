"""Evaluate constant subexpressions once, so their results are constants the readers see.

Exporters compute weights in the graph (DBB's ``W + I``, EfficientViM's ``Sigmoid(α)``, a
layer scale ``Mul(γ, c)``, ``Unsqueeze(initializer)``) and shapes from ``Shape`` of tensors
whose shape is static (DBB's slice assignments). A node whose inputs are all constants is
evaluated by onnx's reference implementation (never ours) and its outputs become constants of
the same names; ``Shape``/``Size`` of a tensor with a fully known shape become constants too.

Not folded: ops outside the standard domain, random ops, nodes with subgraphs, graph outputs,
initializers a caller may override (listed as graph inputs), and results much larger than
their inputs (``Expand``/``Tile``/``ConstantOfShape`` blow-ups stay computed at run time).

Invariant: the graph computes the same function (each folded value is exactly what the node
computed).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from .graph_utils import (
    attribute,
    constant_values,
    is_graph_output,
    is_omitted,
    is_standard,
    replace_uses,
    static_shape,
)
from .reference import evaluate_index_ops, reference_evaluator
from .result import PassResult

RULE = "fold_constants"

_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
_SKIPPED = _NONDETERMINISTIC | {"Constant", "Bernoulli"}

#: A folded result may hold this many elements, or as many as its inputs together.
MAX_FOLDED_ELEMENTS = 1 << 16


def fold_constants(graph: gs.Graph) -> PassResult:
    """Replace every foldable node's outputs by constants; ``shapes_stale`` when any was.

    The constant subgraph is evaluated in one run (exporters emit thousands of small index
    computations); should that run fail, each node is evaluated on its own."""
    folded = 0
    for node in list(graph.nodes):
        if node.op in ("Shape", "Size") and _foldable(graph, node):
            values = _shape_of(node)
            if values is not None:
                folded += _replace_outputs(node, values)
    nodes = _constant_subgraph(graph)
    values = _evaluate_all(graph, nodes) if nodes else {}
    for node in nodes:
        outputs = [values.get(t.name) for t in node.outputs]
        if any(v is None for v in outputs):
            outputs = _evaluate_one(graph, node)
        if outputs is not None and _within_budget(node, outputs):
            folded += _replace_outputs(node, outputs)
    if folded:
        graph.cleanup().toposort()
    return PassResult(rewrites=folded, shapes_stale=bool(folded))


def _replace_outputs(node: gs.Node, values: list[np.ndarray]) -> int:
    for tensor, value in zip(node.outputs, values, strict=True):
        replace_uses(tensor, gs.Constant(tensor.name, np.asarray(value)))
    node.outputs.clear()
    return 1


def _foldable(graph: gs.Graph, node: gs.Node) -> bool:
    """A standard, deterministic node without subgraphs, named outputs, none a graph output."""
    if not is_standard(node) or node.op in _SKIPPED or not node.outputs:
        return False
    if not all(t.name for t in node.outputs):
        return False
    if any(is_graph_output(graph, t) for t in node.outputs):
        return False
    return not any(isinstance(v, gs.Graph) for v in node.attrs.values())


def _constant_subgraph(graph: gs.Graph) -> list[gs.Node]:
    """The foldable nodes whose inputs are constants or outputs of such nodes (graph order)."""
    computed: set[int] = set()
    nodes = []
    for node in graph.nodes:
        inputs = [t for t in node.inputs if not is_omitted(t)]
        if not inputs or node.op in ("Shape", "Size"):
            continue
        constant = all(id(t) in computed or constant_values(t) is not None for t in inputs)
        if constant and _foldable(graph, node):  # inputs first: most nodes read a variable
            nodes.append(node)
            computed.update(id(t) for t in node.outputs)
    return nodes


def _within_budget(node: gs.Node, outputs: list[np.ndarray]) -> bool:
    """Results much larger than their inputs (``Expand``, ``Tile`` blow-ups) stay computed."""
    sizes = [math.prod(t.shape) for t in node.inputs if isinstance(t, gs.Constant)]
    budget = max(MAX_FOLDED_ELEMENTS, sum(sizes))
    return sum(np.asarray(o).size for o in outputs) <= budget


def _evaluate_all(graph: gs.Graph, nodes: list[gs.Node]) -> dict[str, np.ndarray]:
    """Every output of ``nodes`` by one run of onnx's reference evaluator, or of
    :func:`evaluate_index_ops` when that computes them all (``{}`` if it fails)."""
    inside = {id(t) for node in nodes for t in node.outputs}
    values = {}
    for node in nodes:
        for tensor in node.inputs:
            if not is_omitted(tensor) and id(tensor) not in inside:
                values[tensor.name] = constant_values(tensor)
    outputs = [t.name for node in nodes for t in node.outputs]
    protos = [OnnxExporter.export_node(node) for node in nodes]
    opset = int(graph.opset or 17)
    computed = evaluate_index_ops(protos, values, opset)
    if computed is not None:
        return computed
    model = helper.make_model(
        helper.make_graph(
            protos,
            "fold",
            [],
            [helper.make_empty_tensor_value_info(name) for name in outputs],
            [numpy_helper.from_array(value, name) for name, value in values.items()],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    try:
        results = reference_evaluator(model).run(None, {})
    except Exception:  # the reference evaluator raises assorted types; node by node then
        return {}
    return {name: np.asarray(value) for name, value in zip(outputs, results, strict=True)}


def _evaluate_one(graph: gs.Graph, node: gs.Node) -> list[np.ndarray] | None:
    inputs = [t for t in node.inputs if not is_omitted(t)]
    values = [constant_values(t) for t in inputs]
    if any(v is None for v in values):
        return None
    try:
        return _evaluate(graph, node, values)
    except Exception:  # the reference evaluator raises assorted types; folding is optional
        return None


def _shape_of(node: gs.Node) -> list[np.ndarray] | None:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return [np.array(math.prod(shape), dtype=np.int64)]
    start, end = attribute(node, "start", 0), attribute(node, "end", None)
    return [np.array(shape[start:end], dtype=np.int64)]


def _evaluate(graph: gs.Graph, node: gs.Node, values: list[np.ndarray]) -> list[np.ndarray]:
    """``node`` run alone by onnx's reference evaluator on its constant inputs."""
    proto = OnnxExporter.export_node(node)
    names = [t.name for t in node.inputs if not is_omitted(t)]
    initializers = [numpy_helper.from_array(v, n) for v, n in zip(values, names, strict=True)]
    outputs = [helper.make_empty_tensor_value_info(t.name) for t in node.outputs if t.name]
    model = helper.make_model(
        helper.make_graph([proto], "fold", [], outputs, initializers),
        opset_imports=[helper.make_opsetid("", int(graph.opset or 17))],
    )
    results = reference_evaluator(model).run(None, {})
    return [np.asarray(r) for r in results]
