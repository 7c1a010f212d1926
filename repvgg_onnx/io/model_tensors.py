"""Every tensor a model holds (initializers, Constant values, subgraphs') and how many bytes
it takes, so loading and saving can tell a model that fits in one protobuf (2 GB) from one
whose weights must live in a data file."""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx

from repvgg_onnx.io.mapped_weights import (
    RAW_DTYPES,
    mapped_location,
)
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS

# Protobuf cannot serialize a message of 2 GiB or more; stay well below it, since the estimate
# counts only tensor data and not the graph around it.
INLINE_LIMIT_BYTES = int(1.8 * 2**30)


# Most bytes one element of each typed data field takes once serialized (varints up to 10).
_TYPED_FIELD_MAX_BYTES = {
    "float_data": 4,
    "double_data": 8,
    "int32_data": 10,
    "int64_data": 10,
    "uint64_data": 10,
}


#: Bytes per element of the fixed-width, whole-byte tensor types (sub-byte and string types are
#: left to onnxruntime): those numpy reads as they are, and those it has no type for.
_FIXED_ITEMSIZE = {data_type: dtype.itemsize for data_type, dtype in RAW_DTYPES.items()} | {
    data_type: onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    for data_type in (
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.BOOL,
        onnx.TensorProto.COMPLEX64,
        onnx.TensorProto.COMPLEX128,
        onnx.TensorProto.FLOAT8E4M3FN,
        onnx.TensorProto.FLOAT8E4M3FNUZ,
        onnx.TensorProto.FLOAT8E5M2,
        onnx.TensorProto.FLOAT8E5M2FNUZ,
    )
}


def needs_external_data(model: onnx.ModelProto) -> bool:
    """True if ``model`` is too large to serialize as one protobuf (estimated, not measured)."""
    return _estimated_size(model) > INLINE_LIMIT_BYTES


def fixed_size(tensor: onnx.TensorProto) -> int | None:
    itemsize = _FIXED_ITEMSIZE.get(tensor.data_type)
    return None if itemsize is None else itemsize * math.prod(tensor.dims)


def tensor_size_problem(tensor: onnx.TensorProto) -> str | None:
    """Why the tensor's data does not fit its shape and type, or ``None`` if it does."""
    elements = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        itemsize = _FIXED_ITEMSIZE.get(tensor.data_type)
        needed = None if itemsize is None else elements * itemsize
        if needed is not None and len(tensor.raw_data) != needed:
            return (
                f"initializer '{tensor.name}' holds {len(tensor.raw_data)} bytes but its shape "
                f"{list(tensor.dims)} needs {needed}"
            )
        return None
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        values = getattr(tensor, field)
        if values and len(values) != elements:
            return (
                f"initializer '{tensor.name}' holds {len(values)} values but its shape "
                f"{list(tensor.dims)} needs {elements}"
            )
    return None


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold weights: in the graph, its subgraphs and local functions."""
    yield from model.graph.initializer
    yield from tensors_beside_initializers(model)


def tensors_beside_initializers(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """:func:`all_tensors` but the main graph's initializers."""
    yield from _graph_tensors_beside_initializers(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    yield from _graph_tensors_beside_initializers(graph)


def _graph_tensors_beside_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.type in _PLAIN_ATTRIBUTE_TYPES:  # most attributes: ints, floats, strings
            continue
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for tensor in [*sparse, *attribute.sparse_tensors]:
            yield from (tensor.values, tensor.indices)
        graphs = [attribute.g] if attribute.HasField("g") else []
        for graph in [*graphs, *attribute.graphs]:
            yield from _graph_tensors(graph)


#: Attribute types that hold no tensor and no graph. An attribute of another type, or of none
#: (``UNDEFINED``: old writers), is searched field by field.
_PLAIN_ATTRIBUTE_TYPES = frozenset(
    (
        onnx.AttributeProto.INT,
        onnx.AttributeProto.INTS,
        onnx.AttributeProto.FLOAT,
        onnx.AttributeProto.FLOATS,
        onnx.AttributeProto.STRING,
        onnx.AttributeProto.STRINGS,
    )
)


def _estimated_size(model: onnx.ModelProto) -> int:
    """Upper bound of the bytes the model's tensor data takes when serialized. The main
    graph's initializers are counted from their shapes (reading ``raw_data`` copies it), which
    is exact for every model we write: loaded ones had their sizes checked, new ones are built
    from arrays of their shape."""
    initializers = sum(_initializer_size(tensor) for tensor in model.graph.initializer)
    return initializers + sum(_tensor_size(t) for t in tensors_beside_initializers(model))


def _initializer_size(tensor: onnx.TensorProto) -> int:
    itemsize = _FIXED_ITEMSIZE.get(tensor.data_type)
    if itemsize is None or not (tensor.HasField("raw_data") or mapped_location(tensor)):
        return _tensor_size(tensor)
    return math.prod(tensor.dims) * itemsize


def skeleton_size_bound(skeleton: onnx.ModelProto) -> int:
    """Upper bound of the tensor bytes of a :func:`model_skeleton`, cheaper than
    :func:`_estimated_size`: its initializers have at most ``SMALL_TENSOR_ELEMENTS`` elements
    of at most 16 bytes (strings aside), so only node attributes and sparse tensors are
    measured one by one."""
    initializers = skeleton.graph.initializer
    strings = [t for t in initializers if t.data_type == onnx.TensorProto.STRING]
    bound = len(initializers) * SMALL_TENSOR_ELEMENTS * 16
    bound += sum(_tensor_size(tensor) for tensor in strings)
    return bound + sum(_tensor_size(tensor) for tensor in tensors_beside_initializers(skeleton))


def _tensor_size(tensor: onnx.TensorProto) -> int:
    typed = sum(len(getattr(tensor, field)) * n for field, n in _TYPED_FIELD_MAX_BYTES.items())
    return len(tensor.raw_data) + typed + sum(len(text) for text in tensor.string_data)
