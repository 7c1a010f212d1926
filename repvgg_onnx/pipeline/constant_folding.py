"""Constant subgraphs evaluated by onnxruntime, for constant folding.

The passes know nothing about onnxruntime: :func:`fold_constants_on_onnxruntime` hands
:func:`~repvgg_onnx.passes.fold_constants.fold_constants` the runtime users deploy on.

The constant subgraph becomes one small model (its nodes, the constants they read as
initializers, every node output as a graph output) run by one session with graph
optimizations off; only if that fails is it run node by node. The session runs in a forked
child, as verification does: onnxruntime never loads in the tool's own process, so
verification can still fork, and a crash of onnxruntime on an odd constant costs that
constant's folding (the reference's checked ops still fold), never the run. Within
:func:`onnxruntime_worker` (the pipeline's rounds) one child serves every call, so
onnxruntime is imported once per fuse (~60 ms on this 2-vCPU machine; a session over 200
nodes takes ~4 ms); outside it each call forks its own child. A process that has already
imported onnxruntime (a test, a notebook) cannot fork safely and evaluates in itself.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, NoReturn

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.errors import ModelRunError
from repvgg_onnx.passes.constant_evaluation import evaluate_in_order
from repvgg_onnx.passes.contracts import same_contract_as
from repvgg_onnx.passes.fold_constants import fold_constants
from repvgg_onnx.passes.pass_result import PassResult
from repvgg_onnx.verification.isolation import can_isolate, isolated
from repvgg_onnx.verification.sessions import create_session


@same_contract_as(fold_constants)
def fold_constants_on_onnxruntime(graph: gs.Graph) -> PassResult:
    """:func:`~repvgg_onnx.passes.fold_constants.fold_constants` with onnxruntime's values."""
    return fold_constants(graph, runtime=onnxruntime_values)


def onnxruntime_values(
    nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray], opset: int
) -> Callable[[], dict[str, np.ndarray]]:
    """A callable returning the outputs of ``nodes`` onnxruntime computes from ``values``, by
    name (none if it crashes). Within :func:`onnxruntime_worker` the worker computes them
    while the caller goes on; the callable waits for its reply."""
    if _worker is not None:
        return _worker.submit(nodes, values, opset)
    if not can_isolate():
        done = evaluate_in_order(run_on_onnxruntime, nodes, values, opset)
    else:
        try:
            done = isolated(evaluate_in_order, run_on_onnxruntime, nodes, values, opset)
        except ModelRunError:  # the child died: onnxruntime computes none of them
            done = {}
    return lambda: done


def run_on_onnxruntime(model: onnx.ModelProto) -> list[np.ndarray]:
    """``model``'s outputs by a CPU session with graph optimizations off."""
    return create_session(model, "constant subgraph").run(None, {})


@contextlib.contextmanager
def onnxruntime_worker() -> Iterator[None]:
    """Within the block, constant subgraphs go to one forked child that imports onnxruntime
    once (started on first use, ended with the block)."""
    global _worker
    outer, _worker = _worker, _Worker()
    try:
        yield
    finally:
        _worker.close()
        _worker = outer


class _Worker:
    """A forked child evaluating constant subgraphs on onnxruntime; requests and replies are
    pickles framed by their length. A child that dies answers nothing to the request it died
    on, and the next request starts another."""

    def __init__(self) -> None:
        self._child: tuple[int, BinaryIO, BinaryIO] | None = None

    def submit(
        self, nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray], opset: int
    ) -> Callable[[], dict[str, np.ndarray]]:
        """Send the request; the callable returned waits for its reply (call it once, before
        the next request)."""
        if self._child is None:
            self._child = _start_child()
        child = self._child
        try:
            _send(child[1], pickle.dumps((list(nodes), values, opset)))
        except OSError:  # the child died
            self.close(kill=True)
            return dict
        return lambda: self._reply(child)

    def _reply(self, child: tuple[int, BinaryIO, BinaryIO]) -> dict[str, np.ndarray]:
        if self._child is not child:  # closed since: no answer
            return {}
        try:
            return pickle.loads(_receive(child[2]))
        except (OSError, EOFError, pickle.UnpicklingError):  # the child died
            self.close(kill=True)
            return {}

    def close(self, kill: bool = False) -> None:
        """End the child: it reads the end of its requests and exits (killed if ``kill``)."""
        if self._child is None:
            return
        pid, requests, replies = self._child
        self._child = None
        if kill:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for channel in (requests, replies):
            with contextlib.suppress(OSError):  # the child is gone: nothing left to flush
                channel.close()
        os.waitpid(pid, 0)


_worker: _Worker | None = None
_LENGTH = struct.Struct("<Q")


def _start_child() -> tuple[int, BinaryIO, BinaryIO]:
    request_end, request_start = os.pipe()
    reply_end, reply_start = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(request_start)
        os.close(reply_end)
        _serve(os.fdopen(request_end, "rb"), os.fdopen(reply_start, "wb"))
    os.close(request_end)
    os.close(reply_start)
    return pid, os.fdopen(request_start, "wb"), os.fdopen(reply_end, "rb")


def _serve(requests: BinaryIO, replies: BinaryIO) -> NoReturn:  # pragma: no cover - child
    """Answer each request with :func:`evaluate_in_order` on onnxruntime, until none come."""
    code = 0
    try:
        while True:
            nodes, values, opset = pickle.loads(_receive(requests))
            _send(
                replies, pickle.dumps(evaluate_in_order(run_on_onnxruntime, nodes, values, opset))
            )
    except EOFError:  # the parent closed its end: done
        pass
    except BaseException:  # an interrupt, a broken pipe: the parent sees the child gone
        code = 70
    finally:
        os._exit(code)


def _send(channel: BinaryIO, payload: bytes) -> None:
    channel.write(_LENGTH.pack(len(payload)) + payload)
    channel.flush()


def _receive(channel: BinaryIO) -> bytes:
    header = channel.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the other end closed")
    (length,) = _LENGTH.unpack(header)
    payload = channel.read(length)
    if len(payload) < length:
        raise EOFError("the other end closed mid-message")
    return payload
