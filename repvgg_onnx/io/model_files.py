"""Reading and writing ONNX models: external data, path safety, atomic writes, size limits.

Invariants:

- ``load_model`` only reads: it returns a checked model whose tensors all hold their data in
  memory, and refuses external data that points outside the model's folder before reading it.
  For ``fuse``, it can leave the large weights in their data file instead
  (``map_external_data``), where the passes read them through memory maps: a model of more
  than 2 GB is then never in memory whole, only its fused kernels are.
- ``save_model`` replaces the output all at once: a failure, or a process killed at any
  moment, leaves the previous file untouched and no temporary file behind (on Linux the file
  is written unnamed, ``O_TMPFILE``; elsewhere a killed writer's temporary is removed by the
  next save in that folder). Weights go to a data file of a fresh name,
  ``<output name>.<pid>.<random>.data``, when the model would not fit in one protobuf (2 GB)
  or when asked to; the output and the data file it names are a consistent pair at every
  moment, and the data file a save supersedes is removed once the output is replaced.

Every refusal is a ``ModelLoadError`` or ``ModelSaveError`` whose message is one sentence that
names the path, says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import uses_external_data

from repvgg_onnx.errors import ModelLoadError, ModelSaveError
from repvgg_onnx.io.mapped_weights import (
    RAW_DTYPES,
    mapped_location,
    mapped_pieces,
    read_mapped_bytes,
)
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS, model_skeleton

# Protobuf cannot serialize a message of 2 GiB or more; stay well below it, since the estimate
# counts only tensor data and not the graph around it.
_INLINE_LIMIT_BYTES = int(1.8 * 2**30)
# Smaller tensors stay inside the .onnx when writing external data (onnx's own default).
_MIN_EXTERNAL_TENSOR_BYTES = 1024
# Most bytes one element of each typed data field takes once serialized (varints up to 10).
_TYPED_FIELD_MAX_BYTES = {
    "float_data": 4,
    "double_data": 8,
    "int32_data": 10,
    "int64_data": 10,
    "uint64_data": 10,
}
_CHECKER_DETAIL_MAX_CHARS = 300

#: Where Linux names each open descriptor: linking it gives an unnamed file a name.
_PROC_FD = "/proc/self/fd"
#: Errors of ``open(O_TMPFILE)`` that mean "not supported here" (old kernel, filesystem).
_NO_TMPFILE_ERRNOS = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
#: Our temporaries: ``.<name>.repvgg-onnx.<pid>.<random>.tmp``; the pid tells a killed
#: writer's leftovers from a running writer's work.
_TEMP_PATTERN = re.compile(r"\..*\.repvgg-onnx\.([0-9]+)\.[0-9a-f]{16}\.tmp", re.DOTALL)
_TEMP_NAME_CHARS = 180
_SCAN_CHUNK_BYTES = 16 * 2**20
_COPY_CHUNK_BYTES = 16 * 2**20

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

_Writer = Callable[[BinaryIO], None]


@dataclass(frozen=True)
class _ExternalRef:
    """Where a tensor's external bytes live: a regular file inside the model's folder."""

    file: Path
    offset: int
    length: int


def load_model(path: str | os.PathLike, *, map_external_data: bool = False) -> onnx.ModelProto:
    """Read, validate and return the model at ``path`` with all external data in memory.

    With ``map_external_data``, the main graph's large initializers (more than
    ``SMALL_TENSOR_ELEMENTS`` elements of a fixed-size type, their length checked against their
    shape) stay in their data file instead, pointed at by absolute path, for the passes to read
    through memory maps (:mod:`repvgg_onnx.io.mapped_weights`). Such a model is written only
    by :func:`save_model`; :func:`read_mapped_data` brings its bytes into memory.

    The file and its data files are only read. Raises ``ModelLoadError`` when the file is
    missing or not an ONNX model, when its external data is missing, truncated or outside the
    model's folder, or when ``onnx.checker`` rejects it.
    """
    model_path = Path(path)
    model = _read_model_proto(model_path)
    refs = [
        (tensor, _external_ref(tensor, model_path))
        for tensor in _all_tensors(model)
        if uses_external_data(tensor)
    ]
    mappable = _mappable_initializers(model) if map_external_data else set()
    for tensor, ref in refs:
        if tensor.name in mappable and ref.length == _fixed_size(tensor):
            point_at(tensor, str(ref.file), ref.offset, ref.length)  # absolute: see above
        else:
            _load_tensor_data(tensor, ref)
    _run_checker(model, model_path)
    return model


def read_mapped_data(model: onnx.ModelProto) -> None:
    """Give every tensor of ``model`` left in its data file by ``load_model`` its bytes in
    ``raw_data``, as if it had never been external."""
    for tensor in _all_tensors(model):
        if mapped_location(tensor) is not None:
            tensor.raw_data = read_mapped_bytes(tensor)
            del tensor.external_data[:]
            tensor.ClearField("data_location")


def self_contained(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy with the bytes of every tensor ``load_model`` left in its data
    file in memory: a model to serialize (it must fit in one protobuf)."""
    if not any(mapped_location(tensor) is not None for tensor in model.graph.initializer):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    read_mapped_data(copy)
    return copy


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
    """Write ``model`` to ``path`` atomically; ``model`` itself is never changed.

    ``external_data=None`` stores weights in a data file only when the model would not fit in
    one protobuf; ``True`` always does, ``False`` never does. The data file gets a name never
    used before, ``<path name>.<pid>.<random>.data``: it is written and fsynced, then ``path``
    is replaced all at once and the folder fsynced, so ``path`` and the data file it names are
    a consistent pair at every moment. Only then are our data files for ``path`` that no model
    needs any more removed (see :func:`_remove_unused_data_files`); a data file of any other
    name, such as an exporter's ``model.onnx.data``, is never touched.

    If anything fails (even ``KeyboardInterrupt``), ``path`` keeps its previous content and no
    file of this save remains. Raises ``ModelSaveError`` when the output cannot be written.
    """
    target = Path(path)
    check_output_path(target)
    _refuse_external_references(model, target)
    if external_data is None:
        external_data = needs_external_data(model)
    try:
        superseded = _data_files_named_by(target)
        if external_data:
            data_name = _fresh_data_name(target)
            copy = copy_without_initializers(model)
            write_data = partial(_write_tensor_data, source=model, copy=copy, location=data_name)
            write_model = partial(_write_model, model=copy, path=target)
            _write_atomically(target, write_model, [(data_name, write_data)])
        else:
            whole = self_contained(model)
            _write_atomically(target, partial(_write_model, model=whole, path=target))
    except OSError as err:
        raise ModelSaveError(
            f"{target}: could not write the model ({err.strerror or err}); "
            "check free space and permissions of its folder."
        ) from err
    _remove_unused_data_files(target, superseded)


def save_text(text: str, path: str | os.PathLike) -> None:
    """Write a report atomically (UTF-8), with the same guarantees as :func:`save_model`."""
    save_file(lambda file: file.write(text.encode("utf-8")), path)


def save_file(write: Callable[[BinaryIO], object], path: str | os.PathLike) -> None:
    """Write the file ``write`` fills atomically, with the same guarantees as
    :func:`save_model`: if ``write`` raises, ``path`` keeps its previous content (or stays
    absent) and no partial file remains."""
    target = Path(path)
    check_output_path(target)
    try:
        _write_atomically(target, write)
    except OSError as err:
        raise ModelSaveError(
            f"{target}: cannot be written ({err.strerror or err}); check the folder's "
            "permissions and free space."
        ) from err


def needs_external_data(model: onnx.ModelProto) -> bool:
    """True if ``model`` is too large to serialize as one protobuf (estimated, not measured)."""
    return _estimated_size(model) > _INLINE_LIMIT_BYTES


def model_file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of the model file plus each distinct external data file it references."""
    model_path = Path(path)
    model = _read_model_proto(model_path)
    data_files = {
        _external_ref(tensor, model_path).file
        for tensor in _all_tensors(model)
        if uses_external_data(tensor)
    }
    return model_path.stat().st_size + sum(file.stat().st_size for file in data_files)


def _read_model_proto(path: Path) -> onnx.ModelProto:
    """Parse the file at ``path`` without its external data; refuse anything not a model."""
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory; pass the .onnx file inside it.")
    try:
        content = path.read_bytes()
    except FileNotFoundError as err:
        raise ModelLoadError(f"{path}: file not found; check the path.") from err
    except OSError as err:
        raise ModelLoadError(
            f"{path}: cannot be read ({err.strerror or err}); check the file's permissions."
        ) from err
    if not content:
        raise ModelLoadError(f"{path}: file is empty; re-export the model.")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(content)
    except DecodeError as err:
        raise _not_a_model(path, "protobuf parse failed") from err
    # Protobuf parses many byte strings into a near-empty message without complaint.
    if not model.graph.node:
        raise _not_a_model(path, "it has no graph nodes")
    if not model.opset_import:
        raise _not_a_model(path, "it has no opset_import")
    return model


def _not_a_model(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: not an ONNX model ({reason}); check that the file is a complete .onnx export."
    )


def _external_ref(tensor: onnx.TensorProto, model_path: Path) -> _ExternalRef:
    """Validate a tensor's external data entry against the disk, without reading the data."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    if not all(re.fullmatch(r"[0-9]+", entries.get(key, "0")) for key in ("offset", "length")):
        raise ModelLoadError(
            f"{model_path}: tensor {tensor.name} has an invalid external data offset or length; "
            "re-export the model."
        )
    offset = int(entries.get("offset", "0"))
    length = int(entries["length"]) if "length" in entries else None
    file = _safe_data_file(entries.get("location", ""), tensor.name, model_path)
    available = file.stat().st_size - offset
    if length is None:
        length = max(available, 0)
    if available < length:
        raise ModelLoadError(
            f"{model_path}: external data file {file.name} is too short for tensor "
            f"{tensor.name} (needs {offset + length} bytes, has {offset + available}); "
            "copy the complete data file next to the model."
        )
    return _ExternalRef(file, offset, length)


def _safe_data_file(location: str, tensor_name: str, model_path: Path) -> Path:
    """Resolve ``location`` to an existing regular file inside the model's folder, or refuse."""
    if not location:
        raise ModelLoadError(
            f"{model_path}: tensor {tensor_name} uses external data without a location; "
            "re-export the model."
        )
    if Path(location).is_absolute():
        raise ModelLoadError(
            f"{model_path}: tensor {tensor_name} stores its data at the absolute path "
            f"{location}, which is refused; put the data file next to the model and give a "
            "relative location."
        )
    folder = model_path.parent.resolve()
    file = (model_path.parent / location).resolve()
    # Check ".." on both separators: a model written on Windows may use backslashes.
    if ".." in re.split(r"[\\/]", location) or not file.is_relative_to(folder):
        raise ModelLoadError(
            f"{model_path}: tensor {tensor_name} stores its data at {location}, which points "
            "outside the model's folder; put the data file next to the model."
        )
    if not file.is_file():
        raise ModelLoadError(
            f"{model_path}: external data file {location} for tensor {tensor_name} is "
            "missing; copy it next to the model."
        )
    return file


def _load_tensor_data(tensor: onnx.TensorProto, ref: _ExternalRef) -> None:
    """Move a tensor's external bytes into ``raw_data``, as if it had never been external."""
    with ref.file.open("rb") as data:
        data.seek(ref.offset)
        tensor.raw_data = data.read(ref.length)
    del tensor.external_data[:]
    tensor.ClearField("data_location")


def _mappable_initializers(model: onnx.ModelProto) -> set[str]:
    """Names of the main graph's initializers of more than ``SMALL_TENSOR_ELEMENTS`` elements
    of a type numpy reads as it is (``RAW_DTYPES``): the weights. Small ones stay in memory,
    where the checker and shape inference can read them."""
    return {
        tensor.name
        for tensor in model.graph.initializer
        if math.prod(tensor.dims) > SMALL_TENSOR_ELEMENTS and tensor.data_type in RAW_DTYPES
    }


def _fixed_size(tensor: onnx.TensorProto) -> int | None:
    itemsize = _FIXED_ITEMSIZE.get(tensor.data_type)
    return None if itemsize is None else itemsize * math.prod(tensor.dims)


def point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make the tensor refer to ``length`` bytes at ``offset`` of the file at ``location``."""
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        tensor.external_data.add(key=key, value=str(value))
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _run_checker(model: onnx.ModelProto, path: Path) -> None:
    """``onnx.checker`` on the model's skeleton (nodes, types, attributes, small tensors) and our
    own check of what the skeleton leaves out: each large tensor holds the bytes its shape needs.

    Checking the skeleton avoids serializing the weights; only a skeleton too large to
    serialize (huge Constant nodes) is checked through the file's path instead.
    """
    skeleton = model_skeleton(model)
    subject = os.fspath(path) if _skeleton_size_bound(skeleton) > _INLINE_LIMIT_BYTES else skeleton
    try:
        onnx.checker.check_model(subject)
    except onnx.checker.ValidationError as err:
        raise ModelLoadError(
            f"{path}: fails the ONNX checker ({_checker_detail(err)}); "
            "re-export the model or repair the graph."
        ) from err
    except UnicodeDecodeError as err:  # a string field (name, op type, doc) of invalid UTF-8
        raise ModelLoadError(
            f"{path}: holds a name or text that is not valid UTF-8 ({err.reason} at byte "
            f"{err.start}); the file is damaged or not written by an ONNX exporter."
        ) from err
    for tensor in model.graph.initializer:
        problem = _tensor_size_problem(tensor)
        if problem:
            raise ModelLoadError(f"{path}: {problem}; re-export the model.")


def _tensor_size_problem(tensor: onnx.TensorProto) -> str | None:
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


def _checker_detail(err: Exception) -> str:
    """The checker's message on one line: its dumps of nodes span several short lines."""
    detail = " ".join(str(err).split()).rstrip(".")
    if len(detail) > _CHECKER_DETAIL_MAX_CHARS:
        return detail[: _CHECKER_DETAIL_MAX_CHARS - 3] + "..."
    return detail


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold weights: in the graph, its subgraphs and local functions."""
    yield from model.graph.initializer
    yield from _tensors_beside_initializers(model)


def _tensors_beside_initializers(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """:func:`_all_tensors` but the main graph's initializers."""
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
    return initializers + sum(_tensor_size(t) for t in _tensors_beside_initializers(model))


def _initializer_size(tensor: onnx.TensorProto) -> int:
    itemsize = _FIXED_ITEMSIZE.get(tensor.data_type)
    if itemsize is None or not (tensor.HasField("raw_data") or mapped_location(tensor)):
        return _tensor_size(tensor)
    return math.prod(tensor.dims) * itemsize


def _skeleton_size_bound(skeleton: onnx.ModelProto) -> int:
    """Upper bound of the tensor bytes of a :func:`model_skeleton`, cheaper than
    :func:`_estimated_size`: its initializers have at most ``SMALL_TENSOR_ELEMENTS`` elements
    of at most 16 bytes (strings aside), so only node attributes and sparse tensors are
    measured one by one."""
    initializers = skeleton.graph.initializer
    strings = [t for t in initializers if t.data_type == onnx.TensorProto.STRING]
    bound = len(initializers) * SMALL_TENSOR_ELEMENTS * 16
    bound += sum(_tensor_size(tensor) for tensor in strings)
    return bound + sum(_tensor_size(tensor) for tensor in _tensors_beside_initializers(skeleton))


def _tensor_size(tensor: onnx.TensorProto) -> int:
    typed = sum(len(getattr(tensor, field)) * n for field, n in _TYPED_FIELD_MAX_BYTES.items())
    return len(tensor.raw_data) + typed + sum(len(text) for text in tensor.string_data)


def check_output_path(path: str | os.PathLike) -> None:
    """Raise :class:`ModelSaveError` now if ``path`` cannot be written later (a directory, or
    a missing folder): so long work is not wasted on an unwritable output."""
    path = Path(path)
    if path.is_dir():
        raise ModelSaveError(
            f"{path}: is a directory; give a file path such as {path / 'model.onnx'}."
        )
    if not path.parent.is_dir():
        raise ModelSaveError(
            f"{path}: the folder {path.parent} does not exist; create it first or choose "
            "another output path."
        )


def _refuse_external_references(model: onnx.ModelProto, path: Path) -> None:
    """A tensor still pointing at a data file would point at the wrong folder once saved
    (a tensor :func:`load_model` left in its data file is copied from there)."""
    if any(
        uses_external_data(tensor) and mapped_location(tensor) is None
        for tensor in _all_tensors(model)
    ):
        raise ModelSaveError(
            f"{path}: the model refers to external data that is not in memory; "
            "load it with repvgg_onnx.load_model before saving."
        )


def copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` but its main graph's initializers, field by field (a whole copy
    would hold every weight a second time: protobuf frees a message's bytes only with it)."""
    copy = onnx.ModelProto()
    _copy_fields(model, copy, skip="graph")
    _copy_fields(model.graph, copy.graph, skip="initializer")
    return copy


def _copy_fields(source, target, skip: str) -> None:
    """Copy every set field of the message ``source`` but ``skip`` into ``target``."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        current = getattr(target, field.name)
        if hasattr(current, "extend"):  # a repeated field
            current.extend(value)
        elif hasattr(current, "CopyFrom"):  # a message
            current.CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _write_tensor_data(
    data_file: BinaryIO, *, source: onnx.ModelProto, copy: onnx.ModelProto, location: str
) -> None:
    """Give ``copy`` the initializers of ``source``, one at a time, each of at least 1 KiB
    pointing at its bytes appended to ``data_file``; then move the bytes of ``copy``'s other
    tensors (Constant nodes, subgraphs, functions) there too."""
    for tensor in source.graph.initializer:
        standalone = onnx.TensorProto()  # its own memory, freed once appended without data
        standalone.CopyFrom(tensor)
        _move_tensor_data(standalone, data_file, location)
        copy.graph.initializer.append(standalone)
        del standalone
    for tensor in _tensors_beside_initializers(copy):
        _move_tensor_data(tensor, data_file, location)


def _move_tensor_data(tensor: onnx.TensorProto, data_file: BinaryIO, location: str) -> None:
    """Append the tensor's bytes (its ``raw_data`` if at least 1 KiB, or the bytes it was left
    with in its data file) to ``data_file`` and point it there."""
    offset = data_file.tell()
    if mapped_location(tensor) is not None:  # copied in pieces: none of it stays in memory
        for piece in mapped_pieces(tensor, _COPY_CHUNK_BYTES):
            data_file.write(piece)
        size = data_file.tell() - offset
    else:
        raw = tensor.raw_data  # a copy: read once
        size = len(raw)
        if size < _MIN_EXTERNAL_TENSOR_BYTES:
            return
        data_file.write(raw)
        del raw
        tensor.ClearField("raw_data")
    point_at(tensor, location, offset, size)


def _write_model(file: BinaryIO, *, model: onnx.ModelProto, path: Path) -> None:
    try:
        content = model.SerializeToString()
    except EncodeError as err:
        raise ModelSaveError(
            f"{path}: the model does not fit in one protobuf file (the limit is 2 GB); "
            "save it with external data."
        ) from err
    file.write(content)


def _write_atomically(
    target: Path, write: _Writer, companions: Sequence[tuple[str, _Writer]] = ()
) -> None:
    """Write ``target`` and its new ``companions`` (fresh names in its folder, never existing
    files), then make them visible: each companion under its name, the folder fsynced, then
    ``target`` replaced at once with ``os.replace`` and the folder fsynced again.

    Every file is written unnamed where the system allows it (``O_TMPFILE``), else as a hidden
    sibling named after our pid (see :func:`_open_temp`); stale temporaries of ours in the
    folder are removed first. A named model file exists only between ``os.link`` and
    ``os.replace``, a few microseconds.

    Invariant: if this raises (even ``KeyboardInterrupt``) before ``target`` is replaced,
    ``target`` keeps its previous content and no file of this call remains; once ``target``
    is replaced, the companions it names stay.
    """
    folder = target.parent
    _remove_stale_temps(folder)
    open_files: list[_OpenTemp] = []
    published: list[Path] = []
    try:
        for name, writer in [*companions, (target.name, write)]:
            open_files.append(_open_temp(folder, name))
            with os.fdopen(open_files[-1].fd, "wb", closefd=False) as file:
                writer(file)
            os.fsync(open_files[-1].fd)
        for temp, (name, _) in zip(open_files[:-1], companions, strict=True):
            _publish_fresh(temp, folder / name)
            published.append(folder / name)
        if companions:
            _fsync_folder(folder)
        model = open_files[-1]
        if model.path is None:
            temp_path = folder / _temp_name(target.name)
            _link_unnamed(model.fd, temp_path)
            model.path = temp_path
        os.replace(model.path, target)
    except BaseException:
        replaced = len(open_files) > len(companions) and _was_renamed(open_files[-1])
        for path in [] if replaced else published:
            with contextlib.suppress(OSError):
                path.unlink()
        for temp in open_files:
            if temp.path is not None and not replaced:
                with contextlib.suppress(OSError):
                    temp.path.unlink()
        raise
    finally:
        for temp in open_files:
            with contextlib.suppress(OSError):
                os.close(temp.fd)
    _fsync_folder(folder)


@dataclass
class _OpenTemp:
    """A file being written: its descriptor and its temporary path (``None``: it has no name)."""

    fd: int
    path: Path | None


def _open_temp(folder: Path, final_name: str) -> _OpenTemp:
    """A new, empty file in ``folder`` for writing, with mode ``0o666`` less the umask.

    On Linux it has no name (``O_TMPFILE``): a killed process leaves nothing behind. Where the
    system or filesystem has no ``O_TMPFILE`` it is ``.<name>.repvgg-onnx.<pid>.<random>.tmp``,
    created with ``O_EXCL`` (never another file), which :func:`_remove_stale_temps` removes
    once our process is gone.
    """
    if hasattr(os, "O_TMPFILE") and os.path.isdir(_PROC_FD):
        try:
            return _OpenTemp(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666), None)
        except OSError as err:
            if err.errno not in _NO_TMPFILE_ERRNOS:
                raise
    path = folder / _temp_name(final_name)
    return _OpenTemp(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path)


def _link_unnamed(fd: int, path: Path) -> None:
    """Give the unnamed (``O_TMPFILE``) file ``fd`` the name ``path``; fails if it exists."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        # With a dir_fd, os.link calls linkat(AT_SYMLINK_FOLLOW), which links the file the
        # /proc entry names; without one it calls link(2), which fails on the /proc symlink.
        os.link(f"{_PROC_FD}/{fd}", path.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _publish_fresh(temp: _OpenTemp, path: Path) -> None:
    """Give a written companion its final name ``path``, which must not exist yet."""
    if temp.path is None:
        _link_unnamed(temp.fd, path)
        return
    if os.path.lexists(path):  # the name is fresh; this only guards against the impossible
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    os.rename(temp.path, path)
    temp.path = None


def _was_renamed(temp: _OpenTemp) -> bool:
    """Whether ``os.replace`` consumed the model's temporary name: ``target`` is new."""
    return temp.path is not None and not os.path.lexists(temp.path)


def _fsync_folder(folder: Path) -> None:
    """Make the folder's new entries durable (a folder cannot be opened on Windows)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temp_name(final_name: str) -> str:
    # The name is cut so that the temporary's name stays under the 255-byte limit.
    return f".{final_name[:_TEMP_NAME_CHARS]}.repvgg-onnx.{os.getpid()}.{secrets.token_hex(8)}.tmp"


def _fresh_data_name(target: Path) -> str:
    """A data file name for ``target`` that no file in its folder has."""
    while True:
        name = f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.data"
        if not os.path.lexists(target.parent / name):
            return name


def _remove_stale_temps(folder: Path) -> None:
    """Remove the temporaries of our naming in ``folder`` whose writer (the pid in the name) is
    no longer running: what a killed save left. Any other file is left alone."""
    for entry in _folder_entries(folder):
        match = _TEMP_PATTERN.fullmatch(entry.name)
        if match and not _writer_alive(int(match[1])) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _our_data_files(target: Path) -> dict[str, int]:
    """Data files of our naming for ``target`` in its folder, each with its writer's pid."""
    pattern = re.compile(re.escape(target.name) + r"\.([0-9]+)\.[0-9a-f]{8}\.data")
    return {
        entry.name: int(match[1])
        for entry in _folder_entries(target.parent)
        if (match := pattern.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False)
    }


def _data_files_named_by(target: Path) -> set[str]:
    """Our data files for ``target`` that the file now at ``target`` names: what a save of
    ``target`` supersedes. Read before the save replaces it."""
    ours = _our_data_files(target)
    return _names_in_file(target, ours) if ours else set()


def _remove_unused_data_files(target: Path, superseded: set[str]) -> None:
    """After ``target`` was replaced: remove our data files for it that no model needs, i.e.
    those the previous ``target`` named (``superseded``) and those a killed save left (their
    writer is gone), except any that another ``.onnx`` file in the folder names (a renamed or
    copied model). The data file just written is neither: it did not exist when
    ``superseded`` was read, and its writer (we) runs. Failures are ignored: the model is
    saved, and a file left now is removed by a later save."""
    unused = {
        name
        for name, pid in _our_data_files(target).items()
        if name in superseded or not _writer_alive(pid)
    }
    if unused:
        unused -= _names_in_other_models(target, unused)
    for name in unused:
        with contextlib.suppress(OSError):
            (target.parent / name).unlink()


def _names_in_other_models(target: Path, names: set[str]) -> set[str]:
    """Which of ``names`` occur in a ``.onnx`` file of ``target``'s folder other than it."""
    found: set[str] = set()
    for entry in _folder_entries(target.parent):
        if entry.name != target.name and entry.name.lower().endswith(".onnx"):
            with contextlib.suppress(OSError):
                if entry.is_file():
                    found |= _names_in_file(Path(entry.path), names - found)
    return found


def _names_in_file(path: Path, names: Collection[str]) -> set[str]:
    """Which of ``names`` occur in the bytes of the file at ``path`` (an external data location
    is stored verbatim in the model); read in chunks, so a large model costs no memory."""
    wanted = {name: name.encode() for name in names}
    found: set[str] = set()
    overlap = max((len(encoded) for encoded in wanted.values()), default=1) - 1
    tail = b""
    with contextlib.suppress(OSError), path.open("rb") as file:
        while wanted.keys() - found and (chunk := file.read(_SCAN_CHUNK_BYTES)):
            window = tail + chunk
            found |= {name for name, encoded in wanted.items() if encoded in window}
            tail = window[-overlap:] if overlap else b""
    return found


def _folder_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be writing; when we cannot tell, it may."""
    if os.name != "posix" or pid <= 0:  # on Windows, os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True
