"""memory.py: freed memory goes back to the system (its effect on peak RSS is measured in
benchmarks/bench.py, not here)."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from repvgg_onnx.memory import return_free_memory


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


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc only")
def test_without_collect_cycles_stay() -> None:
    gc.disable()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        return_free_memory(collect=False)
        assert alive() is not None
    finally:
        gc.enable()
        gc.collect()


def test_only_models_with_large_weights_are_worth_a_collection() -> None:
    from onnx import TensorProto, helper

    from repvgg_onnx.memory import LARGE_MODEL_BYTES, worth_returning

    def model_of(elements: int):
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[elements])
        graph = helper.make_graph([], "g", [], [], initializer=[tensor])
        return helper.make_model(graph)

    assert worth_returning(model_of(LARGE_MODEL_BYTES // 4))
    assert not worth_returning(model_of(LARGE_MODEL_BYTES // 4 - 1))
