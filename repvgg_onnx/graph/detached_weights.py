"""Export an onnx-graphsurgeon graph without copying its large weights through protobuf.

``gs.export_onnx`` turns every constant into a ``TensorProto``: a copy of every weight, which
shape inference does not need and a save needs only one tensor at a time (and a constant
still backed by its original ``TensorProto`` is copied twice: into the graph, then into the
model). Here each constant of more than ``SMALL_TENSOR_ELEMENTS`` numeric elements is
exported as a *stub*: a ``TensorProto`` with its name, element type and dims but no data,
exactly what :func:`repvgg_onnx.io.stripped_model.model_skeleton` keeps of it. Small constants
(shapes, axes) are exported whole, since shape inference may read them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from repvgg_onnx.graph.constant_views import forget_values, tensor_map
from repvgg_onnx.graph.gs_versions import exports_own_dtype, stored_values
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS


def detach_weights(graph: gs.Graph) -> dict[str, np.ndarray | LazyValues]:
    """Replace each large constant's values by a stub; return the values by name: arrays, or
    the ``LazyValues`` of constants still backed by their original ``TensorProto`` (an export
    would copy those protos twice: into the graph, then into the model)."""
    detached: dict[str, np.ndarray | LazyValues] = {}
    for tensor in _large_constants(graph):
        lazy = stored_values(tensor)
        if type(lazy) is LazyValues:
            proto = lazy.tensor
            stub = onnx.TensorProto(name=proto.name, dims=proto.dims, data_type=proto.data_type)
            detached[tensor.name] = lazy
        else:
            values = np.asarray(lazy)
            stub = onnx.TensorProto(
                name=tensor.name,
                dims=values.shape,
                data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
            )
            detached[tensor.name] = values
        tensor.values = LazyValues(stub)
        forget_values(tensor)
    return detached


def attach_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray | LazyValues]) -> None:
    """Fill each stub initializer of ``model`` with its values, releasing them one by one
    (``weights`` is emptied), so the arrays and their protobuf copies never coexist whole."""
    for tensor in model.graph.initializer:  # only the main graph's are detached
        values = weights.pop(tensor.name, None)
        if isinstance(values, LazyValues):
            name = tensor.name
            tensor.CopyFrom(values.tensor)
            tensor.name = name
        elif values is not None:
            tensor.raw_data = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).tobytes()
        del values
    if weights:
        raise RuntimeError(f"no initializer took the values of {sorted(weights)[:3]}")


@contextlib.contextmanager
def weights_detached(graph: gs.Graph) -> Iterator[None]:
    """Within the block every large constant of the graph is a stub; then each gets its values
    back. For exports whose weights are not needed, such as shape inference."""
    detached = detach_weights(graph)
    try:
        yield
    finally:
        for tensor in _constants_named(graph, detached):
            tensor.values = detached[tensor.name]


def _large_constants(graph: gs.Graph) -> list[gs.Constant]:
    """Constants of more than ``SMALL_TENSOR_ELEMENTS`` numeric elements, exported as is."""
    found = []
    for tensor in tensor_map(graph).values():
        if not isinstance(tensor, gs.Constant) or not exports_own_dtype(tensor):
            continue
        lazy = stored_values(tensor)
        if type(lazy) is LazyValues:
            proto = lazy.tensor
            large = math.prod(proto.dims) > SMALL_TENSOR_ELEMENTS
            numeric = proto.data_type != onnx.TensorProto.STRING
        elif isinstance(lazy, LazyValues):  # sparse: never here (made dense before import)
            continue
        else:
            large = math.prod(tensor.shape) > SMALL_TENSOR_ELEMENTS
            numeric = np.asarray(lazy).dtype.kind in "fiub"
        if large and numeric:
            found.append(tensor)
    return found


def _constants_named(graph: gs.Graph, names: dict) -> list[gs.Constant]:
    return [
        tensor
        for tensor in tensor_map(graph).values()
        if isinstance(tensor, gs.Constant) and tensor.name in names
    ]
