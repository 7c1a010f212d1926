"""What differs between the graphsurgeon versions this tool supports, each behind a probe.

A ``Constant`` keeps what it was given (an array, or the ``LazyValues`` of its original
``TensorProto``) in ``_values``; its public ``values`` loads a ``LazyValues`` into an array,
which copies every weight. Reading the field itself keeps an untouched weight a view of its
proto's bytes, written back as it arrived. Since 0.5.5 a constant also has an ``export_dtype``
(kept in ``_export_dtype``, ``None`` when unset; the public property answers the values' dtype
then) and a ``Graph`` carries the model's ``ir_version``; 0.5.2 has neither, exporting every
constant in its values' dtype and every model at onnx's current IR version.

Each layout is probed once, on objects graphsurgeon builds itself (:func:`values_field`,
:func:`export_dtype_field`, :func:`graph_ir_version`, :func:`node_exporter`). Where a probe
fails, the public API answers: ``values`` (a load), ``export_dtype`` compared with ``dtype``,
a node's proto taken from the export of a graph of it alone. A probe that
chooses the public API cannot make a different model, only a slower one (a test forces it).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues

_VALUES = "_values"
_EXPORT_DTYPE = "_export_dtype"


@functools.cache
def values_field() -> bool:
    """Whether a constant keeps the ``LazyValues`` it was built with in ``_values``, and its
    public ``values`` setter writes that field."""
    lazy = _probe_lazy()
    constant = gs.Constant("probe", lazy)
    if vars(constant).get(_VALUES) is not lazy:
        return False
    other = _probe_lazy()
    constant.values = other
    return vars(constant).get(_VALUES) is other


@functools.cache
def export_dtype_field() -> bool:
    """Whether a constant keeps its export dtype in ``_export_dtype``, ``None`` when unset."""
    constant = gs.Constant("probe", _probe_lazy())
    state = vars(constant)
    return _EXPORT_DTYPE in state and state[_EXPORT_DTYPE] is None


def stored_values(tensor: gs.Constant) -> np.ndarray | LazyValues:
    """What the constant holds, not loaded: its array, or the ``LazyValues`` of its proto
    (a ``SparseValues`` for a sparse one). Without the field, its loaded ``values``."""
    if values_field():
        return tensor.__dict__[_VALUES]
    return tensor.values


def exports_own_dtype(tensor: gs.Constant) -> bool:
    """Whether the constant is exported in its values' own dtype (no ``export_dtype`` set)."""
    if export_dtype_field():
        return tensor.__dict__[_EXPORT_DTYPE] is None
    if not hasattr(type(tensor), "export_dtype"):  # 0.5.2: no such thing
        return True
    return tensor.export_dtype == tensor.dtype


@functools.cache
def graph_ir_version() -> bool:
    """Whether a graph is built with, and keeps, an ``ir_version``."""
    parameters = inspect.signature(gs.Graph.__init__).parameters
    return "ir_version" in parameters and gs.Graph(ir_version=7).__dict__.get("ir_version") == 7


def graph_fields(model: onnx.ModelProto) -> dict[str, object]:
    """The ``gs.Graph`` arguments of a model besides its graph's, as ``gs.import_onnx`` gives."""
    return {"ir_version": model.ir_version} if graph_ir_version() else {}


def ir_version_of(graph: gs.Graph) -> int | None:
    """The IR version the graph's export declares, ``None`` for onnx's current one."""
    return graph.ir_version if graph_ir_version() else None


@functools.cache
def node_exporter() -> bool:
    """Whether graphsurgeon's exporter has ``OnnxExporter.export_node`` (a static method, not
    in its documented API), exporting a probe node as a one-node graph's export holds it."""
    export_node = getattr(OnnxExporter, "export_node", None)
    if not callable(export_node):
        return False
    node = _probe_node()
    return export_node(node) == _node_by_graph(node)


def node_proto(node: gs.Node) -> onnx.NodeProto:
    """The node as graphsurgeon exports it, its inputs and outputs by name."""
    if node_exporter():
        return OnnxExporter.export_node(node)
    return _node_by_graph(node)


def _node_by_graph(node: gs.Node) -> onnx.NodeProto:
    """The node's proto in the export of a graph of it alone (graphsurgeon's public API)."""
    return gs.export_onnx(gs.Graph(nodes=[node], opset=17)).graph.node[0]


def _probe_node() -> gs.Node:
    attrs = {"axis": 1, "scale": 0.5, "mode": "x", "pads": [1, 2], "values": [0.5, 1.0]}
    tensors = [gs.Variable("a"), gs.Constant("b", np.ones(2, np.float32))]
    return gs.Node("Probe", "probe", attrs, tensors, [gs.Variable("c")], domain="probe.domain")


def constant_extra_fields() -> dict[str, object]:
    """The fields a new constant has besides name, links, values and data location."""
    return {_EXPORT_DTYPE: None} if export_dtype_field() else {}


def _probe_lazy() -> LazyValues:
    return LazyValues(onnx.helper.make_tensor("probe", onnx.TensorProto.FLOAT, [1], [1.0]))
