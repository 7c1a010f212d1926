"""Bring what real exporters emit into one shape, so the region pass sees plain linear ops.

- ``Constant`` nodes become initializers (gs constants), read by the same consumers;
- no-ops are bypassed: ``Identity``, inference ``Dropout`` (its mask unused), ``Transpose``
  with the identity permutation, ``Reshape`` to the shape it already has, ``Sum`` of one;
- ``Reshape(Reshape(x, a), b)`` reads ``x`` directly (a reshape depends only on the order of
  elements);
- ``Sum`` of n inputs becomes a chain of binary ``Add`` nodes;
- ``Add(x, 0)``, ``Sub(x, 0)``, ``Mul(x, 1)``, ``Div(x, 1)`` and ``Pow(x, 1)`` with a constant
  of neutral elements (one, or a vector of them) that cannot broadcast ``x`` to a larger shape
  are bypassed (never ``Sub(0, x)`` or ``Pow(1, x)``); so is a ``Pad`` of all-zero pads;
- inside ``If``/``Loop``/``Scan`` bodies, ``Identity`` and the no-ops above are bypassed too,
  where their output is not the body's output (the body's signature stays as it is).

A no-op whose output is a graph output is removed by making the node before it write the
graph output (its name is kept), unless that would rename a graph input or another output.
Only standard-domain ops are touched.

Invariant: the graph computes the same function, bit for bit; graph inputs and outputs keep
their names.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.graph.unread_nodes import remove_unread_nodes

from .contracts import KEEPS_INTERFACE_AND_NAMES, WELL_FORMED, contract, sums_are_binary
from .graph_utils import (
    UniqueNames,
    attribute,
    broadcasts_into,
    constant_values,
    ensure_topological_order,
    is_graph_output,
    is_omitted,
    is_standard,
    producer,
    replace_uses,
    static_shape,
    use_count,
)
from .pass_result import PassResult

RULE = "canonicalize"

_NEUTRAL_ELEMENT = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0, "Pow": 1.0}
#: Ops whose neutral element may stand on either side (``0 + x``, ``1·x``).
_COMMUTATIVE = ("Add", "Mul")


@contract(requires=WELL_FORMED, ensures=(*KEEPS_INTERFACE_AND_NAMES, sums_are_binary))
def canonicalize(graph: gs.Graph) -> PassResult:
    """Apply every canonicalization once; ``rewrites`` counts the nodes changed."""
    rewrites = 0
    names = UniqueNames(graph)
    for node in list(graph.nodes):
        if not is_standard(node):
            continue
        if node.op == "Constant":
            rewrites += _constant_to_initializer(graph, node, names)
        elif node.op == "Sum" and len(node.inputs) > 1:
            rewrites += _sum_to_adds(graph, node, names)
        elif node.op == "Reshape" and _reshapes_a_reshape(graph, node):
            node.inputs[0] = producer(node.inputs[0]).inputs[0]
            rewrites += 1
        else:
            operand = _no_op_operand(graph, node)
            if operand is not None:
                rewrites += _bypass(graph, node, operand)
        rewrites += sum(_canonicalize_body(body) for body in _bodies(node))
    if rewrites:
        remove_unread_nodes(graph)
        ensure_topological_order(graph)
    return PassResult(rewrites=rewrites)


def _bodies(node: gs.Node) -> list[gs.Graph]:
    return [value for value in node.attrs.values() if isinstance(value, gs.Graph)]


def _canonicalize_body(body: gs.Graph) -> int:
    """Bypass the no-ops of a control-flow body whose outputs are not the body's outputs, in
    nested bodies too; the body's inputs and outputs stay as they are."""
    rewrites = 0
    for node in list(body.nodes):
        if is_standard(node):
            operand = _no_op_operand(body, node)
            output = node.outputs[0] if node.outputs else None
            if operand is not None and output is not None and not is_graph_output(body, output):
                replace_uses(output, operand)
                node.outputs.clear()
                rewrites += 1
        rewrites += sum(_canonicalize_body(inner) for inner in _bodies(node))
    if rewrites:
        body.cleanup()
    return rewrites


def _no_op_operand(graph: gs.Graph, node: gs.Node) -> gs.Tensor | None:
    """The input whose value ``node`` outputs unchanged, if it is a no-op."""
    op = node.op
    if op == "Identity" or (op == "Sum" and len(node.inputs) == 1):
        return node.inputs[0]
    if op == "Dropout":
        return node.inputs[0] if _is_inference_dropout(graph, node) else None
    if op == "Transpose":
        perm = attribute(node, "perm", None)
        rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
        identity = perm is not None and list(perm) == list(range(len(perm)))
        return node.inputs[0] if identity or (perm is None and rank == 1) else None
    if op in ("Reshape", "Flatten"):
        before, after = static_shape(node.inputs[0]), static_shape(node.outputs[0])
        return node.inputs[0] if before is not None and before == after else None
    if op in _NEUTRAL_ELEMENT:
        return _neutral_operand(node)
    if op == "Pad":
        return node.inputs[0] if _pads_nothing(node) else None
    return None


def _pads_nothing(node: gs.Node) -> bool:
    """A Pad whose pads (attribute before opset 11, constant input after) are all zero."""
    if len(node.inputs) > 1:
        pads = constant_values(node.inputs[1])
    else:
        pads = attribute(node, "pads", None)
    return pads is not None and not np.any(np.asarray(pads))


def _is_inference_dropout(graph: gs.Graph, node: gs.Node) -> bool:
    """Dropout is the identity unless it trains (``training_mode`` true) or its mask is read."""
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    if mask is not None and (use_count(mask) or is_graph_output(graph, mask)):
        return False
    if len(node.inputs) > 2 and not is_omitted(node.inputs[2]):
        mode = constant_values(node.inputs[2])
        return mode is not None and not bool(np.asarray(mode).reshape(-1)[0])
    return True


def _reshapes_a_reshape(graph: gs.Graph, node: gs.Node) -> bool:
    """``Reshape(Reshape(x, a), b)`` with a constant ``b`` that copies no dim (no 0 entries,
    or ``allowzero``) and the inner result read by nobody else."""
    inner = producer(node.inputs[0])
    if inner is None or inner.op != "Reshape" or not is_standard(inner):
        return False
    if use_count(node.inputs[0]) != 1 or is_graph_output(graph, node.inputs[0]):
        return False
    target = constant_values(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None:
        return False
    return bool(attribute(node, "allowzero", 0)) or not np.any(target == 0)


def _bypass(graph: gs.Graph, node: gs.Node, replacement: gs.Tensor) -> int:
    """Make the readers of ``node``'s output read ``replacement``; 1 if done, 0 if not."""
    output = node.outputs[0]
    if output is replacement:
        return 0
    if is_graph_output(graph, output):
        return _write_output_directly(graph, node, replacement)
    replace_uses(output, replacement)
    node.outputs.clear()
    return 1


def _write_output_directly(graph: gs.Graph, node: gs.Node, replacement: gs.Tensor) -> int:
    """Drop a no-op before a graph output: the node computing ``replacement`` writes the
    graph output instead (the output's name survives, ``replacement``'s does not)."""
    writer = producer(replacement)
    if writer is None or is_graph_output(graph, replacement) or not is_standard(writer):
        return 0
    output = node.outputs[0]
    known = replacement.dtype is not None and output.dtype is not None
    if known and np.dtype(replacement.dtype) != np.dtype(output.dtype):
        return 0
    node.outputs.clear()
    node.inputs.clear()
    replace_uses(replacement, output)
    index = next(i for i, t in enumerate(writer.outputs) if t is replacement)
    writer.outputs[index] = output
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
    if node.op in _COMMUTATIVE:
        candidates.append((first, second))
    for constant, operand in candidates:
        value = constant_values(constant)
        if value is None or value.size == 0 or isinstance(operand, gs.Constant):
            continue
        if np.any(value != _NEUTRAL_ELEMENT[node.op]):
            continue
        if _cannot_broadcast(operand, value):
            return operand
    return None


def _cannot_broadcast(operand: gs.Tensor, value: np.ndarray) -> bool:
    """True if ``operand ∘ value`` has ``operand``'s shape: ``value`` has no more dims than
    ``operand`` and each of its (right-aligned) dims is 1 or ``operand``'s known size there."""
    return value.ndim == 0 or broadcasts_into(value.shape, operand.shape)
