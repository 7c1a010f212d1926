"""A model's skeleton: its graph without the bytes of its large constants.

Checks and shape inference need every tensor's type and shape, not the weights' values;
serializing a model with its weights (as ``onnx.checker`` and ``onnx.shape_inference`` do) costs
more than loading it. The skeleton keeps nodes, inputs, outputs, value_info, functions and
small initializers (shape tensors, axes) and turns every large initializer into a graph input
of the same name, element type and shape.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import onnx
from onnx import helper

#: Initializers with at most this many elements stay in the skeleton: shape inference may need
#: the values of shape-like tensors (Reshape's shape, ReduceMean's axes, Slice's starts).
SMALL_TENSOR_ELEMENTS = 1024

#: Below this many bytes of large initializers, a model's size is counted by protobuf itself
#: (``ByteSize`` encodes every weight to count it: 0.14 s for a 36 MB model, against 3 ms for
#: its skeleton).
_DIRECT_SIZE_BYTES = 2**20

_MODEL_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version")


def model_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with each initializer of more than ``SMALL_TENSOR_ELEMENTS`` elements
    replaced by a typed graph input; valid, checkable and inferable like the model."""
    if all(math.prod(t.dims) <= SMALL_TENSOR_ELEMENTS for t in model.graph.initializer):
        return _copy_without_annotations(model)  # one copy in C, not a node at a time
    skeleton = onnx.ModelProto()
    for name in _MODEL_FIELDS:
        setattr(skeleton, name, getattr(model, name))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    source, graph = model.graph, skeleton.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    listed = {value.name for value in source.input}
    for tensor in source.initializer:
        if math.prod(tensor.dims) <= SMALL_TENSOR_ELEMENTS:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return skeleton


#: What a skeleton leaves out besides the large weights: documentation, metadata and the
#: training and configuration records no check or inference of ours needs.
_MODEL_ANNOTATIONS = ("doc_string", "metadata_props", "training_info", "configuration")
_GRAPH_ANNOTATIONS = ("doc_string", "quantization_annotation", "metadata_props")


def _copy_without_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` copied whole but for the fields :func:`model_skeleton` leaves out."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for message, names in ((skeleton, _MODEL_ANNOTATIONS), (skeleton.graph, _GRAPH_ANNOTATIONS)):
        for name in names:
            if name in message.DESCRIPTOR.fields_by_name:  # older onnx lacks some
                message.ClearField(name)
    return skeleton


def serialized_size(model: onnx.ModelProto, census: TensorCensus | None = None) -> int:
    """The model's size in bytes as one protobuf, to within a few bytes per large tensor.

    ``ModelProto.ByteSize()`` serializes every weight to count it; this measures the skeleton
    and adds the large tensors' payload from their shape and element type. ``census`` is
    :func:`tensor_census` of ``model``, when the caller already has it.
    """
    census = census or tensor_census(model)
    if census.payload_bytes < _DIRECT_SIZE_BYTES and not census.in_files:  # cheaper as is
        with contextlib.suppress(Exception):  # a model too large for one protobuf
            return model.ByteSize()
    return model_skeleton(model).ByteSize() + census.payload_bytes


@dataclass(frozen=True)
class TensorCensus:
    """Elements of all initializers, the bytes of those the skeleton leaves out, and how many
    of those are still in a data file (whose ``ByteSize`` would count the reference only)."""

    elements: int
    payload_bytes: int
    in_files: int = 0


def tensor_census(model: onnx.ModelProto) -> TensorCensus:
    """One walk over the initializers (each ``dims`` read costs a protobuf wrapper)."""
    elements = payload = in_files = 0
    for tensor in model.graph.initializer:
        count = math.prod(tensor.dims)
        elements += count
        if count > SMALL_TENSOR_ELEMENTS:
            payload += _payload_bytes(tensor, count)
            in_files += tensor.data_location == onnx.TensorProto.EXTERNAL
    return TensorCensus(elements, payload, in_files)


def _payload_bytes(tensor: onnx.TensorProto, elements: int) -> int:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError):
        return len(tensor.raw_data)
    return elements * itemsize
