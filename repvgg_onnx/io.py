"""Reading and writing ONNX models: external data, path safety, atomic writes, size limits.

Invariants:

- ``load_model`` only reads: it returns a checked model whose tensors all hold their data in
  memory, and refuses external data that points outside the model's folder before reading it.
- ``save_model`` replaces the output all at once: a failure leaves the previous file untouched
  and no temporary file behind. Weights go to ``<output name>.data`` when the model would not
  fit in one protobuf (2 GB) or when asked to.

Every refusal is a ``ModelLoadError`` or ``ModelSaveError`` whose message is one sentence that
names the path, says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import set_external_data, uses_external_data

from repvgg_onnx.errors import ModelLoadError, ModelSaveError
from repvgg_onnx.skeleton import model_skeleton

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

#: Bytes per element of the fixed-width, whole-byte tensor types (sub-byte and string types are
#: left to onnxruntime).
_FIXED_ITEMSIZE = {
    data_type: onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    for data_type in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT64,
        onnx.TensorProto.BOOL,
    )
}

_Writer = Callable[[BinaryIO], None]


@dataclass(frozen=True)
class _ExternalRef:
    """Where a tensor's external bytes live: a regular file inside the model's folder."""

    file: Path
    offset: int
    length: int


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read, validate and return the model at ``path`` with all external data in memory.

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
    for tensor, ref in refs:
        _load_tensor_data(tensor, ref)
    _run_checker(model, model_path)
    return model


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
    """Write ``model`` to ``path`` atomically; ``model`` itself is never changed.

    ``external_data=None`` stores weights in ``<path name>.data`` only when the model would
    not fit in one protobuf; ``True`` always does, ``False`` never does. All files are written
    to temporary siblings, fsynced, then moved into place with ``os.replace`` (the data file
    first). If anything fails, ``path`` keeps its previous content and no temporary file
    remains. Raises ``ModelSaveError`` when the output cannot be written.
    """
    target = Path(path)
    check_output_path(target)
    _refuse_external_references(model, target)
    if external_data is None:
        external_data = needs_external_data(model)
    if external_data:
        files = _external_data_files(model, target)
    else:
        files = [(target, partial(_write_model, model=model, path=target))]
    try:
        _write_atomically(files)
    except OSError as err:
        raise ModelSaveError(
            f"{target}: could not write the model ({err.strerror or err}); "
            "check free space and permissions of its folder."
        ) from err


def save_text(text: str, path: str | os.PathLike) -> None:
    """Write a report atomically (UTF-8), with the same guarantees as :func:`save_model`."""
    target = Path(path)
    check_output_path(target)
    try:
        _write_atomically([(target, lambda file: file.write(text.encode("utf-8")))])
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


def _run_checker(model: onnx.ModelProto, path: Path) -> None:
    """``onnx.checker`` on the model's skeleton (nodes, types, attributes, small tensors) and our
    own check of what the skeleton leaves out: each large tensor holds the bytes its shape needs.

    Checking the skeleton avoids serializing the weights; only a skeleton too large to
    serialize (huge Constant nodes) is checked through the file's path instead.
    """
    skeleton = model_skeleton(model)
    subject = os.fspath(path) if _estimated_size(skeleton) > _INLINE_LIMIT_BYTES else skeleton
    try:
        onnx.checker.check_model(subject)
    except onnx.checker.ValidationError as err:
        raise ModelLoadError(
            f"{path}: fails the ONNX checker ({_checker_detail(err)}); "
            "re-export the model or repair the graph."
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
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for tensor in [*sparse, *attribute.sparse_tensors]:
            yield from (tensor.values, tensor.indices)
        graphs = [attribute.g] if attribute.HasField("g") else []
        for graph in [*graphs, *attribute.graphs]:
            yield from _graph_tensors(graph)


def _estimated_size(model: onnx.ModelProto) -> int:
    """Upper bound of the bytes the model's tensor data takes when serialized."""
    return sum(_tensor_size(tensor) for tensor in _all_tensors(model))


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
    """A tensor still pointing at a data file would point at the wrong folder once saved."""
    if any(uses_external_data(tensor) for tensor in _all_tensors(model)):
        raise ModelSaveError(
            f"{path}: the model refers to external data that is not in memory; "
            "load it with repvgg_onnx.io.load_model before saving."
        )


def _external_data_files(model: onnx.ModelProto, path: Path) -> list[tuple[Path, _Writer]]:
    """The data file and the model file to write, in that order, for a copy of ``model``."""
    data_path = path.with_name(path.name + ".data")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return [
        (data_path, partial(_move_tensor_data, model=copy, location=data_path.name)),
        (path, partial(_write_model, model=copy, path=path)),
    ]


def _move_tensor_data(data_file: BinaryIO, *, model: onnx.ModelProto, location: str) -> None:
    """Append each tensor's ``raw_data`` of at least 1 KiB to ``data_file``; point it there."""
    for tensor in _all_tensors(model):
        size = len(tensor.raw_data)
        if size < _MIN_EXTERNAL_TENSOR_BYTES:
            continue
        offset = data_file.tell()
        data_file.write(tensor.raw_data)
        set_external_data(tensor, location, offset, size)
        tensor.ClearField("raw_data")


def _write_model(file: BinaryIO, *, model: onnx.ModelProto, path: Path) -> None:
    try:
        content = model.SerializeToString()
    except EncodeError as err:
        raise ModelSaveError(
            f"{path}: the model does not fit in one protobuf file (the limit is 2 GB); "
            "save it with external data."
        ) from err
    file.write(content)


def _write_atomically(files: Sequence[tuple[Path, _Writer]]) -> None:
    """Write each file to a temporary sibling, then ``os.replace`` each onto its target in order.

    Invariant: if this raises (even ``KeyboardInterrupt``), no temporary file remains and every
    target not yet replaced keeps its previous content.
    """
    temps: list[Path] = []
    try:
        for target, write in files:
            temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
            # O_EXCL: never clobber a file we did not create; 0o666 lets the umask decide.
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temps.append(temp)
            with os.fdopen(descriptor, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
        for temp, (target, _) in zip(temps, files, strict=True):
            os.replace(temp, target)
    except BaseException:
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        raise
