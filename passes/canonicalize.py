"""Bring what real exporters emit into one shape, so the fusing passes see plain Conv/BN/Add.

- ``Constant`` nodes become initializers (gs constants), read by the same consumers;
- ``Identity`` nodes are bypassed (the TorchScript exporter shares equal initializers through
  them);
- ``Sum`` of n inputs becomes a chain of binary ``Add`` nodes (``Sum`` of one is bypassed);
- ``Add(x, 0)``, ``Sub(x, 0)``, ``Mul(x, 1)`` and ``Div(x, 1)`` with a one-element constant
  that cannot broadcast ``x`` to a larger shape are bypassed.

Invariant: the graph computes the same function, bit for bit; graph inputs and outputs keep
their names (an op whose output is a graph output is left in place).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .graph_utils import UniqueNames, constant_values, is_graph_output, replace_uses
from .result import PassResult

RULE = "canonicalize"

_NEUTRAL_ELEMENT = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}


def canonicalize(graph: gs.Graph) -> PassResult:
    """Apply every canonicalization once; ``rewrites`` counts the nodes changed."""
    rewrites = 0
    names = UniqueNames(graph)
    for node in list(graph.nodes):
        if node.op == "Constant":
            rewrites += _constant_to_initializer(graph, node, names)
        elif node.op == "Identity" or (node.op == "Sum" and len(node.inputs) == 1):
            rewrites += _bypass(graph, node, node.inputs[0])
        elif node.op == "Sum":
            rewrites += _sum_to_adds(graph, node, names)
        elif node.op in _NEUTRAL_ELEMENT:
            operand = _neutral_operand(node)
            if operand is not None:
                rewrites += _bypass(graph, node, operand)
    if rewrites:
        graph.cleanup().toposort()
    return PassResult(rewrites=rewrites)


def _bypass(graph: gs.Graph, node: gs.Node, replacement: gs.Tensor) -> int:
    """Make the readers of ``node``'s output read ``replacement``; 1 if done, 0 if not."""
    output = node.outputs[0]
    if is_graph_output(graph, output) or output is replacement:
        return 0
    replace_uses(output, replacement)
    node.outputs.clear()
    return 1


def _constant_to_initializer(graph: gs.Graph, node: gs.Node, names: UniqueNames) -> int:
    values = _constant_node_value(node)
    if values is None:
        return 0
    output = node.outputs[0]
    if is_graph_output(graph, output):
        return 0
    replacement = gs.Constant(names(output.name + "_value"), values)
    return _bypass(graph, node, replacement)


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    """The value of a Constant node, for the numeric attribute forms."""
    attrs = node.attrs
    if isinstance(attrs.get("value"), gs.Constant):
        return np.asarray(attrs["value"].values)
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    return None


def _sum_to_adds(graph: gs.Graph, node: gs.Node, names: UniqueNames) -> int:
    """``Sum(a, b, c) → Add(Add(a, b), c)``, the last Add writing the Sum's output."""
    output = node.outputs[0]
    node.outputs.clear()
    total = node.inputs[0]
    for index, term in enumerate(node.inputs[1:], start=1):
        last = index == len(node.inputs) - 1
        result = (
            output if last else gs.Variable(names(f"{output.name}_partial{index}"), output.dtype)
        )
        graph.nodes.append(
            gs.Node(
                "Add",
                names(f"{node.name or output.name}_add{index}"),
                inputs=[total, term],
                outputs=[result],
            )
        )
        total = result
    return 1


def _neutral_operand(node: gs.Node) -> gs.Tensor | None:
    """``x`` if the node is ``x ∘ c`` with ``c`` the op's neutral element and no broadcast."""
    if len(node.inputs) != 2:
        return None
    first, second = node.inputs
    candidates = [(second, first)]
    if node.op in ("Add", "Mul"):
        candidates.append((first, second))
    for constant, operand in candidates:
        value = constant_values(constant)
        if value is None or value.size != 1 or isinstance(operand, gs.Constant):
            continue
        if value.reshape(-1)[0] != _NEUTRAL_ELEMENT[node.op]:
            continue
        if _cannot_broadcast(operand, value):
            return operand
    return None


def _cannot_broadcast(operand: gs.Tensor, value: np.ndarray) -> bool:
    """True if ``operand ∘ value`` has ``operand``'s shape (a one-element ``value``)."""
    if value.ndim == 0:
        return True
    shape = operand.shape
    return shape is not None and value.ndim <= len(shape)
