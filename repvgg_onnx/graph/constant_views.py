"""Read-only views of a graphsurgeon graph's constants, and its tensors by name.

A constant's value is read once, as a read-only array (a view of its ``raw_data`` or of its
memory-mapped data file where it can be), and kept on the tensor until its values change
hands: passes make new constants and never edit one in place, since exporters share
initializers between nodes. An initializer that is also a graph input is *overridable*: a
caller may feed another value, so it is not a constant.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from repvgg_onnx.graph.gs_versions import stored_values
from repvgg_onnx.io.mapped_weights import RAW_DTYPES, mapped_view

_OVERRIDABLE = "_repvgg_onnx_overridable"
_READ_ONLY_VALUES = "_repvgg_onnx_values"


def mark_overridable(tensor: gs.Tensor) -> None:
    """Record that ``tensor`` is an initializer also listed as a graph input: a caller may feed
    another value at run time, so its value is only a default, not a constant."""
    setattr(tensor, _OVERRIDABLE, True)


def is_overridable(tensor: gs.Tensor) -> bool:
    return bool(getattr(tensor, _OVERRIDABLE, False))


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The tensor's value if it is a constant (an initializer no caller can override).

    Arrays are read-only: an initializer may be shared by several nodes, so passes make new
    constants and never edit one in place. A weight still in its TensorProto's raw bytes is a
    view of them, not a copy, and the proto stays the constant's value, so an untouched weight
    is written back as the bytes it arrived as."""
    values = tensor.__dict__.get(_READ_ONLY_VALUES)
    if values is not None:  # kept only for a constant no caller can override (see below)
        return values
    if not isinstance(tensor, gs.Constant) or is_overridable(tensor):
        return None
    lazy = stored_values(tensor)
    if isinstance(lazy, SparseValues):  # made dense before import
        return None
    if isinstance(lazy, LazyValues):
        values = _raw_view(lazy.tensor)
        if values is None and lazy.tensor.data_location == onnx.TensorProto.EXTERNAL:
            return None  # not in memory and not mapped: nothing to read it from
    if values is None:  # loaded aside: the constant keeps its proto, to export as is
        values = stored_array(tensor)
        if values is None:  # not re-read: what no reader can read, no pass rewrites
            return None
        values.flags.writeable = False
    tensor.__dict__[_READ_ONLY_VALUES] = values  # graphsurgeon's __setattr__ is slower
    return values


def stored_array(tensor: gs.Constant) -> np.ndarray | None:
    """The constant's values as it stores them now, loaded afresh (never the view
    :func:`constant_values` keeps), or ``None`` if they are sparse or do not fit their type
    and shape."""
    stored = stored_values(tensor)
    if isinstance(stored, SparseValues):
        return None
    try:
        return np.asarray(stored.load() if isinstance(stored, LazyValues) else stored)
    except (ValueError, TypeError):
        return None


def forget_values(tensor: gs.Tensor) -> None:
    """Drop the array :func:`constant_values` keeps for ``tensor``, whose values are changing
    hands (a kept reference would keep a weight alive after its new owner let it go)."""
    tensor.__dict__.pop(_READ_ONLY_VALUES, None)


def _raw_view(proto: onnx.TensorProto) -> np.ndarray | None:
    """The tensor's elements as a read-only view of its little-endian ``raw_data`` (or of the
    bytes it was left with in its data file, see :mod:`repvgg_onnx.io.mapped_weights`), for the
    whole-byte numeric types numpy and onnx agree on; ``None`` otherwise."""
    dtype = RAW_DTYPES.get(proto.data_type)
    if dtype is None:
        return None
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        return mapped_view(proto, dtype)
    if not proto.HasField("raw_data"):
        return None
    shape = tuple(proto.dims)
    raw = proto.raw_data
    if len(raw) != dtype.itemsize * math.prod(shape):
        return None
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_map(graph: gs.Graph) -> dict[str, gs.Tensor]:
    """Every named tensor of ``graph`` (not of its subgraphs) by name, as ``graph.tensors()``
    gives it, in a third of its time (no duplicate check, no logging)."""
    found: dict[str, gs.Tensor] = {t.name: t for t in graph.inputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            found[tensor.name] = tensor
        for tensor in node.outputs:
            found[tensor.name] = tensor
    for tensor in graph.outputs:
        found[tensor.name] = tensor
    found.pop("", None)  # omitted optional inputs and outputs
    return found
