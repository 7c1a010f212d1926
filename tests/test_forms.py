"""Every normal form answers the questions of ``LinearForm``, and a new form needs no pass edit.

Each form's answers are checked against its definition: the nodes it names run in onnxruntime
and compute what the form computes; composing with the identity or a scale, summing it with
itself, its cost and its name. Then a form the package does not have (``Negation``, ``y = −x``,
read from ``Neg`` by a reader registered for the test) goes through the unchanged passes:
composed after a conv, read by a conv, and summed with a conv branch, each fused into one Conv
that onnxruntime finds equal to the model it replaced.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_linear_forms import apply

from helpers import assert_same_function, fuse_model, op_counts, run
from repvgg_onnx.algebra.affine_conv import AffineConv, affine_conv, materialize, scale_and_shift
from repvgg_onnx.algebra.form import (
    IncompatibleBranchesError,
    LinearForm,
    NodeSpec,
    NotComposableError,
)
from repvgg_onnx.algebra.linear_forms import (
    IDENTITY,
    channel_affine,
    compose,
    composed_cost,
    sum_forms,
)
from repvgg_onnx.algebra.transposed_conv import TransposedConv
from repvgg_onnx.passes import readers
from repvgg_onnx.passes.graph_utils import UniqueNames
from repvgg_onnx.passes.readers import Kind, Layout, LinearOp
from repvgg_onnx.passes.rewrite import chain_nodes, node_specs

RNG = np.random.default_rng(7)
C = 4


def _transposed() -> TransposedConv:
    kernel = RNG.normal(size=(C, 2, 2, 2))
    return TransposedConv(kernel, RNG.normal(size=4), 2, (("strides", [2, 2]),))


FORMS: dict[str, LinearForm] = {
    "per-channel": channel_affine(RNG.normal(size=C), RNG.normal(size=C)),
    "uniform": channel_affine(2.5, -0.5),
    "conv": affine_conv(
        RNG.normal(size=(6, 2, 3, 3)), RNG.normal(size=6), strides=(2, 1), pads=(1, 1, 1, 1),
        groups=2,
    ),
    "linear": affine_conv(RNG.normal(size=(3, C)), RNG.normal(size=3)),
    "transposed": _transposed(),
}  # fmt: skip


def reference(form: LinearForm, x: np.ndarray) -> np.ndarray:
    """What ``form`` computes on ``x``, from its definition (a ConvTranspose by onnxruntime on
    its stored kernel, then its scale and bias per output channel)."""
    if isinstance(form, TransposedConv):
        unscaled = TransposedConv(
            form.kernel, np.zeros_like(form.bias), form.groups, form.attributes
        )
        [y] = run_specs(unscaled.node_specs(np.float32, False, 4), x)
        scale = np.ones(form.out_channels) if form.scale is None else form.scale
        return y * scale.reshape(1, -1, 1, 1) + form.bias.reshape(1, -1, 1, 1)
    if form.spatial_rank == 0:
        matrix = materialize(form)
        return x @ matrix.kernel.T + matrix.bias
    return apply(form, x)


def run_specs(specs: list[NodeSpec], x: np.ndarray) -> list[np.ndarray]:
    """The chain of nodes ``specs`` on ``x`` in onnxruntime (float32)."""
    nodes, initializers, current = [], [], "x"
    for index, spec in enumerate(specs):
        names = [f"{name}_{index}" for name, _ in spec.constants]
        for name, (_, values) in zip(names, spec.constants, strict=True):
            initializers.append(numpy_helper.from_array(np.asarray(values, np.float32), name))
        output = f"y{index}"
        nodes.append(helper.make_node(spec.op, [current, *names], [output], **spec.attrs))
        current = output
    graph = helper.make_graph(
        nodes,
        "specs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return run(model, {"x": x.astype(np.float32)})


def sample_input(form: LinearForm) -> np.ndarray:
    channels = form.in_channels or C
    shape = (2, channels) if form.spatial_rank == 0 else (1, channels, 5, 6)
    return RNG.normal(size=shape)


@pytest.mark.parametrize("name", FORMS)
def test_the_nodes_a_form_names_compute_the_form(name):
    form = FORMS[name]
    x = sample_input(form)
    specs = form.node_specs(np.dtype(np.float32), False, x.ndim)
    assert specs and all(isinstance(spec, NodeSpec) for spec in specs)
    [y] = run_specs(specs, x)
    np.testing.assert_allclose(y, reference(form, x), rtol=1e-4, atol=1e-4)
    assert form.label(specs) in (form.describe(), "+".join(spec.op for spec in specs))


@pytest.mark.parametrize("name", FORMS)
def test_a_form_composes_with_the_identity_and_a_scale_after_it(name):
    form = FORMS[name]
    x = sample_input(form)
    expected = reference(form, x)
    np.testing.assert_allclose(reference(compose(form, IDENTITY), x), expected, rtol=1e-12)
    scale, shift = RNG.normal(size=form.out_channels or C), RNG.normal(size=form.out_channels or C)
    scaled = compose(channel_affine(scale, shift), form)
    shape = (1, -1) + (1,) * (expected.ndim - 2)
    expected = expected * scale.reshape(shape) + shift.reshape(shape)
    np.testing.assert_allclose(reference(scaled, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FORMS)
def test_a_form_answers_its_channels_cost_and_name(name):
    form = FORMS[name]
    for channels in (form.in_channels, form.out_channels):
        assert channels is None or channels > 0
    assert form.spatial_rank in (None, 0, 1, 2)
    assert form.multiply_adds(C) > 0
    assert composed_cost(form, IDENTITY, C) == form.multiply_adds(C)
    assert form.input_positions_per_output() >= 1
    assert form.emittable_reason() is None
    assert form.describe() and not form.is_identity


@pytest.mark.parametrize("name", FORMS)
def test_a_form_sums_with_itself_or_says_why_not(name):
    form = FORMS[name]
    rank = form.spatial_rank if form.spatial_rank is not None else 2
    channels = form.in_channels or C
    if isinstance(form, TransposedConv):
        with pytest.raises(IncompatibleBranchesError, match="first is a ConvTranspose"):
            sum_forms([form, form], ["first", "second"], spatial_rank=rank, channels=channels)
        return
    total = sum_forms([form, form], ["a", "b"], spatial_rank=rank, channels=channels)
    x = sample_input(form)
    np.testing.assert_allclose(reference(total, x), 2 * reference(form, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("outer", "inner"),
    [("transposed", "per-channel"), ("conv", "transposed"), ("linear", "conv")],
)
def test_forms_that_do_not_compose_say_why(outer, inner):
    with pytest.raises(NotComposableError):
        compose(FORMS[outer], FORMS[inner])


class Negation(LinearForm):
    """``y = −x`` on any channels: a form the package does not have."""

    in_channels = out_channels = spatial_rank = None

    def compose(self, inner: LinearForm, rtol: float) -> LinearForm:
        if inner.is_identity:
            return self
        return inner.scale_outputs(np.array([-1.0]), np.array([0.0]))

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> LinearForm:
        return channel_affine(-np.asarray(scale), shift)

    def read_by(self, conv: AffineConv, rtol: float) -> LinearForm:
        """``conv(−x) = −(W·x + b) + 2b``: exact while the border it pads holds zeros."""
        if conv.pad_value is not None:
            raise NotComposableError("a Neg would negate the pad value")
        return scale_and_shift(conv, np.array([-1.0]), 2 * conv.bias)

    def as_summand(self, label: str, channels: int, spatial_rank: int) -> LinearForm:
        kernel = np.full((channels, 1) + (1,) * spatial_rank, -1.0)
        return affine_conv(kernel, groups=channels)

    def multiply_adds(self, channels: int | None = None) -> float:
        return float(channels or 1)

    def composed_cost(self, inner: LinearForm, channels: int | None) -> float:
        return inner.multiply_adds(channels)

    def node_specs(self, dtype, channels_last, source_rank) -> list[NodeSpec]:
        return [NodeSpec("Neg", {}, ())]

    def describe(self) -> str:
        return "Neg"


def read_neg(node) -> LinearOp:
    return LinearOp(node, Kind.SCALE, (node.inputs[0],), Negation(), "Neg", Layout.ANY)


def _conv(builder: list, initializers: list, source: str, output: str, kernel: int) -> None:
    name = f"w_{output}"
    weight = RNG.normal(size=(C, C, kernel, kernel)).astype(np.float32)
    initializers.append(numpy_helper.from_array(weight, name))
    initializers.append(numpy_helper.from_array(RNG.normal(size=C).astype(np.float32), f"b_{name}"))
    pad = kernel // 2
    builder.append(
        helper.make_node(
            "Conv", [source, name, f"b_{name}"], [output], name=f"conv_{output}",
            pads=[pad] * 4,
        )
    )  # fmt: skip


def negation_model(shape: str) -> onnx.ModelProto:
    """``Neg`` after a conv, before a conv, or beside a conv in a sum; then a Relu."""
    nodes: list = []
    initializers: list = []
    if shape == "after":
        _conv(nodes, initializers, "x", "c", 3)
        nodes.append(helper.make_node("Neg", ["c"], ["s"], name="neg"))
    elif shape == "before":
        nodes.append(helper.make_node("Neg", ["x"], ["n"], name="neg"))
        _conv(nodes, initializers, "n", "s", 3)
    else:
        _conv(nodes, initializers, "x", "c", 3)
        nodes.append(helper.make_node("Neg", ["x"], ["n"], name="neg"))
        nodes.append(helper.make_node("Add", ["c", "n"], ["s"], name="add"))
    nodes.append(helper.make_node("Relu", ["s"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "negation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 8, 8])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("shape", ["after", "before", "beside"])
def test_a_new_form_is_fused_by_the_unchanged_passes(shape, monkeypatch):
    """After a conv the conv scales its outputs; before one, the conv asks the Negation how it
    reads it (``read_by``); beside one, the Negation becomes a summand."""
    model = negation_model(shape)
    unread, _ = fuse_model(model)
    assert op_counts(unread).get("Neg") == 1  # without its reader, Neg is no linear op
    monkeypatch.setitem(readers.READERS, "Neg", read_neg)
    fused, result = fuse_model(model)
    assert op_counts(fused) == {"Conv": 1, "Relu": 1}
    assert [block.result for block in result.fused] == ["Conv3x3"]
    assert_same_function(model, fused)


def test_a_new_form_is_written_as_the_nodes_it_names():
    graph = gs.Graph()
    source, output = gs.Variable("x", np.float32, [1, C]), gs.Variable("y", np.float32, [1, C])
    specs = node_specs(Negation(), np.dtype(np.float32), False, 2)
    [node] = chain_nodes(specs, source, output, "neg", UniqueNames(graph))
    assert (node.op, node.inputs, node.outputs) == ("Neg", [source], [output])


def test_a_sum_names_the_form_that_cannot_be_summed_before_a_channel_mismatch():
    """The forms that are no per-channel map are asked first (as before the forms had one
    interface): a ConvTranspose is named even after a per-channel map of the wrong width."""
    narrow = channel_affine(np.ones(3), 0.0)
    with pytest.raises(IncompatibleBranchesError, match="b is a ConvTranspose"):
        sum_forms([narrow, FORMS["transposed"]], ["a", "b"], spatial_rank=2, channels=C)


def test_the_algebra_imports_numpy_and_itself_only():
    """Forms describe their nodes as plain data: nothing in ``algebra/`` imports ONNX,
    graphsurgeon or another layer of the package."""
    allowed = {"numpy", "__future__", "abc", "collections", "dataclasses", "math", "typing"}
    folder = Path(__file__).resolve().parent.parent / "repvgg_onnx" / "algebra"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                inside = name.startswith("repvgg_onnx.algebra")
                assert inside or name.split(".")[0] in allowed, f"{path.name} imports {name}"
