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
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peer_graphs import ALL_CASES, RAISES
from test_regions import Builder, build_chain, chains

from helpers import assert_same_function, repvgg_chain
from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.passes import region_memory, regions
from repvgg_onnx.passes.affine_regions import fuse_affine_regions
from repvgg_onnx.pipeline.function_inlining import inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES

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


def test_an_edit_by_another_pass_makes_the_next_round_plan_everything(monkeypatch):
    memory = region_memory.RegionMemory()
    memory.remember({}, [[]], [], [])
    assert not memory.usable  # the fixpoint has not counted the region pass's own edit yet
    memory.note_edit()
    assert memory.usable
    memory.note_edit()  # another pass modified the graph
    assert not memory.usable
    memory.remember({}, [], [], [])
    assert memory.usable  # nothing rewritten: no edit of its own to wait for
    memory.forget()
    assert not memory.usable
