"""Files replaced all at once: a failure, or a process killed at any moment, leaves the
previous file untouched and no temporary file behind.

On Linux the file is written unnamed (``O_TMPFILE``) and linked in place when complete;
elsewhere it is written to a temporary name that a killed writer leaves behind and the next
save in that folder removes. Every write is fsynced, and so is the folder after the rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from repvgg_onnx.errors import ModelSaveError

#: Where Linux names each open descriptor: linking it gives an unnamed file a name.
_PROC_FD = "/proc/self/fd"


#: Errors of ``open(O_TMPFILE)`` that mean "not supported here" (old kernel, filesystem).
_NO_TMPFILE_ERRNOS = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


#: Our temporaries: ``.<name>.repvgg-onnx.<pid>.<random>.tmp``; the pid tells a killed
#: writer's leftovers from a running writer's work.
_TEMP_PATTERN = re.compile(r"\..*\.repvgg-onnx\.([0-9]+)\.[0-9a-f]{16}\.tmp", re.DOTALL)


_TEMP_NAME_CHARS = 180


_Writer = Callable[[BinaryIO], None]


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
        write_atomically(target, write)
    except OSError as err:
        raise ModelSaveError(
            f"{target}: cannot be written ({err.strerror or err}); check the folder's "
            "permissions and free space."
        ) from err


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


def write_atomically(
    target: Path, write: _Writer, companions: Sequence[tuple[str, _Writer]] = ()
) -> None:
    """Write ``target`` and its new ``companions`` all at once (see :class:`StagedFiles`)."""
    with StagedFiles(target, write, companions) as staged:
        staged.publish()


class StagedFiles:
    """``target`` and its new ``companions`` (fresh names in its folder, never existing files)
    written and synced, waiting to be published; a context manager that discards them unless
    :meth:`publish` ran.

    Every file is written unnamed where the system allows it (``O_TMPFILE``), else as a hidden
    sibling named after our pid (see :func:`_open_temp`); stale temporaries of ours in the
    folder are removed first. Staged, each companion has its name (the folder fsynced), the
    target none yet; :meth:`publish` replaces ``target`` at once with ``os.replace`` and
    fsyncs the folder. A named model file exists only between ``os.link`` and
    ``os.replace``, a few microseconds.

    Invariant: if staging or anything before :meth:`publish` returns raises (even
    ``KeyboardInterrupt``), ``target`` keeps its previous content and no file of this staging
    remains; once ``target`` is replaced, the companions it names stay. The writers are called
    while staging and not kept: whatever they read may be freed before publishing.
    """

    def __init__(
        self, target: Path, write: _Writer, companions: Sequence[tuple[str, _Writer]] = ()
    ) -> None:
        self._target = target
        self._open: list[_OpenTemp] = []
        self._named: list[Path] = []
        self._companions = len(companions)
        self._published = False
        self._closed = False
        folder = target.parent
        _remove_stale_temps(folder)
        with self.discarded_on_error():
            for name, writer in [*companions, (target.name, write)]:
                self._open.append(_open_temp(folder, name))
                with os.fdopen(self._open[-1].fd, "wb", closefd=False) as file:
                    writer(file)
                os.fsync(self._open[-1].fd)
            for temp, (name, _) in zip(self._open[:-1], companions, strict=True):
                _publish_fresh(temp, folder / name)
                self._named.append(folder / name)
            if companions:
                _fsync_folder(folder)

    def __enter__(self) -> StagedFiles:
        return self

    @contextlib.contextmanager
    def discarded_on_error(self) -> Iterator[None]:
        """Within the block, any error (even ``KeyboardInterrupt``) discards the staging:
        for the work a caller does on it before handing it on."""
        try:
            yield
        except BaseException:
            self._discard()
            raise

    def __exit__(self, kind, error, trace) -> None:
        if not self._published:
            self._discard()

    def publish(self) -> None:
        """Replace ``target`` with the staged file, then fsync the folder."""
        folder = self._target.parent
        with self.discarded_on_error():
            model = self._open[-1]
            if model.path is None:
                temp_path = folder / _temp_name(self._target.name)
                _link_unnamed(model.fd, temp_path)
                model.path = temp_path
            os.replace(model.path, self._target)
            self._published = True
        self._close()
        _fsync_folder(folder)

    def _discard(self) -> None:
        """Remove every file of this staging, unless the target was already replaced."""
        replaced = self._published or (
            len(self._open) > self._companions and _was_renamed(self._open[-1])
        )
        self._published = self._published or replaced
        if not replaced:
            for path in self._named:
                with contextlib.suppress(OSError):
                    path.unlink()
            for temp in self._open:
                if temp.path is not None:
                    with contextlib.suppress(OSError):
                        temp.path.unlink()
        self._close()

    def _close(self) -> None:
        """Close every descriptor once (a descriptor closed twice may by then be another
        file's)."""
        if self._closed:
            return
        self._closed = True
        for temp in self._open:
            with contextlib.suppress(OSError):
                os.close(temp.fd)


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


def _remove_stale_temps(folder: Path) -> None:
    """Remove the temporaries of our naming in ``folder`` whose writer (the pid in the name) is
    no longer running: what a killed save left. Any other file is left alone."""
    for entry in folder_entries(folder):
        match = _TEMP_PATTERN.fullmatch(entry.name)
        if match and not writer_alive(int(match[1])) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def folder_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def writer_alive(pid: int) -> bool:
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
