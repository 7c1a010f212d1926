"""Builders of small ONNX graphs with random weights, and onnxruntime comparisons, for tests."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import PipelineResult

OPSET = 17
REPO_ROOT = Path(__file__).resolve().parents[1]


def repository_module(name: str):
    """A module of the repository outside the package, such as ``models.synthetic``."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(name)


@dataclass(frozen=True)
class BranchSpec:
    """One branch of a test block.

    ``kind``: ``"conv"`` (Conv with bias), ``"conv_bn"`` (Conv without bias, then BN),
    ``"bn"`` (BatchNormalization of the input), ``"identity"`` (the input itself).
    """

    kind: str
    kernel: tuple[int, ...] = (3, 3)
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    pads: tuple[int, ...] | None = None  # default: centred ("same") pads
    auto_pad: str | None = None  # SAME_UPPER / SAME_LOWER / VALID instead of pads


class GraphBuilder:
    """Accumulates nodes and initializers with deterministic random values."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, spec: BranchSpec, bias: bool) -> str:
        kernel = tuple(spec.kernel)
        shape = (cout, cin // spec.groups, *kernel)
        weight = self.constant("w", self.rng.normal(0, 0.5, shape))
        inputs = [x, weight]
        if bias:
            inputs.append(self.constant("b", self.rng.normal(0, 0.5, cout)))
        pads = spec.pads
        if pads is None:
            begin = [spec.dilation * (k - 1) // 2 for k in kernel]
            pads = tuple(begin + begin)
        padding = {"auto_pad": spec.auto_pad} if spec.auto_pad else {"pads": list(pads)}
        out = self.name("conv_out")
        self.nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [out],
                name=self.name("Conv"),
                kernel_shape=list(kernel),
                strides=[spec.stride] * len(kernel),
                dilations=[spec.dilation] * len(kernel),
                group=spec.groups,
                **padding,
            )
        )
        return out

    def batchnorm(self, x: str, channels: int, eps: float = 1e-3) -> str:
        rng = self.rng
        params = [
            self.constant("gamma", rng.uniform(0.5, 1.5, channels)),
            self.constant("beta", rng.normal(0, 0.5, channels)),
            self.constant("mean", rng.normal(0, 0.5, channels)),
            self.constant("var", rng.uniform(0.2, 3.0, channels)),
        ]
        out = self.name("bn_out")
        self.nodes.append(
            helper.make_node(
                "BatchNormalization", [x, *params], [out], name=self.name("BN"), epsilon=eps
            )
        )
        return out

    def branch(self, x: str, cin: int, cout: int, spec: BranchSpec) -> str:
        if spec.kind == "conv":
            return self.conv(x, cin, cout, spec, bias=True)
        if spec.kind == "conv_bn":
            return self.batchnorm(self.conv(x, cin, cout, spec, bias=False), cout)
        if spec.kind == "bn":
            return self.batchnorm(x, cin)
        if spec.kind == "identity":
            return x
        raise ValueError(spec.kind)

    def add_chain(self, terms: list[str]) -> str:
        total = terms[0]
        for term in terms[1:]:
            out = self.name("sum")
            self.nodes.append(helper.make_node("Add", [total, term], [out], name=self.name("Add")))
            total = out
        return total

    def model(self, inputs, outputs, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


REPVGG_BRANCHES = [BranchSpec("conv_bn"), BranchSpec("conv_bn", kernel=(1, 1)), BranchSpec("bn")]


def block_model(
    branches: list[BranchSpec],
    cin: int = 4,
    cout: int = 4,
    size: int | str = 8,
    seed: int = 0,
    relu: bool = True,
    batch: int | str = 1,
) -> onnx.ModelProto:
    """``relu(sum(branch(x)))`` on an input ``[batch, cin, size, size]``."""
    builder = GraphBuilder(seed)
    terms = [builder.branch("x", cin, cout, spec) for spec in branches]
    total = builder.add_chain(terms)
    out = total
    if relu:
        out = "y"
        builder.nodes.append(helper.make_node("Relu", [total], [out], name="Relu_out"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, size, size])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, cout, None, None])
    return builder.model([x], [y])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = 1, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") else batch
            for d in value.type.tensor_type.shape.dim
        ]
        feeds[value.name] = rng.normal(0, 1, dims).astype(np.float32)
    return feeds


def assert_same_function(a: onnx.ModelProto, b: onnx.ModelProto, rtol: float = 1e-4) -> None:
    """Both models give the same outputs on random inputs, to ``rtol`` of the output scale."""
    feeds = random_feeds(a)
    for expected, actual in zip(run(a, feeds), run(b, feeds), strict=True):
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def fuse_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PipelineResult]:
    """Run the passes (no verification) and export; the input model is not modified."""
    return fuse_graph(model)


def repvgg_chain(blocks: int, channels: int = 4, size: int = 8, seed: int = 0):
    """``blocks`` RepVGG blocks in a row (3x3+BN, 1x1+BN, BN, summed, ReLU): the training form
    and its deploy form (each block's sum written by one Conv of the same name, zero weights:
    for structure, not values)."""
    builder = GraphBuilder(seed)
    deploy_nodes, deploy_weights = [], []
    x = "x"
    for _ in range(blocks):
        block_input = x
        total = builder.add_chain(
            [builder.branch(x, channels, channels, spec) for spec in REPVGG_BRANCHES]
        )
        x = builder.name("relu")
        relu = helper.make_node("Relu", [total], [x], name=builder.name("Relu"))
        builder.nodes.append(relu)
        weight = f"{total}.w"
        deploy_weights.append(
            numpy_helper.from_array(np.zeros((channels, channels, 3, 3), np.float32), weight)
        )
        deploy_nodes.append(
            helper.make_node(
                "Conv", [block_input, weight], [total], name=f"{total}/reparam", pads=[1] * 4
            )
        )
        deploy_nodes.append(relu)
    shape = [1, channels, size, size]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)]
    training = builder.model(inputs, outputs)
    graph = helper.make_graph(deploy_nodes, "deploy", inputs, outputs, deploy_weights)
    deploy = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    deploy.ir_version = training.ir_version
    return training, deploy


def data_file_locations(path) -> set[str]:
    """The external data files the model at ``path`` names, read by onnx itself."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }


def use_named_temporaries(monkeypatch) -> None:
    """Saves take the fallback of systems without ``O_TMPFILE``: named hidden temporaries."""
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)


def if_reading_outer_tensors(then_nodes: list[onnx.NodeProto], then_output: str) -> list:
    """Nodes ``picked = If(s > 2, then: then_nodes, else: x - b)`` and ``later = Clip(picked,
    max=2)`` (its ``min`` omitted): subgraphs that read the outer ``x``, ``w`` and ``b``, for
    models that cross into and out of onnx-graphsurgeon."""
    then_branch = helper.make_graph(
        then_nodes,
        "then",
        [],
        [helper.make_tensor_value_info(then_output, TensorProto.FLOAT, [2, 2])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Sub", ["x", "b"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["n", 2])],
    )
    return [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32(2))),
        helper.make_node("Greater", ["s", "c"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["picked"], then_branch=then_branch, else_branch=else_branch
        ),
        helper.make_node("Clip", ["picked", "", "c"], ["later"]),
    ]


def ci_doc_block(name: str) -> str:
    """The fenced block of docs/ci.md marked ``<!-- recipe: NAME -->`` or ``<!-- output: NAME
    -->``: a recipe the tests run, or an output they compare with what the tool printed."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    match = re.search(
        rf"<!-- (?:recipe|output): {re.escape(name)} -->\n```\w*\n(.*?)```", text, re.S
    )
    assert match, f"docs/ci.md lost its {name} block"
    return match.group(1)
