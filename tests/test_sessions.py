"""Sessions read weights left in their data file from that file: no copy, in memory or on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import repvgg_onnx
from helpers import REPVGG_BRANCHES, block_model, fuse_model
from repvgg_onnx import io
from repvgg_onnx.io import model_tensors
from repvgg_onnx.verification import sessions


def saved_with_external_data(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    io.save_model(model, path, external_data=True)
    return path


def wide_block() -> onnx.ModelProto:
    """A block with two 3x3 kernels (16·16·9 elements each), both left in one data file when
    mapped, the second at a non-zero offset."""
    return block_model(REPVGG_BRANCHES + REPVGG_BRANCHES[:1], cin=16, cout=16, batch=2)


@pytest.fixture
def feeds():
    return {"x": np.random.default_rng(0).normal(size=(2, 16, 8, 8)).astype(np.float32)}


@pytest.fixture
def forbid_copies(monkeypatch):
    """Call to forbid both ways of copying weights: a temporary model file, or bytes in
    memory."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the weights were copied")

    def forbid() -> None:
        monkeypatch.setattr(io, "save_model", forbidden)
        monkeypatch.setattr(io, "self_contained", forbidden)
        monkeypatch.setattr(io, "read_mapped_data", forbidden)

    return forbid


def data_files(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Each data file's bytes, modification time and link count."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_nlink)
        for p in folder.glob("*.data")
    }


def test_mapped_weights_are_read_from_their_own_file(tmp_path: Path, feeds, forbid_copies):
    model = wide_block()
    expected = sessions.create_session(model, "original").run(None, feeds)[0]
    path = saved_with_external_data(model, tmp_path / "m.onnx")
    before = data_files(tmp_path)
    mapped = io.load_model(path, map_external_data=True)
    offsets = [int(t.external_data[1].value) for t in mapped.graph.initializer if t.external_data]
    assert len(offsets) == 2 and max(offsets) > 0
    forbid_copies()
    session = sessions.create_session(mapped, "original")
    np.testing.assert_array_equal(session.run(None, feeds)[0], expected)
    assert data_files(tmp_path) == before  # read only; the link went with its folder


def test_a_data_file_that_cannot_be_linked_is_copied(tmp_path: Path, feeds, monkeypatch):
    model = wide_block()
    expected = sessions.create_session(model, "original").run(None, feeds)[0]
    mapped = io.load_model(
        saved_with_external_data(model, tmp_path / "m.onnx"), map_external_data=True
    )

    def cross_device(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    session = sessions.create_session(mapped, "original")
    np.testing.assert_array_equal(session.run(None, feeds)[0], expected)


def test_a_rest_too_large_for_one_protobuf_goes_through_a_temporary_copy(
    tmp_path: Path, feeds, monkeypatch
):
    model = wide_block()
    expected = sessions.create_session(model, "original").run(None, feeds)[0]
    mapped = io.load_model(
        saved_with_external_data(model, tmp_path / "m.onnx"), map_external_data=True
    )
    saved = []
    save = io.save_model
    monkeypatch.setattr(io, "save_model", lambda *a, **k: saved.append(a[1]) or save(*a, **k))
    monkeypatch.setattr(model_tensors, "INLINE_LIMIT_BYTES", 100)  # the small tensors exceed it
    session = sessions.create_session(mapped, "original")
    np.testing.assert_array_equal(session.run(None, feeds)[0], expected)
    assert len(saved) == 1


def test_verify_reads_models_with_external_data_from_their_files(tmp_path: Path, forbid_copies):
    model = wide_block()
    fused, _ = fuse_model(model)
    a = saved_with_external_data(model, tmp_path / "a" / "m.onnx")
    b = saved_with_external_data(fused, tmp_path / "b" / "m.onnx")
    forbid_copies()
    result = repvgg_onnx.verify(a, b)
    assert result.passed and result.outputs[0].max_abs_error > 0


def test_weights_in_several_data_files_each_read_from_their_own(
    tmp_path: Path, feeds, forbid_copies
):
    model = block_model(REPVGG_BRANCHES + REPVGG_BRANCHES[:1], cin=16, cout=16, batch=2)
    expected = sessions.create_session(model, "original").run(None, feeds)[0]
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    mapped = io.load_model(path, map_external_data=True)
    files = {t.external_data[0].value for t in mapped.graph.initializer if t.external_data}
    assert len(files) >= 2
    forbid_copies()
    session = sessions.create_session(mapped, "original")
    np.testing.assert_array_equal(session.run(None, feeds)[0], expected)


def test_localize_reads_models_with_external_data_from_their_files(tmp_path: Path, forbid_copies):
    """The models ``--localize`` runs with every tensor exposed keep pointing at their data."""
    model = wide_block()
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for tensor in changed.graph.initializer:
        values = onnx.numpy_helper.to_array(tensor)
        if values.ndim == 4 and values.shape[2:] == (3, 3):
            tensor.CopyFrom(onnx.numpy_helper.from_array(values * 1.5, tensor.name))
    a = saved_with_external_data(model, tmp_path / "a" / "m.onnx")
    b = saved_with_external_data(changed, tmp_path / "b" / "m.onnx")
    forbid_copies()
    result = repvgg_onnx.verify(a, b, localize=True)
    assert not result.passed
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert result.localization.tensor == conv.output[0]
