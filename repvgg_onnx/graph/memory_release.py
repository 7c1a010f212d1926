"""Give freed memory back to the system, so peak memory is what is alive, not what was.

glibc keeps freed heap memory in the process (its mmap threshold grows after large frees, so
later large blocks come from the heap), and a fuse frees a lot: the graph, the branch weights,
the original model. Before the next large allocation (the fused model's export, its
serialization on save) :func:`return_free_memory` asks glibc to unmap what is free.
Elsewhere (musl, macOS, Windows) it does nothing. A collection costs time in proportion to
every live object of the process, so it is done only for models whose weights are large
enough for the memory to matter (:func:`worth_returning`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator

import onnx

from repvgg_onnx.io.stripped_model import tensor_census

#: Models with fewer weight bytes than this do not collect: the memory is small, the time not.
LARGE_MODEL_BYTES = 32 * 2**20


@functools.cache
def _malloc_trim():
    if not hasattr(ctypes, "CDLL"):  # pragma: no cover - every CPython build has it
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def return_free_memory() -> bool:
    """Collect garbage (cycles, such as the nodes a pass dropped from an onnx-graphsurgeon
    graph), then return free heap memory to the system; whether glibc could."""
    gc.collect()
    return trim_free_heap()


def trim_free_heap() -> bool:
    """Return free heap memory to the system (no collection); whether glibc could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Automatic garbage collection is off within the block, as it was before after it.

    Importing and rewriting a graph makes objects by the hundred thousand, and each automatic
    collection of the oldest generation walks all of them: on a graph of 32,000 nodes that is a
    quarter of the time. What becomes garbage meanwhile is collected by the caller
    (:func:`return_free_memory`) or by the next automatic collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def worth_returning(model: onnx.ModelProto) -> bool:
    """Whether ``model``'s initializers hold at least :data:`LARGE_MODEL_BYTES` (counted from
    shapes, assuming 4 bytes an element, so nothing is serialized)."""
    return 4 * tensor_census(model).elements >= LARGE_MODEL_BYTES
