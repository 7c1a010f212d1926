"""``gs.import_onnx`` without its per-object overhead: the same graph, built directly.

graphsurgeon's importer makes every node and tensor through constructors that route each
field through ``__setattr__`` and fill synchronized lists one element at a time (half a
million such calls on a graph of 32,000 nodes: 2.7 s of CPU, where this takes 1.2 s).
Here the main graph's nodes and tensors are made with their ``__dict__`` filled at once and
their links appended on both sides, as ``SynchronizedList.extend`` would append them; all the
rest (attributes and their subgraphs, value infos, sparse initializers, local functions, the
``Graph`` itself) goes through graphsurgeon's own functions in its own order.

Invariant: :func:`import_onnx` returns a graph equal to ``gs.import_onnx(model)``, node for
node and tensor for tensor. If the installed graphsurgeon lays out its objects differently
than this module expects (:func:`_layout_matches`), it is ``gs.import_onnx`` itself.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import (
    OnnxImporter,
    get_itemsize,
    get_onnx_tensor_dtype,
)
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.util.misc import SynchronizedList

from repvgg_onnx.graph.gs_versions import constant_extra_fields, graph_fields


def import_onnx(model: onnx.ModelProto) -> gs.Graph:
    """``gs.import_onnx(model)``, built faster (see the module docstring). A model the fast
    path cannot read goes to graphsurgeon's importer, whose result or error then stands."""
    if _layout_matches():
        try:
            return _import_directly(model)
        except Exception:  # graphsurgeon raises assorted types; its own importer decides
            pass
    return gs.import_onnx(model)


def _import_directly(model: onnx.ModelProto) -> gs.Graph:
    opset = OnnxImporter.get_opset(model)
    domains = OnnxImporter.get_import_domains(model)
    functions = [
        OnnxImporter.import_function(f, model_opset=opset, model_import_domains=domains)
        for f in model.functions
    ]
    source = model.graph
    tensors: OrderedDict[str, gs.Tensor] = OrderedDict()
    for initializer in source.initializer:
        if initializer.name not in tensors:
            tensors[initializer.name] = _constant(initializer)
    for sparse in source.sparse_initializer:
        tensors.setdefault(sparse.values.name, OnnxImporter.import_tensor(sparse))
    for value in source.value_info:
        _import_value_info(value, tensors)
    constants = {t.name for t in source.initializer}
    constants.update(t.values.name for t in source.sparse_initializer)
    inputs = [_known(value, tensors) for value in source.input if value.name not in constants]
    outputs = [_known(value, tensors) for value in source.output]
    nodes = [_node(node, tensors, opset, domains) for node in source.node]
    return gs.Graph(
        nodes=nodes,
        inputs=inputs,
        outputs=outputs,
        name=source.name,
        doc_string=source.doc_string,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        opset=opset,
        import_domains=domains,
        functions=functions,
        **graph_fields(model),
    )


def _import_value_info(value: onnx.ValueInfoProto, tensors: dict[str, gs.Tensor]) -> None:
    """A value info adds a tensor, or completes a variable's missing type and shape."""
    known = tensors.get(value.name)
    if known is None:
        tensors[value.name] = OnnxImporter.import_tensor(value)
        return
    imported = OnnxImporter.import_tensor(value)
    if isinstance(known, gs.Variable):
        known.dtype = known.dtype or imported.dtype
        known.shape = known.shape or imported.shape


def _known(value: onnx.ValueInfoProto, tensors: dict[str, gs.Tensor]) -> gs.Tensor:
    known = tensors.get(value.name)
    if known is None:
        known = tensors[value.name] = OnnxImporter.import_tensor(value)
    return known


def _node(proto: onnx.NodeProto, tensors: dict[str, gs.Tensor], opset, domains) -> gs.Node:
    """The node, its attributes imported by graphsurgeon (before its inputs and outputs, as
    there: a subgraph may name tensors of the outer graph)."""
    attrs = (
        OnnxImporter.import_attributes(proto.attribute, OrderedDict(), tensors, opset, domains)
        if proto.attribute
        else OrderedDict()
    )
    node = object.__new__(gs.Node)
    inputs = _synchronized(node, "outputs")
    outputs = _synchronized(node, "inputs")
    node.__dict__.update(
        op=proto.op_type,
        name=proto.name,
        attrs=attrs,
        inputs=inputs,
        outputs=outputs,
        domain=proto.domain if proto.HasField("domain") else None,
    )
    for name in proto.input:
        tensor = _tensor(name, tensors)
        list.append(inputs, tensor)
        list.append(tensor.outputs, node)
    for name in proto.output:
        tensor = _tensor(name, tensors)
        list.append(outputs, tensor)
        list.append(tensor.inputs, node)
    return node


def _tensor(name: str, tensors: dict[str, gs.Tensor]) -> gs.Tensor:
    """The tensor of that name, a new variable if it is new; an empty name is an omitted
    optional input or output, a fresh variable each time and not in the map."""
    tensor = tensors.get(name)
    if tensor is None:
        tensor = _variable(name)
        if name:
            tensors[name] = tensor
    return tensor


def _variable(name: str) -> gs.Variable:
    tensor = object.__new__(gs.Variable)
    tensor.__dict__.update(
        name=name,
        inputs=_synchronized(tensor, "outputs"),
        outputs=_synchronized(tensor, "inputs"),
        dtype=None,
        shape=None,
        type="tensor_type",
    )
    return tensor


def _constant(proto: onnx.TensorProto) -> gs.Constant:
    tensor = object.__new__(gs.Constant)
    tensor.__dict__.update(
        name=proto.name,
        inputs=_synchronized(tensor, "outputs"),
        outputs=_synchronized(tensor, "inputs"),
        _values=_lazy_values(proto),
        data_location=int(proto.data_location) if proto.HasField("data_location") else None,
        **constant_extra_fields(),
    )
    return tensor


def _lazy_values(proto: onnx.TensorProto) -> LazyValues:
    """``LazyValues(proto)``, its element type worked out once per type."""
    dtype, itemsize = _element_type(proto.data_type)
    lazy = object.__new__(LazyValues)
    lazy.__dict__.update(
        tensor=proto, shape=proto.dims, dtype=dtype, nbytes=math.prod(proto.dims) * itemsize
    )
    return lazy


@functools.cache
def _element_type(data_type: int) -> tuple[object, int]:
    """graphsurgeon's dtype of a tensor of ``data_type`` and its item size."""
    proto = onnx.TensorProto(data_type=data_type)
    dtype = get_onnx_tensor_dtype(proto)
    return dtype, get_itemsize(dtype)


def _synchronized(parent: object, field_name: str) -> SynchronizedList:
    """An empty ``SynchronizedList(parent, field_name, [])``."""
    synced = SynchronizedList.__new__(SynchronizedList)
    synced.parent_obj = parent
    synced.field_name = field_name
    return synced


@functools.cache
def _layout_matches() -> bool:
    """Whether graphsurgeon's own constructors give objects laid out as ours are."""
    proto = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [1.0])
    pairs = [
        (gs.Variable("v"), _variable("v")),
        (gs.Constant("w", LazyValues(proto)), _constant(proto)),
        (gs.Node("Relu"), _node(onnx.helper.make_node("Relu", [], []), {}, None, None)),
        (SynchronizedList(None, "inputs", []), _synchronized(None, "inputs")),
        (LazyValues(proto), _lazy_values(proto)),
    ]
    return all(
        type(theirs) is type(ours) and _fields(theirs) == _fields(ours) for theirs, ours in pairs
    )


def _fields(item: object) -> dict[str, object]:
    """An object's fields, each reduced to what it is: its type, and its value if plain."""
    plain = (str, int, type(None))
    return {
        key: (type(value), value if isinstance(value, plain) else None)
        for key, value in vars(item).items()
    }
