"""onnxruntime sessions for verification: CPU, graph optimizations off, quiet, any size.

The reference must not be rewritten by onnxruntime's own fusions, so optimizations are off;
onnxruntime's log lines would spill onto stderr, so only errors it raises are reported, as one
sentence naming which model (``role``) failed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from repvgg_onnx import io
from repvgg_onnx.errors import ModelRunError, first_line
from repvgg_onnx.io.mapped_weights import mapped_location
from repvgg_onnx.verification.isolation import note

if TYPE_CHECKING:  # onnxruntime is imported when a session is made: fuse --no-verify skips it
    import onnxruntime as ort


def create_session(model: onnx.ModelProto, role: str) -> ort.InferenceSession:
    """A CPU session with graph optimizations off; ``role`` names the model in errors.

    Weights the loader left in their data file are read by onnxruntime from that file itself
    (:func:`_session_on_data_files`); otherwise a model too large for one protobuf goes through
    a temporary file with external data.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # errors come back as exceptions, never as log lines
    note(role)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    options.enable_mem_pattern = False  # halves session creation on graphs of 10^4 nodes
    try:
        if any(mapped_location(tensor) for tensor in model.graph.initializer):
            session = _session_on_data_files(model, options)
            if session is not None:
                return session
        if not io.needs_external_data(model):
            content = io.self_contained(model).SerializeToString()
            return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        with tempfile.TemporaryDirectory(prefix="repvgg-onnx-") as folder:
            path = Path(folder) / f"{role}.onnx"
            io.save_model(model, path, external_data=True)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types
        raise ModelRunError(
            f"onnxruntime cannot load the {role} model ({first_line(error)}).",
            role,
            hint="--no-verify to skip verification" if role == "original" else None,
        ) from error


def _session_on_data_files(model: onnx.ModelProto, options) -> ort.InferenceSession | None:
    """A session whose weights left in their data files are read from those very files, each
    hard-linked into a temporary folder beside a model naming them by relative path (what
    onnxruntime accepts): onnxruntime maps them, so no weight is copied, in memory or on disk.
    The links go with the folder; the files themselves are only read.

    ``None`` if a data file cannot be linked there (another file system, no permission), or if
    the rest of the model is still too large for one protobuf.
    """
    import onnxruntime as ort

    copy = io.copy_without_initializers(model)
    links: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="repvgg-onnx-") as folder:
        for tensor in model.graph.initializer:
            copy.graph.initializer.append(tensor)
            found = mapped_location(tensor)
            if found is None:
                continue
            path, offset, length = found
            if path not in links:
                links[path] = f"weights{len(links)}.data"
                try:
                    os.link(path, Path(folder) / links[path])
                except OSError:
                    return None
            io.point_at(copy.graph.initializer[-1], links[path], offset, length)
        if io.needs_external_data(copy):
            return None
        path = Path(folder) / "model.onnx"
        path.write_bytes(copy.SerializeToString())
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    role: str,
    reference_ran: bool = False,
) -> dict[str, np.ndarray]:
    """Every output of ``session`` on ``feeds``. ``reference_ran``: the other model already
    ran on the same inputs, so a failure here is this model's, not the inputs'."""
    names = [output.name for output in session.get_outputs()]
    note(role)
    try:
        values = session.run(names, dict(feeds))
    except Exception as error:  # onnxruntime raises several unrelated types
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        if reference_ran:
            raise ModelRunError(
                f"onnxruntime cannot run the {role} model on the inputs the other model ran "
                f"on ({shapes}): {first_line(error)}.",
                role,
            ) from error
        raise ModelRunError(
            f"onnxruntime cannot run the {role} model on inputs of shape {shapes} "
            f"({first_line(error)}); give the right sizes.",
            role,
            hint="--input-shape NAME:DIMS",
        ) from error
    return dict(zip(names, values, strict=True))
