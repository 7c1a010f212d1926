"""Run onnxruntime work in a child process, so that a crash of onnxruntime is an error.

onnxruntime is native code: on some valid models it dies of a signal (an opset-9
BatchNormalization with empty optional outputs segfaults it), which would kill the tool with
no message. :func:`isolated` runs a function in a forked child and returns its result, or
raises the exception it raised; if the child dies, it raises :class:`ModelRunError` naming
the model onnxruntime was working on (children say so with :func:`note`).

Forking is safe only while this process has not imported onnxruntime (its threads do not
survive a fork). The CLI never imports it outside children; a program that did (a test, a
notebook) runs the function in its own process instead, without the crash guard.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from repvgg_onnx.errors import ModelRunError

T = TypeVar("T")

_channel: BinaryIO | None = None  # set in a child: where notes and the outcome go
_HEADER = struct.Struct("<cQ")  # kind (b"n" note, b"p" progress, b"r" result), length


def can_isolate() -> bool:
    """Linux only (macOS frameworks are not fork-safe, Windows has no fork), and only while
    onnxruntime is not loaded here."""
    return sys.platform.startswith("linux") and "onnxruntime" not in sys.modules


def note(role: str) -> None:
    """In a child: onnxruntime is about to work on the ``role`` model (for crash reports)."""
    if _channel is not None:
        _send(_channel, b"n", role.encode())


def isolated(function: Callable[..., T], /, *args, **kwargs) -> T:
    """``function(*args, **kwargs)``, run in a forked child when that is safe.

    A ``progress`` keyword argument (a callable taking one string) is called in this process:
    the child sends each message back as it happens.
    """
    if not can_isolate():
        return function(*args, **kwargs)
    progress = kwargs.get("progress")
    if progress is not None:
        kwargs["progress"] = _relay_progress
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read_end)
        _run_child(os.fdopen(write_end, "wb"), function, args, kwargs)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as channel:
            role, outcome = _receive_all(channel, progress)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    if outcome is None:
        raise _crash_error(status, role)
    ok, value = outcome
    if ok:
        return value
    raise value


def _run_child(channel: BinaryIO, function: Callable, args: tuple, kwargs: dict) -> None:
    global _channel
    _channel = channel
    code = 0
    try:
        try:
            outcome = (True, function(*args, **kwargs))
        except BaseException as error:  # carried to the parent, which raises it
            outcome = (False, error)
        try:
            payload = pickle.dumps(outcome)
        except Exception as error:
            payload = pickle.dumps((False, RuntimeError(f"result not transferable: {error}")))
        _send(channel, b"r", payload)
        channel.flush()
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _relay_progress(message: str) -> None:
    if _channel is not None:
        _send(_channel, b"p", message.encode())


def _send(channel: BinaryIO, kind: bytes, payload: bytes) -> None:
    channel.write(_HEADER.pack(kind, len(payload)) + payload)
    channel.flush()


def _receive_all(
    channel: BinaryIO, progress: Callable[[str], None] | None
) -> tuple[str | None, tuple | None]:
    role, outcome = None, None
    while header := channel.read(_HEADER.size):
        if len(header) < _HEADER.size:
            break
        kind, length = _HEADER.unpack(header)
        payload = channel.read(length)
        if len(payload) < length:
            break
        if kind == b"n":
            role = payload.decode()
        elif kind == b"p":
            if progress is not None:
                progress(payload.decode())
        else:
            outcome = pickle.loads(payload)
    return role, outcome


def _crash_error(status: int, role: str | None) -> ModelRunError:
    if os.WIFSIGNALED(status):
        how = f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    else:
        how = f"exited with code {os.WEXITSTATUS(status)}"
    what = f"the {role} model" if role else "the models"
    return ModelRunError(
        f"onnxruntime {how} running {what}; it cannot run this model, so the two cannot be "
        "compared.",
        role or "original",
        hint="--no-verify to skip verification" if role in (None, "original") else None,
    )
