"""remove_unread_nodes leaves exactly what graphsurgeon's cleanup leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from repvgg_onnx.graph.crossing import import_graph
from repvgg_onnx.graph.unread_nodes import remove_unread_nodes

MODELS = Path(__file__).resolve().parent.parent / "models"
COMMITTED = sorted(MODELS.rglob("*.onnx"))


def _state(graph: gs.Graph) -> list[tuple]:
    """The nodes in order, each with its links: names read, names written, readers of each."""
    return [
        (
            node.name,
            node.op,
            [t.name for t in node.inputs],
            [(t.name, [reader.name for reader in t.outputs]) for t in node.outputs],
        )
        for node in graph.nodes
    ]


def _unread_some(graph: gs.Graph, seed: int) -> None:
    """Make some nodes dead as constant folding does (outputs taken away), and leave some out of
    the node list still linked (a stale producer cleanup must not walk through)."""
    rng = np.random.default_rng(seed)
    outputs = {id(t) for t in graph.outputs}
    stale = []
    for node in graph.nodes:
        if any(id(t) in outputs for t in node.outputs):
            continue
        draw = rng.random()
        if draw < 0.2:
            node.outputs.clear()
        elif draw < 0.3:
            stale.append(node)
    graph.nodes = [node for node in graph.nodes if node not in stale]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(MODELS)))
def test_the_nodes_left_are_cleanups_on_every_committed_model(path: Path):
    model = onnx.load(path)
    ours, theirs = import_graph(model)[0], import_graph(model)[0]
    for graph in (ours, theirs):
        _unread_some(graph, seed=len(path.name))
    remove_unread_nodes(ours)
    theirs.cleanup()
    assert _state(ours) == _state(theirs)


def test_a_dead_chain_goes_and_a_node_read_by_the_output_stays():
    graph = gs.import_onnx(
        helper.make_model(
            helper.make_graph(
                [
                    helper.make_node("Relu", ["x"], ["a"], name="kept"),
                    helper.make_node("Neg", ["x"], ["b"], name="dead1"),
                    helper.make_node("Abs", ["b"], ["c"], name="dead2"),
                ],
                "g",
                [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2])],
            )
        )
    )
    x = graph.inputs[0]
    dead = [node for node in graph.nodes if node.name.startswith("dead")]
    remove_unread_nodes(graph)
    assert [node.name for node in graph.nodes] == ["kept"]
    assert [node.name for node in x.outputs] == ["kept"], "the dead nodes are unlinked"
    for node in dead:  # as cleanup leaves them: no tensor still names them, nor they one
        assert not node.inputs and not node.outputs


def _left_to_cleanup(graph: gs.Graph, monkeypatch) -> bool:
    """Whether :func:`remove_unread_nodes` hands ``graph`` to graphsurgeon's own cleanup."""
    calls = []
    cleanup = gs.Graph.cleanup
    monkeypatch.setattr(gs.Graph, "cleanup", lambda g, **k: calls.append(g) or cleanup(g, **k))
    remove_unread_nodes(graph)
    return bool(calls) and calls[0] is graph


def test_a_graph_with_a_subgraph_is_left_to_cleanup(monkeypatch):
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "branch",
        [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    graph = gs.import_onnx(
        helper.make_model(
            helper.make_graph(
                [
                    helper.make_node("Neg", ["x"], ["dead"], name="dead"),
                    helper.make_node(
                        "If", ["c"], ["out"], name="if", then_branch=branch, else_branch=branch
                    ),
                ],
                "g",
                [
                    helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
                    helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
                ],
                [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [2])],
            )
        )
    )
    assert _left_to_cleanup(graph, monkeypatch)
    assert [node.name for node in graph.nodes] == ["if"]


def test_a_graph_with_local_functions_is_left_to_cleanup(monkeypatch):
    """cleanup also cleans the functions' bodies; the fast walk would not."""
    body = [
        helper.make_node("Neg", ["a"], ["unread"], name="dead_in_body"),
        helper.make_node("Relu", ["a"], ["b"], name="kept_in_body"),
    ]
    function = helper.make_function("local", "F", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("F", ["x"], ["y"], name="call", domain="local"),
                helper.make_node("Neg", ["x"], ["dead"], name="dead"),
            ],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        ),
        functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    graph = gs.import_onnx(model)
    assert _left_to_cleanup(graph, monkeypatch)
    assert [node.name for node in graph.nodes] == ["call"]
    assert [node.name for node in graph.functions[0].nodes] == ["kept_in_body"]


def _chain_graph() -> gs.Graph:
    """``x → Neg 'feeds_stale' → Abs 'stale' → Relu 'kept' → y``."""
    x = gs.Variable("x", np.float32, [2])
    b, c, y = (gs.Variable(name, np.float32, [2]) for name in "bcy")
    nodes = [
        gs.Node("Neg", "feeds_stale", inputs=[x], outputs=[b]),
        gs.Node("Abs", "stale", inputs=[b], outputs=[c]),
        gs.Node("Relu", "kept", inputs=[c], outputs=[y]),
    ]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y])


def test_a_stale_producer_is_not_walked_through():
    """A node left out of the node list but still linked (a pass spliced it out) computes
    nothing: what only it reads goes, as in cleanup."""
    ours, theirs = _chain_graph(), _chain_graph()
    for graph in (ours, theirs):
        graph.nodes = [node for node in graph.nodes if node.name != "stale"]
    remove_unread_nodes(ours)
    theirs.cleanup()
    assert _state(ours) == _state(theirs)
    assert [node.name for node in ours.nodes] == ["kept"]


def test_a_node_writing_a_graph_input_is_unlinked_from_it():
    """A graph input has no producer (cleanup unlinks one), so a node that wrote it is read by
    nothing and goes."""
    ours, theirs = _chain_graph(), _chain_graph()
    for graph in (ours, theirs):
        stale = next(node for node in graph.nodes if node.name == "stale")
        graph.inputs.append(stale.outputs[0])  # 'c' is now also a graph input
    remove_unread_nodes(ours)
    theirs.cleanup()
    assert _state(ours) == _state(theirs)
    assert [node.name for node in ours.nodes] == ["kept"]


def test_each_tensor_is_walked_once():
    """A ladder of 40 diamonds (each step's two branches read the step before): the paths from
    the output double at every step, the tensors do not, and the walk takes each tensor once
    (walking paths would not end)."""
    x = gs.Variable("x", np.float32, [2])
    nodes, step = [], x
    for index in range(40):
        left, right, total = (gs.Variable(f"{n}{index}", np.float32, [2]) for n in "lrs")
        nodes += [
            gs.Node("Neg", f"neg{index}", inputs=[step], outputs=[left]),
            gs.Node("Abs", f"abs{index}", inputs=[step], outputs=[right]),
            gs.Node("Add", f"add{index}", inputs=[left, right], outputs=[total]),
        ]
        step = total
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[step])
    remove_unread_nodes(graph)
    assert len(graph.nodes) == 120
