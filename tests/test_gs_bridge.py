"""gs_bridge.py: every valid model crosses into onnx-graphsurgeon and back computing the same."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import OPSET, REPVGG_BRANCHES, block_model, random_feeds, run
from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.graph.crossing import dense_tensor, export_graph, import_graph
from repvgg_onnx.pipeline.fuse_model import fuse_graph

DENSE = np.array([[0.0, 1.5, 0.0], [0.0, 0.0, -2.0]], np.float32)


def sparse_of(dense: np.ndarray, name: str, coordinates: bool) -> onnx.SparseTensorProto:
    """``dense`` as a sparse tensor, with flat indices or ``[nnz, rank]`` coordinates."""
    where = np.nonzero(dense.reshape(-1))[0]
    indices = np.stack(np.unravel_index(where, dense.shape), axis=1) if coordinates else where
    values = numpy_helper.from_array(dense.reshape(-1)[where], name)
    return helper.make_sparse_tensor(
        values, numpy_helper.from_array(indices.astype(np.int64), ""), dense.shape
    )


@pytest.mark.parametrize("coordinates", [False, True])
def test_dense_tensor_is_what_the_sparse_one_encodes(coordinates: bool) -> None:
    dense = numpy_helper.to_array(dense_tensor(sparse_of(DENSE, "w", coordinates)))
    np.testing.assert_array_equal(dense, DENSE)


def test_sparse_indices_outside_the_shape_are_refused() -> None:
    sparse = sparse_of(DENSE, "w", coordinates=False)
    sparse.indices.CopyFrom(numpy_helper.from_array(np.array([1, 6], np.int64), ""))
    with pytest.raises(UnsupportedModelError, match=r"'w'.*do not fit its shape"):
        dense_tensor(sparse)


def add_model(constant_source: str) -> onnx.ModelProto:
    """``y = x + W``, ``W`` a sparse initializer or a Constant with a ``sparse_value``."""
    nodes = [helper.make_node("Add", ["x", "W"], ["y"])]
    sparse_initializers = []
    if constant_source == "initializer":
        sparse_initializers.append(sparse_of(DENSE, "W", coordinates=True))
    else:
        sparse = sparse_of(DENSE, "W", coordinates=False)
        nodes.insert(0, helper.make_node("Constant", [], ["W"], sparse_value=sparse))
    graph = helper.make_graph(
        nodes,
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(DENSE.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(DENSE.shape))],
        sparse_initializer=sparse_initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize("constant_source", ["initializer", "constant"])
def test_sparse_constants_cross_as_their_dense_value(constant_source: str) -> None:
    model = add_model(constant_source)
    exported = export_graph(*import_graph(model))
    x = np.arange(6, dtype=np.float32).reshape(DENSE.shape)
    np.testing.assert_array_equal(run(exported, {"x": x})[0], x + DENSE)
    fused, _ = fuse_graph(model)
    np.testing.assert_array_equal(run(fused, {"x": x})[0], x + DENSE)


def test_empty_list_attributes_survive_the_round_trip() -> None:
    """graphsurgeon cannot export an empty list attribute; it is set aside and put back."""
    model = block_model(REPVGG_BRANCHES)
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    conv.attribute.append(
        helper.make_attribute("dilations", [], attr_type=onnx.AttributeProto.INTS)
    )
    exported = export_graph(*import_graph(model))
    same = next(node for node in exported.graph.node if node.name == conv.name)
    empty = [a for a in same.attribute if a.name == "dilations"]
    assert len(empty) == 1 and empty[0].type == onnx.AttributeProto.INTS and not empty[0].ints


def test_a_model_without_outputs_is_refused_with_a_reason() -> None:
    model = block_model(REPVGG_BRANCHES)
    del model.graph.output[:]
    with pytest.raises(UnsupportedModelError, match="no graph outputs"):
        fuse_graph(model)


def test_a_graphsurgeon_failure_is_an_unsupported_model_error(monkeypatch) -> None:
    import onnx_graphsurgeon as gs

    from repvgg_onnx.graph import fast_import as gs_import

    def broken(model):
        raise KeyError("something graphsurgeon did not expect")

    monkeypatch.setattr(gs, "import_onnx", broken)
    monkeypatch.setattr(gs_import, "_import_directly", broken)
    with pytest.raises(UnsupportedModelError, match="onnx-graphsurgeon cannot read"):
        import_graph(block_model(REPVGG_BRANCHES))


def test_random_feeds_still_run_on_the_round_trip() -> None:
    model = block_model(REPVGG_BRANCHES)
    feeds = random_feeds(model)
    np.testing.assert_allclose(
        run(export_graph(*import_graph(model)), feeds)[0], run(model, feeds)[0], rtol=0, atol=0
    )


def test_a_dismantled_graph_is_freed_without_the_cyclic_collector() -> None:
    import gc
    import weakref

    from repvgg_onnx.graph.crossing import dismantle

    graph, _ = import_graph(block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=1))
    objects = [weakref.ref(o) for o in (*graph.nodes, *graph.tensors().values())]
    gc.disable()
    try:
        dismantle(graph)
        del graph
        assert not [ref for ref in objects if ref() is not None]
    finally:
        gc.enable()


def test_watching_a_graph_keeps_nothing_alive() -> None:
    """What the passes drop stays collectable: a collection before the export frees it."""
    import gc
    import weakref

    from repvgg_onnx.graph.crossing import graph_objects, watch

    graph, _ = import_graph(block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=1))
    objects = [weakref.ref(o) for o in graph_objects(graph)]
    imported = watch(graph)
    del graph
    gc.collect()
    assert not [ref for ref in objects if ref() is not None]
    assert len(imported) == len(objects)


def test_nodes_dropped_from_the_graph_are_freed_with_it() -> None:
    import gc
    import weakref

    from repvgg_onnx.graph.crossing import dismantle, graph_objects, watch

    graph, _ = import_graph(block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=1))
    objects = [weakref.ref(o) for o in graph_objects(graph)]
    imported = watch(graph)
    gc.disable()
    try:
        del graph.nodes[: len(graph.nodes) // 2]  # as a pass drops a merged branch
        dismantle(graph, imported)
        del graph
        assert not [ref for ref in objects if ref() is not None]
    finally:
        gc.enable()


def _dropped_and_kept(graph):
    """Drop a Conv from the graph, unlinked from what stays but still a cycle with its weight
    (as a pass leaves a merged branch): the rest of the graph stays whole."""
    conv = next(node for node in graph.nodes if node.op == "Conv")
    weight = conv.inputs[1]
    graph.nodes.remove(conv)
    conv.outputs.clear()
    conv.inputs[0] = weight  # off the graph's input: a cycle of imported objects alone
    return conv, weight


def test_what_the_passes_dropped_is_freed_before_the_export_without_a_collection() -> None:
    import gc
    import weakref

    from repvgg_onnx.graph.crossing import export_graph, release_dropped, watch

    model = block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=1)
    graph, empty = import_graph(model)
    imported = watch(graph)
    conv, weight = _dropped_and_kept(graph)
    dropped = [weakref.ref(conv), weakref.ref(weight)]
    del conv, weight
    gc.disable()
    try:
        assert release_dropped(graph, imported)
        assert not [ref for ref in dropped if ref() is not None]
    finally:
        gc.enable()
    export_graph(graph, empty)  # what is left is whole


def test_a_graph_with_subgraphs_leaves_what_it_dropped_to_the_collector() -> None:
    """A body may still read a tensor the main graph no longer does: nothing is released."""
    from repvgg_onnx.graph.crossing import release_dropped, watch

    graph, _ = import_graph(block_model(REPVGG_BRANCHES, cin=4, cout=4, seed=1))
    imported = watch(graph)
    conv, weight = _dropped_and_kept(graph)
    body = gs.Graph(nodes=[gs.Node("Identity", inputs=[weight], outputs=[gs.Variable("w2")])])
    graph.nodes.append(gs.Node("If", attrs={"then_branch": body, "else_branch": body}))
    assert not release_dropped(graph, imported)
    assert weight.name and conv.op == "Conv"  # untouched
