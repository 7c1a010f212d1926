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
from onnx.reference import ReferenceEvaluator
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
from .result import PassResult

RULE = "fold_constants"

_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
_SKIPPED = _NONDETERMINISTIC | {"Constant", "Bernoulli"}

#: A folded result may hold this many elements, or as many as its inputs together.
MAX_FOLDED_ELEMENTS = 1 << 16


def fold_constants(graph: gs.Graph) -> PassResult:
    """Replace every foldable node's outputs by constants; ``shapes_stale`` when any was."""
    folded = 0
    for node in list(graph.nodes):
        values = _folded_outputs(graph, node)
        if values is None:
            continue
        for tensor, value in zip(node.outputs, values, strict=True):
            replace_uses(tensor, gs.Constant(tensor.name, np.asarray(value)))
        node.outputs.clear()
        folded += 1
    if folded:
        graph.cleanup().toposort()
    return PassResult(rewrites=folded, shapes_stale=bool(folded))


def _folded_outputs(graph: gs.Graph, node: gs.Node) -> list[np.ndarray] | None:
    if not is_standard(node) or node.op in _SKIPPED or not node.outputs:
        return None
    if not all(t.name for t in node.outputs):
        return None
    if any(is_graph_output(graph, t) for t in node.outputs):
        return None
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    if node.op in ("Shape", "Size"):
        return _shape_of(node)
    inputs = [t for t in node.inputs if not is_omitted(t)]
    values = [constant_values(t) for t in inputs]
    if not inputs or any(v is None for v in values):
        return None
    try:
        outputs = _evaluate(graph, node, values)
    except Exception:  # the reference evaluator raises assorted types; folding is optional
        return None
    budget = max(MAX_FOLDED_ELEMENTS, sum(v.size for v in values))
    if sum(np.asarray(o).size for o in outputs) > budget:
        return None
    return outputs


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
    results = ReferenceEvaluator(model).run(None, {})
    return [np.asarray(r) for r in results]
