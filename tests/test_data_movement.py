"""Chains of data-movement ops read as a pad (passes/data_movement.py), beyond Pad + ScatterND.

Every model is ``Conv3x3(movers(Conv1x1(x) + b))``: DBB's BN-then-pad layer with the BN folded
into the 1x1's bias ``b``. When the movers only copy the 1x1's output once, shifted, and write
``b`` per channel around it, the whole model is one 3x3 conv of ``x``; the fused model is
compared with the original in onnxruntime here. Each trap (an interior element duplicated,
moved or dropped, a border that is not one value per channel, a move along the channel
axis) must be refused: nothing changes and the skip reason says why.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import assert_same_function, fuse_model, op_counts, random_feeds, run
from repvgg_onnx.algebra.affine_conv import AffineConv, pad_values
from repvgg_onnx.passes import fold_constants

C, SIZE, OPSET = 4, 6, 17
BIAS = np.array([0.3, -0.2, 0.5, 0.1])
"""The 1x1's bias: what the border must hold, per channel."""


class Graph:
    """A model under construction: nodes, constants, fresh names."""

    def __init__(self, bias: np.ndarray = BIAS, seed: int = 0) -> None:
        self.bias = bias
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, value, dtype=np.float32) -> str:
        name = f"c{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        output = f"{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs))
        return output

    def strip(self, height: int, width: int, values: np.ndarray | None = None) -> str:
        """A constant ``[1, C, height, width]`` holding ``values[c]`` (default: the bias) in
        channel ``c``."""
        values = self.bias if values is None else values
        return self.const(np.broadcast_to(np.reshape(values, (1, C, 1, 1)), (1, C, height, width)))

    def slice(self, data: str, axis: int, start: int, end: int) -> str:
        ints = [self.const([v], np.int64) for v in (start, end, axis)]
        return self.node("Slice", [data, *ints])

    def model(self, top: str, channels: int = C, inner: bool = True) -> onnx.ModelProto:
        """``Conv3x3(top)`` (``top`` has ``channels`` channels), with (if ``inner``) the node
        ``inner = Conv1x1(x) + b`` before the others."""
        outer_weight = self.const(self.rng.normal(size=(C, channels, 3, 3)))
        if inner:
            weight = self.const(self.rng.normal(size=(C, C, 1, 1)))
            node = helper.make_node("Conv", ["x", weight, self.const(self.bias)], ["inner"])
            self.nodes.insert(0, node)
        self.nodes.append(helper.make_node("Conv", [top, outer_weight], ["y"], name="Outer"))
        graph = helper.make_graph(
            self.nodes,
            "movers",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, None, None])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model, full_check=True)
        return model


def concat_border(
    graph: Graph, data: str, width: int = SIZE, values: np.ndarray | None = None
) -> str:
    """Paddle's BN-then-pad: constant strips left and right, then above and below."""
    side = graph.strip(SIZE, 1, values)
    rows = graph.node("Concat", [side, data, side], axis=3)
    strip = graph.strip(1, width + 2, values)
    return graph.node("Concat", [strip, rows, strip], axis=2)


# ---- accepted: each becomes one conv -----------------------------------------------------------


def paddle_concat() -> onnx.ModelProto:
    graph = Graph()
    return graph.model(concat_border(graph, "inner"))


def expanded_strips() -> onnx.ModelProto:
    """The strips are ``Expand`` and ``Tile`` of the per-channel ``[1, C, 1, 1]`` value (folded
    to constants before the chain is read)."""
    graph = Graph()
    value = graph.const(BIAS.reshape(1, C, 1, 1))
    side = graph.node("Expand", [value, graph.const([1, C, SIZE, 1], np.int64)])
    rows = graph.node("Concat", [side, "inner", side], axis=3)
    strip = graph.node("Tile", [value, graph.const([1, 1, 1, SIZE + 2], np.int64)])
    return graph.model(graph.node("Concat", [strip, rows, strip], axis=2))


def strips_expanded_once_each() -> onnx.ModelProto:
    """As :func:`expanded_strips`, with an ``Expand`` or ``Tile`` of its own for each strip
    (each read once: inside the chain, not beside it)."""
    graph = Graph()
    value = graph.const(BIAS.reshape(1, C, 1, 1))
    left, right = (
        graph.node("Expand", [value, graph.const([1, C, SIZE, 1], np.int64)]) for _ in "lr"
    )
    rows = graph.node("Concat", [left, "inner", right], axis=3)
    top, bottom = (
        graph.node("Tile", [value, graph.const([1, 1, 1, SIZE + 2], np.int64)]) for _ in "tb"
    )
    return graph.model(graph.node("Concat", [top, rows, bottom], axis=2))


def expand_and_tile_of_the_data() -> onnx.ModelProto:
    """``Expand`` to its own shape and ``Tile`` by ones on the moved tensor: copies, once."""
    graph = Graph()
    same = graph.node("Expand", ["inner", graph.const([1, 1, 1, 1], np.int64)])
    tiled = graph.node("Tile", [same, graph.const([1, 1, 1, 1], np.int64)])
    return graph.model(concat_border(graph, tiled))


def pad_then_slice() -> onnx.ModelProto:
    """``Pad`` by 2 with the bias (Pad has one fill value, so the bias is one value), then
    ``Slice`` one row and column off each side."""
    graph = Graph(bias=np.full(C, 0.4))
    pads = graph.const([0, 0, 2, 2, 0, 0, 2, 2], np.int64)
    padded = graph.node("Pad", ["inner", pads, graph.const(0.4)])
    return graph.model(graph.slice(graph.slice(padded, 2, 1, SIZE + 3), 3, 1, SIZE + 3))


def slices_put_back_in_order() -> onnx.ModelProto:
    """The input split in two along W and concatenated again in order, between zero strips
    (a zero pad: a tensor read by two slices is not inside a region, so no bias could be
    folded through the border)."""
    graph = Graph(bias=np.zeros(C))
    left, right = graph.slice("x", 3, 0, 2), graph.slice("x", 3, 2, SIZE)
    side = graph.strip(SIZE, 1)
    rows = graph.node("Concat", [side, left, right, side], axis=3)
    strip = graph.strip(1, SIZE + 2)
    return graph.model(graph.node("Concat", [strip, rows, strip], axis=2), inner=False)


def one_sided_border() -> onnx.ModelProto:
    """A border at the end of each axis only (TF-style ``SAME`` padding of a stride-2 conv)."""
    graph = Graph()
    rows = graph.node("Concat", ["inner", graph.strip(SIZE, 1)], axis=3)
    return graph.model(graph.node("Concat", [rows, graph.strip(1, SIZE + 1)], axis=2))


def scatter_on_a_concat_border() -> onnx.ModelProto:
    """Zero strips concatenated, then the border overwritten with the bias by ``ScatterND``."""
    graph = Graph()
    padded = concat_border(graph, "inner", values=np.zeros(C))
    padded = graph.node("Concat", [padded], axis=0)  # a one-input Concat: a copy
    rows = [(0, c, h, w) for c in range(C) for h in (0, SIZE + 1) for w in range(SIZE + 2)]
    cols = [(0, c, h, w) for c in range(C) for h in range(1, SIZE + 1) for w in (0, SIZE + 1)]
    indices = np.array(rows + cols)
    updates = graph.const(BIAS[indices[:, 1]])
    return graph.model(graph.node("ScatterND", [padded, graph.const(indices, np.int64), updates]))


def scatter_rows_and_columns(graph: Graph, data: str, rows: tuple[int, ...] = (0, SIZE + 1)) -> str:
    """Paddle's slice assignments ``out[:, :, r:r+1, :] = b`` (for each of ``rows``) and
    ``out[:, :, :, c:c+1] = b`` (first and last column): ScatterElements along H, then W."""
    full = SIZE + 2
    for axis, positions in ((2, rows), (3, (0, full - 1))):
        shape = (1, C, 1, full) if axis == 2 else (1, C, full, 1)
        for position in positions:
            indices = graph.const(np.full(shape, position), np.int64)
            updates = graph.const(np.broadcast_to(graph.bias.reshape(1, C, 1, 1), shape))
            data = graph.node("ScatterElements", [data, indices, updates], axis=axis)
    return data


def paddle_slice_assignment() -> onnx.ModelProto:
    """paddle2onnx's ``F.pad`` + slice assignments: Unsqueeze to 5-D, Pad (pad3d), Squeeze,
    then ScatterElements of the bias on each side."""
    graph = Graph()
    lifted = graph.node("Unsqueeze", ["inner", graph.const([2], np.int64)])
    padded = graph.node("Pad", [lifted, graph.const([0, 0, 0, 1, 1, 0, 0, 0, 1, 1], np.int64)])
    flat = graph.node("Squeeze", [padded, graph.const([2], np.int64)])
    return graph.model(scatter_rows_and_columns(graph, flat))


@pytest.mark.parametrize("build", [expanded_strips, strips_expanded_once_each])
def test_strips_expanded_at_run_time_are_read(monkeypatch, build):
    """Strips too large to fold (as ``[1, C, 1, W]`` strips of a wide map would be) stay
    ``Expand``/``Tile`` nodes of a constant: the probe evaluates them with the chain."""
    monkeypatch.setattr(fold_constants, "MAX_FOLDED_ELEMENTS", 0)
    model = build()
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}, outcome.skipped
    assert_same_function(model, fused)


def unsqueeze_with_negative_axes() -> onnx.ModelProto:
    """paddle2onnx's slice-assignment border with the Unsqueeze written with a negative axis:
    the probe's evaluator reads negative axes as the spec does (onnx's own reference misplaces
    some before opset 13; ``passes/reference.py`` replaces it)."""
    graph = Graph()
    lifted = graph.node("Unsqueeze", ["inner", graph.const([-3], np.int64)])
    padded = graph.node("Pad", [lifted, graph.const([0, 0, 0, 1, 1, 0, 0, 0, 1, 1], np.int64)])
    flat = graph.node("Squeeze", [padded, graph.const([2], np.int64)])
    return graph.model(scatter_rows_and_columns(graph, flat))


ACCEPTED = [
    unsqueeze_with_negative_axes,
    paddle_slice_assignment,
    paddle_concat,
    expanded_strips,
    expand_and_tile_of_the_data,
    slices_put_back_in_order,
    one_sided_border,
    scatter_on_a_concat_border,
    pad_then_slice,
]


@pytest.mark.parametrize("build", ACCEPTED, ids=lambda f: f.__name__)
def test_a_chain_that_only_pads_becomes_one_conv(build):
    model = build()
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}, outcome.skipped
    assert_same_function(model, fused)


# ---- refused: nothing changes, with the reason -------------------------------------------------


def duplicated_interior() -> onnx.ModelProto:
    graph = Graph()
    return graph.model(graph.node("Concat", ["inner", "inner"], axis=3))


def reordered_interior() -> onnx.ModelProto:
    graph = Graph()
    left, right = graph.slice("inner", 3, 0, 2), graph.slice("inner", 3, 2, SIZE)
    return graph.model(concat_border(graph, graph.node("Concat", [right, left], axis=3)))


def transposed_interior() -> onnx.ModelProto:
    """Rows and columns swapped: every element copied once, the first one where it was, the
    others moved relative to it."""
    graph = Graph()
    return graph.model(concat_border(graph, graph.node("Transpose", ["inner"], perm=[0, 1, 3, 2])))


def border_varies_within_a_channel() -> onnx.ModelProto:
    graph = Graph()
    side = graph.strip(SIZE, 1)
    rows = graph.node("Concat", [side, "inner", side], axis=3)
    strip = graph.strip(1, SIZE + 2)
    varying = np.broadcast_to(BIAS.reshape(1, C, 1, 1), (1, C, 1, SIZE + 2)).copy()
    varying[0, 0, 0, 3] += 1.0
    return graph.model(graph.node("Concat", [strip, rows, graph.const(varying)], axis=2))


def tile_repeats_the_interior() -> onnx.ModelProto:
    graph = Graph()
    tiled = graph.node("Tile", ["inner", graph.const([1, 1, 1, 2], np.int64)])
    return graph.model(concat_border(graph, tiled, width=2 * SIZE))


def concat_along_channels() -> onnx.ModelProto:
    """A constant channel added in front of the data: every element copied once, shifted by
    one channel."""
    graph = Graph()
    grown = graph.node("Concat", [graph.const(np.ones((1, 1, SIZE, SIZE))), "inner"], axis=1)
    return graph.model(grown, channels=C + 1)


def interior_dropped() -> onnx.ModelProto:
    """A slice drops the last column, a strip takes its place."""
    graph = Graph()
    cropped = graph.slice("inner", 3, 0, SIZE - 1)
    rows = graph.node("Concat", [cropped, graph.strip(SIZE, 1)], axis=3)
    return graph.model(concat_border(graph, rows))


def nan_in_the_border() -> onnx.ModelProto:
    """NaN is no constant the probe can see twice: a per-channel maximum would skip it."""
    graph = Graph()
    values = BIAS.copy()
    values[1] = np.nan
    side = graph.strip(SIZE, 1, values)
    rows = graph.node("Concat", [graph.strip(SIZE, 1), "inner", side], axis=3)
    strip = graph.strip(1, SIZE + 2)
    return graph.model(graph.node("Concat", [strip, rows, strip], axis=2))


def assignment_inside_the_border() -> onnx.ModelProto:
    """The second row assigned instead of the last: an interior row overwritten."""
    graph = Graph()
    padded = graph.node("Pad", ["inner", graph.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)])
    return graph.model(scatter_rows_and_columns(graph, padded, rows=(0, 1)))


def strip_from_another_tensor() -> onnx.ModelProto:
    """A border strip computed at run time from the input, not spread from a constant."""
    graph = Graph()
    strip = graph.slice("x", 3, 0, 1)
    rows = graph.node("Concat", [strip, "inner", strip], axis=3)
    return graph.model(graph.node("Concat", [graph.strip(1, SIZE + 2), rows], axis=2))


def inf_in_the_border() -> onnx.ModelProto:
    """inf is a constant the probe sees twice, but no fill value a conv can take."""
    values = BIAS.copy()
    values[2] = np.inf
    graph = Graph()
    return graph.model(concat_border(graph, "inner", values=values))


REFUSED = [
    (strip_from_another_tensor, "read 2 tensors"),
    (inf_in_the_border, "pad with inf"),
    (assignment_inside_the_border, "copy some input elements not at all"),
    (nan_in_the_border, "neither copies of their input nor constants"),
    (duplicated_interior, "copy some input elements more than once"),
    (reordered_interior, "move input elements relative to each other"),
    (transposed_interior, "move input elements relative to each other"),
    (border_varies_within_a_channel, "pad with values that differ within a channel"),
    (tile_repeats_the_interior, "copy some input elements more than once"),
    (concat_along_channels, "along the batch or channel axis"),
    (interior_dropped, "copy some input elements not at all"),
]


@pytest.mark.parametrize(("build", "reason"), REFUSED, ids=lambda c: getattr(c, "__name__", ""))
def test_a_chain_that_does_more_than_pad_is_refused(build, reason):
    model = build()
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == op_counts(model)
    reasons = [s.reason for s in outcome.skipped]
    assert any(reason in r for r in reasons), reasons
    feeds = random_feeds(model)
    for expected, actual in zip(run(model, feeds), run(fused, feeds), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_the_reason_names_the_chain():
    _, outcome = fuse_model(reordered_interior())
    (reason,) = [s.reason for s in outcome.skipped if "relative" in s.reason]
    assert reason.startswith("Slice '") and "Concat '" in reason


def test_movers_no_linear_op_reads_are_not_probed():
    """``Concat(x, x)`` read by a Relu: no pad to find, so no reason to give."""
    graph = Graph()
    doubled = graph.node("Concat", ["inner", "inner"], axis=3)
    graph.nodes.append(helper.make_node("Relu", [doubled], ["z"]))
    model = graph.model("z")
    fused, outcome = fuse_model(model)
    assert not [s for s in outcome.skipped if "Concat" in s.reason], outcome.skipped
    assert_same_function(model, fused)


def test_a_concat_of_integers_is_not_read():
    """Integer data (here cast from the 1x1's output, joined with an integer constant and
    reshaped) is not what a linear op computes on: it is not probed, so no reason is given."""
    graph = Graph()
    integers = graph.node("Cast", ["inner"], to=TensorProto.INT64)
    joined = graph.node(
        "Concat", [integers, graph.const(np.ones((1, C, SIZE, 1)), np.int64)], axis=3
    )
    reshaped = graph.node("Reshape", [joined, graph.const([1, C, SIZE + 1, SIZE], np.int64)])
    model = graph.model(graph.node("Cast", [reshaped], to=TensorProto.FLOAT))
    fused, outcome = fuse_model(model)
    assert outcome.skipped == []
    assert_same_function(model, fused)


def test_a_long_chain_is_read_without_recursion():
    """1,500 whole-tensor Slices under the border (deeper than Python's recursion limit)."""
    graph = Graph()
    data = "inner"
    for _ in range(1500):
        data = graph.slice(data, 3, 0, SIZE)
    model = graph.model(concat_border(graph, data))
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}, outcome.skipped
    assert_same_function(model, fused)


def test_a_chain_that_changes_the_rank_is_refused():
    """``Expand`` to one more dimension copies every element once, into a tensor of another
    rank: no pad."""
    graph = Graph()
    moved = graph.node("Expand", ["inner", graph.const([1, 1, C, SIZE, SIZE], np.int64)])
    scaled = graph.node("Mul", [moved, graph.const(2.0)])
    weight = graph.const(graph.rng.normal(size=(C, C, 1, 1)))
    graph.nodes.insert(0, helper.make_node("Conv", ["x", weight, graph.const(BIAS)], ["inner"]))
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "rank",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])],
            [helper.make_tensor_value_info(scaled, TensorProto.FLOAT, [1, 1, C, SIZE, SIZE])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    fused, outcome = fuse_model(model)
    reasons = [s.reason for s in outcome.skipped]
    assert any("change the rank of their input" in r for r in reasons), reasons
    assert op_counts(fused) == op_counts(model)
    assert_same_function(model, fused)


def test_a_source_too_large_to_probe_exactly_is_refused(monkeypatch):
    """Probe values count the source's elements; past float32's exact integers (2**24) two
    elements would look alike, so the chain is not read."""
    from repvgg_onnx.passes import data_movement

    monkeypatch.setattr(data_movement, "MAX_PROBE_ELEMENTS", C * SIZE * SIZE - 1)
    model = paddle_concat()
    fused, outcome = fuse_model(model)
    reasons = [s.reason for s in outcome.skipped]
    assert any("is too large to read" in r for r in reasons), reasons
    assert op_counts(fused) == op_counts(model)


def _probe_outputs(rng: np.random.Generator, shape, begin, end, fill):
    """What a pad chain writes on probe ``p`` and on ``−p``: ``p`` at ``begin``, ``fill[c]``
    around it (float32, as the reference evaluator returns)."""
    probe = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    out_shape = (*shape[:2], *(n + b + e for n, b, e in zip(shape[2:], begin, end, strict=True)))
    window = (
        slice(None),
        slice(None),
        *(slice(b, b + n) for b, n in zip(begin, shape[2:], strict=True)),
    )
    outputs = []
    for sign in (1, -1):
        out = np.broadcast_to(np.reshape(fill, (1, -1, 1, 1)), out_shape).astype(np.float32)
        out[window] = sign * probe
        outputs.append(out)
    return probe, window, outputs


def _spoil(rng, first, second, window, how):
    """One way a chain's outputs stop being a pad."""
    border = ~np.zeros(first.shape, bool)
    border[window] = False
    spots = np.argwhere(border)
    at = tuple(spots[int(rng.integers(len(spots)))]) if len(spots) else None
    inside = tuple(np.argwhere(~border)[int(rng.integers(int((~border).sum())))])
    if how == "border differs in the second run" and at is not None:
        second[at] += 1
    elif how == "border differs in the first run" and at is not None:
        first[at] -= 1
    elif how == "border differs within a channel" and at is not None:
        first[at] += 1
        second[at] += 1
    elif how == "border is a copy" and at is not None:
        first[at], second[at] = first[inside], second[inside]
    elif how == "copy changed in one run":
        second[inside] += 0.5
    elif how == "copy is a constant":
        first[inside] = second[inside] = 7.0
    elif how == "copies swapped":
        other = tuple(np.argwhere(~border)[0])
        for a in (first, second):
            a[inside], a[other] = a[other].copy(), a[inside].copy()
    elif how == "inf fill" and at is not None:
        channel = border & (np.arange(first.shape[1]).reshape(1, -1, 1, 1) == at[1])
        first[channel] = second[channel] = np.inf
    elif how == "rank changed":
        return first[..., None], second[..., None]
    elif how == "channel moved":
        first[:] = np.roll(first, 1, axis=1)
        second[:] = np.roll(second, 1, axis=1)


SPOILS = [
    "none", "border differs in the second run", "border differs in the first run",
    "border differs within a channel", "border is a copy",
    "copy changed in one run", "copy is a constant", "copies swapped", "inf fill",
    "rank changed", "channel moved",
]  # fmt: skip


@pytest.mark.parametrize("how", SPOILS)
@pytest.mark.parametrize("seed", range(12))
def test_the_window_check_accepts_exactly_the_pads_the_element_check_accepts(seed, how):
    """``_placed_pad`` (window and border slabs) returns a pad only where ``_as_pad`` (every
    element classified) returns the same pad, and returns one wherever ``_as_pad`` does."""
    from repvgg_onnx.passes.data_movement import _as_pad, _placed_pad

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *rng.integers(1, 5, 2))
    begin, end = [int(v) for v in rng.integers(0, 3, 2)], [int(v) for v in rng.integers(0, 3, 2)]
    fill = rng.choice([0.0, 1.0, -1.0, 0.25, 3.0], size=shape[1])
    probe, window, (first, second) = _probe_outputs(rng, shape, begin, end, fill)
    first, second = _spoil(rng, first, second, window, how) or (first, second)
    placed = _placed_pad(first, second, probe)
    element = _as_pad(first.astype(np.float64), second.astype(np.float64), shape, [])
    if placed is None:
        assert not isinstance(element, AffineConv), (how, element)
        return
    assert isinstance(element, AffineConv), (how, element)
    assert placed.pads == element.pads
    np.testing.assert_array_equal(placed.kernel, element.kernel)
    np.testing.assert_array_equal(pad_values(placed), pad_values(element))
    if how == "none":
        assert list(placed.pads) == begin + end


@pytest.mark.parametrize("build", ACCEPTED, ids=lambda f: f.__name__)
def test_a_pad_chain_is_read_from_its_window_and_border_alone(monkeypatch, build):
    """Every chain that is a pad is read by the window check; the element by element reading
    (for its reasons why a chain is not one) never runs."""
    from repvgg_onnx.passes import data_movement

    def unexpected(*_):
        raise AssertionError("a pad chain was read element by element")

    monkeypatch.setattr(data_movement, "_as_pad", unexpected)
    model = build()
    fused, outcome = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1}, outcome.skipped
    assert_same_function(model, fused)
