"""memory.py: freed memory goes back to the system (its effect on peak RSS is measured in
benchmarks/bench.py, not here)."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from repvgg_onnx.graph.memory_release import return_free_memory


class Node:
    pass


def test_cycles_are_collected_and_glibc_trims() -> None:
    gc.disable()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a graphsurgeon graph is made of such cycles
        alive = weakref.ref(a)
        del a, b
        trimmed = return_free_memory()
        assert alive() is None
    finally:
        gc.enable()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert trimmed


def test_only_models_with_large_weights_are_worth_a_collection() -> None:
    from onnx import TensorProto, helper

    from repvgg_onnx.graph.memory_release import LARGE_MODEL_BYTES, worth_returning

    def model_of(elements: int):
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[elements])
        graph = helper.make_graph([], "g", [], [], initializer=[tensor])
        return helper.make_model(graph)

    assert worth_returning(model_of(LARGE_MODEL_BYTES // 4))
    assert not worth_returning(model_of(LARGE_MODEL_BYTES // 4 - 1))


def test_collection_is_paused_within_the_block_and_restored_after() -> None:
    from repvgg_onnx.graph.memory_release import collection_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed fuse")
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_fuse_graph_runs_with_collection_paused(monkeypatch) -> None:
    from helpers import REPVGG_BRANCHES, block_model
    from repvgg_onnx.pipeline import fuse_model as transform

    seen = []
    real = transform.run_passes

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(transform, "run_passes", spy)
    transform.fuse_graph(block_model(REPVGG_BRANCHES))
    assert seen == [False] and gc.isenabled()


def test_a_large_model_frees_what_the_passes_dropped_without_a_collection(monkeypatch) -> None:
    """Breaking the dropped objects' cycles replaces the collection that walks every object."""
    from helpers import REPVGG_BRANCHES, block_model
    from repvgg_onnx.pipeline import fuse_model

    collections = []
    monkeypatch.setattr(fuse_model, "worth_returning", lambda model: True)
    monkeypatch.setattr(fuse_model, "return_free_memory", lambda: collections.append(1))
    fuse_model.fuse_graph(block_model(REPVGG_BRANCHES))
    assert collections == []
