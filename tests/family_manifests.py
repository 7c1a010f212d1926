"""The committed family fixtures of every exporter, read from their manifests.

Each directory of :data:`MANIFEST_DIRS` holds ``manifest.json`` (written by its export script:
``python -m models.families`` for PyTorch, ``python -m models.keras_export`` for tf2onnx,
``python -m models.paddle_export`` for paddle2onnx) with
one schema: ``families: {name: {training_forms, reference_form, reference_op_counts, forms:
{form: {file, op_counts, deploy_op_counts (training forms), ...}}}}``. Family names are unique
across the manifests, so a family is found by its name alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

CLOSE_RTOL = 1e-4
"""Tolerance of :func:`assert_close_to_scale`, relative to the expected output's scale."""

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MANIFEST_DIRS = (FIXTURES / "families", FIXTURES / "keras", FIXTURES / "paddle")
"""Directories of the family manifests: PyTorch (TorchScript, dynamo), Keras (tf2onnx),
Paddle (paddle2onnx)."""


def read_manifest(directory: Path) -> dict[str, Any]:
    """The ``manifest.json`` of ``directory``."""
    return json.loads((directory / "manifest.json").read_text())


MANIFESTS = {directory: read_manifest(directory) for directory in MANIFEST_DIRS}
FAMILY_DIRS: dict[str, Path] = {
    name: directory for directory, manifest in MANIFESTS.items() for name in manifest["families"]
}
"""Every family, by name, with the directory its files are relative to."""
assert len(FAMILY_DIRS) == sum(len(m["families"]) for m in MANIFESTS.values()), "name clash"

FAMILIES: dict[str, dict[str, Any]] = {
    name: MANIFESTS[directory]["families"][name] for name, directory in FAMILY_DIRS.items()
}
"""Every family's manifest entry, by name."""


def form_cases(families: dict[str, Any], forms: str = "forms") -> list[tuple[str, str]]:
    """Every ``(family, form)`` of ``families``, the forms listed under ``forms``
    (``"forms"``: all of them; ``"training_forms"``: the training ones)."""
    return [(name, form) for name, family in families.items() for form in family[forms]]


def folder_bytes(directory: Path) -> int:
    """The bytes of every file below ``directory``."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


TRAINING_CASES = form_cases(FAMILIES, "training_forms")
"""Every ``(family, training form)``."""


def form_path(name: str, form: str) -> Path:
    """The file of ``form`` of family ``name``."""
    return FAMILY_DIRS[name] / FAMILIES[name]["forms"][form]["file"]


def load_form(name: str, form: str) -> onnx.ModelProto:
    """The model of ``form`` of family ``name``."""
    return onnx.load(form_path(name, form))


def nothing_to_fuse(name: str) -> bool:
    """True for a negative family: every training form already has its reference's ops."""
    forms = FAMILIES[name]["forms"]
    training = FAMILIES[name]["training_forms"]
    return all(forms[form]["op_counts"] == forms[form]["deploy_op_counts"] for form in training)


def reference_of(name: str, form: str) -> str:
    """The form a training form is compared with: its own ``<form>_reference`` when the family
    has one (tf2onnx: the same layout and settings), else the family's reference form."""
    own = f"{form}_reference"
    return own if own in FAMILIES[name]["forms"] else FAMILIES[name]["reference_form"]


def case_id(case: tuple[str, str]) -> str:
    """``family-form``, a test id."""
    return "-".join(case)


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """``|actual − expected| ≤ CLOSE_RTOL·max|expected|`` everywhere, shapes equal."""
    assert actual.shape == expected.shape, what
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=CLOSE_RTOL * scale, err_msg=what)


def load_checked_entry(directory: Path, entry: dict[str, Any]) -> onnx.ModelProto:
    """The model of a manifest ``entry`` (a form) of ``directory``, after checking that the file
    is the one listed (hash, size), passes the full checker, and has the listed op counts,
    initializer count and default-domain opset."""
    data = (directory / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(data) == entry["bytes"]
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    assert counts == entry["op_counts"]
    assert len(model.graph.initializer) == entry["initializers"]
    opset = next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    assert opset == entry["opset"]
    return model


def unlisted_files(directory: Path, families: dict[str, Any]) -> set[str]:
    """Files under ``directory`` (but its manifest) that no form of ``families`` lists, and
    listed files that are missing, as paths relative to ``directory``."""
    listed = {entry["file"] for family in families.values() for entry in family["forms"].values()}
    on_disk = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.name != "manifest.json"
    }
    return on_disk ^ listed
