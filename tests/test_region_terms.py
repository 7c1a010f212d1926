"""The shape facts a region's sum is merged on: pure functions of tensors' shapes and terms."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from repvgg_onnx.algebra.affine_conv import affine_conv
from repvgg_onnx.algebra.channel_affine import channel_affine
from repvgg_onnx.passes.pass_result import Refusal
from repvgg_onnx.passes.readers import Layout
from repvgg_onnx.passes.region_terms import (
    Term,
    dtype_of,
    same_leading_dims,
    shape_facts,
    spatial_size,
)


def tensor(shape) -> gs.Variable:
    return gs.Variable("t", np.float32, shape)


def per_channel(count: int) -> Term:
    return Term(tensor([1, 6, 5, 5]), channel_affine(np.arange(1.0, count + 1.0)))


CONV = Term(tensor([1, 6, 5, 5]), affine_conv(np.ones((6, 3, 3, 3)), groups=2))


@pytest.mark.parametrize(
    ("shape", "layout", "terms", "facts"),
    [
        # a conv fixes (spatial rank, input channels) whatever the source says
        (None, Layout.CHANNELS_FIRST, [per_channel(1), CONV], (2, 6)),
        # else the source's rank: channels on axis 1 ...
        ([1, 6, 5, 5], Layout.CHANNELS_FIRST, [per_channel(1)], (2, 6)),
        ([2, 6, 5], Layout.ANY, [per_channel(1)], (1, 6)),
        # ... or last (a [..., C] map, or a matrix), no spatial axes
        ([1, 5, 5, 7], Layout.CHANNELS_LAST, [per_channel(1)], (0, 7)),
        ([3, 7], Layout.ANY, [per_channel(1)], (0, 7)),
        # a per-channel map's own count comes before the source's
        ([1, None, 5, 5], Layout.CHANNELS_FIRST, [per_channel(1), per_channel(6)], (2, 6)),
    ],
)
def test_shape_facts_of_a_sum(shape, layout, terms, facts):
    assert shape_facts(terms, tensor(shape), layout) == facts


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        (None, "the rank of 't' is unknown"),
        ([1, None, 5, 5], "the channel count of 't' is unknown"),
    ],
)
def test_shape_facts_that_cannot_be_known_are_refused(shape, reason):
    facts = shape_facts([per_channel(1)], tensor(shape), Layout.ANY)
    assert isinstance(facts, Refusal) and facts.reason == reason


@pytest.mark.parametrize(
    ("shape", "spatial_rank", "sizes"),
    [
        ([1, 6, 9, 7], 2, (9, 7)),
        ([1, 6, None, 7], 2, (None, 7)),
        ([1, 6, 9, 7], 0, ()),
        (None, 2, (None, None)),
        ([9], 2, (None, None)),
    ],
)
def test_spatial_size_is_the_last_dims_where_known(shape, spatial_rank, sizes):
    assert spatial_size(tensor(shape), spatial_rank) == sizes


@pytest.mark.parametrize(
    ("source", "root", "same"),
    [
        ([1, 6, 5, 5], [1, 6, 5, 7], True),  # only the last axis may differ
        ([1, 6, 5, 5], [1, 6, 25, 1], False),
        ([1, 6, 25], [1, 6, 5, 5], False),  # another rank
        (["N", 6, 5], ["N", 6, 5], True),  # the same symbolic batch
        ([None, 6, 5], [None, 6, 5], False),  # unknown sizes are never known equal
        (None, [1, 6, 5], False),
        ([1, 6, 5], None, False),
    ],
)
def test_same_leading_dims(source, root, same):
    assert same_leading_dims(tensor(source), tensor(root)) is same


def _conv_node(weight_dtype) -> gs.Node:
    weight = gs.Constant("w", np.ones((6, 6, 1, 1), weight_dtype))
    return gs.Node("Conv", inputs=[tensor([1, 6, 5, 5]), weight], outputs=[tensor(None)])


@pytest.mark.parametrize(
    ("source_dtype", "weight_dtype", "expected"),
    [
        (np.float16, np.float32, np.float16),  # the source's own floating type first
        (None, np.float64, np.float64),  # else the first floating weights
        (np.int8, np.float16, np.float16),  # an integer source (quantized) says nothing
        (None, np.int8, np.float32),  # nothing floating: float32
    ],
)
def test_the_type_a_term_is_emitted_in(source_dtype, weight_dtype, expected):
    source = gs.Variable("x", source_dtype, [1, 6, 5, 5])
    term = Term(source, channel_affine(2.0), nodes=(_conv_node(weight_dtype),))
    assert dtype_of(term) == np.dtype(expected)
