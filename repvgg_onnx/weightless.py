"""Export an onnx-graphsurgeon graph without copying its large weights through protobuf.

``gs.export_onnx`` turns every constant into a ``TensorProto``: a copy of every weight, which
shape inference does not need and a save needs only one tensor at a time. Here each constant
of more than ``SMALL_TENSOR_ELEMENTS`` elements whose values are in memory is exported as a
*stub*: a ``TensorProto`` with its name, element type and dims but no data, exactly what
:func:`repvgg_onnx.skeleton.model_skeleton` keeps of it. Small constants (shapes, axes) are
exported whole, since shape inference may read them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from repvgg_onnx.skeleton import SMALL_TENSOR_ELEMENTS


def detach_weights(graph: gs.Graph) -> dict[str, np.ndarray]:
    """Replace each large in-memory constant's values by a stub; return the values by name.

    Constants still backed by their original ``TensorProto`` are left alone: graphsurgeon
    exports those protos as they are, without a copy through numpy.
    """
    detached = {}
    for tensor in _large_array_constants(graph):
        values = np.asarray(tensor.values)
        stub = onnx.TensorProto(
            name=tensor.name,
            dims=values.shape,
            data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
        )
        tensor.values = LazyValues(stub)
        detached[tensor.name] = values
    return detached


def attach_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> None:
    """Fill each stub initializer of ``model`` with its values, releasing them one by one
    (``weights`` is emptied), so the arrays and their protobuf copies never coexist whole."""
    for tensor in _initializers(model.graph):
        values = weights.pop(tensor.name, None)
        if values is not None:
            tensor.raw_data = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).tobytes()
            del values
    if weights:
        raise RuntimeError(f"no initializer took the values of {sorted(weights)[:3]}")


def _initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in (attribute.g, *attribute.graphs):
                yield from _initializers(subgraph)


@contextlib.contextmanager
def weights_detached(graph: gs.Graph) -> Iterator[None]:
    """Within the block the graph's large in-memory constants are stubs; then restored."""
    detached = detach_weights(graph)
    try:
        yield
    finally:
        for tensor in _constants_named(graph, detached):
            tensor.values = detached[tensor.name]


def _large_array_constants(graph: gs.Graph) -> list[gs.Constant]:
    return [
        tensor
        for tensor in graph.tensors().values()
        if isinstance(tensor, gs.Constant)
        and not isinstance(tensor._values, LazyValues)
        and tensor._export_dtype is None
        and math.prod(tensor.shape) > SMALL_TENSOR_ELEMENTS
        and np.asarray(tensor.values).dtype.kind in "fiub"
    ]


def _constants_named(graph: gs.Graph, names: dict[str, np.ndarray]) -> list[gs.Constant]:
    return [
        tensor
        for tensor in graph.tensors().values()
        if isinstance(tensor, gs.Constant) and tensor.name in names
    ]
