"""The region pass's worklist over rounds (``passes/region_memory.py``) saves work and changes
nothing else.

Every model here is fused twice: with the memory (a round after the first plans only the
components the last round's rewrites could change, and repeats the others' refusals) and
with the memory never usable (every root planned in every round, as before the worklist).
Every run of the region pass must return the same fused blocks and the same refusals, in
the same order, and the fused models must be the same bytes: on every committed model, on
every peer case, and on random networks of blocks (sums of chains of linear ops, joined by
ReLU, by nothing, by a decomposed GELU with constants after it, or read twice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from peer_graphs import ALL_CASES, RAISES
from test_regions import SIZE, Builder, C, build_chain, chains

from helpers import assert_same_function, fuse_model, op_counts, repvgg_chain
from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.graph.shapes import annotate_shapes, inferred_shapes
from repvgg_onnx.passes import region_memory, regions
from repvgg_onnx.passes.affine_regions import fuse_affine_regions
from repvgg_onnx.passes.pass_result import PassResult
from repvgg_onnx.pipeline.function_inlining import inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES, run_passes

MODELS = Path(__file__).resolve().parent.parent / "models"
COMMITTED = sorted(MODELS.rglob("*.onnx"))


def region_runs(model: onnx.ModelProto, monkeypatch, remember: bool):
    """Each region run's fused blocks and refusals, and the fused model's bytes."""
    runs = []

    def regions_pass(graph):
        result = fuse_affine_regions(graph)
        runs.append((tuple(result.fused), tuple(result.skipped)))
        return result

    passes = tuple(regions_pass if p is fuse_affine_regions else p for p in DEFAULT_PASSES)
    with monkeypatch.context() as patch:
        if not remember:
            patch.setattr(region_memory.RegionMemory, "usable", property(lambda self: False))
        try:
            fused, outcome = fuse_graph(model, passes)
        except UnsupportedModelError as error:
            return runs, str(error)
    return runs, (fused.SerializeToString(deterministic=True), outcome.skipped)


def assert_worklist_changes_nothing(model: onnx.ModelProto, monkeypatch) -> None:
    remembered = region_runs(model, monkeypatch, remember=True)
    replanned = region_runs(model, monkeypatch, remember=False)
    assert remembered[0] == replanned[0]
    assert remembered[1] == replanned[1]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: str(path.relative_to(MODELS)))
def test_every_committed_model_plans_the_same_with_the_worklist(path, monkeypatch):
    assert_worklist_changes_nothing(inline_for_passes(onnx.load(path))[0], monkeypatch)


@pytest.mark.parametrize(
    "case", [c for c in ALL_CASES if c.expect != RAISES], ids=lambda case: case.id
)
def test_every_peer_case_plans_the_same_with_the_worklist(case, monkeypatch):
    assert_worklist_changes_nothing(case.build(), monkeypatch)


JOINS = st.sampled_from(["relu", "none", "none", "gelu", "twice"])


def gelu_then_constants(builder: Builder, x: str) -> str:
    """``x·(1 + erf(x/√2))·0.5`` written out, then a per-channel Mul (a GELU's tail)."""
    scaled = builder.node("Div", [x, builder.const(np.float32(np.sqrt(2.0)))])
    erf = builder.node("Erf", [scaled])
    shifted = builder.node("Add", [erf, builder.const(np.float32(1.0))])
    product = builder.node("Mul", [x, shifted])
    half = builder.node("Mul", [product, builder.const(np.float32(0.5))])
    return builder.per_channel(half, "Mul")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(
        st.tuples(
            st.lists(st.tuples(chains(), st.booleans()), min_size=1, max_size=3),
            st.booleans(),  # an identity term
            JOINS,
        ),
        min_size=1,
        max_size=4,
    ),
    groups=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_random_networks_plan_the_same_with_the_worklist(blocks, groups, seed):
    builder = Builder(seed)
    h, kept = "x", []
    for terms, identity, join in blocks:
        total = build_chain(builder, h, terms[0][0], groups)
        for chain, negative in terms[1:]:
            term = build_chain(builder, h, chain, groups)
            total = builder.node("Sub" if negative else "Add", [total, term])
        if identity and total != h:
            total = builder.node("Add", [total, h])
        if join == "relu":
            total = builder.node("Relu", [total])
        elif join == "gelu":
            total = gelu_then_constants(builder, total)
        elif join == "twice":
            kept.append(total)
        h = total
    for other in kept:  # read twice: by the next block and by the sum at the end
        h = builder.node("Add", [h, other])
    model = builder.model(h if h != "x" else builder.node("Relu", [h]))
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert_worklist_changes_nothing(model, monkeypatch)


def plan_counts(
    model: onnx.ModelProto, monkeypatch
) -> tuple[list[int], list[int], onnx.ModelProto]:
    """Roots planned and nodes read in each region run, and the fused model."""
    planned, read = [], []
    plan_root, read_node = regions.RegionFinder._plan_root, regions.read_node

    def counting_plan_root(self, root):
        planned[-1] += 1
        return plan_root(self, root)

    def counting_read_node(node):
        read[-1] += 1
        return read_node(node)

    def regions_pass(graph):
        planned.append(0)
        read.append(0)
        return fuse_affine_regions(graph)

    monkeypatch.setattr(regions.RegionFinder, "_plan_root", counting_plan_root)
    monkeypatch.setattr(regions, "read_node", counting_read_node)
    passes = tuple(regions_pass if p is fuse_affine_regions else p for p in DEFAULT_PASSES)
    fused, _ = fuse_graph(model, passes)
    return planned, read, fused


def test_a_round_after_the_first_plans_nothing_its_rewrites_did_not_change(monkeypatch):
    """A chain of 50 RepVGG blocks: round 1 plans each block's root once and reads each of its
    400 nodes once; round 2 plans no root and reads only the 50 ReLUs next to the new convs,
    to learn that each new conv stands alone between non-linear ops."""
    model, _ = repvgg_chain(50)
    planned, read, fused = plan_counts(model, monkeypatch)
    assert planned == [50, 0]
    assert read == [len(model.graph.node), 50]
    assert [n.op_type for n in fused.graph.node] == ["Conv", "Relu"] * 50
    assert_same_function(model, fused)


def linear_chain(blocks: int) -> onnx.ModelProto:
    """Blocks of ``1x1 conv + BN`` plus a BN of the input, nothing non-linear between them."""
    builder = Builder(7)
    h = "x"
    for _ in range(blocks):
        point = builder.batchnorm(builder.conv(h, (1, 1), "centre", 1, 1))
        h = builder.node("Add", [point, builder.batchnorm(h)])
    return builder.model(h)


def test_blocks_whose_input_a_rewrite_frees_are_planned_again_and_merge(monkeypatch):
    """Round 1 fuses each block on its own (its input is read twice); round 2 finds each
    input read once, by the new conv, and plans the chain again: one root, one 1x1 conv;
    round 3 plans nothing."""
    model = linear_chain(3)
    planned, _, fused = plan_counts(model, monkeypatch)
    assert planned == [3, 1, 0]
    assert [n.op_type for n in fused.graph.node] == ["Conv"]
    assert_same_function(model, fused)


def test_the_memory_is_usable_only_after_the_region_pass_own_edit():
    memory = region_memory.RegionMemory()
    memory.remember({}, [[]], [])
    assert not memory.usable  # the fixpoint has not counted the region pass's own edit yet
    memory.note_edit()
    assert memory.usable
    memory.note_edit()  # another pass modified the graph
    assert not memory.usable
    memory.remember({}, [], [])
    assert memory.usable  # nothing rewritten: no edit of its own to wait for


def replans(model: onnx.ModelProto, other_pass, monkeypatch) -> list[bool]:
    """For each region run with ``other_pass`` before it in each round: whether it planned
    every root (no worklist)."""
    everything = []
    plan_all = regions.RegionFinder.plan_all

    def spying_plan_all(self, replan=None, known=None):
        everything.append(replan is None)
        return plan_all(self, replan, known)

    monkeypatch.setattr(regions.RegionFinder, "plan_all", spying_plan_all)
    run_passes(gs.import_onnx(model), (other_pass, fuse_affine_regions))
    return everything


def test_an_edit_by_another_pass_makes_the_next_region_run_plan_everything(monkeypatch):
    """A pass that edits in round 2, says shapes are stale, and is quiet when run again
    after shape inference: the edit still counts, so round 2's region run plans every root;
    round 3's, after nothing but the region pass, uses the worklist."""
    model, _ = repvgg_chain(3)
    calls = []

    def edits_in_round_two(graph):
        calls.append(len(calls))
        if len(calls) == 2:
            return PassResult(rewrites=1, shapes_stale=True)
        return PassResult()

    assert replans(model, edits_in_round_two, monkeypatch) == [True, True, False]


def test_a_quiet_fixpoint_uses_the_worklist_from_round_two(monkeypatch):
    model, _ = repvgg_chain(3)
    assert replans(model, lambda graph: PassResult(), monkeypatch) == [True, False]


def test_a_gelu_tail_whose_pattern_look_up_a_rewrite_cuts_short_folds_in_round_two():
    """``Mul`` after ``ReLU(Conv1x1(e) + e)``, ``e = Erf(x)``: round 1 keeps the Mul before the
    3x3 conv, since the look-up from the ReLU climbs the Add to the Erf (a GELU's tell). The
    region becomes one Conv, where the look-up stops, so round 2 folds the Mul into the 3x3
    conv: that root is planned again although no new node is in its component."""
    builder = Builder(11)
    erf = builder.node("Erf", ["x"])
    summed = builder.node("Add", [builder.conv(erf, (1, 1), "centre", 1, 1), erf])
    tail = builder.per_channel(builder.node("Relu", [summed]), "Mul")
    model = builder.model(builder.conv(tail, (3, 3), "centre", 1, 1))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Erf": 1, "Conv": 2, "Relu": 1}
    assert outcome.rounds == 3
    assert_same_function(model, fused)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert_worklist_changes_nothing(model, monkeypatch)


def test_every_rewrite_reads_every_tensor_its_region_read():
    """What the worklist relies on: a rewritten region's sources stay read by its new nodes
    (a cancelled term is emitted as a zero map), so the new nodes' components reach every
    linear op whose output lost a reader."""
    checked = 0
    for path in COMMITTED:
        graph = gs.import_onnx(inline_for_passes(onnx.load(path))[0])
        annotate_shapes(graph, inferred_shapes(gs.export_onnx(graph)))
        inputs = {id(node): list(node.inputs) for node in graph.nodes}
        before = {id(node): node for node in graph.nodes}
        fuse_affine_regions(graph)
        created = [node for node in graph.nodes if id(node) not in before]
        read_now = {id(t) for node in created for t in node.inputs}
        kept = {id(node) for node in graph.nodes}
        for key, node in before.items():
            if key in kept:
                continue
            for tensor in inputs[key]:
                if isinstance(tensor, gs.Constant) or not (tensor.inputs or tensor.outputs):
                    continue
                assert id(tensor) in read_now, (path.name, node.name, tensor.name)
                checked += 1
    assert checked > 500


def test_a_rewrite_into_a_lone_add_is_planned_again_to_say_why_it_stays(monkeypatch):
    """``(conv(x)·2)/2 + ReLU(x)`` with a conv of non-constant weight: round 1 rewrites the
    sum into one Add of the two inputs; round 2 plans that Add again (it reads two tensors)
    and says why it stays, as planning every root does."""
    builder = Builder(5)
    conv = builder.node("Conv", ["x", "w"], pads=[1, 1, 1, 1])
    two = builder.const(np.float32(2.0))
    scaled = builder.node("Div", [builder.node("Mul", [conv, two]), two])
    weight = helper.make_tensor_value_info("w", TensorProto.FLOAT, [C, C, 3, 3])
    model = builder.model(
        builder.node("Add", [scaled, builder.node("Relu", ["x"])]), extra_inputs=[weight]
    )
    runs, (_, skipped) = region_runs(model, monkeypatch, remember=True)
    assert [len(fused) for fused, _ in runs] == [1, 0]
    [skip] = skipped
    assert "weight that is not constant" in skip.reason and "the Add stays" in skip.reason
    assert_worklist_changes_nothing(model, monkeypatch)


def test_a_node_of_a_subgraph_is_never_read_as_an_op_of_the_graph(monkeypatch):
    """A BN read only by a Mul inside an ``If`` branch is a root (nothing of the graph reads
    its output), so it says why it does not fold into the conv before it; read lazily, the
    branch's Mul must not make the BN's output look interior."""
    builder = Builder(9)
    conv = builder.conv("x", (3, 3), "centre", 1, 1)
    relu = builder.node("Relu", [conv])
    bn = builder.batchnorm(conv)
    shape = [1, C, SIZE, SIZE]
    scale = numpy_helper.from_array(np.full((C, 1, 1), 2, np.float32), "k")
    then = helper.make_graph(
        [helper.make_node("Mul", [bn, "k"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, shape)],
        [scale],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, shape)],
    )
    builder.nodes.append(
        helper.make_node("If", ["s"], ["picked"], then_branch=then, else_branch=other)
    )
    flag = helper.make_tensor_value_info("s", TensorProto.BOOL, [])
    model = builder.model(relu, extra_inputs=[flag])
    model.graph.output.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, shape))
    _, (_, skipped) = region_runs(model, monkeypatch, remember=True)
    [skip] = skipped
    assert skip.reason.startswith(f"BatchNormalization '{builder.nodes[-2].name}' cannot fold")
