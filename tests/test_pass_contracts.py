"""Every pass keeps its contract (``passes/contracts.py``) on every call of every round, on
every committed model; each check catches the graph that breaks it, with its sentence."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from peer_graphs import ALL_CASES, RAISES, PeerCase

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.passes.contracts import (
    KEEPS_INTERFACE_AND_NAMES,
    WELL_FORMED,
    ContractViolation,
    Snapshot,
    checked,
    constants_unedited,
    contract,
    contract_of,
    interface_unchanged,
    names_kept,
    no_batchnorm_created,
    no_dangling_tensors,
    result_matches_graph,
    sums_are_binary,
    topologically_ordered,
)
from repvgg_onnx.passes.pass_result import PassResult
from repvgg_onnx.pipeline.function_inlining import inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES, Pass

MODELS = Path(__file__).resolve().parent.parent / "models"
COMMITTED = sorted(MODELS.rglob("*.onnx"))
#: Committed models ``fuse`` refuses outright, with the refusal's start (none today).
REFUSED: dict[str, str] = {}


def counted(passes: Sequence[Pass], calls: list[str]) -> tuple[Pass, ...]:
    """Each pass checked, and each call recorded in ``calls``."""

    def record(run: Pass) -> Pass:
        def recorded(graph: gs.Graph) -> PassResult:
            calls.append(run.__name__)
            return run(graph)

        return recorded

    return tuple(record(checked(run)) for run in passes)


def fuse_checked(model: onnx.ModelProto) -> list[str]:
    """``fuse``'s passes on ``model`` (its functions chosen and inlined first, as ``fuse``
    does), every call checked; the passes called, in order. Checking changes nothing: the
    model fused by the checked passes is, byte for byte, the one the passes make alone."""
    calls: list[str] = []
    passes = counted(DEFAULT_PASSES, calls)
    prepared, _ = inline_for_passes(model, passes)
    fused, _ = fuse_graph(prepared, passes)
    alone, _ = fuse_graph(inline_for_passes(model)[0])
    assert fused.SerializeToString() == alone.SerializeToString()
    return calls


def test_every_committed_model_is_checked():
    assert len(COMMITTED) >= 170
    assert set(REFUSED) <= {str(path.relative_to(MODELS)) for path in COMMITTED}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: str(path.relative_to(MODELS)))
def test_every_pass_keeps_its_contract_on_every_committed_model(path):
    model = onnx.load(path)
    refusal = REFUSED.get(str(path.relative_to(MODELS)))
    if refusal is not None:
        with pytest.raises(UnsupportedModelError, match=refusal):
            fuse_checked(model)
        return
    calls = fuse_checked(model)
    assert set(calls) >= {run.__name__ for run in DEFAULT_PASSES}


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_every_pass_keeps_its_contract_on_every_peer_case(case: PeerCase):
    """The peer tools' fold cases (:mod:`peer_graphs`) give the passes work the committed
    models do not (``matmul_add_to_gemm``, overridable initializers, no-ops before outputs)."""
    if case.expect == RAISES:
        with pytest.raises(UnsupportedModelError):
            fuse_checked(case.build())
    else:
        fuse_checked(case.build())


def test_every_default_pass_declares_a_contract():
    for run in DEFAULT_PASSES:
        declared = contract_of(run)
        assert declared is not None, run.__name__
        assert set(declared.requires) >= set(WELL_FORMED), run.__name__
        assert set(declared.ensures) >= set(KEEPS_INTERFACE_AND_NAMES), run.__name__


# --- shapes of graph the committed models do not hold -------------------------------------

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
SMALL_GRAPHS = {
    "sum_of_three": """g (float[1,4,4,4] x) => (float[1,4,4,4] y) {
          a = Relu(x)
          b = Sigmoid(x)
          y = Sum(a, b, x)
        }""",
    "no_op_before_output": """g (float[1,4] x) => (float[1,4] y, float[1,4] z) {
          a = Relu(x)
          y = Identity(a)
          c = Constant<value = float[1] {0}>()
          z = Add(a, c)
        }""",
    "identity_of_input_as_output": """g (float[1,4] x) => (float[1,4] y) {
          y = Identity(x)
        }""",
    "if_with_no_ops_in_its_bodies": """g (float[1,4] x, bool c) => (float[1,4] y) {
          a = Relu(x)
          y = If(c) <then_branch = then_g () => (float[1,4] t) {
              i = Identity(a)
              t = Relu(i)
            }, else_branch = else_g () => (float[1,4] e) {
              e = Identity(a)
            }>
        }""",
    "constant_subexpression": """g (float[1,4] x) => (float[1,4] y) {
          c = Constant<value = float[4] {1, 2, 3, 4}>()
          d = Mul(c, c)
          y = Add(x, d)
        }""",
}


RNG = np.random.default_rng(0)
#: Graphs for the passes no committed model gives work: a BatchNormalization read by a Conv
#: and, through Reshape and Transpose, by a MatMul (``fold_forward``); a MatMul by a weight
#: fed as an input, plus a bias of the output's full shape (``matmul_add_to_gemm``).
WORK_FOR = {
    "fold_forward": (
        """g (float[1,4,4,4] x) => (float[1,3,4,4] y1, float[1,16,3] y2) {
          b = BatchNormalization(x, scale, shift, mean, var)
          y1 = Conv(b, w1)
          f = Reshape(b, shape)
          t = Transpose<perm = [0, 2, 1]>(f)
          y2 = MatMul(t, w2)
        }""",
        {
            "scale": RNG.uniform(0.5, 2, 4),
            "shift": RNG.normal(size=4),
            "mean": RNG.normal(size=4),
            "var": RNG.uniform(0.5, 2, 4),
            "w1": RNG.normal(size=(3, 4, 1, 1)),
            "shape": np.array([1, 4, 16]),
            "w2": RNG.normal(size=(4, 3)),
        },
    ),
    "matmul_add_to_gemm": (
        """g (float[2,4] x, float[4,3] w) => (float[2,3] y) {
          m = MatMul(x, w)
          y = Add(m, c)
        }""",
        {"c": RNG.normal(size=(2, 3))},
    ),
}


def parse(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    for name, value in weights.items():
        kept = value if value.dtype.kind in "iub" else value.astype(np.float32)
        model.graph.initializer.append(onnx.numpy_helper.from_array(kept, name))
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("name", SMALL_GRAPHS)
def test_every_pass_keeps_its_contract_on_what_canonicalize_removes(name):
    assert "canonicalize" in fuse_checked(parse(SMALL_GRAPHS[name], {}))


@pytest.mark.parametrize("rule", WORK_FOR)
def test_every_pass_keeps_its_contract_where_the_last_passes_have_work(rule):
    """The committed models give ``fold_forward`` and ``matmul_add_to_gemm`` nothing to do."""
    model = parse(*WORK_FOR[rule])
    fuse_checked(model)
    _, outcome = fuse_graph(model)
    assert {block.rule for block in outcome.fused} == {rule}


# --- each check catches what breaks it -----------------------------------------------------


def variable(name: str, dtype=np.float32, shape=(1, 4)) -> gs.Variable:
    return gs.Variable(name, dtype, list(shape))


def chain() -> gs.Graph:
    """``x → Relu 'first' → t → Relu 'second' → y``."""
    x, t, y = variable("x"), variable("t"), variable("y")
    nodes = [
        gs.Node("Relu", "first", inputs=[x], outputs=[t]),
        gs.Node("Relu", "second", inputs=[t], outputs=[y]),
    ]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)


def test_a_graph_in_order_breaks_no_check():
    graph = chain()
    before = Snapshot.of(graph)
    for check in (*KEEPS_INTERFACE_AND_NAMES, sums_are_binary):
        assert check(graph, before) == [], check.__name__


def test_topologically_ordered_catches_a_read_before_the_write():
    graph = chain()
    graph.nodes.reverse()
    assert topologically_ordered(graph) == [
        "node 'second' (Relu) reads 't' before node 'first' (Relu) writes it"
    ]
    assert no_dangling_tensors(graph) == []


def test_topologically_ordered_looks_into_bodies():
    graph = chain()
    inner = variable("inner")
    body = gs.Graph(nodes=[gs.Node("Relu", "in_body", inputs=[graph.outputs[0]], outputs=[inner])])
    body.outputs = [inner]
    condition = gs.Constant("condition", np.array(True))
    branch = gs.Node("If", "branch", {"then_branch": body}, [condition])
    branch.outputs = [variable("z")]
    graph.nodes.insert(1, branch)
    assert topologically_ordered(graph) == [
        "node 'in_body' (Relu) reads 'y' before node 'second' (Relu) writes it"
    ]


def test_no_dangling_tensors_catches_an_unwritten_read_and_output():
    graph = chain()
    graph.nodes[0].outputs.clear()
    graph.outputs.append(variable("orphan"))
    assert no_dangling_tensors(graph) == [
        "node 'second' (Relu) reads 't', which no node writes and no graph input provides",
        "graph output 'orphan' is written by no node",
    ]
    assert topologically_ordered(graph) == []


def test_no_dangling_tensors_catches_a_body_output_nobody_writes():
    graph = chain()
    body = gs.Graph(nodes=[], outputs=[variable("gone")], name="then_g")
    condition = gs.Constant("condition", np.array(True))
    graph.nodes.append(gs.Node("If", "branch", {"then_branch": body}, [condition], [variable("z")]))
    assert no_dangling_tensors(graph) == ["body 'then_g' output 'gone' is written by no node"]


def test_interface_unchanged_catches_a_new_type_or_shape_or_name():
    graph = chain()
    before = Snapshot.of(graph)
    graph.outputs[0].dtype = np.float16
    assert interface_unchanged(graph, before) == [
        "graph output 'y' (float32, [1, 4]) is gone",
        "graph output 'y' (float16, [1, 4]) is new",
    ]
    graph = chain()
    before = Snapshot.of(graph)
    graph.inputs[0].shape = [2, 4]
    graph.outputs[0].name = "renamed"
    assert interface_unchanged(graph, before) == [
        "graph input 'x' (float32, [1, 4]) is gone",
        "graph output 'y' (float32, [1, 4]) is gone",
        "graph input 'x' (float32, [2, 4]) is new",
        "graph output 'renamed' (float32, [1, 4]) is new",
    ]


def test_names_kept_catches_a_renamed_tensor():
    graph = chain()
    before = Snapshot.of(graph)
    graph.nodes[0].outputs[0].name = "t_renamed"
    assert names_kept(graph, before) == ["tensor 't' is now named 't_renamed'"]


def test_names_kept_catches_a_rewrite_that_names_its_output_afresh():
    """The rewrite computes ``t`` anew but calls it ``t_new``: ``second`` reads another name."""
    graph = chain()
    before = Snapshot.of(graph)
    first = graph.nodes[0]
    fresh = variable("t_new")
    graph.nodes[0] = gs.Node("Sigmoid", "first_new", inputs=list(first.inputs), outputs=[fresh])
    first.inputs.clear()
    first.outputs.clear()
    graph.nodes[1].inputs[0] = fresh
    assert names_kept(graph, before) == [
        "node 'second' (Relu) now reads the new tensor 't_new' where it read 't'; a rewrite "
        "keeps the replaced tensor's name"
    ]


def test_names_kept_catches_a_name_written_twice():
    graph = chain()
    before = Snapshot.of(graph)
    graph.nodes[1].outputs[0] = variable("t")
    graph.outputs = [graph.nodes[1].outputs[0]]
    assert names_kept(graph, before) == [
        "tensor name 't' is written 2 times",
        "tensor name 't' names 2 different tensors",
    ]


def test_no_batchnorm_created_catches_a_new_one_only():
    graph = chain()
    before = Snapshot.of(graph)
    y = graph.outputs[0]
    z = variable("z")
    weights = [gs.Constant(f"bn_{name}", np.ones(4, np.float32)) for name in "sbmv"]
    graph.nodes.append(gs.Node("BatchNormalization", "bn", inputs=[y, *weights], outputs=[z]))
    graph.outputs = [z]
    assert no_batchnorm_created(graph, before) == [
        "node 'bn' (BatchNormalization) is new: the pass created a BatchNormalization"
    ]
    assert no_batchnorm_created(graph, Snapshot.of(graph)) == []


def test_constants_unedited_catches_new_values_in_an_old_constant():
    graph = chain()
    weight = gs.Constant("w", np.arange(4, dtype=np.float32).reshape(1, 4))
    graph.nodes[1].op = "Add"
    graph.nodes[1].inputs.append(weight)
    before = Snapshot.of(graph)
    weight.values = np.ones((1, 4), np.float32)
    assert constants_unedited(graph, before) == ["constant 'w' was edited in place"]
    weight.values = np.arange(4, dtype=np.float64).reshape(1, 4)
    assert constants_unedited(graph, before) == ["constant 'w' was edited in place"]
    graph.nodes[1].inputs[1] = gs.Constant("w2", np.ones((1, 4), np.float32))
    assert constants_unedited(graph, before) == []


def test_constants_unedited_takes_a_nan_for_itself():
    graph = chain()
    graph.nodes[1].op = "Add"
    graph.nodes[1].inputs.append(gs.Constant("w", np.array([[np.nan, 1, 2, 3]], np.float32)))
    assert constants_unedited(graph, Snapshot.of(graph)) == []


def test_sums_are_binary_catches_a_sum_of_three():
    graph = chain()
    graph.nodes[1].op = "Sum"
    graph.nodes[1].inputs.extend([graph.inputs[0], graph.inputs[0]])
    assert sums_are_binary(graph) == ["node 'second' (Sum) adds 3 inputs at once"]


def test_result_matches_graph_catches_an_unreported_or_a_phantom_change():
    graph = chain()
    before = Snapshot.of(graph)
    assert result_matches_graph(graph, before, PassResult(rewrites=1)) == [
        "the pass reports a change but the graph's nodes and edges are as before"
    ]
    graph.nodes[1].inputs[0] = graph.inputs[0]
    assert result_matches_graph(graph, before, PassResult()) == [
        "the pass changed the graph (node 'second' (Relu) reads other tensors) but reports no "
        "change"
    ]


def test_checked_names_the_pass_and_the_part_of_its_contract():
    @contract(requires=WELL_FORMED, ensures=KEEPS_INTERFACE_AND_NAMES)
    def rename_output(graph: gs.Graph) -> PassResult:
        graph.outputs[0].name = "renamed"
        return PassResult(rewrites=1)

    with pytest.raises(ContractViolation) as caught:
        checked(rename_output)(chain())
    assert str(caught.value).splitlines() == [
        "3 contract violation(s):",
        "  rename_output ensures: graph output 'y' (float32, [1, 4]) is gone",
        "  rename_output ensures: graph output 'renamed' (float32, [1, 4]) is new",
        "  rename_output ensures: tensor 'y' is now named 'renamed'",
    ]
    graph = chain()
    graph.nodes.reverse()
    with pytest.raises(ContractViolation, match="rename_output requires: node 'second'"):
        checked(rename_output)(graph)


def test_checked_refuses_a_pass_without_a_contract():
    with pytest.raises(ValueError, match="declares no contract"):
        checked(lambda graph: PassResult())
