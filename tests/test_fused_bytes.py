"""Every committed model fuses to the same bytes as recorded in ``fused_hashes.json``.

The passes may be restructured (a worklist, cached readings, forms behind one interface), but
what they make must not change unnoticed: a refactoring keeps every hash. A change that
means to change outputs regenerates the file and says why in its commit:
``REPVGG_ONNX_RECORD_HASHES=1 pytest tests/test_fused_bytes.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.pipeline.function_inlining import inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph

MODELS = Path(__file__).resolve().parent.parent / "models"
COMMITTED = sorted(MODELS.rglob("*.onnx"))
HASHES = Path(__file__).resolve().parent / "fused_hashes.json"
RECORD = os.environ.get("REPVGG_ONNX_RECORD_HASHES") == "1"


def fused_hash(path: Path) -> str:
    """sha256 of the model fused by the default passes (no verification), or of the refusal."""
    try:
        fused, _ = fuse_graph(inline_for_passes(onnx.load(path))[0])
    except UnsupportedModelError as error:
        return "refused: " + str(error)
    return hashlib.sha256(fused.SerializeToString(deterministic=True)).hexdigest()


@pytest.fixture(scope="module")
def recorded() -> dict[str, str]:
    hashes = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    yield hashes
    if RECORD:
        HASHES.write_text(json.dumps(dict(sorted(hashes.items())), indent=1) + "\n")


def test_every_committed_model_has_a_recorded_hash(recorded):
    names = {str(path.relative_to(MODELS)) for path in COMMITTED}
    if not RECORD:
        assert set(recorded) == names


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: str(path.relative_to(MODELS)))
def test_a_committed_model_fuses_to_the_recorded_bytes(path, recorded):
    name = str(path.relative_to(MODELS))
    if RECORD:
        recorded[name] = fused_hash(path)
        return
    assert fused_hash(path) == recorded[name]
