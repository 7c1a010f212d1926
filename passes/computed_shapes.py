"""Shapes that constant folding just made inferable, found without inferring the whole graph.

A ``Shape`` reads a tensor inference found no shape for when the node computing it read a
value inference could not see: DBB's border layers ``Pad`` by computed pads and ``ScatterND``
at computed indices, and the ``Shape`` of each result feeds the next index computation. Once
folding has made those inputs constants, the pipeline's shape inference of the whole graph
gives the tensors shapes and the ``Shape`` nodes fold in the next round: one export and
inference of every node per round. :func:`infer_shapes_read_by_shape_nodes` runs the same
inference (onnx's, strict, with data propagation) on a model of just the nodes between those
``Shape`` nodes and tensors of known shape: their inputs are the types and shapes the graph's
tensors already carry and the constants themselves (large ones as typed inputs, as in every
inference of ours), so it finds what the whole graph's inference finds for them. What it
finds nothing for waits for that inference.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from repvgg_onnx.graph.gs_versions import node_proto
from repvgg_onnx.graph.shapes import annotate_found_shapes, inferred_shapes
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS

from .graph_utils import constant_values, has_subgraph, is_standard, producer, static_shape


def infer_shapes_read_by_shape_nodes(graph: gs.Graph, folded: set[int]) -> bool:
    """Annotate the tensors computed from the constants ``folded`` (their ids) on the way to a
    ``Shape``/``Size`` whose input has no static shape; whether one of those inputs now has
    a static shape."""
    targets = [
        node.inputs[0]
        for node in graph.nodes
        if node.op in ("Shape", "Size")
        and node.outputs  # not folded already
        and node.inputs
        and static_shape(node.inputs[0]) is None
    ]
    nodes = _computing(graph, targets, folded)
    if not nodes:
        return False
    model = _model_of(nodes, int(graph.opset or 17))
    if model is None:
        return False
    annotate_found_shapes(
        graph, [t for node in nodes for t in node.outputs], inferred_shapes(model)
    )
    return any(static_shape(tensor) is not None for tensor in targets)


def _computing(graph: gs.Graph, targets: list[gs.Tensor], folded: set[int]) -> list[gs.Node]:
    """In graph order, the nodes that read one of the constants ``folded`` and the nodes
    between them and ``targets``, along tensors without a static shape; none if one of them
    is not a standard node without subgraphs."""
    above: set[int] = set()
    pending = list(targets)
    while pending:
        node = producer(pending.pop())
        if node is None or id(node) in above:
            continue
        above.add(id(node))
        pending.extend(
            t for t in node.inputs if isinstance(t, gs.Variable) and static_shape(t) is None
        )
    kept: set[int] = set()
    nodes = []
    for node in graph.nodes:
        if id(node) not in above:
            continue
        if any(id(t) in folded or id(producer(t)) in kept for t in node.inputs):
            if not is_standard(node) or has_subgraph(node):
                return []  # inference of the whole graph then
            kept.add(id(node))
            nodes.append(node)
    return nodes


def _model_of(nodes: list[gs.Node], opset: int) -> onnx.ModelProto | None:
    """``nodes`` as a model whose inputs are the tensors they read and do not compute (typed
    as the graph has them; small constants with their values), or ``None`` if one of those has
    no type or is a constant no pass may read."""
    computed = [tensor.name for node in nodes for tensor in node.outputs]
    inputs, initializers, listed = [], [], set(computed)
    for tensor in (t for node in nodes for t in node.inputs):
        if not tensor.name or tensor.name in listed:
            continue
        listed.add(tensor.name)
        if isinstance(tensor, gs.Constant):
            values = constant_values(tensor)
            if values is None:
                return None
            if values.size <= SMALL_TENSOR_ELEMENTS:
                initializers.append(numpy_helper.from_array(values, tensor.name))
                continue
            dtype, shape = values.dtype, values.shape
        else:
            dtype, shape = tensor.dtype, tensor.shape
        element = _element_type(dtype)
        if element is None:
            return None
        inputs.append(helper.make_tensor_value_info(tensor.name, element, shape))
    graph = helper.make_graph(
        [node_proto(node) for node in nodes],
        "computed_shapes",
        inputs,
        [helper.make_empty_tensor_value_info(name) for name in computed],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _element_type(dtype: object) -> int | None:
    """The ONNX element type of a numpy dtype, or ``None`` if unknown or not one."""
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) if dtype is not None else None
    except (TypeError, KeyError, ValueError):
        return None
