"""The crossing into and out of onnx-graphsurgeon, made safe for every valid model.

graphsurgeon cannot carry everything ONNX allows: it reads a sparse initializer's indices
wrongly, drops a Constant's ``sparse_value``, and fails to export a list attribute that is
empty (it cannot tell the list's type). So before import, sparse tensors become the dense
tensors they stand for (a sparse tensor is only an encoding of one), and empty list
attributes are set aside to be put back on the exported nodes. Whatever else graphsurgeon
raises becomes an :class:`UnsupportedModelError` naming it.

Invariant: ``export_graph(import_graph(model))`` computes what ``model`` computes.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from repvgg_onnx.errors import UnsupportedModelError, first_line
from repvgg_onnx.graph.fast_export import export_onnx
from repvgg_onnx.graph.fast_import import import_onnx
from repvgg_onnx.graph.unread_nodes import has_subgraph

#: A sparse tensor is made dense only up to this many elements (4 GiB of float32).
MAX_DENSE_ELEMENTS = 1 << 30

_NodeKey = tuple[str, str, tuple[str, ...]]


def import_graph(model: onnx.ModelProto) -> tuple[gs.Graph, dict[_NodeKey, list]]:
    """``model``'s main graph in graphsurgeon, and the empty list attributes set aside."""
    model = _densified(model)
    empty = _empty_list_attributes(model.graph)
    _refuse_shadowing(model.graph, set())
    try:
        graph = import_onnx(model)
    except Exception as error:  # graphsurgeon raises assorted types on odd models
        raise UnsupportedModelError(
            f"onnx-graphsurgeon cannot read this model ({first_line(error)}); please report it."
        ) from error
    for node in graph.nodes:
        for name, value in list(node.attrs.items()):
            if isinstance(value, list | tuple) and not value:
                del node.attrs[name]
    return graph, empty


def graph_objects(graph: gs.Graph) -> list[gs.Node | gs.Tensor]:
    """Every node of ``graph`` and every tensor they or the graph's inputs and outputs use."""
    tensors: dict[int, gs.Tensor] = {}
    for node in graph.nodes:
        for tensor in (*node.inputs, *node.outputs):
            tensors[id(tensor)] = tensor
    for tensor in (*graph.inputs, *graph.outputs):
        tensors[id(tensor)] = tensor
    return [*graph.nodes, *tensors.values()]


def watch(graph: gs.Graph) -> list[weakref.ref]:
    """Weak references to the graph's objects now, for :func:`dismantle`: weak, so what the
    passes drop can still be collected (with the weights it holds) before the export."""
    return [weakref.ref(item) for item in graph_objects(graph)]


def dismantle(graph: gs.Graph, former: Sequence[weakref.ref] = ()) -> None:
    """Free a spent graph now, by reference counting, instead of at some later collection.

    Every graphsurgeon node and tensor is a reference cycle (its ``inputs``/``outputs`` lists
    point back to it to stay in sync), so a dropped graph waits for the cyclic collector, which
    walks every object of the process: 0.6 s on a graph of 32,000 nodes, run at whatever
    allocation comes next. Emptying each object's ``__dict__`` breaks the cycles. ``former``:
    :func:`watch` of the graph before the passes, for the nodes they dropped are cycles too
    (on a RepVGG chain, 7 nodes of 8). The graph and everything in it is unusable afterwards
    (subgraphs are left to the collector).
    """
    objects = {id(o): o for o in graph_objects(graph)}
    for ref in former:
        item = ref()
        if item is not None:
            objects[id(item)] = item
    for item in objects.values():
        item.__dict__.clear()
    graph.__dict__.clear()


def release_dropped(graph: gs.Graph, former: Sequence[weakref.ref]) -> bool:
    """Free what the passes dropped of the objects :func:`watch` saw (with the weights they
    hold) by breaking their cycles, as :func:`dismantle` will for the rest: no collection
    walks every object of the process for them (0.12 s on a TorchScript DBB-ResNet-18).
    Whether it could: a graph with subgraphs, whose bodies may still read a
    dropped tensor of the main graph, is left to the collector (``False``); a local function's
    body reads nothing outside it."""
    if any(has_subgraph(node) for node in graph.nodes):
        return False
    live = {id(item) for item in graph_objects(graph)}
    for ref in former:
        item = ref()
        if item is not None and id(item) not in live:
            item.__dict__.clear()
    return True


def export_graph(graph: gs.Graph, empty: dict[_NodeKey, list]) -> onnx.ModelProto:
    """``graph`` as a model, each surviving node with its empty list attributes back."""
    try:
        model = export_onnx(graph)
    except Exception as error:  # graphsurgeon raises assorted types on odd models
        raise UnsupportedModelError(
            f"onnx-graphsurgeon cannot write this model back ({first_line(error)}); "
            "please report it."
        ) from error
    if empty:
        for node in model.graph.node:
            node.attribute.extend(empty.get(_key(node), ()))
    _drop_outer_copies(model.graph, {})
    return model


def _subgraphs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """The subgraphs of ``graph``'s nodes (one level down), each with its node."""
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found.append((node, attribute.g))
            found.extend((node, subgraph) for subgraph in attribute.graphs)
    return found


def _refuse_shadowing(graph: onnx.GraphProto, outer: set[str]) -> None:
    """Refuse a subgraph with an initializer named like a value of an enclosing graph. ONNX
    allows such shadowing; graphsurgeon keeps one tensor per name, so the two would become
    one. (A node output cannot shadow: the checker refuses it.)"""
    subgraphs = _subgraphs(graph)
    if not subgraphs:
        return
    defined = outer | _names_defined(graph)
    for node, subgraph in subgraphs:
        shadowed = sorted({tensor.name for tensor in subgraph.initializer} & defined)
        if shadowed:
            holder = f"{node.op_type} '{node.name}'" if node.name else f"an unnamed {node.op_type}"
            raise UnsupportedModelError(
                f"the subgraph '{subgraph.name}' of {holder} defines "
                f"'{shadowed[0]}', a name its enclosing graph defines too; onnx-graphsurgeon "
                "cannot keep two tensors of one name apart: rename one of them."
            )
        _refuse_shadowing(subgraph, defined)


def _names_defined(graph: onnx.GraphProto) -> set[str]:
    """The names ``graph`` itself gives values: its inputs, initializers and node outputs."""
    names = {value.name for value in graph.input}
    names.update(tensor.name for tensor in graph.initializer)
    names.update(name for node in graph.node for name in node.output)
    return names


def _drop_outer_copies(graph: onnx.GraphProto, outer: dict[str, onnx.TensorProto]) -> None:
    """Remove from each subgraph the initializers that are copies of an enclosing graph's:
    graphsurgeon writes a constant that a subgraph reads from outside into the subgraph
    too (the bytes twice; and a large weight, detached for the export, as an empty stub).
    A name is a copy wherever an enclosing graph has it: :func:`import_graph` refused the
    models whose subgraphs define a name again."""
    subgraphs = _subgraphs(graph)
    if not subgraphs:
        return
    visible = {**outer, **{tensor.name: tensor for tensor in graph.initializer}}
    for _, subgraph in subgraphs:
        copies = [t for t in subgraph.initializer if t.name in visible]
        for tensor in copies:
            subgraph.initializer.remove(tensor)
        _drop_outer_copies(subgraph, visible)


def _key(node: onnx.NodeProto) -> _NodeKey:
    return node.name, node.op_type, tuple(node.output)


def _empty_list_attributes(graph: onnx.GraphProto) -> dict[_NodeKey, list]:
    saved: dict[_NodeKey, list] = {}
    for node in graph.node:
        empty = [a for a in node.attribute if _is_empty_list(a)]
        if empty:
            saved[_key(node)] = empty
    return saved


def _is_empty_list(attribute: onnx.AttributeProto) -> bool:
    kind = onnx.AttributeProto
    return attribute.type in (kind.INTS, kind.FLOATS, kind.STRINGS, kind.TENSORS) and not (
        attribute.ints or attribute.floats or attribute.strings or attribute.tensors
    )


def _densified(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy whose sparse initializers and sparse Constant values are dense."""
    graph = model.graph
    sparse_constants = [
        node
        for node in graph.node
        if node.op_type == "Constant" and any(a.name == "sparse_value" for a in node.attribute)
    ]
    if not graph.sparse_initializer and not sparse_constants:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for sparse in copy.graph.sparse_initializer:
        copy.graph.initializer.append(dense_tensor(sparse))
    del copy.graph.sparse_initializer[:]
    for node in copy.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "sparse_value":
                dense = dense_tensor(attribute.sparse_tensor)
                attribute.Clear()
                attribute.CopyFrom(onnx.helper.make_attribute("value", dense))
    return copy


def dense_tensor(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    """The dense tensor a sparse one encodes (indices flat or as coordinates, per the spec)."""
    dims = tuple(sparse.dims)
    name = sparse.values.name
    if math.prod(dims) > MAX_DENSE_ELEMENTS:
        raise UnsupportedModelError(
            f"the sparse tensor '{name}' stands for {math.prod(dims)} elements, too many to "
            "make dense; store it dense."
        )
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(math.prod(dims), dtype=values.dtype)
    try:
        if indices.ndim == 2:
            indices = np.ravel_multi_index(tuple(indices.T), dims)
        dense[indices.reshape(-1)] = values
    except (ValueError, IndexError) as error:
        raise UnsupportedModelError(
            f"the sparse tensor '{name}' has indices that do not fit its shape {list(dims)} "
            f"({error})."
        ) from error
    return numpy_helper.from_array(dense.reshape(dims), name)
