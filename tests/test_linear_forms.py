"""compose / sum_forms of linear_forms.py against applying the maps one after the other."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repvgg_onnx.algebra.affine_conv import AffineConv, affine_conv, materialize, regroup_kernel
from repvgg_onnx.algebra.linear_forms import (
    ChannelAffine,
    NotComposableError,
    average_pool_conv,
    channel_affine,
    compose,
    multiply_adds,
    pad_conv,
    sum_forms,
)
from test_algebra import convolve


def apply(form, x: np.ndarray) -> np.ndarray:
    """A form applied to ``x [N, C, H, W]`` straight from its definition (float64)."""
    if isinstance(form, ChannelAffine):
        shape = (1, -1, 1, 1)
        return x * form.scale.reshape(shape) + form.shift.reshape(shape)
    conv = materialize(form)
    if conv.pad_value is not None and any(conv.pads):
        pt, pl, pb, pr = conv.pads
        padded = np.empty((x.shape[0], x.shape[1], x.shape[2] + pt + pb, x.shape[3] + pl + pr))
        padded[...] = conv.pad_value.reshape(1, -1, 1, 1)
        padded[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]] = x
        return convolve(padded, AffineConv(**{**conv.__dict__, "pads": (0, 0, 0, 0)}))
    return convolve(x, conv)


def random_conv(rng, cin, cout, kernel, *, stride=1, dilation=1, pads=None, groups=1, bias=True):
    kh, kw = kernel
    if pads is None:
        pads = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2) * 2
    return affine_conv(
        rng.normal(size=(cout, cin // groups, kh, kw)),
        rng.normal(size=cout) if bias else None,
        strides=(stride, stride),
        dilations=(dilation, dilation),
        pads=pads,
        groups=groups,
    )


def assert_composes(outer, inner, x):
    expected = apply(outer, apply(inner, x))
    actual = apply(compose(outer, inner), x)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9)


RNG = np.random.default_rng(0)


def test_dbb_1x1_then_unpadded_kxk_is_one_kxk():
    x = RNG.normal(size=(2, 4, 9, 9))
    inner = random_conv(RNG, 4, 6, (1, 1))
    outer = random_conv(RNG, 6, 5, (3, 3), pads=(0, 0, 0, 0))
    assert_composes(outer, inner, x)
    assert compose(outer, inner).kernel_shape == (3, 3)


def test_strided_dilated_grouped_chain():
    x = RNG.normal(size=(1, 8, 17, 15))
    inner = random_conv(RNG, 8, 8, (3, 3), stride=2, groups=4, pads=(1, 0, 2, 1))
    outer = random_conv(RNG, 8, 4, (3, 2), dilation=2, groups=2, pads=(0, 0, 0, 0))
    composed = compose(outer, inner)
    assert composed.groups == 2 and composed.strides == (2, 2)
    assert_composes(outer, inner, x)


def test_padded_outer_needs_a_pointwise_inner():
    inner = random_conv(RNG, 4, 4, (3, 3))
    outer = random_conv(RNG, 4, 4, (3, 3))
    with pytest.raises(NotComposableError, match="zero padding"):
        compose(outer, inner)


def test_padded_outer_after_a_biased_pointwise_inner_is_refused():
    """The classic trap: zero padding where the inner conv would have output its bias."""
    inner = random_conv(RNG, 4, 4, (1, 1))
    outer = random_conv(RNG, 4, 4, (3, 3))
    with pytest.raises(NotComposableError, match="padding would see"):
        compose(outer, inner)


def test_padded_outer_after_a_bias_free_pointwise_inner():
    x = RNG.normal(size=(1, 4, 6, 7))
    inner = random_conv(RNG, 4, 3, (1, 1), bias=False, stride=2)
    outer = random_conv(RNG, 3, 5, (3, 3))
    assert_composes(outer, inner, x)


def test_pad_with_the_inner_bias_is_dbb_bn_and_pad():
    """DBB's BNAndPad: the border holds the BN's shift, so the padded 1x1 composes exactly."""
    x = RNG.normal(size=(1, 4, 7, 7))
    inner = random_conv(RNG, 4, 4, (1, 1))
    padded = pad_conv(4, (1, 1, 1, 1), inner.bias)
    avg = average_pool_conv(4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    composed = compose(avg, compose(padded, inner))
    assert composed.pad_value is None and composed.kernel_shape == (3, 3)
    np.testing.assert_allclose(apply(composed, x), apply(avg, apply(padded, apply(inner, x))))


def test_pad_with_another_value_is_refused():
    inner = random_conv(RNG, 4, 4, (1, 1))
    padded = pad_conv(4, (1, 1, 1, 1), inner.bias + 0.5)
    with pytest.raises(NotComposableError, match="padding would see"):
        compose(padded, inner)


def test_zero_pad_merges_into_the_next_conv():
    x = RNG.normal(size=(1, 4, 6, 6))
    padded = pad_conv(4, (2, 0, 1, 3), 0.0)
    conv = random_conv(RNG, 4, 4, (3, 3))
    assert_composes(conv, padded, x)
    assert compose(conv, padded).pads == (3, 1, 2, 4)


def test_batchnorm_before_a_padded_conv_needs_a_zero_shift():
    conv = random_conv(RNG, 4, 4, (3, 3))
    with pytest.raises(NotComposableError, match="padding would see"):
        compose(conv, channel_affine(RNG.uniform(0.5, 2, 4), RNG.normal(size=4)))
    x = RNG.normal(size=(1, 4, 5, 5))
    assert_composes(conv, channel_affine(RNG.uniform(0.5, 2, 4), 0.0), x)


def test_batchnorm_before_an_unpadded_grouped_conv():
    x = RNG.normal(size=(1, 4, 5, 5))
    conv = random_conv(RNG, 4, 6, (3, 3), pads=(0, 0, 0, 0), groups=2)
    assert_composes(conv, channel_affine(RNG.uniform(0.5, 2, 4), RNG.normal(size=4)), x)


def test_scale_after_anything_is_per_output_channel():
    x = RNG.normal(size=(1, 4, 5, 5))
    conv = random_conv(RNG, 4, 6, (3, 3), groups=2)
    assert_composes(channel_affine(RNG.normal(size=6), RNG.normal(size=6)), conv, x)
    assert_composes(channel_affine(-1.0), conv, x)


def test_linear_maps_compose_as_matrices():
    a = affine_conv(RNG.normal(size=(5, 3)), RNG.normal(size=5))
    b = affine_conv(RNG.normal(size=(3, 4)), RNG.normal(size=3))
    composed = materialize(compose(a, b))
    x = RNG.normal(size=(7, 4))
    expected = (x @ b.kernel.T + b.bias) @ a.kernel.T + a.bias
    np.testing.assert_allclose(x @ composed.kernel.T + composed.bias, expected)


def test_signed_sum_of_forms():
    """FastViT's ``x + γ⊙(mixer(x) − BN(x))`` as one sum."""
    x = RNG.normal(size=(1, 4, 6, 6))
    mixer = random_conv(RNG, 4, 4, (3, 3), groups=4)
    bn = channel_affine(RNG.uniform(0.5, 2, 4), RNG.normal(size=4))
    gamma = channel_affine(RNG.normal(size=4))
    terms = [
        channel_affine(),
        compose(gamma, mixer),
        compose(gamma, compose(channel_affine(-1.0), bn)),
    ]
    merged = sum_forms(terms, ["x", "mixer", "bn"], spatial_rank=2, channels=4)
    assert merged.groups == 4
    expected = x + apply(gamma, apply(mixer, x) - apply(bn, x))
    np.testing.assert_allclose(apply(merged, x), expected, rtol=1e-9, atol=1e-9)


def test_cost_of_a_composition():
    dw = random_conv(RNG, 8, 8, (7, 7), groups=8)
    pw = random_conv(RNG, 8, 32, (1, 1))
    assert multiply_adds(compose(pw, dw)) > multiply_adds(pw) + multiply_adds(dw)


@settings(max_examples=60, deadline=None)
@given(
    k_outer=st.sampled_from([(1, 1), (3, 3), (1, 3), (2, 2)]),
    k_inner=st.sampled_from([(1, 1), (3, 3), (3, 1), (2, 2)]),
    s_outer=st.sampled_from([1, 2]),
    s_inner=st.sampled_from([1, 2]),
    d_outer=st.sampled_from([1, 2]),
    d_inner=st.sampled_from([1, 2]),
    g_outer=st.sampled_from([1, 2, 4]),
    g_inner=st.sampled_from([1, 2, 4]),
    inner_pads=st.tuples(*[st.integers(0, 2)] * 4),
    outer_pads=st.tuples(*[st.integers(0, 2)] * 4),
    pointwise_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_composition_is_exact_or_refused(
    k_outer,
    k_inner,
    s_outer,
    s_inner,
    d_outer,
    d_inner,
    g_outer,
    g_inner,
    inner_pads,
    outer_pads,
    pointwise_bias,
    seed,
):
    rng = np.random.default_rng(seed)
    inner = random_conv(
        rng,
        4,
        8,
        k_inner,
        stride=s_inner,
        dilation=d_inner,
        pads=inner_pads,
        groups=g_inner,
        bias=pointwise_bias or k_inner != (1, 1),
    )
    outer = random_conv(
        rng, 8, 4, k_outer, stride=s_outer, dilation=d_outer, pads=outer_pads, groups=g_outer
    )
    x = rng.normal(size=(1, 4, 11, 10))
    if apply(inner, x).shape[2] + sum(outer_pads[::2]) < d_outer * (k_outer[0] - 1) + 1:
        return
    if apply(inner, x).shape[3] + sum(outer_pads[1::2]) < d_outer * (k_outer[1] - 1) + 1:
        return
    try:
        composed = compose(outer, inner)
    except NotComposableError:
        assert any(outer_pads)
        return
    expected = apply(outer, apply(inner, x))
    np.testing.assert_allclose(apply(composed, x), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    k_outer=st.sampled_from([(1, 1), (3, 3), (1, 3)]),
    k_inner=st.sampled_from([(1, 1), (3, 3), (2, 1)]),
    s_inner=st.sampled_from([1, 2]),
    d_outer=st.sampled_from([1, 2]),
    g_inner=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_a_depthwise_outer_composes_to_the_dense_products_bytes(
    k_outer, k_inner, s_inner, d_outer, g_inner, seed
):
    """DBB's per-channel map after a 1x1 takes the row-scaling path: the same float64 numbers
    as composing the same map written as a dense block-diagonal kernel, and the same function."""
    rng = np.random.default_rng(seed)
    inner = random_conv(rng, 4, 8, k_inner, stride=s_inner, pads=(0, 0, 0, 0), groups=g_inner)
    depthwise = random_conv(rng, 8, 8, k_outer, dilation=d_outer, pads=(0, 0, 0, 0), groups=8)
    depthwise.kernel[0, 0, 0, 0] = 0.0  # zero products: +0 on both paths (summed into zeros)
    dense = AffineConv(
        **{**depthwise.__dict__, "kernel": regroup_kernel(depthwise.kernel, 8, 1), "groups": 1}
    )
    by_rows, by_product = compose(depthwise, inner), compose(dense, inner)
    kernel = regroup_kernel(by_rows.kernel, by_rows.groups, 1)
    assert kernel.tobytes() == by_product.kernel.tobytes()
    assert by_rows.bias.tobytes() == by_product.bias.tobytes()
    assert_composes(depthwise, inner, rng.normal(size=(1, 4, 19, 18)))
