"""The cheap paths: weights read in place, untouched weights written back byte for byte, and
no onnxruntime import unless verification needs it."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

import repvgg_onnx
from helpers import REPVGG_BRANCHES, assert_same_function, block_model
from repvgg_onnx.passes.graph_utils import constant_values
from repvgg_onnx.pipeline.fuse_model import fuse_graph

SAMPLE = "models/samples/repvgg_a0_half.onnx"


def _constant(proto: onnx.TensorProto) -> gs.Constant:
    node = helper.make_node("Identity", [proto.name], ["out"])
    out = helper.make_tensor_value_info("out", proto.data_type, None)
    graph = helper.make_graph([node], "g", [], [out], [proto])
    return gs.import_onnx(helper.make_model(graph)).tensors()[proto.name]


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int32, np.int64]
)
def test_a_raw_weight_is_read_in_place_and_read_only(dtype):
    values = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    proto = numpy_helper.from_array(values, "w")
    array = constant_values(_constant(proto))
    np.testing.assert_array_equal(array, values)
    assert array.dtype == values.dtype and array.shape == values.shape
    assert not array.flags.writeable
    assert not array.flags.owndata  # a view of the proto's bytes, not a copy


def test_typed_field_and_bfloat16_weights_are_read_through_onnx():
    typed = helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.5, 4.0])
    np.testing.assert_array_equal(constant_values(_constant(typed)), [[1, -2], [3.5, 4]])
    assert not constant_values(_constant(typed)).flags.writeable
    bf16 = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.0, -2.0])
    np.testing.assert_array_equal(
        np.asarray(constant_values(_constant(bf16)), np.float32), [1.0, -2.0]
    )


def test_a_raw_weight_of_the_wrong_length_is_not_viewed():
    proto = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    proto.raw_data = proto.raw_data[:-4]
    constant = _constant(proto)
    assert constant_values(constant) is None  # unreadable, so no pass rewrites it


def test_untouched_weights_are_written_back_byte_for_byte():
    model = block_model(REPVGG_BRANCHES, seed=3)
    head = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4, 1, 1)), "head_w")
    head = numpy_helper.from_array(numpy_helper.to_array(head).astype(np.float32), "head_w")
    model.graph.initializer.append(head)
    last = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Conv", [last, "head_w"], ["head"], name="head"))
    model.graph.node.append(helper.make_node("Relu", ["head"], ["head_out"], name="head_relu"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("head_out", TensorProto.FLOAT, None))
    fused = repvgg_onnx.fuse(model, verify=False).model
    kept = next(t for t in fused.graph.initializer if t.name == "head_w")
    assert kept.raw_data == head.raw_data
    assert_same_function(model, fused)


def test_fusing_never_writes_into_a_weight_shared_with_the_caller():
    model = block_model(REPVGG_BRANCHES, seed=4)
    before = model.SerializeToString()
    fuse_graph(model)
    assert model.SerializeToString() == before


def test_fuse_without_verification_does_not_import_onnxruntime(tmp_path):
    script = (
        "import sys, repvgg_onnx\n"
        f"repvgg_onnx.fuse({SAMPLE!r}, verify=False).save({str(tmp_path / 'out.onnx')!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('onnxruntime')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_passes_sort_a_graph_given_out_of_order():
    from repvgg_onnx.pipeline.pass_fixpoint import run_passes

    model = block_model(REPVGG_BRANCHES, seed=5)
    graph = gs.import_onnx(model)
    graph.nodes.reverse()
    result = run_passes(graph)
    assert result.fused
    fused = gs.export_onnx(graph)
    onnx.checker.check_model(fused)
    assert_same_function(model, fused)


def test_a_region_rewrite_keeps_the_graph_sorted_without_a_full_sort(monkeypatch):
    from repvgg_onnx.pipeline.pass_fixpoint import run_passes

    model = block_model(REPVGG_BRANCHES, seed=6)
    graph = gs.import_onnx(model)
    monkeypatch.setattr(gs.Graph, "toposort", lambda self, *a, **k: pytest.fail("sorted"))
    run_passes(graph)
    onnx.checker.check_model(gs.export_onnx(graph))


def _graph_with_weights() -> gs.Graph:
    rng = np.random.default_rng(7)
    x = gs.Variable("x", np.float32, [1, 64, 4, 4])
    big = gs.Constant("big", rng.normal(size=(64, 64, 3, 3)).astype(np.float32))
    small = gs.Constant("small", np.array([1, -1], np.int64))
    conv = gs.Variable("conv", np.float32, [1, 64, 4, 4])
    out = gs.Variable("out", np.float32, None)
    nodes = [
        gs.Node("Conv", inputs=[x, big], outputs=[conv], attrs={"pads": [1, 1, 1, 1]}),
        gs.Node("Reshape", inputs=[conv, small], outputs=[out]),
    ]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=17)


def test_a_graph_exported_without_its_weights_is_the_same_model_once_they_are_attached():
    from repvgg_onnx.graph.detached_weights import attach_weights, detach_weights

    expected = gs.export_onnx(_graph_with_weights()).SerializeToString()
    graph = _graph_with_weights()
    weights = detach_weights(graph)
    assert sorted(weights) == ["big"]  # small tensors stay: shape inference reads them
    model = gs.export_onnx(graph)
    stub = next(t for t in model.graph.initializer if t.name == "big")
    assert not stub.raw_data and list(stub.dims) == [64, 64, 3, 3]
    attach_weights(model, weights)
    assert model.SerializeToString() == expected
    assert weights == {}


def test_weights_come_back_after_a_weightless_export():
    from repvgg_onnx.graph.detached_weights import weights_detached

    graph = _graph_with_weights()
    before = graph.tensors()["big"].values.copy()
    with weights_detached(graph):
        gs.export_onnx(graph)
    np.testing.assert_array_equal(graph.tensors()["big"].values, before)


def test_proto_backed_weights_are_stubs_during_a_weightless_export_and_come_back():
    from repvgg_onnx.graph.detached_weights import weights_detached
    from repvgg_onnx.graph.gs_versions import stored_values
    from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS

    model = block_model(REPVGG_BRANCHES, cin=16, cout=16, seed=5)  # 3x3 weight: 2304 elements
    graph = gs.import_onnx(model)
    lazy = {  # not read through .values, which would load them into numpy for good
        name: stored_values(tensor)
        for name, tensor in graph.tensors().items()
        if isinstance(tensor, gs.Constant) and math.prod(tensor.shape) > SMALL_TENSOR_ELEMENTS
    }
    with weights_detached(graph):
        exported = gs.export_onnx(graph)
    sizes = {t.name: len(t.raw_data) for t in exported.graph.initializer if t.name in lazy}
    assert sizes and not any(sizes.values())  # exported as stubs: no bytes copied
    tensors = graph.tensors()
    assert all(stored_values(tensors[name]) is values for name, values in lazy.items())


@pytest.mark.parametrize("direct_below", [64 * 2**20, 0])
def test_serialized_size_is_the_protobuf_size_by_either_route(monkeypatch, direct_below):
    from repvgg_onnx.io import stripped_model as skeleton

    monkeypatch.setattr(skeleton, "_DIRECT_SIZE_BYTES", direct_below)
    model = block_model(REPVGG_BRANCHES, cin=16, cout=16, seed=2)  # large and small weights
    large = sum(t.name.startswith("w") and len(t.raw_data) > 4096 for t in model.graph.initializer)
    assert large  # the skeleton route has a payload to add
    assert abs(skeleton.serialized_size(model) - model.ByteSize()) <= 32 * large


def test_a_skeleton_without_large_weights_is_the_model_without_its_annotations():
    from repvgg_onnx.io.stripped_model import SMALL_TENSOR_ELEMENTS, model_skeleton

    model = block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=4)
    assert all(math.prod(t.dims) <= SMALL_TENSOR_ELEMENTS for t in model.graph.initializer)
    model.doc_string = model.graph.doc_string = "notes"
    helper.set_model_props(model, {"author": "us"})
    skeleton = model_skeleton(model)
    assert (skeleton.doc_string, skeleton.graph.doc_string) == ("", "")
    assert not skeleton.metadata_props
    assert list(skeleton.graph.node) == list(model.graph.node)
    assert list(skeleton.graph.initializer) == list(model.graph.initializer)
    assert list(skeleton.opset_import) == list(model.opset_import)
    assert model.doc_string == "notes" and model.metadata_props  # the model is untouched


def test_tensor_map_is_graphsurgeons_tensor_map():
    from repvgg_onnx.graph.constant_views import tensor_map

    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 2, 4, 4] x) => (float[1, 2, 8, 8] y) {
            scales = Constant<value = float[4] {1, 1, 2, 2}>()
            y = Resize<mode = "nearest">(x, , scales)
        }"""
    )
    graph = gs.import_onnx(model)
    assert any(t.name == "" for t in graph.nodes[-1].inputs)  # the omitted roi
    mapped, expected = tensor_map(graph), graph.tensors()
    assert list(mapped) == list(expected)
    assert all(mapped[name] is expected[name] for name in expected)
