"""The fast importer builds the graph ``gs.import_onnx`` builds, on every committed model and on
the odd ones: subgraphs, local functions, value infos, omitted optional inputs, shared and
duplicate names, tensor attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from fuzz_cases import fuzz_case
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from helpers import REPO_ROOT, if_reading_outer_tensors
from repvgg_onnx.graph import fast_import as gs_import

MODELS = sorted((REPO_ROOT / "models").rglob("*.onnx"))


GRAPH_LINKS = ("nodes", "inputs", "outputs", "_functions")


def signature(graph: gs.Graph, functions: bool = True) -> tuple:
    """Everything of a graph, its nodes and its tensors, as plain values; objects by position
    (so links are compared, not identities)."""
    nodes = {id(node): index for index, node in enumerate(graph.nodes)}
    tensors: dict[int, int] = {}
    described: list[tuple] = []

    def tensor(item: gs.Tensor) -> int:
        if id(item) not in tensors:
            tensors[id(item)] = len(tensors)
            described.append(describe(item))
        return tensors[id(item)]

    def describe(item: gs.Tensor) -> tuple:
        fields = {k: v for k, v in vars(item).items() if k not in ("inputs", "outputs")}
        values = fields.pop("_values", None)
        if isinstance(values, LazyValues):
            fields["_values"] = {k: plain(v) for k, v in vars(values).items()}
        elif values is not None:
            fields["_values"] = type(values), plain(getattr(values, "tensor", values))
        links = [
            [nodes.get(id(n), "outer") for n in getattr(item, k)] for k in ("inputs", "outputs")
        ]
        return type(item), {k: plain(v) for k, v in fields.items()}, links

    def plain(value):
        if isinstance(value, gs.Graph):
            return signature(value, functions=False)
        if isinstance(value, gs.Tensor):
            return tensor(value)
        if isinstance(value, onnx.TensorProto):
            return value.SerializeToString()
        if isinstance(value, np.ndarray):
            return value.dtype.str, value.tobytes()
        if isinstance(value, float) and value != value:
            return "nan"  # equal to itself, unlike nan
        if isinstance(value, list | tuple) or type(value).__name__.startswith("Repeated"):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    node_fields = [
        (
            node.op,
            node.name,
            node.domain,
            plain(dict(node.attrs)),
            [tensor(t) for t in node.inputs],
            [tensor(t) for t in node.outputs],
            sorted(vars(node)),
        )
        for node in graph.nodes
    ]
    ends = [tensor(t) for t in graph.inputs], [tensor(t) for t in graph.outputs]
    fields = {k: plain(v) for k, v in vars(graph).items() if k not in GRAPH_LINKS}
    local = [signature(f, functions=False) for f in graph.functions] if functions else []
    return node_fields, ends, described, fields, local


def assert_same_import(model: onnx.ModelProto) -> None:
    assert signature(gs_import.import_onnx(model)) == signature(gs.import_onnx(model))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_committed_model_imports_as_graphsurgeon_imports_it(path: Path) -> None:
    assert_same_import(onnx.load(str(path)))


def test_mutated_models_import_as_graphsurgeon_imports_them() -> None:
    """The fuzz suite's mutations: renamed, retyped and reshaped tensors, odd attributes."""
    compared = 0
    for index in range(300):
        case = fuzz_case(7, index)
        model = onnx.ModelProto()
        try:
            model.ParseFromString(case.data)
            expected = signature(gs.import_onnx(model))
        except Exception:
            continue  # not a model, or graphsurgeon itself fails: nothing to compare
        assert signature(gs_import.import_onnx(model)) == expected, case.id
        compared += 1
    assert compared > 150


def odd_model() -> onnx.ModelProto:
    """Subgraphs reading outer tensors, a local function, value infos (one for a constant, two
    for one tensor),
    an omitted optional input, a tensor attribute, an initializer listed as an input."""
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "b")
    function = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        *if_reading_outer_tensors([helper.make_node("Add", ["x", "w"], ["then_y"])], "then_y"),
        helper.make_node("Twice", ["later"], ["twice"], domain="local"),
        helper.make_node("Add", ["twice", "b"], ["y"], name="final"),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [weight, bias],
        value_info=[
            helper.make_empty_tensor_value_info("later"),  # completed by the next one
            helper.make_tensor_value_info("later", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2]),
        ],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
        producer_name="odd",
    )


def test_an_odd_model_imports_as_graphsurgeon_imports_it() -> None:
    assert gs_import._layout_matches()  # the installed graphsurgeon takes the fast path
    model = odd_model()
    onnx.checker.check_model(model)
    assert_same_import(model)


def test_what_the_fast_path_cannot_read_graphsurgeon_reads(monkeypatch) -> None:
    def broken(model):
        raise KeyError("not expected")

    monkeypatch.setattr(gs_import, "_import_directly", broken)
    assert_same_import(odd_model())


def test_a_different_graphsurgeon_layout_falls_back_to_graphsurgeon(monkeypatch) -> None:
    gs_import._layout_matches.cache_clear()
    monkeypatch.setattr(gs_import, "_variable", lambda name: gs.Variable(name, dtype=np.float32))
    try:
        assert not gs_import._layout_matches()
        assert_same_import(odd_model())
    finally:
        gs_import._layout_matches.cache_clear()
