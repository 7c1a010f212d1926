"""Each formula of algebra.py against a direct float64 convolution."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repvgg_onnx.algebra.affine_conv import (
    AffineConv,
    affine_conv,
    batchnorm_scale_shift,
    materialize,
    regroup_kernel,
    same_pads,
    scale_and_shift,
)
from repvgg_onnx.algebra.conv_merge import merge_affine_convs
from repvgg_onnx.algebra.form import IncompatibleBranchesError


def fold_batchnorm(conv, gamma, beta, mean, var, eps):
    """``BatchNormalization(conv(x))`` as one affine conv (RepVGG eq. 3): ``W' = W·γ/σ`` per
    output channel, ``b' = β + (b − μ)·γ/σ``, ``σ = sqrt(var + ε)``; what the passes do by
    reading the BN as a per-channel map and composing."""
    return scale_and_shift(conv, *batchnorm_scale_shift(gamma, beta, mean, var, eps))


def identity_conv(channels, spatial_rank):
    """The identity map ``y = x`` as a depthwise 1x1 conv of ones (``groups = channels``)."""
    return affine_conv(np.ones((channels, 1) + (1,) * spatial_rank), groups=channels)


def convolve(x: np.ndarray, conv: AffineConv) -> np.ndarray:
    """ONNX Conv semantics for 2-D inputs ``[N, C, H, W]``, straight from the definition."""
    conv = materialize(conv)
    n, cin, _, _ = x.shape
    (pt, pl, pb, pr), (sh, sw), (dh, dw) = conv.pads, conv.strides, conv.dilations
    padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    kh, kw = conv.kernel_shape
    ho = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
    g = conv.groups
    kernel = conv.kernel.reshape(g, conv.out_channels // g, cin // g, kh, kw)
    out = np.zeros((n, g, conv.out_channels // g, ho, wo))
    for i in range(kh):
        for j in range(kw):
            window = padded[
                :,
                :,
                i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                j * dw : j * dw + sw * (wo - 1) + 1 : sw,
            ]
            grouped = window.reshape(n, g, cin // g, ho, wo)
            out += np.einsum("ngchw,gdc->ngdhw", grouped, kernel[..., i, j])
    return out.reshape(n, conv.out_channels, ho, wo) + conv.bias[None, :, None, None]


def batchnorm(x, gamma, beta, mean, var, eps):
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(
        shape
    ) + beta.reshape(shape)


def random_bn(rng, channels):
    return (
        rng.uniform(0.5, 1.5, channels),
        rng.normal(0, 0.5, channels),
        rng.normal(0, 0.5, channels),
        rng.uniform(0.2, 3.0, channels),
    )


RNG = np.random.default_rng(0)


def test_fold_batchnorm_equals_bn_of_conv():
    x = RNG.normal(size=(2, 4, 7, 7))
    conv = affine_conv(
        RNG.normal(size=(6, 2, 3, 3)), RNG.normal(size=6), pads=[1, 1, 1, 1], groups=2
    )
    gamma, beta, mean, var = random_bn(RNG, 6)
    folded = fold_batchnorm(conv, gamma, beta, mean, var, 1e-3)
    expected = batchnorm(convolve(x, conv), gamma, beta, mean, var, 1e-3)
    np.testing.assert_allclose(convolve(x, folded), expected, rtol=1e-12, atol=1e-12)


def test_fold_batchnorm_uses_eps():
    conv = affine_conv(np.ones((1, 1, 1, 1)))
    params = (np.ones(1), np.zeros(1), np.zeros(1), np.ones(1))
    assert materialize(fold_batchnorm(conv, *params, 0.0)).kernel.item() == pytest.approx(1.0)
    assert materialize(fold_batchnorm(conv, *params, 3.0)).kernel.item() == pytest.approx(0.5)


def batchnorm_as_conv(gamma, beta, mean, var, eps, spatial_rank):
    """``BatchNormalization(x)`` as a depthwise 1x1 conv: the identity branch's normal form."""
    return fold_batchnorm(identity_conv(gamma.size, spatial_rank), gamma, beta, mean, var, eps)


def test_batchnorm_as_conv_equals_batchnorm():
    x = RNG.normal(size=(2, 5, 4, 4))
    gamma, beta, mean, var = random_bn(RNG, 5)
    conv = batchnorm_as_conv(gamma, beta, mean, var, 1e-5, spatial_rank=2)
    assert conv.groups == 5
    np.testing.assert_allclose(convolve(x, conv), batchnorm(x, gamma, beta, mean, var, 1e-5))


def test_identity_conv_is_identity():
    x = RNG.normal(size=(1, 3, 5, 5))
    np.testing.assert_array_equal(convolve(x, identity_conv(3, 2)), x)


@pytest.mark.parametrize(("groups", "new_groups"), [(4, 4), (4, 2), (4, 1), (12, 4), (6, 3)])
def test_regroup_kernel_keeps_the_function(groups, new_groups):
    x = RNG.normal(size=(1, 24, 5, 5))
    conv = affine_conv(RNG.normal(size=(12, 24 // groups, 3, 3)), groups=groups)
    regrouped = affine_conv(regroup_kernel(conv.kernel, groups, new_groups), groups=new_groups)
    np.testing.assert_allclose(convolve(x, regrouped), convolve(x, conv), atol=1e-12)


def test_regroup_identity_matches_timm_formula():
    """timm / RepVGG: ``k[i, i % (C/g), centre] = 1``."""
    kernel = regroup_kernel(identity_conv(8, 2).kernel, 8, 2)
    expected = np.zeros((8, 4, 1, 1))
    for i in range(8):
        expected[i, i % 4, 0, 0] = 1
    np.testing.assert_array_equal(kernel, expected)


def test_regroup_refuses_a_non_divisor():
    with pytest.raises(ValueError, match="cannot regroup"):
        regroup_kernel(np.zeros((4, 1, 1, 1)), 4, 3)


def centred(kernel, dilation=1, stride=1, groups=1, cin=8, cout=8, bias=True):
    kh, kw = kernel
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    return affine_conv(
        RNG.normal(size=(cout, cin // groups, kh, kw)),
        RNG.normal(size=cout) if bias else None,
        strides=[stride, stride],
        dilations=[dilation, dilation],
        pads=[ph, pw, ph, pw],
        groups=groups,
    )


def assert_merge_exact(branches, size=9, input_size=None):
    x = RNG.normal(size=(2, branches[0].in_channels, size, size))
    merged = merge_affine_convs(branches, input_size=input_size)
    expected = sum(convolve(x, b) for b in branches)
    np.testing.assert_allclose(convolve(x, merged), expected, rtol=1e-10, atol=1e-10)
    return merged


def test_merge_repvgg_block():
    gamma, beta, mean, var = random_bn(RNG, 8)
    merged = assert_merge_exact(
        [centred((3, 3)), centred((1, 1)), batchnorm_as_conv(gamma, beta, mean, var, 1e-5, 2)]
    )
    assert merged.kernel_shape == (3, 3) and merged.pads == (1, 1, 1, 1) and merged.groups == 1


def test_merge_acnet_asymmetric_kernels():
    merged = assert_merge_exact([centred((3, 3)), centred((1, 3)), centred((3, 1))])
    assert merged.kernel_shape == (3, 3)


def test_merge_replknet_large_and_small_kernels():
    merged = assert_merge_exact([centred((7, 7)), centred((3, 3)), centred((1, 1))], size=11)
    assert merged.kernel_shape == (7, 7) and merged.pads == (3, 3, 3, 3)


def test_merge_dilated_with_identity():
    merged = assert_merge_exact([centred((3, 3), dilation=2), identity_conv(8, 2)])
    assert merged.dilations == (2, 2) and merged.pads == (2, 2, 2, 2)


def test_merge_grouped_with_identity_keeps_groups():
    merged = assert_merge_exact(
        [centred((3, 3), groups=4), centred((1, 1), groups=4), identity_conv(8, 2)]
    )
    assert merged.groups == 4


def test_merge_depthwise_mobileone_style():
    branches = [centred((3, 3), groups=8) for _ in range(3)] + [centred((1, 1), groups=8)]
    assert assert_merge_exact(branches).groups == 8


def test_merge_refuses_different_strides():
    with pytest.raises(IncompatibleBranchesError, match="strides differ: a has 1x1, b has 2x2"):
        merge_affine_convs([centred((3, 3)), centred((1, 1), stride=2)], ["a", "b"])


def test_merge_refuses_different_dilations():
    with pytest.raises(IncompatibleBranchesError, match="dilations differ"):
        merge_affine_convs([centred((3, 3)), centred((3, 3), dilation=2)])


def test_merge_refuses_densifying_the_main_branch():
    with pytest.raises(IncompatibleBranchesError, match="groups differ"):
        merge_affine_convs([centred((3, 3), groups=8), centred((1, 1))])


def test_merge_refuses_misaligned_pads():
    """A 1x1 whose pads give a different output size than the 3x3's (stride 2)."""
    odd = affine_conv(RNG.normal(size=(8, 8, 1, 1)), strides=[2, 2], pads=[1, 1, 0, 0])
    with pytest.raises(IncompatibleBranchesError, match="pads do not align"):
        merge_affine_convs([centred((3, 3), stride=2), odd])


def test_merge_places_a_tf_same_1x1_on_the_first_tap_of_a_stride_2_3x3():
    """TF's ``SAME`` on an even input with stride 2 pads a 3x3 by ``(0, 1)`` and a 1x1 by
    ``(0, 0)``: both give ``n/2`` outputs and the 1x1 reads the 3x3's top-left tap."""
    size = 8
    main = affine_conv(RNG.normal(size=(8, 8, 3, 3)), strides=[2, 2], pads=[0, 0, 1, 1])
    point = affine_conv(RNG.normal(size=(8, 8, 1, 1)), RNG.normal(size=8), strides=[2, 2])
    merged = assert_merge_exact([main, point], size=size, input_size=(size, size))
    assert merged.pads == (0, 0, 1, 1)
    np.testing.assert_allclose(
        merged.kernel[:, :, 0, 0], main.kernel[..., 0, 0] + point.kernel[..., 0, 0]
    )
    np.testing.assert_allclose(merged.kernel[:, :, 1:, 1:], main.kernel[:, :, 1:, 1:])
    with pytest.raises(IncompatibleBranchesError, match="not static"):
        merge_affine_convs([main, point])
    with pytest.raises(IncompatibleBranchesError, match="outputs differ in size"):
        merge_affine_convs([main, point], input_size=(9, 9))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("size", [7, 8, 9, 10])
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"),
    [(3, 2, 1), (1, 2, 1), (4, 2, 1), (3, 3, 1), (5, 1, 1), (2, 1, 1)],
)
def test_same_pads_match_onnxruntime(auto_pad, size, kernel, stride, dilation):
    """``same_pads`` gives the explicit pads with which onnxruntime computes what it computes
    for the ``auto_pad`` conv (the spec's formula, checked against the runtime)."""
    from helpers import run

    weight = RNG.normal(size=(2, 2, kernel, kernel)).astype(np.float32)
    x = RNG.normal(size=(1, 2, size, size)).astype(np.float32)
    pads = same_pads([size] * 2, [kernel] * 2, [stride] * 2, [dilation] * 2, auto_pad)
    explicit = affine_conv(weight, strides=[stride] * 2, dilations=[dilation] * 2, pads=pads)
    (actual,) = run(_conv_model(weight, stride, dilation, auto_pad, size), {"x": x})
    np.testing.assert_allclose(
        actual, convolve(x.astype(np.float64), explicit), rtol=1e-4, atol=1e-4
    )


def _conv_model(weight, stride, dilation, auto_pad, size):
    import onnx
    from onnx import helper

    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        strides=[stride] * 2,
        dilations=[dilation] * 2,
        auto_pad=auto_pad,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, size, size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@st.composite
def placed_branches(draw):
    """Branches of one input with random kernels and asymmetric explicit pads (stride 1 or
    2, dilation 1 so every tap is on the grid), and an input size (even or odd)."""
    stride = draw(st.sampled_from([1, 2]))
    size = draw(st.integers(5, 10))
    branches = []
    for _ in range(draw(st.integers(2, 4))):
        kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (3, 1), (2, 2), (5, 5)]))
        pads = [draw(st.integers(0, k)) for k in (kh, kw, kh, kw)]
        branches.append(
            affine_conv(
                RNG.normal(size=(4, 4, kh, kw)), RNG.normal(size=4), strides=[stride] * 2, pads=pads
            )
        )
    return branches, size


@settings(max_examples=150, deadline=None)
@given(placed_branches())
def test_merge_by_begin_pads_is_exact_iff_output_sizes_agree(case):
    """Placement by begin pads: with the static input size, the merge succeeds exactly when
    every branch gives the same output size, and then equals the branches' sum; without it,
    exactly when the sizes agree for every input size."""
    branches, size = case
    x = RNG.normal(size=(1, 4, size, size))
    outputs = [convolve(x, b) for b in branches]
    same_size = len({o.shape for o in outputs}) == 1 and outputs[0].size > 0
    try:
        merged = merge_affine_convs(branches, input_size=(size, size))
    except IncompatibleBranchesError as error:
        assert not same_size, str(error)
        assert "differ in size" in str(error)
        return
    assert same_size
    np.testing.assert_allclose(convolve(x, merged), sum(outputs), rtol=1e-10, atol=1e-10)
    reaches = {
        tuple(b.pads_end[d] + b.pads_begin[d] - (b.kernel_shape[d] - 1) for d in (0, 1))
        for b in branches
    }
    if len(reaches) == 1:
        assert merge_affine_convs(branches).pads == merged.pads
    else:
        with pytest.raises(IncompatibleBranchesError, match="not static"):
            merge_affine_convs(branches)


def test_merge_refuses_taps_between_dilated_taps():
    shifted = affine_conv(RNG.normal(size=(8, 8, 1, 1)))
    dilated = affine_conv(RNG.normal(size=(8, 8, 3, 3)), dilations=[2, 2], pads=[3, 3, 1, 1])
    with pytest.raises(IncompatibleBranchesError, match="fall between"):
        merge_affine_convs([dilated, shifted])


def test_merge_refuses_different_channels():
    with pytest.raises(IncompatibleBranchesError, match="output channels differ"):
        merge_affine_convs([centred((3, 3)), centred((1, 1), cout=4)])


@st.composite
def block_configs(draw):
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 4]))
    kernels = draw(
        st.lists(
            st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1)]),
            min_size=1,
            max_size=4,
        )
    )
    branches = [centred(k, dilation=dilation, stride=stride, groups=groups) for k in kernels]
    if stride == 1 and draw(st.booleans()):
        branches.append(identity_conv(8, 2))
    return branches


@settings(max_examples=60, deadline=None)
@given(block_configs())
def test_merge_equals_sum_of_branches(branches):
    merged = assert_merge_exact(branches, size=11)
    largest = max(b.kernel_shape[0] for b in branches), max(b.kernel_shape[1] for b in branches)
    assert merged.kernel_shape == largest


@pytest.mark.parametrize("chunk_elements", [1, 40, 1 << 16])
def test_chunked_merge_and_materialize_match_the_direct_sum(monkeypatch, chunk_elements):
    """Chunks of whole groups of output channels give the same weights as one big chunk."""
    import repvgg_onnx.algebra.affine_conv as algebra

    monkeypatch.setattr(algebra, "_CHUNK_ELEMENTS", chunk_elements)
    gamma, beta, mean, var = random_bn(RNG, 8)
    branches = [
        fold_batchnorm(centred((3, 3), groups=4), gamma, beta, mean, var, 1e-3),
        centred((1, 1), groups=4),
        batchnorm_as_conv(gamma, beta, mean, var, 1e-5, 2),
    ]
    merged = assert_merge_exact(branches)
    as_float32 = merge_affine_convs(branches, dtype=np.float32)
    assert as_float32.kernel.dtype == np.float32
    np.testing.assert_allclose(as_float32.kernel, merged.kernel, rtol=1e-6)
    assert_merge_exact([centred((3, 3)), centred((1, 1), groups=4)])  # a g4 kernel made dense
    folded = materialize(branches[0], np.float32)
    assert folded.scale is None and folded.kernel.dtype == np.float32
    np.testing.assert_allclose(folded.kernel, materialize(branches[0]).kernel, rtol=1e-6)


@pytest.mark.parametrize(
    ("outer_groups", "inner_groups"),
    [(8, 1), (4, 1), (4, 2), (8, 2), (2, 8), (8, 8), (1, 1)],
)
def test_composed_convs_of_any_groups_equal_the_two_in_sequence(outer_groups, inner_groups):
    """A 3x3 conv in ``outer_groups`` groups after a 1x1 (or 3x3) conv in ``inner_groups``:
    the composed kernel, however the groups are multiplied (a depthwise outer conv in its own
    groups, a dense one per common group), computes the two convs in sequence."""
    from repvgg_onnx.algebra.linear_forms import compose

    rng = np.random.default_rng(outer_groups * 10 + inner_groups)
    channels = 8
    inner_kernel = 1 if inner_groups == 1 else 3
    inner = affine_conv(
        rng.normal(size=(channels, channels // inner_groups, inner_kernel, inner_kernel)),
        rng.normal(size=channels),
        groups=inner_groups,
        pads=[inner_kernel // 2] * 4,
    )
    outer = affine_conv(
        rng.normal(size=(channels, channels // outer_groups, 3, 3)),
        rng.normal(size=channels),
        groups=outer_groups,
    )
    x = rng.normal(size=(2, channels, 9, 9))
    composed = compose(outer, inner)
    np.testing.assert_allclose(
        convolve(x, composed), convolve(convolve(x, inner), outer), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize(
    ("inner_strides", "outer_kernel", "outer_dilations", "outer_groups"),
    [
        ((1, 1), (3, 3), (1, 1), 1),
        ((2, 2), (3, 3), (1, 1), 1),
        ((1, 1), (3, 3), (2, 2), 4),
        ((2, 1), (1, 5), (1, 3), 1),
        ((1, 1), (5, 1), (1, 1), 8),
    ],
)
def test_a_1x1_inner_conv_composes_with_any_outer_geometry(
    inner_strides, outer_kernel, outer_dilations, outer_groups
):
    """DBB's ``1x1 → kxk``: every outer tap is a composed tap of its own, whatever the inner
    strides and the outer dilations place between them (the kernel is written in one step)."""
    from repvgg_onnx.algebra.linear_forms import compose

    rng = np.random.default_rng(sum(outer_kernel) + 7 * outer_groups)
    channels = 8
    inner = affine_conv(
        rng.normal(size=(channels, channels, 1, 1)),
        rng.normal(size=channels),
        strides=inner_strides,
    )
    outer = affine_conv(
        rng.normal(size=(channels, channels // outer_groups, *outer_kernel)),
        rng.normal(size=channels),
        groups=outer_groups,
        dilations=outer_dilations,
    )
    x = rng.normal(size=(2, channels, 17, 17))
    composed = compose(outer, inner)
    np.testing.assert_allclose(
        convolve(x, composed), convolve(convolve(x, inner), outer), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("inner_kernel", [1, 3])
def test_a_composed_kernel_holds_no_negative_zero(monkeypatch, inner_kernel):
    """A tap product of −0.0 (a zero times a negative weight, where a BLAS does not start its
    sums from +0.0) is written as 0.0 by the 1x1 path, as the general path's sum from zeros
    writes it, so both write the same bytes."""
    from repvgg_onnx.algebra import affine_conv as convs
    from repvgg_onnx.algebra.linear_forms import compose

    products = convs._tap_products
    monkeypatch.setattr(convs, "_tap_products", lambda *a: -np.abs(products(*a)) * 0.0)
    inner = affine_conv(np.ones((2, 2, inner_kernel, inner_kernel)), np.zeros(2))
    outer = affine_conv(np.ones((2, 2, 3, 3)), np.zeros(2))
    kernel = compose(outer, inner).kernel
    assert np.all(kernel == 0) and not np.any(np.signbit(kernel))


def test_merging_no_branch_is_an_error():
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_affine_convs([])


def test_a_branch_padding_with_a_non_zero_value_is_not_merged():
    """A pad whose border holds a BN's shift (DBB's BN-then-pad, composed into the conv after
    it) reads that value at the border; the merged conv pads with zeros, so it cannot."""
    from repvgg_onnx.algebra.linear_forms import pad_conv

    rng = np.random.default_rng(3)
    padded = pad_conv(4, [1, 1, 1, 1], np.array([0.5, 0.0, 0.0, 0.0]))
    dense = affine_conv(rng.normal(size=(4, 1, 3, 3)), pads=[2, 2, 2, 2], groups=4)  # n + 2 out
    with pytest.raises(IncompatibleBranchesError, match="pads with a non-zero value"):
        merge_affine_convs([dense, padded], ["3x3", "Pad"])
    zero_border = pad_conv(4, [1, 1, 1, 1], 0.0)
    merged = merge_affine_convs([dense, zero_border], ["3x3", "Pad"])
    assert merged.kernel_shape == (3, 3)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"kernel": np.ones(4)}, "needs at least 2 dims"),
        ({"bias": np.ones(3)}, "bias shape (3,) does not match 4 output channels"),
        ({"groups": 0}, "cannot be split into 0 groups"),
        ({"groups": 3}, "cannot be split into 3 groups"),
        ({"strides": [1]}, "strides [1] do not fit a 2-d kernel"),
        ({"dilations": [1, 1, 1]}, "dilations [1, 1, 1] do not fit a 2-d kernel"),
        ({"pads": [1, 1]}, "pads [1, 1] do not fit a 2-d kernel"),
    ],
    ids=["1-d kernel", "bias", "no group", "groups", "strides", "dilations", "pads"],
)
def test_an_affine_conv_that_does_not_fit_its_kernel_is_an_error(arguments, words):
    arguments = {"kernel": np.ones((4, 1, 3, 3))} | arguments
    with pytest.raises(ValueError, match=re.escape(words)):
        affine_conv(**arguments)


def test_a_per_channel_value_of_another_count_is_an_error():
    from repvgg_onnx.algebra.linear_forms import pad_conv

    with pytest.raises(ValueError, match="2 pad values for 4 channels"):
        pad_conv(4, [1, 1, 1, 1], np.array([1.0, 2.0]))


def test_maps_of_different_spatial_ranks_cost_their_own_and_do_not_compose():
    """A conv after a matrix (a Gemm's form) or before one: no composition, and its cost is
    the op's own."""
    from repvgg_onnx.algebra.linear_forms import NotComposableError, compose, composed_cost

    rng = np.random.default_rng(5)
    conv = affine_conv(rng.normal(size=(4, 4, 3, 3)), pads=[1, 1, 1, 1])
    matrix = affine_conv(rng.normal(size=(4, 4)))
    assert matrix.describe() == "Linear"
    assert composed_cost(conv, matrix, 4) == conv.multiply_adds(4) == 144
    assert composed_cost(matrix, conv, 4) == matrix.multiply_adds(4) == 16
    with pytest.raises(NotComposableError, match="a 2-d map cannot read a 0-d map's output"):
        compose(conv, matrix)


def test_nothing_composes_into_the_input_side_of_a_conv_padded_by_the_input_size():
    from repvgg_onnx.algebra.linear_forms import NotComposableError, compose

    rng = np.random.default_rng(6)
    same = affine_conv(rng.normal(size=(4, 4, 3, 3)), strides=[2, 2], auto_pad="SAME_UPPER")
    inner = affine_conv(rng.normal(size=(4, 4, 1, 1)))
    with pytest.raises(NotComposableError, match="pads by the input size"):
        compose(same, inner)


def test_a_matrix_on_a_matrix_is_one_gemm_and_on_a_larger_rank_a_matmul_and_add():
    rng = np.random.default_rng(7)
    matrix = affine_conv(rng.normal(size=(3, 4)), rng.normal(size=3))
    [gemm] = matrix.node_specs(np.float32, True, 2)
    assert gemm.op == "Gemm"
    matmul, add = matrix.node_specs(np.float32, True, 3)
    assert (matmul.op, add.op) == ("MatMul", "Add")


def test_per_channel_scales_and_shifts_of_different_counts_are_refused():
    from repvgg_onnx.algebra.channel_affine import channel_affine

    with pytest.raises(ValueError, match="2 scales and 3 shifts"):
        channel_affine([1.0, 2.0], [0.0, 1.0, 2.0])
    assert channel_affine([1.0, 2.0], 0.5).shift.tolist() == [0.5]  # a scalar broadcasts
