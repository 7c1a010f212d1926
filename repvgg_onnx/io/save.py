"""Saving a model: atomically, with its weights in a data file when they do not fit.

``save_model`` replaces the output all at once (:mod:`.atomic_files`). Weights go to a data
file of a fresh name, ``<output name>.<pid>.<random>.data``, when the model would not fit in
one protobuf (2 GB) or when asked to; the output and the data file it names are a consistent
pair at every moment, and the data file a save supersedes is removed once the output is
replaced. Every refusal is a ``ModelSaveError`` whose message is one sentence that names the
path, says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import EncodeError
from onnx.external_data_helper import uses_external_data

from repvgg_onnx.errors import ModelSaveError
from repvgg_onnx.io.atomic_files import (
    StagedFiles,
    check_output_path,
    folder_entries,
    writer_alive,
)
from repvgg_onnx.io.load import point_at, self_contained
from repvgg_onnx.io.mapped_weights import (
    mapped_location,
    mapped_pieces,
)
from repvgg_onnx.io.model_tensors import (
    all_tensors,
    needs_external_data,
    tensors_beside_initializers,
)

# Smaller tensors stay inside the .onnx when writing external data (onnx's own default).
_MIN_EXTERNAL_TENSOR_BYTES = 1024


_SCAN_CHUNK_BYTES = 16 * 2**20


_COPY_CHUNK_BYTES = 16 * 2**20


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    check: Callable[[onnx.ModelProto], None] | None = None,
) -> onnx.ModelProto:
    """Write ``model`` to ``path`` atomically; ``model`` itself is never changed. Returns the
    model as written (see :class:`StagedModel`).

    ``check`` is called with that model once every byte is written and synced and before
    ``path`` is replaced: it checks the very bytes that are about to be published, and if it
    raises, ``path`` keeps its previous content, no file of this save remains and the error
    propagates.
    """
    with StagedModel(model, path, external_data=external_data) as staged:
        if check is not None:
            check(staged.model)
        staged.publish()
    return staged.model


class StagedModel:
    """``model`` written for ``path`` and synced, not yet published; a context manager that
    removes what it wrote unless :meth:`publish` ran. Holds no reference to ``model``: the
    caller may free it (and a large model is then held once, in its file) before publishing.

    ``external_data=None`` stores weights in a data file only when the model would not fit in
    one protobuf; ``True`` always does, ``False`` never does. The data file gets a name never
    used before, ``<path name>.<pid>.<random>.data``: it is written and fsynced, then ``path``
    is replaced all at once and the folder fsynced, so ``path`` and the data file it names are
    a consistent pair at every moment. Only then are our data files for ``path`` that no model
    needs any more removed (see :func:`_remove_unused_data_files`); a data file of any other
    name, such as an exporter's ``model.onnx.data``, is never touched.

    ``self.model`` is the model as written: with a data file, its large weights read from that
    file (absolute locations, as ``load_model(..., map_external_data=True)`` gives them), else
    the self-contained model that was serialized.

    If anything fails (even ``KeyboardInterrupt``) before :meth:`publish` returns, ``path``
    keeps its previous content and no file of this save remains. Raises ``ModelSaveError``
    when the output cannot be written.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        path: str | os.PathLike,
        *,
        external_data: bool | None = None,
    ) -> None:
        self._target = target = Path(path)
        check_output_path(target)
        _refuse_external_references(model, target)
        if external_data is None:
            external_data = needs_external_data(model)
        with _save_errors(target):
            self._superseded = _data_files_named_by(target)
            if external_data:
                data_name = _fresh_data_name(target)
                written = copy_without_initializers(model)
                write_data = partial(
                    _write_tensor_data, source=model, copy=written, location=data_name
                )
                write_model = partial(_write_model, model=written, path=target)
                self._files = StagedFiles(target, write_model, [(data_name, write_data)])
                with self._files.discarded_on_error():
                    _map_data_file(written, target.parent)
            else:
                written = self_contained(model)
                self._files = StagedFiles(target, partial(_write_model, model=written, path=target))
        self.model = written

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._files.__exit__(kind, error, trace)

    def publish(self) -> None:
        """Replace ``path`` with the model written, then remove the data files it superseded."""
        with _save_errors(self._target):
            self._files.publish()
        _remove_unused_data_files(self._target, self._superseded)


@contextlib.contextmanager
def _save_errors(target: Path) -> Iterator[None]:
    """An ``OSError`` while writing ``target`` as a one-sentence :class:`ModelSaveError`."""
    try:
        yield
    except OSError as err:
        raise ModelSaveError(
            f"{target}: could not write the model ({err.strerror or err}); "
            "check free space and permissions of its folder."
        ) from err


def _map_data_file(model: onnx.ModelProto, folder: Path) -> None:
    """Point every tensor of ``model`` stored in a data file of ``folder`` at it by absolute
    path: the form in which the passes, the sessions and a later save read weights left in
    their file (:mod:`repvgg_onnx.io.mapped_weights`)."""
    folder = folder.resolve()
    for tensor in all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL or mapped_location(tensor):
            continue
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = os.fspath(folder / entry.value)


def _refuse_external_references(model: onnx.ModelProto, path: Path) -> None:
    """A tensor still pointing at a data file would point at the wrong folder once saved
    (a tensor :func:`load_model` left in its data file is copied from there)."""
    if any(
        uses_external_data(tensor) and mapped_location(tensor) is None
        for tensor in all_tensors(model)
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
    data_file: BinaryIO,
    *,
    source: onnx.ModelProto,
    copy: onnx.ModelProto,
    location: str,
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
    for tensor in tensors_beside_initializers(copy):
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


def _fresh_data_name(target: Path) -> str:
    """A data file name for ``target`` that no file in its folder has."""
    while True:
        name = f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.data"
        if not os.path.lexists(target.parent / name):
            return name


def _our_data_files(target: Path) -> dict[str, int]:
    """Data files of our naming for ``target`` in its folder, each with its writer's pid."""
    pattern = re.compile(re.escape(target.name) + r"\.([0-9]+)\.[0-9a-f]{8}\.data")
    return {
        entry.name: int(match[1])
        for entry in folder_entries(target.parent)
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
        if name in superseded or not writer_alive(pid)
    }
    if unused:
        unused -= _names_in_other_models(target, unused)
    for name in unused:
        with contextlib.suppress(OSError):
            (target.parent / name).unlink()


def _names_in_other_models(target: Path, names: set[str]) -> set[str]:
    """Which of ``names`` occur in a ``.onnx`` file of ``target``'s folder other than it."""
    found: set[str] = set()
    for entry in folder_entries(target.parent):
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
