"""The affine-region pass on generated and hand-written graphs, checked in onnxruntime.

The property test builds random regions of one input ``x``: chains of Conv (odd and even
kernels, asymmetric pads, ``auto_pad`` SAME_UPPER/SAME_LOWER, dilations, groups), BN, per-
channel Mul/Add/Sub, zero Pad and AveragePool, summed with signs, scaled after the sum, with
a partial sum of another tensor, and sometimes a ReLU inside a branch. Every fused model must
compute what the original does; the tests never trust fuse's own verification.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from helpers import BranchSpec, assert_same_function, block_model, fuse_model, op_counts

C = 4
SIZE = 9


class Builder:
    """Nodes and random constants of a graph on ``x [1, C, SIZE, SIZE]``."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value, dtype=np.float32) -> str:
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, kernel: tuple[int, int], mode: str, dilation: int, groups: int) -> str:
        """A conv that keeps the spatial size, padded one of several ways."""
        weight = self.const(self.rng.normal(0, 0.4, (C, C // groups, *kernel)))
        bias = [self.const(self.rng.normal(0, 0.3, C))] if self.rng.random() < 0.5 else []
        attrs: dict = {"dilations": [dilation] * 2, "group": groups}
        totals = [dilation * (k - 1) for k in kernel]
        if mode in ("SAME_UPPER", "SAME_LOWER") and dilation == 1:
            attrs["auto_pad"] = mode
        else:
            begin = [t // 2 if mode != "end" else t - t // 2 for t in totals]
            attrs["pads"] = begin + [t - b for t, b in zip(totals, begin, strict=True)]
        return self.node("Conv", [x, weight, *bias], **attrs)

    def batchnorm(self, x: str) -> str:
        rng = self.rng
        params = [
            self.const(rng.uniform(0.5, 1.5, C)),
            self.const(rng.normal(0, 0.5, C)),
            self.const(rng.normal(0, 0.5, C)),
            self.const(rng.uniform(0.2, 3.0, C)),
        ]
        return self.node("BatchNormalization", [x, *params], epsilon=1e-3)

    def per_channel(self, x: str, op: str) -> str:
        value = self.rng.uniform(0.5, 1.5, (C, 1, 1)) * self.rng.choice([-1, 1], (C, 1, 1))
        return self.node(op, [x, self.const(value)])

    def padded_conv(self, x: str) -> str:
        """Pad(0) then an unpadded 3x3: the pad merges into the conv's pads."""
        pads = self.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
        padded = self.node("Pad", [x, pads])
        weight = self.const(self.rng.normal(0, 0.4, (C, C, 3, 3)))
        return self.node("Conv", [padded, weight])

    def average_pool(self, x: str) -> str:
        return self.node(
            "AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        )

    def model(self, output: str, extra_inputs=(), size: int | str = SIZE) -> onnx.ModelProto:
        shape = [1, C, size, size]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape), *extra_inputs]
        outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, None, None, None])]
        graph = helper.make_graph(self.nodes, "region", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


STEPS = st.sampled_from(
    ["conv", "conv", "pointwise", "bn", "Mul", "Add", "Sub", "pad_conv", "avgpool", "relu"]
)
KERNELS = st.sampled_from([(1, 1), (3, 3), (2, 2), (1, 3), (3, 1), (5, 5), (4, 2)])
MODES = st.sampled_from(["centre", "end", "SAME_UPPER", "SAME_LOWER"])


@st.composite
def chains(draw):
    return [
        (draw(STEPS), draw(KERNELS), draw(MODES), draw(st.sampled_from([1, 2])))
        for _ in range(draw(st.integers(0, 3)))
    ]


def build_chain(builder: Builder, x: str, chain, groups: int) -> str:
    for step, kernel, mode, dilation in chain:
        if step == "conv":
            x = builder.conv(x, kernel, mode, dilation, groups)
        elif step == "pointwise":
            x = builder.conv(x, (1, 1), mode, 1, 1)
        elif step == "bn":
            x = builder.batchnorm(x)
        elif step in ("Mul", "Add", "Sub"):
            x = builder.per_channel(x, step)
        elif step == "pad_conv":
            x = builder.padded_conv(x)
        elif step == "avgpool":
            x = builder.average_pool(x)
        else:
            x = builder.node("Relu", [x])
    return x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    terms=st.lists(st.tuples(chains(), st.booleans()), min_size=1, max_size=4),  # (chain, −)
    groups=st.sampled_from([1, 2, 4]),
    after=chains(),
    other=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_regions_compute_the_same_function(terms, groups, after, other, seed):
    builder = Builder(seed)
    total = build_chain(builder, "x", terms[0][0], groups)
    for chain, negative in terms[1:]:
        term = build_chain(builder, "x", chain, groups)
        total = builder.node("Sub" if negative else "Add", [total, term])
    if other:
        total = builder.node("Add", [total, builder.node("Relu", ["x"])])
    y = build_chain(builder, total, after, groups)
    model = builder.model(y if y != "x" else builder.node("Relu", [y]))
    fused, _ = fuse_model(model)
    assert_same_function(model, fused)
    assert len(fused.graph.node) <= len(model.graph.node)


def test_bn_before_a_zero_padded_conv_stays_with_its_reason():
    builder = Builder(1)
    bn = builder.batchnorm("x")
    y = builder.conv(bn, (3, 3), "centre", 1, 1)
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    [skip] = outcome.skipped
    assert "cannot absorb the BN (BatchNormalization" in skip.reason
    assert "padding would see" in skip.reason


def test_bn_with_zero_shift_before_a_padded_conv_folds():
    """``β = μγ/σ`` makes the shift zero: the padding sees zeros either way."""
    builder = Builder(2)
    gamma, mean, var = np.full(C, 1.3), np.linspace(-1, 1, C), np.full(C, 0.7)
    beta = mean * gamma / np.sqrt(var + 1e-3)
    params = [builder.const(v) for v in (gamma, beta, mean, var)]
    bn = builder.node("BatchNormalization", ["x", *params], epsilon=1e-3)
    y = builder.conv(bn, (3, 3), "centre", 1, 1)
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert_same_function(model, fused)


def test_bn_before_an_unpadded_conv_folds_forward():
    builder = Builder(3)
    bn = builder.batchnorm("x")
    y = builder.node("Conv", [bn, builder.const(builder.rng.normal(size=(C, C, 3, 3)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert outcome.fused[0].branches == ("BN+Conv3x3",)
    assert_same_function(model, fused)


def test_a_depthwise_conv_before_a_pointwise_one_is_not_composed():
    """dw7x7 then 1x1 (FastViT's ConvMlp): one dense 7x7 would cost far more; the BN still
    folds into the depthwise conv."""
    builder = Builder(4)
    dw = builder.batchnorm(builder.conv("x", (7, 7), "centre", 1, C))
    y = builder.node("Conv", [dw, builder.const(builder.rng.normal(size=(4 * C, C, 1, 1)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2}
    assert [b.branches for b in outcome.fused] == [("Conv7x7/g4+BN",)]
    assert_same_function(model, fused)


def test_a_composition_costing_more_than_its_whole_region_is_never_computed(monkeypatch):
    """The region's cost bounds every composition in it: the dense 7x7 that the 1x1 after a
    depthwise 7x7 would make costs more than both convs together, so it is not even computed
    (only a later check would throw it away, at the price of computing it)."""
    from repvgg_onnx.algebra.affine_conv import AffineConv
    from repvgg_onnx.passes import regions

    composed = []
    compose = regions.compose

    def recording_compose(outer, inner, *args):
        if isinstance(outer, AffineConv) and isinstance(inner, AffineConv):
            composed.append((outer.kernel_shape, inner.kernel_shape))
        return compose(outer, inner, *args)

    monkeypatch.setattr(regions, "compose", recording_compose)
    builder = Builder(4)
    dw = builder.conv("x", (7, 7), "centre", 1, C)
    y = builder.node("Conv", [dw, builder.const(builder.rng.normal(size=(4 * C, C, 1, 1)))])
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2}
    assert ((1, 1), (7, 7)) not in composed
    assert_same_function(model, fused)


def test_ops_applied_to_a_source_never_sum_their_region_cost(monkeypatch):
    """A BatchNormalization after a Conv of the graph input composes with the Conv, and the
    Conv itself applies to the input untouched: neither composition can cost more than the
    region, so planning never walks the region to sum its cost (RepVGG's chain has a region
    per block; walking each is wasted work)."""
    from repvgg_onnx.passes import regions

    summed = []
    region_cost = regions.RegionFinder.region_cost

    def recording_region_cost(self, op):
        summed.append(op.node.name)
        return region_cost(self, op)

    monkeypatch.setattr(regions.RegionFinder, "region_cost", recording_region_cost)
    model = block_model([BranchSpec("conv_bn")], relu=False)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert summed == []
    assert_same_function(model, fused)


def test_a_composition_within_the_region_cost_but_costlier_than_its_ops_is_not_made():
    """dw3x3 → 1x1 on ``x`` summed with a dense 7x7 on another tensor: the region's cost (the
    7x7's mostly) admits the dense 3x3 the two would compose to, but that costs more than
    they do, so they stay two convs (the sum is planned again with each composition checked
    on its own)."""
    builder = Builder(6)
    dw = builder.conv("x", (3, 3), "centre", 1, C)
    pointwise = builder.node("Conv", [dw, builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    big = builder.conv("y", (7, 7), "centre", 1, 1)
    y = builder.node("Add", [pointwise, big])
    extra = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    model = builder.model(y, extra_inputs=[extra])
    fused, _ = fuse_model(model)
    groups = sorted(
        next((a.i for a in node.attribute if a.name == "group"), 1)
        for node in fused.graph.node
        if node.op_type == "Conv"
    )
    assert groups == [1, 1, C], "the depthwise conv and the 1x1 after it stay"
    assert_same_function(model, fused)


def test_two_padded_3x3_convs_in_a_row_stay_two():
    builder = Builder(5)
    y = builder.conv(builder.conv("x", (3, 3), "centre", 1, 1), (3, 3), "centre", 1, 1)
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2} and outcome.fused == []
    assert outcome.skipped == []  # two layers, not a missed fold


def test_unpadded_1x1_then_3x3_becomes_one_3x3():
    """DBB's 1x1→kxk chain: exact and no more expensive."""
    builder = Builder(6)
    inner = builder.node("Conv", ["x", builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    y = builder.node("Conv", [inner, builder.const(builder.rng.normal(size=(C, C, 3, 3)))])
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert_same_function(model, fused)


def test_a_tensor_read_inside_a_subgraph_is_not_interior():
    builder = Builder(7)
    conv = builder.conv("x", (3, 3), "centre", 1, 1)
    bn = builder.batchnorm(conv)
    then_graph = helper.make_graph(
        [helper.make_node("Relu", [conv], ["inner"])],
        "then",
        [],
        [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", [conv], ["inner2"])],
        "else",
        [],
        [helper.make_tensor_value_info("inner2", TensorProto.FLOAT, None)],
    )
    branch = builder.node("If", ["flag"], then_branch=then_graph, else_branch=else_graph)
    y = builder.node("Add", [bn, branch])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    model = builder.model(y, extra_inputs=[flag])
    fused, _ = fuse_model(model)
    assert op_counts(fused)["BatchNormalization"] == 1
    for value in (True, False):
        feeds = {"x": np.random.default_rng(0).normal(size=(1, C, SIZE, SIZE)).astype("f")}
        feeds["flag"] = np.array(value)
        from helpers import run

        np.testing.assert_allclose(run(fused, feeds)[0], run(model, feeds)[0], rtol=1e-5)


def test_terms_of_one_source_with_different_shapes_are_not_merged():
    """``conv_full(x)`` is ``[1, C, 1, 1]`` and broadcasts against ``conv3(x)``."""
    builder = Builder(8)
    full = builder.node("Conv", ["x", builder.const(builder.rng.normal(size=(C, C, SIZE, SIZE)))])
    same = builder.conv("x", (3, 3), "centre", 1, 1)
    y = builder.node("Add", [same, full])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert_same_function(model, fused)
    assert any("differ in size" in s.reason for s in outcome.skipped)


def test_average_pool_that_excludes_padding_is_not_read():
    builder = Builder(9)
    pool = builder.node(
        "AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0
    )
    y = builder.batchnorm(builder.conv(pool, (1, 1), "centre", 1, 1))
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"AveragePool": 1, "Conv": 1}
    assert_same_function(model, fused)


@pytest.mark.parametrize("size", [SIZE, SIZE + 1, "h"])
@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_with_stride_2_merges_on_a_static_input_only(mode, size):
    """``auto_pad=SAME_*`` with stride 2 pads by the input size: resolved to explicit pads
    and merged when the input's size is static; else not merged, but the BN still folds and
    the conv keeps its ``auto_pad``."""
    builder = Builder(10)
    weight = builder.const(builder.rng.normal(size=(C, C, 2, 2)))
    a = builder.batchnorm(builder.node("Conv", ["x", weight], auto_pad=mode, strides=[2, 2]))
    b = builder.node(
        "Conv", ["x", builder.const(builder.rng.normal(size=(C, C, 1, 1)))], strides=[2, 2]
    )
    y = builder.node("Add", [a, b])
    model = builder.model(y, size=size)
    fused, outcome = fuse_model(model)
    assert_same_function(model, fused)
    if size != "h":
        assert op_counts(fused) == {"Conv": 1}, outcome.skipped
        return
    assert op_counts(fused) == {"Conv": 2, "Add": 1}
    assert any("depends on the input size" in s.reason for s in outcome.skipped)
    conv = next(n for n in fused.graph.node if n.op_type == "Conv" and n.input[1] != b)
    assert mode in str(conv.attribute)


def test_fastvit_repmixer_signed_scaled_residual_is_one_conv():
    """``x + γ⊙(dwconvBN(x) − BN(x))``."""
    builder = Builder(11)
    mixer = builder.batchnorm(builder.conv("x", (3, 3), "centre", 1, C))
    difference = builder.node("Sub", [mixer, builder.batchnorm("x")])
    scaled = builder.per_channel(difference, "Mul")
    y = builder.node("Relu", [builder.node("Add", ["x", scaled])])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert outcome.fused[0].branches == ("Identity", "Conv3x3/g4+BN+Mul", "−BN+Mul")
    assert_same_function(model, fused)


def test_repghost_partial_sum_keeps_the_shortcut():
    """``dw(x1) + BN(x1) + shortcut``: the terms of ``x1`` merge, the shortcut stays."""
    builder = Builder(12)
    x1 = builder.node("Relu", [builder.conv("x", (1, 1), "centre", 1, 1)])
    ghost = builder.node(
        "Add", [builder.batchnorm(builder.conv(x1, (3, 3), "centre", 1, C)), builder.batchnorm(x1)]
    )
    y = builder.node("Add", [ghost, "x"])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2, "Relu": 1, "Add": 1}
    [block] = outcome.fused
    assert block.result == "Conv3x3/g4 + 'x'"
    assert_same_function(model, fused)


def test_a_reshape_that_keeps_the_last_axis_after_a_conv_stays():
    """EfficientViT-MSRA splits q/k/v with ``Reshape`` after a conv: the last axis (W) is kept,
    but the Reshape still changes the shape, so it is never dropped (a raw term is no node)."""
    builder = Builder(13)
    conv = builder.conv("x", (1, 1), "centre", 1, 1)
    y = builder.node("Reshape", [conv, builder.const([1, 2, 2 * SIZE, SIZE], np.int64)])
    z = builder.node("Relu", [conv])  # the conv's output is read twice: a source, untouched
    graph = helper.make_graph(
        builder.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])],
        [
            helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 2, 2 * SIZE, SIZE]),
            helper.make_tensor_value_info(z, TensorProto.FLOAT, [1, C, SIZE, SIZE]),
        ],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Reshape": 1, "Relu": 1} and outcome.fused == []
    onnx.checker.check_model(fused, full_check=True)
    assert_same_function(model, fused)


def test_a_region_that_computes_its_own_input_is_left_alone():
    """``(x + c) − c`` is ``x``: no node would write the region's output, so nothing changes
    (the rewrite must never leave a tensor without a producer)."""
    builder = Builder(14)
    shift = builder.const(builder.rng.normal(size=(C, 1, 1)))
    y = builder.node("Relu", [builder.node("Sub", [builder.node("Add", ["x", shift]), shift])])
    model = builder.model(y)
    fused, _ = fuse_model(model)
    onnx.checker.check_model(fused, full_check=True)
    assert_same_function(model, fused)


def _conv_bn_then_transpose(also_relu: bool) -> onnx.ModelProto:
    builder = Builder(15)
    bn = builder.batchnorm(builder.conv("x", (3, 3), "centre", 1, 1))
    outputs = [builder.node("Transpose", [bn], perm=[0, 1, 3, 2])]
    if also_relu:
        outputs.append(builder.node("Relu", [bn]))
    shape = [1, C, SIZE, SIZE]
    graph = helper.make_graph(
        builder.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs],
        builder.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_region_below_an_op_that_moves_elements_is_fused():
    """A Transpose (EfficientViT-MSRA's attention) stays, and the Conv+BN below it folds."""
    model = _conv_bn_then_transpose(also_relu=False)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Transpose": 1}
    assert_same_function(model, fused)


def test_a_tensor_that_is_a_root_twice_is_rewritten_once():
    """The Conv+BN output is a root (read twice) and the Transpose's input: one rewrite, one
    writer (the graph stays in SSA form)."""
    model = _conv_bn_then_transpose(also_relu=True)
    fused, _ = fuse_model(model)
    onnx.checker.check_model(fused, full_check=True)
    assert op_counts(fused) == {"Conv": 1, "Transpose": 1, "Relu": 1}
    assert_same_function(model, fused)


INNER_BIAS = np.array([0.3, -0.2, 0.5, 0.1])


def _pad_scatter_conv(indices: np.ndarray, updates: np.ndarray) -> onnx.ModelProto:
    """``Conv(ScatterND(Pad(conv1x1(x) + INNER_BIAS), indices, updates))``: DBB's border layer
    when the scatter writes ``INNER_BIAS`` on the whole border."""
    builder = Builder(16)
    weight = builder.const(builder.rng.normal(size=(C, C, 1, 1)))
    inner = builder.node("Conv", ["x", weight, builder.const(INNER_BIAS)])
    pads = builder.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    padded = builder.node("Pad", [inner, pads])
    scattered = builder.node(
        "ScatterND", [padded, builder.const(indices, np.int64), builder.const(updates)]
    )
    y = builder.node("Conv", [scattered, builder.const(builder.rng.normal(size=(C, C, 3, 3)))])
    return builder.model(y)


def _border_indices() -> np.ndarray:
    positions = [
        (0, c, h, w)
        for c in range(C)
        for h in range(SIZE + 2)
        for w in range(SIZE + 2)
        if h in (0, SIZE + 1) or w in (0, SIZE + 1)
    ]
    return np.array(positions)


def test_a_scatter_that_writes_inside_the_border_is_not_a_pad():
    indices = np.array([[0, 0, 3, 3]])  # an interior element
    model = _pad_scatter_conv(indices, np.array([5.0]))
    fused, _ = fuse_model(model)
    assert op_counts(fused)["ScatterND"] == 1
    assert_same_function(model, fused)


def test_the_dbb_border_layer_composes_into_one_conv():
    indices = _border_indices()
    model = _pad_scatter_conv(indices, INNER_BIAS[indices[:, 1]])
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}
    assert_same_function(model, fused)


def test_a_border_whose_values_differ_within_a_channel_is_not_a_pad():
    """All the border holds the bias but one element, set lower (a per-channel maximum would
    take it for the bias)."""
    indices = _border_indices()
    updates = INNER_BIAS[indices[:, 1]]
    updates[0] -= 1.0
    model = _pad_scatter_conv(indices, updates)
    fused, _ = fuse_model(model)
    assert op_counts(fused)["ScatterND"] == 1
    assert_same_function(model, fused)


def test_a_border_filled_with_one_value_per_channel_reads_as_a_pad():
    """The fill is not the inner conv's bias, so it stays (the padding would see it); the
    chain is still read: its reason names the value."""
    indices = _border_indices()
    updates = np.repeat(np.linspace(-1, 1, C), len(indices) // C)
    model = _pad_scatter_conv(indices, updates)
    fused, outcome = fuse_model(model)
    assert op_counts(fused)["ScatterND"] == 1
    assert any("padding would see" in s.reason for s in outcome.skipped)
    assert_same_function(model, fused)


def test_an_average_pool_with_partial_windows_is_not_read():
    """``ceil_mode=1`` on a size the stride does not divide: the last window is partial."""
    builder = Builder(17)
    pool = builder.node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    y = builder.batchnorm(pool)
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"AveragePool": 1, "BatchNormalization": 1}
    assert_same_function(model, fused)


def test_gemm_with_transposed_input_is_not_read():
    rng = np.random.default_rng(18)
    nodes = [
        helper.make_node("Gemm", ["a", "w"], ["g"], transA=1),
        helper.make_node("BatchNormalization", ["g", "s", "b", "m", "v"], ["y"]),
    ]
    inits = {
        "w": rng.normal(size=(6, 5)),
        "s": rng.uniform(0.5, 1.5, 5),
        "b": rng.normal(size=5),
        "m": rng.normal(size=5),
        "v": rng.uniform(0.2, 3, 5),
    }
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [6, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Gemm": 1, "BatchNormalization": 1}
    assert_same_function(model, fused)


def test_a_pad_then_a_transpose_is_not_a_pad():
    """Every element is copied, but not at one offset: the chain transposes."""
    builder = Builder(19)
    pads = builder.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    padded = builder.node("Pad", [builder.conv("x", (1, 1), "centre", 1, 1), pads])
    moved = builder.node("Transpose", [padded], perm=[0, 1, 3, 2])
    y = builder.node("Conv", [moved, builder.const(builder.rng.normal(size=(C, C, 3, 3)))])
    model = builder.model(y)
    fused, _ = fuse_model(model)
    assert op_counts(fused)["Transpose"] == 1
    assert_same_function(model, fused)


def _optimized_op_counts(model: onnx.ModelProto, path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (its own fusions applied)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return op_counts(onnx.load(path))


def test_a_gelu_tail_stays_so_onnxruntime_still_fuses_the_gelu(tmp_path):
    """``x·(1 + erf(x/√2))·0.5`` then a conv: folding the 0.5 into the conv is exact, but
    onnxruntime would no longer see a GELU (FastViT-T8 ran 10% slower), so the Mul stays."""
    builder = Builder(20)
    erf = builder.node("Erf", [builder.node("Div", ["x", builder.const(np.sqrt(2.0))])])
    gelu = builder.node(
        "Mul",
        [
            builder.node("Mul", ["x", builder.node("Add", [erf, builder.const(1.0)])]),
            builder.const(0.5),
        ],
    )
    y = builder.node("Conv", [gelu, builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert _optimized_op_counts(fused, tmp_path / "fused.onnx").get("Gelu") == 1
    assert_same_function(model, fused)
    [skip] = outcome.skipped
    assert skip.node == producer_name(model, gelu)
    assert "ends a GELU, which onnxruntime fuses into one op" in skip.reason


def producer_name(model: onnx.ModelProto, tensor: str) -> str:
    return next(node.name for node in model.graph.node if tensor in node.output)


def _silu_then(builder: Builder, op: str) -> str:
    """``op(silu(conv(x)), a)`` with ``a`` of shape ``[1, C, 1, 1]`` (YOLOv7's ImplicitA/M)."""
    hidden = builder.conv("x", (3, 3), "centre", 1, 1)
    silu = builder.node("Mul", [hidden, builder.node("Sigmoid", [hidden])])
    return builder.node(op, [silu, builder.const(builder.rng.normal(size=(1, C, 1, 1)))])


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub"])
def test_implicit_per_channel_op_after_a_silu_folds_into_the_next_conv(op):
    """YOLOv7's ``ImplicitA`` (``x + a``) after a SiLU, before a 1x1 conv: no runtime fuses
    a SiLU's tail, and no padding sees the shift, so it folds into the conv's bias."""
    builder = Builder(22)
    implicit = _silu_then(builder, op)
    y = builder.node("Conv", [implicit, builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2, "Sigmoid": 1, "Mul": 1}, outcome.skipped
    assert_same_function(model, fused)


def test_implicit_add_before_a_padded_conv_stays_with_its_reason():
    """The padded border of a 3x3 would see ``0``, not ``a``: not exact, so the Add stays
    and the skip says why."""
    builder = Builder(23)
    implicit = _silu_then(builder, "Add")
    y = builder.conv(implicit, (3, 3), "centre", 1, 1)
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert_same_function(model, fused)
    assert any(
        producer_name(model, implicit) in s.reason or s.node == producer_name(model, implicit)
        for s in outcome.skipped
    ), outcome.skipped


def test_a_layer_norm_tail_stays_before_a_matmul():
    """A decomposed LayerNorm ends in ``· γ + β`` per channel, here read by two projections
    (fold forward): kept for the runtime."""
    builder = Builder(21)
    mean = builder.node("ReduceMean", ["x"], axes=[-1])
    centred = builder.node("Sub", ["x", mean])
    var = builder.node("ReduceMean", [builder.node("Mul", [centred, centred])], axes=[-1])
    std = builder.node("Sqrt", [builder.node("Add", [var, builder.const(1e-5)])])
    normed = builder.node("Div", [centred, std])
    gamma = builder.const(builder.rng.uniform(0.5, 1.5, SIZE))
    beta = builder.const(builder.rng.normal(size=SIZE))
    affine = builder.node("Add", [builder.node("Mul", [normed, gamma]), beta])
    q = builder.node("MatMul", [affine, builder.const(builder.rng.normal(size=(SIZE, SIZE)))])
    k = builder.node("MatMul", [affine, builder.const(builder.rng.normal(size=(SIZE, SIZE)))])
    model = builder.model(builder.node("Concat", [q, k], axis=1))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    assert_same_function(model, fused)
    assert any("ends a LayerNorm" in skip.reason for skip in outcome.skipped), outcome.skipped


def test_a_sum_whose_terms_cannot_merge_stays_before_the_conv_that_reads_it():
    """A 3x3 and a dilated 3x3 of ``x``, summed, then a 1x1: the two cannot be one kernel
    (their dilations differ), so the 1x1 cannot absorb the sum; it stays, with the reason."""
    builder = Builder(11)
    plain = builder.conv("x", (3, 3), "centre", 1, 1)
    dilated = builder.conv("x", (3, 3), "centre", 2, 1)
    total = builder.node("Add", [plain, dilated])
    y = builder.node("Conv", [total, builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 3, "Add": 1}
    reasons = [skip.reason for skip in outcome.skipped]
    assert any(r.startswith("dilations differ along dim 0") for r in reasons), reasons
    assert_same_function(model, fused)


def test_a_chain_deeper_than_a_region_is_planned_and_reported_once(monkeypatch):
    """Thirty per-channel ops under two padded 3x3 convs, with regions at most eight ops deep:
    planning from the top cuts the chain at that depth and again below the second conv (its
    padding would see the chain's shift). The region then rooted below the second conv stops
    at the depth cut (already a root of its own), so no op is in two regions: each block and
    each reason is reported once, and the chain still merges to one ``Mul`` and one ``Add``."""
    from repvgg_onnx.passes import regions

    monkeypatch.setattr(regions, "MAX_REGION_DEPTH", 8)
    builder = Builder(25)
    chain = "x"
    for index in range(30):
        chain = builder.per_channel(chain, "Mul" if index % 2 else "Add")
    convs = builder.conv(builder.conv(chain, (3, 3), "centre", 1, 1), (3, 3), "centre", 1, 1)
    model = builder.model(builder.node("Relu", [convs]))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Mul": 1, "Add": 1, "Conv": 2, "Relu": 1}
    blocks = [block.describe() for block in outcome.fused]
    reasons = [skip.reason for skip in outcome.skipped]
    assert len(blocks) == len(set(blocks)) and len(reasons) == len(set(reasons)) == 1, reasons
    assert "the padding would see the inner map's bias" in reasons[0]
    assert_same_function(model, fused)


def _planned_roots(monkeypatch) -> list[tuple[int, str]]:
    """The tensors each :class:`RegionFinder` (one a round) plans regions for: (round, name)."""
    from repvgg_onnx.passes import regions

    roots: list[tuple[int, str]] = []
    finders: dict[int, int] = {}
    kept = []  # each finder held, so that the next round's cannot take its id
    plan_root = regions.RegionFinder._plan_root

    def recording_plan_root(self, root):
        if id(self) not in finders:
            finders[id(self)] = len(finders)
            kept.append(self)
        roots.append((finders[id(self)], root.name))
        return plan_root(self, root)

    monkeypatch.setattr(regions.RegionFinder, "_plan_root", recording_plan_root)
    return roots


def test_a_root_that_stays_a_node_of_its_own_is_planned_once(monkeypatch):
    """A Transpose at the root stays a node: planning cuts its own output, which must not make
    it a root to plan again (each root is planned once a round)."""
    roots = _planned_roots(monkeypatch)
    model = _conv_bn_then_transpose(also_relu=False)
    fused, _ = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Transpose": 1}
    assert roots and len(roots) == len(set(roots)), roots
    assert_same_function(model, fused)


def _flat_output_model(builder: Builder, output: str) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, C, SIZE * SIZE])]
    graph = helper.make_graph(builder.nodes, "g", inputs, outputs, builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_sum_of_maps_of_one_tensor_on_different_axes_stays_with_its_reason():
    """A 1x1 conv (channels on axis 1) and a MatMul (on the last axis) of ``x``, summed: no one
    op computes both, so the Add stays, and says so."""
    builder = Builder(27)
    conv = builder.conv("x", (1, 1), "centre", 1, 1)
    matmul = builder.node("MatMul", ["x", builder.const(builder.rng.normal(size=(SIZE, SIZE)))])
    model = builder.model(builder.node("Relu", [builder.node("Add", [conv, matmul])]))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "MatMul": 1, "Add": 1, "Relu": 1}
    assert [skip.reason for skip in outcome.skipped] == [
        "the terms read 'x' in different layouts: the Conv1x1 works on axis 1 and the MatMul "
        "on the last axis, so no one op computes both; the Add stays"
    ]
    assert_same_function(model, fused)


def test_a_batchnorm_before_a_matmul_on_another_axis_stays_with_its_reason():
    """A BatchNormalization scales axis 1, the MatMul after it mixes the last axis: the shift
    would become a different bias per row, so the BN stays, and says why."""
    builder = Builder(28)
    bn = builder.batchnorm("x")
    matmul = builder.node("MatMul", [bn, builder.const(builder.rng.normal(size=(SIZE, SIZE)))])
    model = builder.model(builder.node("Relu", [matmul]))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"BatchNormalization": 1, "MatMul": 1, "Relu": 1}
    [skip] = outcome.skipped
    assert skip.reason.endswith(
        "before it: the MatMul works on the last axis and the BN on axis 1, so no one op "
        "computes both"
    ), skip.reason
    assert_same_function(model, fused)


def test_a_reshape_at_the_root_ends_the_region_it_reshapes():
    """A Reshape that flattens a fused sum is kept as the region's last step, and the block
    says so (LeViT's qkv view)."""
    builder = Builder(29)
    bn = builder.batchnorm(builder.conv("x", (3, 3), "centre", 1, 1))
    total = builder.node("Add", [bn, builder.conv("x", (1, 1), "centre", 1, 1)])
    flat = builder.node("Reshape", [total, builder.const([1, C, SIZE * SIZE], np.int64)])
    model = _flat_output_model(builder, flat)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Reshape": 1}
    assert [block.result for block in outcome.fused] == ["Conv3x3 → Reshape"]
    assert_same_function(model, fused)


def test_a_batchnorm_after_a_gelu_folds_with_the_gelu_tail_into_the_next_conv():
    """Only a tail of bare ``Mul``/``Div``/``Add``/``Sub`` constants stays for onnxruntime's
    GELU fusion: keeping ``· 0.5`` here would keep the BatchNormalization after it too, so
    both fold into the 1x1 conv."""
    builder = Builder(20)
    erf = builder.node("Erf", [builder.node("Div", ["x", builder.const(np.sqrt(2.0))])])
    inner = builder.node("Mul", ["x", builder.node("Add", [erf, builder.const(1.0)])])
    bn = builder.batchnorm(builder.node("Mul", [inner, builder.const(0.5)]))
    y = builder.node("Conv", [bn, builder.const(builder.rng.normal(size=(C, C, 1, 1)))])
    model = builder.model(y)
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Div": 1, "Erf": 1, "Add": 1, "Mul": 1, "Conv": 1}
    assert outcome.skipped == []
    assert_same_function(model, fused)


def test_a_sum_of_an_input_of_unknown_rank_stays_with_its_reason():
    """``x + x + x`` of an input whose rank is unknown: the merged map needs the channel axis,
    so the sum stays, and says why."""
    builder = Builder(30)
    total = builder.node("Add", [builder.node("Add", ["x", "x"]), "x"])
    y = builder.node("Relu", [total])
    graph = helper.make_graph(
        builder.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Add": 2, "Relu": 1}
    assert [skip.reason for skip in outcome.skipped] == [
        "Identity, Identity, Identity: the rank of 'x' is unknown"
    ]
    assert_same_function(model, fused)


def test_a_1x7_and_a_7x1_of_one_tensor_stay_apart_where_merging_costs_more():
    """ACNet-style ``1x7 + 7x1`` alone (no square kernel to absorb them) would merge into a
    7x7 costing 784 multiply-adds per output instead of 228: they stay, with the figures."""
    builder = Builder(20)
    row = builder.conv("x", (1, 7), "centre", 1, 1)
    column = builder.conv("x", (7, 1), "centre", 1, 1)
    model = builder.model(builder.node("Relu", [builder.node("Add", [row, column])]))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2, "Add": 1, "Relu": 1}
    assert [skip.reason for skip in outcome.skipped] == [
        "merging Conv1x7, Conv7x1 of 'x' would cost 784 multiply-adds per output instead of 228"
    ]
    assert_same_function(model, fused)


def test_an_identity_a_1x3_and_a_3x1_stay_apart_where_merging_costs_more():
    """``x + 1x3(x) + 3x1(x)``: the merged 3x3 would cost more than the three terms, and the
    first term (the identity) spans no node, so the reason names the last node of the first
    term that has one (planning crashed on the identity before)."""
    builder = Builder(31)
    row = builder.conv("x", (1, 3), "centre", 1, 1)
    column = builder.conv("x", (3, 1), "centre", 1, 1)
    total = builder.node("Add", [builder.node("Add", ["x", row]), column])
    model = builder.model(builder.node("Relu", [total]))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 2, "Add": 2, "Relu": 1}
    [skip] = outcome.skipped
    assert skip.reason.startswith("merging Identity, Conv1x3, Conv3x1 of 'x' would cost")
    assert skip.node == producer_name(model, row)
    assert_same_function(model, fused)


def test_a_shift_before_a_same_padded_conv_on_a_dynamic_input_stays_with_its_reason():
    """On an input of unknown size, ``auto_pad=SAME_UPPER`` with stride 2 pads by the input
    size: the pads are not known, so a BN's shift (which the padding would see) stays."""
    builder = Builder(32)
    weight = builder.const(builder.rng.normal(size=(C, C, 3, 3)))
    bn = builder.batchnorm("x")
    y = builder.node("Conv", [bn, weight], auto_pad="SAME_UPPER", strides=[2, 2])
    model = builder.model(y, size="H")
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"BatchNormalization": 1, "Conv": 1}
    reason = "auto_pad=SAME_UPPER with strides [2, 2] pads by the input size"
    assert any(reason in skip.reason for skip in outcome.skipped), outcome.skipped
    assert_same_function(model, fused)


def test_a_bn_after_a_conv_whose_output_is_a_graph_output_says_so():
    builder = Builder(33)
    conv = builder.conv("x", (3, 3), "centre", 1, 1)
    bn = builder.batchnorm(conv)
    shape = [1, C, SIZE, SIZE]
    graph = helper.make_graph(
        builder.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in (bn, conv)],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "BatchNormalization": 1}
    [skip] = outcome.skipped
    assert "is also read by the graph output, so it must keep its value" in skip.reason
    assert_same_function(model, fused)


def test_inspect_gives_each_batchnorm_that_stays_its_reason():
    """One BN stays for the MatMul after it (another axis: the skip that names it), one is a
    graph output after a Relu (nothing to fold into: what it reads and what reads it)."""
    import repvgg_onnx

    builder = Builder(34)
    matmul = builder.node(
        "MatMul", [builder.batchnorm("x"), builder.const(builder.rng.normal(size=(SIZE, SIZE)))]
    )
    tail = builder.batchnorm(builder.node("Relu", [matmul]))
    shape = [1, C, SIZE, SIZE]
    graph = helper.make_graph(
        builder.nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(tail, TensorProto.FLOAT, shape)],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    first, second = repvgg_onnx.inspect(model).batchnorms
    assert "the MatMul works on the last axis and the BN on axis 1" in first.reason
    assert "Relu" in second.reason and "the graph output" in second.reason
