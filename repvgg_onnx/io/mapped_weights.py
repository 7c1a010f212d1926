"""Weights left in their data file, read through read-only memory maps instead of copies.

A model with more than 2 GB of weights keeps them in an external data file. Loading them into
protobuf and then reading each one (protobuf hands out a copy of ``raw_data``) holds every weight
twice before a single fused kernel exists. Instead, :func:`repvgg_onnx.io.load.load_model`
can leave the large initializers in their file, each pointing at it by an *absolute* ``location``
(in memory only: onnx requires relative locations, so such a model is written only by
:func:`repvgg_onnx.io.save.save_model`, which copies the bytes), and the passes read them
here as read-only views of a memory map of their bytes.

The pages of a map that numpy has read count in the process's resident memory until they are
unmapped, although they are only a cache of the file. :func:`release_mapped_pages` drops them
(``MADV_DONTNEED``: a page read again is faulted in from the page cache, the same bytes), so the
weights read while planning one region do not pile up over the whole model.

Invariant: a view holds exactly the bytes ``offset .. offset + length`` of the file, which the
loader checked exist and are as many as the tensor's shape and type need.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import weakref
from collections.abc import Iterator

import numpy as np
import onnx

#: The whole-byte numeric types whose little-endian bytes numpy reads as they are.
RAW_DTYPES = {
    data_type: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).newbyteorder("<")
    for data_type in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT64,
    )
}

_LIVE_MAPS: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()


def mapped_location(tensor: onnx.TensorProto) -> tuple[str, int, int] | None:
    """``(file, offset, length)`` of a tensor left in its data file by the loader (its location
    is absolute), or ``None`` for any other tensor."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    if not os.path.isabs(location) or "offset" not in entries or "length" not in entries:
        return None
    return location, int(entries["offset"]), int(entries["length"])


def mapped_view(tensor: onnx.TensorProto, dtype: np.dtype) -> np.ndarray | None:
    """The tensor's elements as a read-only view of a memory map of its bytes, or ``None`` if it
    is not a mapped tensor or its length does not fit its shape and ``dtype``."""
    found = mapped_location(tensor)
    shape = tuple(tensor.dims)
    if found is None or found[2] != dtype.itemsize * math.prod(shape):
        return None
    path, offset, length = found
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        with open(path, "rb") as file:
            mapping = mmap.mmap(
                file.fileno(), offset + length - start, access=mmap.ACCESS_READ, offset=start
            )
    except (OSError, ValueError):  # a file system that cannot map: read the bytes instead
        return np.frombuffer(read_mapped_bytes(tensor), dtype=dtype).reshape(shape)
    _LIVE_MAPS.add(mapping)
    view = np.frombuffer(mapping, dtype=dtype, count=math.prod(shape), offset=offset - start)
    return view.reshape(shape)


def release_mapped_pages() -> None:
    """Drop from this process the pages the live maps have read, once they come to more than
    ``RELEASE_AFTER_BYTES`` (one ``madvise`` per map is cheap, but not per region of a model of
    thousands of maps); the views stay valid."""
    global _file_pages_kept
    if not _LIVE_MAPS or not hasattr(mmap, "MADV_DONTNEED"):  # Windows: kept until unmapped
        return
    resident = _resident_file_bytes()
    if resident is not None and resident - _file_pages_kept < RELEASE_AFTER_BYTES:
        return
    for mapping in list(_LIVE_MAPS):
        mapping.madvise(mmap.MADV_DONTNEED)
    _file_pages_kept = _resident_file_bytes() or 0


#: Mapped bytes read before :func:`release_mapped_pages` drops them.
RELEASE_AFTER_BYTES = 64 * 2**20
_file_pages_kept = 0  # file-backed resident bytes after the last release (code, libraries)


def _resident_file_bytes() -> int | None:
    """File-backed resident memory of this process (Linux), where mapped pages are counted."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"RssFile:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def read_mapped_bytes(tensor: onnx.TensorProto) -> bytes:
    """The bytes of a mapped tensor, read from its file (no map: nothing stays resident)."""
    return b"".join(mapped_pieces(tensor, _WHOLE))


def mapped_pieces(tensor: onnx.TensorProto, piece_bytes: int) -> Iterator[bytes]:
    """The bytes of a mapped tensor read from its file in pieces of at most ``piece_bytes``;
    ``OSError`` if the file ends before them."""
    found = mapped_location(tensor)
    if found is None:
        raise ValueError(f"tensor {tensor.name} is not left in a data file")
    path, offset, left = found
    with open(path, "rb") as file:
        file.seek(offset)
        while left:
            piece = file.read(min(left, piece_bytes))
            if not piece:
                raise OSError(f"{path} ended before the bytes of tensor {tensor.name}")
            left -= len(piece)
            yield piece


_WHOLE = sys.maxsize  # a piece size that reads a tensor at once
