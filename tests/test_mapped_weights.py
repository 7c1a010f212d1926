"""Weights left in their data file: loading with ``map_external_data``, reading through memory
maps, releasing the pages read, fusing and saving such a model, and never holding a weight
twice on the way out."""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import assert_same_function, random_feeds, repvgg_chain, run
from repvgg_onnx import api, io
from repvgg_onnx.errors import ModelLoadError
from repvgg_onnx.graph.detached_weights import detach_weights
from repvgg_onnx.io import mapped_weights, model_tensors
from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS, serialized_size
from repvgg_onnx.passes import regions
from repvgg_onnx.passes.graph_utils import constant_values

#: Six RepVGG blocks of 48 channels: 3x3 kernels of 20,736 elements (mapped), BN vectors of 48
#: (kept in memory).
CHANNELS = 48


def training_chain() -> onnx.ModelProto:
    """Six RepVGG training blocks, then a plain 1x1 conv whose weight nothing fuses."""
    model = repvgg_chain(6, channels=CHANNELS, size=6)[0]
    graph = model.graph
    head = np.random.default_rng(3).standard_normal((CHANNELS, CHANNELS, 1, 1)).astype("f4")
    graph.initializer.append(numpy_helper.from_array(head, "head.w"))
    graph.node.append(onnx.helper.make_node("Conv", [graph.output[0].name, "head.w"], ["head"]))
    graph.output[0].name = "head"
    return model


def exported(tmp_path: Path, model: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, Path]:
    """``model`` (a training chain by default) as an exporter writes it: weights in
    ``model.onnx.data``."""
    model = model or training_chain()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    path = tmp_path / "model.onnx"
    onnx.save_model(copy, str(path), save_as_external_data=True, location="model.onnx.data")
    return model, path


def digests(folder: Path) -> dict[str, tuple[str, int]]:
    """Each file's content hash and modification time."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.is_file()
    }


def as_loaded(path: Path) -> onnx.ModelProto:
    """The model at ``path`` with its data in memory; ``data_location`` unset where it is the
    default (onnx's loader sets it explicitly on tensors it read from a file)."""
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.DEFAULT:
            tensor.ClearField("data_location")
    return model


def external_tensors(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def test_large_weights_stay_in_their_file_and_small_ones_come_into_memory(tmp_path: Path) -> None:
    model, path = exported(tmp_path)
    before = digests(tmp_path)
    loaded = io.load_model(path, map_external_data=True)
    data_file = str((tmp_path / "model.onnx.data").resolve())
    for tensor, original in zip(loaded.graph.initializer, model.graph.initializer, strict=True):
        expected = numpy_helper.to_array(original)
        if expected.size > SMALL_TENSOR_ELEMENTS:
            location, _, length = mapped_weights.mapped_location(tensor)
            assert location == data_file and length == expected.nbytes
            assert not tensor.HasField("raw_data")
        else:
            assert tensor.data_location == onnx.TensorProto.DEFAULT
            np.testing.assert_array_equal(numpy_helper.to_array(tensor), expected)
    assert external_tensors(loaded)
    assert digests(tmp_path) == before
    assert not external_tensors(io.load_model(path))  # the default loads everything


def test_a_mapped_weight_reads_as_its_values_read_only(tmp_path: Path) -> None:
    model, path = exported(tmp_path)
    graph = gs.import_onnx(io.load_model(path, map_external_data=True))
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    assert any(originals[t.name].size > SMALL_TENSOR_ELEMENTS for t in constants)
    for tensor in constants:
        values = constant_values(tensor)
        np.testing.assert_array_equal(values, originals[tensor.name])
        assert not values.flags.writeable


def test_a_data_file_shorter_than_the_shape_needs_is_not_mapped(tmp_path: Path) -> None:
    """The length is checked against the shape: a mismatch is loaded, and refused, as before."""
    _, path = exported(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    entry = next(e for e in weight.external_data if e.key == "length")
    entry.value = str(int(entry.value) - 4)
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=r"holds .* bytes but its shape"):
        io.load_model(path, map_external_data=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_released_pages_leave_the_process_and_the_views_stay_valid(
    tmp_path: Path, monkeypatch
) -> None:
    values = np.arange(16 * 2**20, dtype=np.float32).reshape(16, 2**20)  # 64 MiB
    tensor = numpy_helper.from_array(values, "w")
    (tmp_path / "w.bin").write_bytes(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", tmp_path / "w.bin"), ("offset", 0), ("length", values.nbytes)):
        tensor.external_data.add(key=key, value=str(value))
    view = mapped_weights.mapped_view(tensor, np.dtype("<f4"))
    resident = mapped_weights._resident_file_bytes
    untouched = resident()
    assert float(view.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))
    assert resident() - untouched > 48 * 2**20
    monkeypatch.setattr(mapped_weights, "RELEASE_AFTER_BYTES", 0)
    mapped_weights.release_mapped_pages()
    assert resident() - untouched < 16 * 2**20
    np.testing.assert_array_equal(view, values)


def test_a_detached_weight_is_freed_with_its_new_owner() -> None:
    """Export hands each large weight from the graph to the model: a reading the passes kept
    would hold every fused kernel twice while the model is filled."""
    weight = np.ones((16, 16, 3, 3), np.float32)  # more than SMALL_TENSOR_ELEMENTS
    alive = weakref.ref(weight)
    x = gs.Variable("x", np.float32, (1, 16, 4, 4))
    y = gs.Variable("y", np.float32, (1, 16, 4, 4))
    constant = gs.Constant("w", weight)
    graph = gs.Graph(nodes=[gs.Node("Conv", inputs=[x, constant], outputs=[y])], inputs=[x])
    assert constant_values(constant) is not None
    del weight
    detached = detach_weights(graph)
    assert list(detached) == ["w"]
    detached.clear()
    gc.collect()
    assert alive() is None


@pytest.mark.usefixtures("temporaries")
@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_fusing_a_mapped_model_gives_a_model_that_stands_alone(
    tmp_path: Path, external: bool
) -> None:
    model, path = exported(tmp_path)
    before = digests(tmp_path)
    result = api.fuse(path, verify=False)
    assert not external_tensors(result.model)
    assert [n.op_type for n in result.model.graph.node].count("Add") == 0
    assert_same_function(model, result.model)
    out = tmp_path / "out" / "fused.onnx"
    out.parent.mkdir()
    result.save(out, external_data=external)
    assert_same_function(model, onnx.load(str(out)))
    assert digests(tmp_path) == before


@pytest.mark.usefixtures("temporaries")
@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_saving_a_mapped_model_writes_every_field_and_byte(tmp_path: Path, external: bool) -> None:
    """The save copies the weights from their file and every other field as it is: the model
    read back equals the original, message for message."""
    model = training_chain()
    model.doc_string = "kept"
    model.graph.doc_string = "kept too"
    onnx.helper.set_model_props(model, {"author": "us"})
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("a", 1, [1]))
    model, path = exported(tmp_path, model)
    mapped = io.load_model(path, map_external_data=True)
    out = tmp_path / "copy.onnx"
    io.save_model(mapped, out, external_data=external)
    assert external_tensors(mapped)  # the model saved is not changed
    assert as_loaded(out) == as_loaded(path)
    feeds = random_feeds(model)
    for expected, actual in zip(run(model, feeds), run(onnx.load(str(out)), feeds), strict=True):
        np.testing.assert_array_equal(actual, expected)
    assert os.path.exists(tmp_path / "model.onnx.data")


def test_a_mapped_model_measures_as_the_loaded_one(tmp_path: Path) -> None:
    """Sizes count a mapped weight's bytes, not the few bytes of its reference."""
    _, path = exported(tmp_path)
    mapped, loaded = io.load_model(path, map_external_data=True), io.load_model(path)
    assert serialized_size(mapped) == pytest.approx(loaded.ByteSize(), rel=1e-3)
    assert model_tensors._estimated_size(mapped) == model_tensors._estimated_size(loaded)


def test_planning_releases_the_pages_of_each_region_it_read(tmp_path: Path, monkeypatch) -> None:
    _, path = exported(tmp_path)
    releases = []
    monkeypatch.setattr(regions, "release_mapped_pages", lambda: releases.append(1))
    result = api.fuse(path, verify=False)
    assert len(releases) >= len(result.report.fused) == 6


def test_a_file_that_cannot_be_mapped_is_read(tmp_path: Path, monkeypatch) -> None:
    model, path = exported(tmp_path)
    loaded = io.load_model(path, map_external_data=True)

    def refuse(*args, **kwargs):
        raise OSError("no mmap here")

    monkeypatch.setattr(mapped_weights.mmap, "mmap", refuse)
    for tensor, original in zip(loaded.graph.initializer, model.graph.initializer, strict=True):
        if mapped_weights.mapped_location(tensor) is not None:
            view = mapped_weights.mapped_view(tensor, np.dtype("<f4"))
            np.testing.assert_array_equal(view, numpy_helper.to_array(original))


def test_only_types_numpy_reads_as_they_are_stay_in_their_file(tmp_path: Path) -> None:
    """bfloat16 has no numpy type: such a weight is loaded, to be read as it was before."""
    model = training_chain()
    head = next(t for t in model.graph.initializer if t.name == "head.w")
    head.CopyFrom(
        helper.make_tensor("head.w", TensorProto.BFLOAT16, head.dims, np.ones(2304, np.float32))
    )
    _, path = exported(tmp_path, model)
    loaded = io.load_model(path, map_external_data=True)
    assert "head.w" not in external_tensors(loaded)
    assert "w1" in external_tensors(loaded)


def test_a_data_file_cut_short_after_loading_is_an_error(tmp_path: Path) -> None:
    _, path = exported(tmp_path)
    loaded = io.load_model(path, map_external_data=True)
    data = tmp_path / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    tensor = next(t for t in loaded.graph.initializer if mapped_weights.mapped_location(t))
    with pytest.raises(OSError, match="ended before the bytes"):
        list(itertools.islice(mapped_weights.mapped_pieces(tensor, 2**20), 100))  # bounded
