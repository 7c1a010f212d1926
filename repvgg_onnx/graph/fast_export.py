"""``gs.export_onnx`` without its per-object overhead: the same model, built directly.

graphsurgeon's exporter makes each attribute with ``onnx.helper.make_attribute`` (a generic
type dispatch through abstract-class checks: 9 µs for a list of four ints), each node with
``make_node`` and then copies it into the graph, converts each tensor's dtype afresh, and
copies the whole graph once more into the model. Here the nodes are added to the model's graph
in place, attributes of plain Python values (``int``, ``bool``, ``float``, ``str``, ``bytes``
and non-empty lists or tuples of ``int``, ``float`` or ``str``/``bytes``) are set directly in
the fields ``make_attribute`` would set, and the value infos of plain variables are built
directly, their element types converted once per dtype. Everything else (constants and their
``export_dtype``, sparse constants, subgraphs, tensor and other attributes, local functions,
the opset imports of graphs with subgraphs or new domains) goes through graphsurgeon's own
exporter functions, in its order, with their side effects (a ``LazyValues`` proto renamed
after its constant, the graph's ``import_domains`` completed; both idempotent, so a fast path
given up halfway leaves graphsurgeon's export as it was) and their warnings.

On the 4,000-block RepVGG chain after the passes (8,000 nodes, 20,000 attributes, 8,000
numpy constants): 0.46 s of CPU for ``gs.export_onnx``, 0.25 s here (``time.process_time``,
collector off, min of 5 alternating runs). 0.10 s of what is left is graphsurgeon's own
export of the constants (``dtype_to_onnx`` twice and ``make_tensor`` for each).

Invariant: :func:`export_onnx` returns a model serialized byte for byte as
``gs.export_onnx(graph, do_type_check=do_type_check)``'s. If the installed graphsurgeon (or
onnx) exports a probe graph differently than this module does (:func:`_exporter_matches`),
it is ``gs.export_onnx`` itself.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import (
    OnnxExporter,
    check_duplicate_node_names,
    dtype_to_onnx,
    update_import_domains,
)
from onnx_graphsurgeon.ir.tensor import SparseValues
from onnx_graphsurgeon.logger import G_LOGGER

from repvgg_onnx.graph.gs_versions import ir_version_of, stored_values

_Attr = onnx.AttributeProto
_INT, _FLOAT, _STRING = _Attr.INT, _Attr.FLOAT, _Attr.STRING
_INTS, _FLOATS, _STRINGS = _Attr.INTS, _Attr.FLOATS, _Attr.STRINGS


def export_onnx(graph: gs.Graph, do_type_check: bool = False) -> onnx.ModelProto:
    """``gs.export_onnx(graph, do_type_check=do_type_check)``, built faster (see the module
    docstring). A graph the fast path cannot write goes to graphsurgeon's exporter, whose
    result or error then stands."""
    if _exporter_matches():
        try:
            return _export_directly(graph, do_type_check)
        except Exception:  # graphsurgeon and onnx raise assorted types; its exporter decides
            pass
    return gs.export_onnx(graph, do_type_check=do_type_check)


def _export_directly(graph: gs.Graph, do_type_check: bool) -> onnx.ModelProto:
    """``gs.export_onnx``'s steps in its order: the graph, the functions, the opset imports,
    then ``onnx.helper.make_model``'s fields and the graph's producer and IR version."""
    model = onnx.ModelProto()
    model.ir_version = onnx.IR_VERSION  # make_model sets it, whatever overrides it later
    used_domains = _export_graph(graph, do_type_check, model.graph)
    functions = [OnnxExporter.export_function(f) for f in graph.functions]
    model.opset_import.extend(_opset_imports(graph, used_domains))
    model.functions.extend(functions)
    model.producer_name = graph.producer_name
    model.producer_version = graph.producer_version
    ir_version = ir_version_of(graph)
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def _export_graph(graph: gs.Graph, do_type_check: bool, proto: onnx.GraphProto) -> set | None:
    """``OnnxExporter.export_graph(graph)`` written into ``proto``; returns the domains of the
    graph's nodes, or None if some attribute went to graphsurgeon (it may hold a subgraph,
    whose domains count too)."""
    nodes = graph.nodes
    check_duplicate_node_names(nodes, level=G_LOGGER.WARNING)
    used_domains: set | None = set()
    every = list(graph.inputs)  # every tensor in graph.tensors()'s order, for _tensor_map
    add = proto.node.add
    for node in nodes:
        inputs = node.inputs
        outputs = node.outputs
        every += inputs
        every += outputs
        # Keyword arguments of None leave a field unset where make_node's assignments raise:
        # only lists and checked values go in as keywords.
        node_proto = add(input=[t.name for t in inputs], output=[t.name for t in outputs])
        node_proto.op_type = node.op
        if node.name:
            node_proto.name = node.name
        domain = node.domain
        if domain is not None:
            node_proto.domain = domain
        if used_domains is not None:
            used_domains.add(domain)
        attrs = node.attrs
        if attrs:
            attributes = node_proto.attribute
            for key, value in attrs.items():
                if not _add_plain_attribute(key, value, attributes):
                    attributes.extend(OnnxExporter.export_attributes({key: value}))
                    used_domains = None
    for tensor in graph.inputs:
        _export_value_info(tensor, do_type_check, proto.input)
    for tensor in graph.outputs:
        _export_value_info(tensor, do_type_check, proto.output)
    every += graph.outputs
    tensors = _tensor_map(graph, every)
    # Both lists are made whole before they are copied, as make_graph copies them: constants
    # sharing one LazyValues proto all get the last one's name there. (One pass for both:
    # graphsurgeon's second, the sparse one, only reads.)
    initializer = []
    sparse_initializer = []
    for tensor in tensors.values():
        if isinstance(tensor, gs.Constant):
            if isinstance(stored_values(tensor), SparseValues):
                sparse_initializer.append(OnnxExporter.export_sparse_tensor_proto(tensor))
            else:
                initializer.append(OnnxExporter.export_tensor_proto(tensor))
    for tensor in graph.inputs + graph.outputs:
        if tensor.name in tensors:
            del tensors[tensor.name]
    for tensor in tensors.values():
        if isinstance(tensor, gs.Variable) and (
            tensor.dtype is not None or tensor.shape is not None
        ):
            _export_value_info(tensor, do_type_check, proto.value_info)
    proto.name = graph.name
    proto.initializer.extend(initializer)
    proto.sparse_initializer.extend(sparse_initializer)
    if graph.doc_string:
        proto.doc_string = graph.doc_string
    return used_domains


def _add_plain_attribute(key: str, value: object, attributes) -> bool:
    """Add ``make_attribute(key, value)`` to ``attributes`` if ``value`` is plain (see the
    module docstring) and return True; else add nothing and return False."""
    if type(key) is not str:
        return False
    kind = type(value)
    if kind is int or kind is bool:
        attributes.add(name=key, type=_INT, i=int(value))
    elif kind is float:
        attributes.add(name=key, type=_FLOAT, f=value)
    elif kind is str:
        attributes.add(name=key, type=_STRING, s=value.encode("utf-8"))
    elif kind is bytes:
        attributes.add(name=key, type=_STRING, s=value)
    elif (kind is list or kind is tuple) and value:
        kinds = set(map(type, value))
        if kinds == {int}:
            attributes.add(name=key, type=_INTS, ints=value)
        elif kinds <= {int, float}:
            attributes.add(name=key, type=_FLOATS, floats=value)
        elif kinds <= {str, bytes}:
            strings = [v.encode("utf-8") if type(v) is str else v for v in value]
            attributes.add(name=key, type=_STRINGS, strings=strings)
        else:  # bools, numpy scalars, protos, mixed: make_attribute's own rules
            return False
    else:
        return False
    return True


def _export_value_info(tensor: gs.Tensor, do_type_check: bool, protos) -> None:
    """``OnnxExporter.export_value_info_proto(tensor, do_type_check)`` added to ``protos``:
    built here for a variable of a tensor type with a plain shape (or for no dtype at all)."""
    dtype = tensor.dtype
    if dtype is None:
        if not do_type_check:
            protos.add().name = tensor.name
            return
    elif type(tensor) is gs.Variable and tensor.type == "tensor_type":
        shape = tensor.shape
        if shape is None:
            proto = protos.add()
            proto.name = tensor.name
            proto.type.tensor_type.elem_type = _onnx_dtype(type(dtype), dtype)
            return
        if type(shape) is list or type(shape) is tuple:
            kinds = set(map(type, shape))
            if kinds <= {int, str, type(None)}:
                proto = protos.add()
                proto.name = tensor.name
                tensor_type = proto.type.tensor_type
                tensor_type.elem_type = _onnx_dtype(type(dtype), dtype)
                tensor_type.shape.SetInParent()  # a known rank 0 keeps its empty shape
                dims = tensor_type.shape.dim
                for dim in shape:
                    if dim is None:
                        dims.add()
                    elif type(dim) is int:
                        dims.add(dim_value=dim)
                    else:
                        dims.add(dim_param=dim)
                return
    protos.append(OnnxExporter.export_value_info_proto(tensor, do_type_check))


@functools.cache
def _onnx_dtype(kind: type, dtype: object) -> int:
    """``dtype_to_onnx(dtype)``, once per dtype (keyed by its type too, as a dtype equals the
    name of its type and some such)."""
    return dtype_to_onnx(dtype)


def _tensor_map(graph: gs.Graph, every: list[gs.Tensor]) -> dict[str, gs.Tensor]:
    """``graph.tensors()`` from ``every`` tensor of it in its order: the last tensor of each
    name at the place of the first, the empty name left out. When two distinct tensors share a
    name it is ``graph.tensors()`` itself, for its warning."""
    tensors = dict(zip(map(_name_of, every), every, strict=True))
    objects = set(map(id, every))
    if "" in tensors:
        del tensors[""]
        objects.difference_update(id(t) for t in every if t.name == "")
    if len(objects) != len(tensors):
        return graph.tensors()
    return tensors


_name_of = operator.attrgetter("name")


def _opset_imports(graph: gs.Graph, used_domains: set | None) -> list:
    """``update_import_domains(graph)``: the graph's own list when it already names every
    domain its nodes use, else graphsurgeon's update (it appends, in its order)."""
    domains = graph.import_domains
    if domains is None or used_domains is None:
        return update_import_domains(graph)
    used_domains.discard(None)
    if not used_domains <= {opset.domain for opset in domains}:
        return update_import_domains(graph)
    return domains


@functools.cache
def _exporter_matches() -> bool:
    """Whether this module exports a probe graph of every plain kind as graphsurgeon does."""
    try:
        theirs = gs.export_onnx(_probe(), do_type_check=False)
        ours = _export_directly(_probe(), False)
    except Exception:
        return False
    return theirs.SerializeToString(deterministic=True) == ours.SerializeToString(
        deterministic=True
    )


def _probe() -> gs.Graph:
    """A small graph of the plain kinds: attributes, names and domains, value infos."""
    x = gs.Variable("x", np.float32, ["n", 3, None])
    y = gs.Variable("y", np.dtype(np.float32), [])
    mid = gs.Variable("mid", onnx.TensorProto.FLOAT)
    out = gs.Variable("out")
    weight = gs.Constant("w", np.ones((1, 3), np.float32))
    attrs = {
        "i": 3,
        "b": True,
        "f": 0.5,
        "s": "text",
        "bytes": b"raw",
        "ints": [1, 2],
        "floats": (1.0, 2),
        "strings": ["a", b"b"],
    }
    nodes = [
        gs.Node("Custom", "named", attrs, [x, weight, gs.Variable.empty()], [mid]),
        gs.Node("Relu", inputs=[mid], outputs=[out], domain=""),
        gs.Node("Twice", inputs=[out], outputs=[y], domain="local"),
    ]
    return gs.Graph(nodes, [x], [y], name="probe", doc_string="probe", opset=17)
