"""Golden outputs: one model's run (its input batches and its outputs) saved to an ``.npz``,
so another model can be held to them later without the first one.

The file is a plain ``numpy.savez`` archive, readable with ``numpy.load(path)``:

- ``input/<batch>/<name>``: input ``<name>`` of batch ``<batch>`` (0, 1, …);
- ``output/<batch>/<name>``: output ``<name>`` of the model on that batch;
- ``metadata``: a 0-d string array holding JSON: ``format`` (``repvgg-onnx-outputs``),
  ``format_version`` (1), ``tool_version``, ``model_path``, ``seed``, ``batches``,
  ``input_names`` and ``output_names`` (both in the model's order).

Tensor names may contain ``/``: a key splits at its first two ``/`` only. The file is
written atomically (:func:`repvgg_onnx.io.atomic_files.save_file`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from repvgg_onnx import io
from repvgg_onnx.errors import InputSpecError, first_line
from repvgg_onnx.verification.compare import RunResult
from repvgg_onnx.version import __version__

FORMAT = "repvgg-onnx-outputs"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GoldenOutputs:
    """A saved run and what the file says about it (the model's path, the seed used)."""

    run: RunResult
    model_path: str | None
    seed: int


def save_outputs(
    run: RunResult, path: str | os.PathLike, *, model_path: str | None, seed: int
) -> None:
    """Write ``run`` (every batch's inputs and outputs) and its metadata to ``path``."""
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "model_path": model_path,
        "seed": seed,
        "batches": len(run.inputs),
        "input_names": list(run.inputs[0]),
        "output_names": run.output_names,
    }
    arrays = {"metadata": np.array(json.dumps(metadata))}
    for index, (inputs, outputs) in enumerate(zip(run.inputs, run.outputs, strict=True)):
        arrays |= {f"input/{index}/{name}": value for name, value in inputs.items()}
        arrays |= {f"output/{index}/{name}": value for name, value in outputs.items()}
    io.save_file(lambda file: np.savez(file, **arrays), path)


def load_outputs(path: str | os.PathLike) -> GoldenOutputs:
    """The run saved in ``path`` by :func:`save_outputs`; :class:`InputSpecError` (one
    sentence) if the file is missing, unreadable or not such a file."""
    if not os.path.isfile(path):
        raise InputSpecError(f"{path}: file not found; check the reference outputs path.")
    if not zipfile.is_zipfile(path):  # np.load would read it as .npy or pickle
        raise _not_golden(path, "it is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _not_golden(path, f"not a readable .npz file ({first_line(error)})") from error
    metadata = _metadata(path, arrays.pop("metadata", None))
    inputs = _batches(path, arrays, "input", metadata)
    outputs = _batches(path, arrays, "output", metadata)
    if not metadata["output_names"] or not outputs:
        raise _not_golden(path, "it holds no outputs")
    return GoldenOutputs(
        RunResult(tuple(inputs), tuple(outputs)), metadata.get("model_path"), metadata["seed"]
    )


def _batches(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], kind: str, metadata: dict
) -> list[dict[str, np.ndarray]]:
    """The ``kind`` (``input`` or ``output``) arrays of each batch, by name, in model order."""
    names = metadata[f"{kind}_names"]
    try:
        return [
            {name: arrays[f"{kind}/{i}/{name}"] for name in names}
            for i in range(metadata["batches"])
        ]
    except KeyError as error:
        raise _not_golden(path, f"it lacks the array {error}") from error


def _metadata(path: str | os.PathLike, entry: np.ndarray | None) -> dict:
    """The file's metadata, checked to have the fields :func:`load_outputs` reads."""
    try:
        metadata = json.loads(str(entry[()])) if entry is not None else None
    except (ValueError, IndexError) as error:
        raise _not_golden(path, f"its metadata is not JSON ({first_line(error)})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _not_golden(path, "it has no repvgg-onnx metadata")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise _not_golden(path, f"it is format version {metadata.get('format_version')}")
    fields = {"batches": int, "seed": int, "input_names": list, "output_names": list}
    wrong = [name for name, kind in fields.items() if not isinstance(metadata.get(name), kind)]
    if wrong:
        raise _not_golden(path, f"its metadata lacks {wrong}")
    return metadata


def _not_golden(path: str | os.PathLike, reason: str) -> InputSpecError:
    return InputSpecError(
        f"{path}: not reference outputs written by repvgg-onnx ({reason}); write them by "
        "verifying the reference model with its outputs saved.",
        hint="repvgg-onnx verify A.onnx B.onnx --save-outputs PATH.npz",
    )
