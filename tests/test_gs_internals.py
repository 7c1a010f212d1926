"""The probes of :mod:`repvgg_onnx.graph.gs_versions` choose right: where a probe takes a private
field, the field holds what graphsurgeon's public API answers; and with every probe forced to
the public API (as on a graphsurgeon whose layout moved), fuse writes the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from helpers import REPO_ROOT
from repvgg_onnx import api
from repvgg_onnx.graph import fast_export as gs_export
from repvgg_onnx.graph import fast_import as gs_import
from repvgg_onnx.graph import gs_versions as gs_internals

MODELS = [
    REPO_ROOT / "models/samples/repvgg_a0_half.onnx",
    REPO_ROOT / "models/fixtures/tiny_repvgg/ts17_nofold.onnx",
    REPO_ROOT / "models/fixtures/families/dbb/ts17.onnx",
    REPO_ROOT / "models/fixtures/families/mobileone/ts17_functions.onnx",
]
PROBES = ("values_field", "export_dtype_field", "graph_ir_version", "node_exporter")


def lazy_constant() -> tuple[gs.Constant, LazyValues]:
    lazy = LazyValues(numpy_helper.from_array(np.arange(6, dtype=np.float32), "w"))
    return gs.Constant("w", lazy), lazy


@pytest.mark.parametrize("forced", [False, True], ids=["probed", "public"])
def test_stored_values_are_the_values_unloaded(forced: bool, monkeypatch) -> None:
    if forced:
        monkeypatch.setattr(gs_internals, "values_field", lambda: False)
    constant, lazy = lazy_constant()
    stored = gs_internals.stored_values(constant)
    if gs_internals.values_field():
        assert stored is lazy  # not loaded: no copy of the weight
    loaded = stored.load() if isinstance(stored, LazyValues) else stored
    np.testing.assert_array_equal(loaded, lazy.load())


@pytest.mark.parametrize("forced", [False, True], ids=["probed", "public"])
def test_the_export_dtype_read_is_graphsurgeons(forced: bool, monkeypatch) -> None:
    if forced:
        monkeypatch.setattr(gs_internals, "export_dtype_field", lambda: False)
    constant, _ = lazy_constant()
    assert gs_internals.exports_own_dtype(constant)
    if hasattr(gs.Constant, "export_dtype"):  # the constructor: the setter needs an old onnx
        values = constant.values
        retyped = gs.Constant("w", values, export_dtype=TensorProto.FLOAT16)
        assert not gs_internals.exports_own_dtype(retyped)


def test_the_ir_version_read_is_graphsurgeons() -> None:
    model = onnx.load(str(MODELS[0]))
    graph = gs.import_onnx(model)
    if gs_internals.graph_ir_version():
        assert graph.ir_version == model.ir_version
    assert gs_internals.ir_version_of(graph) == getattr(graph, "ir_version", None)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_node_exports_as_in_a_graph_of_it_alone(path: Path, monkeypatch) -> None:
    nodes = gs.import_onnx(onnx.load(str(path))).nodes
    probed = [gs_internals.node_proto(node) for node in nodes]
    monkeypatch.setattr(gs_internals, "node_exporter", lambda: False)
    assert [gs_internals.node_proto(node) for node in nodes] == probed


def fused_bytes(path: Path) -> bytes:
    result = api.fuse(onnx.load(str(path)), verify=False)
    return result.model.SerializeToString(deterministic=True)


@pytest.fixture
def public_api_only(monkeypatch):
    """Every probe answers no, and the fast import and export probe again under that."""
    caches = [gs_import._layout_matches, gs_export._exporter_matches]
    for probe in PROBES:
        monkeypatch.setattr(gs_internals, probe, lambda: False)
    for cache in caches:
        cache.cache_clear()
    yield
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_the_public_api_fuses_to_the_same_bytes(path: Path, request) -> None:
    expected = fused_bytes(path)
    request.getfixturevalue("public_api_only")
    assert not gs_internals.values_field()
    assert fused_bytes(path) == expected
