"""The fast exporter writes the bytes ``gs.export_onnx`` writes, on every committed model (as
imported and after the passes), on the fuzz suite's mutations and on the odd graphs:
subgraphs, local functions, tensor and unusual attributes, value infos of every kind, shared,
stubbed, sparse and retyped constants, new domains; and fails where graphsurgeon fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from fuzz_cases import fuzz_case
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from helpers import REPO_ROOT, if_reading_outer_tensors
from repvgg_onnx.graph import fast_export as gs_export
from repvgg_onnx.graph import gs_versions as gs_internals
from repvgg_onnx.graph.detached_weights import detach_weights
from repvgg_onnx.graph.fast_import import import_onnx
from repvgg_onnx.pipeline.pass_fixpoint import run_passes

MODELS = sorted((REPO_ROOT / "models").rglob("*.onnx"))

#: graphsurgeon 0.5.2 has no ``export_dtype``: the cases that set one need a later version.
needs_export_dtype = pytest.mark.skipif(
    not gs_internals.export_dtype_field(), reason="this graphsurgeon has no export_dtype"
)


def retyped_to_itself(name: str) -> gs.Constant:
    """A float32 constant whose export dtype is set to float32 (a plain one where there is
    no export dtype)."""
    values = np.ones(2, np.float32)
    if not gs_internals.export_dtype_field():
        return gs.Constant(name, values)
    return gs.Constant(name, values, export_dtype=TensorProto.FLOAT)


def serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def assert_same_export(make: Callable[[], gs.Graph], do_type_check: bool = False) -> None:
    """Two equal graphs from ``make``, one exported by graphsurgeon and one by the fast path
    itself (not its fallback): the same bytes, and the same ``import_domains`` left behind."""
    theirs, ours = make(), make()
    expected = gs.export_onnx(theirs, do_type_check=do_type_check)
    assert serialized(gs_export._export_directly(ours, do_type_check)) == serialized(expected)
    assert opsets(ours) == opsets(theirs)


def opsets(graph: gs.Graph) -> list[tuple[str, int]] | None:
    if graph.import_domains is None:
        return None
    return [(o.domain, o.version) for o in graph.import_domains]


def assert_same_failure(make: Callable[[], gs.Graph], do_type_check: bool = False) -> None:
    """graphsurgeon cannot export it, and neither can the fast exporter, with the same error
    (the fast path itself fails too: it writes nothing graphsurgeon would not)."""
    with pytest.raises(Exception) as theirs:  # any: graphsurgeon's decides
        gs.export_onnx(make(), do_type_check=do_type_check)
    with pytest.raises(type(theirs.value)):
        gs_export.export_onnx(make(), do_type_check=do_type_check)
    with pytest.raises(Exception):  # noqa: B017 (whichever it meets first)
        gs_export._export_directly(make(), do_type_check)


def imported(model: onnx.ModelProto, passes: bool) -> Callable[[], gs.Graph]:
    def make() -> gs.Graph:
        graph = import_onnx(model)
        if passes:
            run_passes(graph)
        return graph

    return make


@pytest.mark.parametrize("passes", [False, True], ids=["imported", "fused"])
@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_committed_model_exports_as_graphsurgeon_exports_it(path: Path, passes: bool) -> None:
    assert_same_export(imported(onnx.load(str(path)), passes))


def test_mutated_models_export_as_graphsurgeon_exports_them() -> None:
    """The fuzz suite's mutations, as imported and after the passes; where graphsurgeon
    cannot export one, the fast exporter raises its error. (One graph for both exports, the
    fast one first: graphsurgeon's side effects on a graph leave its export as it was.)"""
    compared = failed = 0
    for index in range(300):
        case = fuzz_case(7, index)
        model = onnx.ModelProto()
        for passes in (False, True):
            try:
                model.ParseFromString(case.data)
                graph = imported(model, passes)()
            except Exception:
                continue  # not a model, graphsurgeon cannot read it, or the passes refuse it
            try:
                actual = serialized(gs_export.export_onnx(graph))
            except Exception as error:
                with pytest.raises(type(error)):
                    gs.export_onnx(graph, do_type_check=False)
                failed += 1
                continue
            assert actual == serialized(gs.export_onnx(graph, do_type_check=False)), case.id
            compared += 1
    assert compared > 400
    assert failed > 10


# --------------------------------------------------------------------------------------------
# The odd graph
# --------------------------------------------------------------------------------------------


def odd_model() -> onnx.ModelProto:
    """Subgraphs reading outer tensors (one with a node of a domain the model does not import),
    a local function taking an attribute, a tensor attribute, a sparse initializer, an omitted
    optional input, value infos, a node with a name and a doc string."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "w")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5], np.float32), "sp"),
        numpy_helper.from_array(np.array([1], np.int64), ""),
        [2],
    )
    leaky = helper.make_node("LeakyRelu", ["a"], ["b"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", onnx.AttributeProto.FLOAT))
    function = helper.make_function(
        "local",
        "Scaled",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["k"], value_float=1.0), leaky],
        [helper.make_opsetid("", 17)],
        attributes=["alpha"],
    )
    then_nodes = [
        helper.make_node("Add", ["x", "w"], ["then_mid"]),
        helper.make_node("Custom", ["then_mid"], ["then_y"], domain="sub.only", alpha=2),
    ]
    nodes = [
        *if_reading_outer_tensors(then_nodes, "then_y"),
        helper.make_node("Scaled", ["later"], ["scaled"], domain="local", alpha=0.5),
        helper.make_node("Add", ["scaled", "b"], ["sum"], name="add", doc_string="dropped"),
        helper.make_node("Add", ["sum", "sp"], ["y"], name="final"),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [weight, bias],
        doc_string="an odd graph",
        value_info=[
            helper.make_tensor_value_info("later", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, None),
        ],
        sparse_initializer=[sparse],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
        producer_name="odd",
        producer_version="1.0",
    )


def odd_attributes() -> dict[str, object]:
    """Attribute values of every kind the fast path builds itself or hands to graphsurgeon."""
    return {
        "int": 7,
        "zero": 0,
        "negative": -(2**40),
        "bool": True,
        "false": False,
        "float": 0.1,
        "negative_zero": -0.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "str": "text é",
        "empty_str": "",
        "bytes": b"\xff\x00raw",  # not UTF-8
        "ints": [1, -2, 3],
        "ints_tuple": (4, 5),
        "floats": [0.5, 1.25],
        "mixed_numbers": [1, 2.5],
        "floats_of_ints_first": (3, 0.5, 2),
        "strings": ["a", "b"],
        "strings_and_bytes": ["a", b"b"],
        "np_int": np.int64(3),
        "np_float": np.float32(1.5),
        "np_ints": [np.int64(1), np.int32(2)],
        "np_mixed": [1, np.float32(2.5)],
        "array": np.array([1.0, 2.0], np.float32),
        "dtype": np.float32,
        "tensor": gs.Constant("attr_tensor", np.ones((2,), np.int64)),
        "graph": gs.Graph(name="empty_subgraph"),
    }


def odd_graph() -> gs.Graph:
    """The odd model imported, then given what only a graphsurgeon graph can hold: every
    attribute kind, value infos of every kind, shared, retyped and located constants, names
    and domains set, unset or new, and no IR version."""
    graph = import_onnx(odd_model())
    nodes = {node.name or node.op: node for node in graph.nodes}
    nodes["Greater"].attrs.update(odd_attributes())
    nodes["Greater"].name = None  # make_node leaves an unset name out, as ""
    nodes["Clip"].domain = ""
    nodes["add"].domain = "brand.new"
    tensors = graph.tensors()
    tensors["scaled"].dtype = np.dtype(np.float32)
    tensors["scaled"].shape = ("n", None, 2)
    tensors["sum"].dtype = TensorProto.FLOAT
    tensors["cond"].shape = []
    tensors["picked"].shape = [None]  # a shape and no dtype: an empty value info
    tensors["s"].dtype = ml_dtypes.bfloat16
    # A constant shared by two nodes under one name, one sharing another's LazyValues under
    # another name (graphsurgeon's copies all take the last name), one retyped to itself,
    # one located externally.
    w = tensors["b"]
    twin = gs.Constant("w_twin", gs_internals.stored_values(w))
    retyped = retyped_to_itself("retyped")
    located = gs.Constant("located", np.ones(2, np.float32), data_location=0)
    sequence = gs.Variable("seq", np.float32, [2], type="sequence_type")
    extra_out = [gs.Variable("twin_y"), gs.Variable("retyped_y", np.float32, [2]), sequence]
    graph.nodes.append(gs.Node("Add", "twin", inputs=[twin, w], outputs=[extra_out[0]]))
    graph.nodes.append(gs.Node("Add", "", inputs=[retyped, located], outputs=[extra_out[1]]))
    graph.nodes.append(gs.Node("SequenceConstruct", inputs=[w], outputs=[sequence]))
    graph.outputs.extend(extra_out)
    graph.ir_version = None
    return graph


def test_an_odd_graph_exports_as_graphsurgeon_exports_it() -> None:
    assert gs_export._exporter_matches()  # the installed graphsurgeon takes the fast path
    assert_same_export(odd_graph)
    model = gs_export.export_onnx(odd_graph())
    assert "brand.new" in {o.domain for o in model.opset_import}
    assert "sub.only" in {o.domain for o in model.opset_import}


def test_a_domain_used_only_in_a_subgraph_is_imported_as_in_graphsurgeon() -> None:
    def make() -> gs.Graph:
        graph = odd_graph()
        for node in graph.nodes:
            node.domain = None if node.domain == "brand.new" else node.domain
        return graph

    assert_same_export(make)
    assert "sub.only" in {o.domain for o in gs_export.export_onnx(make()).opset_import}


def test_an_odd_graph_with_stubbed_weights_exports_as_graphsurgeon_exports_it() -> None:
    def stubbed() -> gs.Graph:
        graph = odd_graph()
        array = np.ones((64, 64), np.float32)
        big = gs.Constant("big", array)
        lazy = gs.Constant("lazy", LazyValues(numpy_helper.from_array(array, "lazy")))
        graph.nodes.append(gs.Node("Add", inputs=[big, lazy], outputs=[gs.Variable("r")]))
        assert len(detach_weights(graph)) == 2
        return graph

    assert_same_export(stubbed)


@pytest.mark.parametrize("path", MODELS[:3], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_fused_model_with_stubbed_weights_exports_as_graphsurgeon_exports_it(
    path: Path,
) -> None:
    model = onnx.load(str(path))

    def stubbed() -> gs.Graph:
        graph = imported(model, passes=True)()
        detach_weights(graph)
        return graph

    assert_same_export(stubbed)


def test_the_graph_and_its_names_export_as_graphsurgeon_exports_them(monkeypatch) -> None:
    """Import domains unset, a known domain, duplicate node and tensor names (graphsurgeon's
    warnings, logged alike), an empty graph name, the type check passed."""

    def make() -> gs.Graph:
        x = gs.Variable("x", np.float32, [1])
        same = [gs.Variable("t", np.float32, [1]), gs.Variable("t", np.float32, [1])]
        nodes = [
            gs.Node("Relu", "dup", inputs=[x], outputs=[same[0]]),
            gs.Node("Relu", "dup", inputs=[same[0]], outputs=[same[1]], domain="ai.onnx.ml"),
        ]
        graph = gs.Graph(nodes, [x], [same[1]], name="", opset=13, producer_version="v")
        graph.import_domains = None
        return graph

    exports = (gs.export_onnx, gs_export.export_onnx)
    logs = [logged(monkeypatch, export, make) for export in exports]
    assert logs[0] == logs[1]
    assert "Found distinct tensors" in logs[0][1] and "Found distinct Nodes" in logs[0][1]
    assert_same_export(make, do_type_check=True)


def logged(monkeypatch, export, make: Callable[[], gs.Graph]) -> tuple[bytes, str]:
    """The export of a graph from ``make`` and what graphsurgeon logged (object ids blanked)."""
    lines: list[str] = []

    def log(message, severity, *args, **kwargs):
        lines.append(f"{severity}: {message() if callable(message) else message}")

    with monkeypatch.context() as patch:
        patch.setattr(G_LOGGER, "log", log)
        model = export(make(), do_type_check=True)
    return serialized(model), re.sub(r"id: \d+", "id", "\n".join(lines))


# --------------------------------------------------------------------------------------------
# Failures, and the fallback
# --------------------------------------------------------------------------------------------


def one_node(**changes) -> Callable[[], gs.Graph]:
    """A Relu graph with ``changes`` applied to its node, input or constant."""

    def make() -> gs.Graph:
        x = gs.Variable("x", np.float32, [2])
        constant = gs.Constant("k", np.ones(2, np.float32))
        node = gs.Node("Add", "add", inputs=[x, constant], outputs=[gs.Variable("y")])
        graph = gs.Graph([node], [x], node.outputs, opset=17)
        for name, value in changes.items():
            owner, field = name.split("__")
            setattr({"node": node, "x": x, "k": constant, "graph": graph}[owner], field, value)
        return graph

    return make


@pytest.mark.parametrize(
    "changes",
    [
        {"node__attrs": {"empty": []}},  # make_attribute cannot tell an empty list's type
        {"node__attrs": {None: 1}},
        {"node__attrs": {"bad": "\ud800"}},  # not encodable as UTF-8
        {"node__attrs": {"huge": 2**64}},
        {"node__attrs": {"huge_list": [1, 2**64]}},
        {"node__attrs": {"object": object()}},
        {"node__attrs": {"bools": [True, False]}},  # protobuf takes no bool for an int
        {"node__op": None},
        {"node__domain": 3},
        {"x__name": None},
        {"x__shape": [np.int64(2)]},
        {"x__type": "no_such_type"},
        pytest.param(  # this onnx cannot convert to it
            {"k___export_dtype": TensorProto.BFLOAT16}, marks=needs_export_dtype
        ),
        {"graph__name": None},
        {"graph__producer_name": None},
    ],
    ids=repr,
)
def test_what_graphsurgeon_cannot_export_the_fast_exporter_cannot_either(changes) -> None:
    assert_same_failure(one_node(**changes))


def test_a_tensor_without_dtype_fails_the_type_check_as_in_graphsurgeon() -> None:
    assert_same_failure(one_node(x__dtype=None), do_type_check=True)
    assert_same_failure(one_node(), do_type_check=True)  # the output has no dtype either

    def typed() -> gs.Graph:
        graph = one_node()()
        graph.outputs[0].dtype = np.float32
        return graph

    assert_same_export(typed, do_type_check=True)


@pytest.mark.parametrize(
    "changes",
    [
        {"x__dtype": None},
        {"x__dtype": TensorProto.FLOAT16},
        {"x__shape": None},
        {"x__shape": ()},
        {"x__type": "sequence_type"},
        pytest.param({"k___export_dtype": np.float32}, marks=needs_export_dtype),
        {"node__name": ""},
        {"node__domain": None},
        {"graph__doc_string": "documented"},
        {"graph__ir_version": 7},
    ],
    ids=repr,
)
def test_small_changes_export_as_graphsurgeon_exports_them(changes) -> None:
    assert_same_export(one_node(**changes))


def test_the_fast_exporter_does_not_need_graphsurgeons(monkeypatch) -> None:
    assert gs_export._exporter_matches()

    def refused(*args, **kwargs):
        raise AssertionError("fell back")

    expected = serialized(gs.export_onnx(odd_graph(), do_type_check=False))
    monkeypatch.setattr(gs, "export_onnx", refused)
    assert serialized(gs_export.export_onnx(odd_graph())) == expected


def test_what_the_fast_path_cannot_write_graphsurgeon_writes(monkeypatch) -> None:
    def broken(graph, do_type_check):
        raise KeyError("not expected")

    expected = serialized(gs.export_onnx(odd_graph(), do_type_check=False))
    monkeypatch.setattr(gs_export, "_export_directly", broken)
    assert serialized(gs_export.export_onnx(odd_graph())) == expected


def test_a_different_graphsurgeon_falls_back_to_graphsurgeon(monkeypatch) -> None:
    gs_export._exporter_matches.cache_clear()
    monkeypatch.setattr(gs_export, "_onnx_dtype", lambda kind, dtype: TensorProto.DOUBLE)
    try:
        assert not gs_export._exporter_matches()
        expected = serialized(gs.export_onnx(odd_graph(), do_type_check=False))
        assert serialized(gs_export.export_onnx(odd_graph())) == expected
    finally:
        gs_export._exporter_matches.cache_clear()
