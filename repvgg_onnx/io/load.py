"""Loading a model: checked, its external data kept inside the model's folder.

``load_model`` only reads: it returns a checked model whose tensors all hold their data in
memory, and refuses external data that points outside the model's folder before reading it.
For ``fuse``, it can leave the large weights in their data file instead
(``map_external_data``), where the passes read them through memory maps: a model of more
than 2 GB is then never in memory whole, only its fused kernels are.

Every refusal is a ``ModelLoadError`` whose message is one sentence that names the path,
says what is wrong and what to do.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import uses_external_data

from repvgg_onnx.errors import ModelLoadError
from repvgg_onnx.io import model_tensors
from repvgg_onnx.io.mapped_weights import (
    RAW_DTYPES,
    mapped_location,
    read_mapped_bytes,
)
from repvgg_onnx.io.model_tensors import (
    all_tensors,
    fixed_size,
    skeleton_size_bound,
    tensor_size_problem,
)
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS, model_skeleton
from repvgg_onnx.io.text_fields import text_errors

_CHECKER_DETAIL_MAX_CHARS = 300


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
        for tensor in all_tensors(model)
        if uses_external_data(tensor)
    ]
    mappable = _mappable_initializers(model) if map_external_data else set()
    for tensor, ref in refs:
        if tensor.name in mappable and ref.length == fixed_size(tensor):
            point_at(tensor, str(ref.file), ref.offset, ref.length)  # absolute: see above
        else:
            _load_tensor_data(tensor, ref)
    _run_checker(model, model_path)
    return model


def read_mapped_data(model: onnx.ModelProto) -> None:
    """Give every tensor of ``model`` left in its data file by ``load_model`` its bytes in
    ``raw_data``, as if it had never been external."""
    for tensor in all_tensors(model):
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


def model_file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of the model file plus each distinct external data file it references."""
    model_path = Path(path)
    model = _read_model_proto(model_path)
    data_files = {
        _external_ref(tensor, model_path).file
        for tensor in all_tensors(model)
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
    with text_errors((model, os.fspath(path))):  # a name the skeleton or checker copies
        skeleton = model_skeleton(model)
        subject = (
            os.fspath(path)
            if skeleton_size_bound(skeleton) > model_tensors.INLINE_LIMIT_BYTES
            else skeleton
        )
        try:
            onnx.checker.check_model(subject)
        except onnx.checker.ValidationError as err:
            raise ModelLoadError(
                f"{path}: fails the ONNX checker ({_checker_detail(err)}); "
                "re-export the model or repair the graph."
            ) from err
    for tensor in model.graph.initializer:
        problem = tensor_size_problem(tensor)
        if problem:
            raise ModelLoadError(f"{path}: {problem}; re-export the model.")


def _checker_detail(err: Exception) -> str:
    """The checker's message on one line: its dumps of nodes span several short lines."""
    detail = " ".join(str(err).split()).rstrip(".")
    if len(detail) > _CHECKER_DETAIL_MAX_CHARS:
        return detail[: _CHECKER_DETAIL_MAX_CHARS - 3] + "..."
    return detail
