"""Model-local functions and control-flow bodies: ``fuse`` inlines exactly the functions whose
calls hold something for the passes (and says so), ``inspect`` and ``diff`` look inside them,
and ``inspect`` never calls a model with a BatchNormalization or linear branches inside an
``If``/``Loop`` body "deploy form". Every fused model is compared here in onnxruntime."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import repvgg_onnx
from helpers import random_feeds, repository_module, run
from repvgg_onnx.cli import main
from repvgg_onnx.reports.render.schema import report_schema

OPSET = 17
DOMAIN = "blocks"
C = 4
SIZE = 8
MODELS = Path(__file__).resolve().parent.parent / "models"
TINY = json.loads((MODELS / "fixtures" / "manifest.json").read_text())["models"]
RNG_SEED = 0


def assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    """Our own comparison in onnxruntime (not fuse's verification)."""
    feeds = random_feeds(a, batch=1)
    for expected, actual in zip(run(a, feeds), run(b, feeds), strict=True):
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


class Weights:
    """Random initializers of the main graph, passed to functions as inputs (as TorchScript's
    ``export_modules_as_functions`` does)."""

    def __init__(self, seed: int = RNG_SEED) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: list[onnx.TensorProto] = []

    def add(self, name: str, shape: tuple[int, ...]) -> str:
        value = self.rng.normal(0, 0.5, shape).astype(np.float32)
        if name.startswith("var"):
            value = np.abs(value) + 0.3
        self.tensors.append(numpy_helper.from_array(value, name))
        return name

    def repvgg(self, tag: str) -> list[str]:
        """Weights of :func:`repvgg_function`: 3x3 and 1x1 kernels with biases."""
        return [
            self.add(f"w3_{tag}", (C, C, 3, 3)),
            self.add(f"b3_{tag}", (C,)),
            self.add(f"w1_{tag}", (C, C, 1, 1)),
            self.add(f"b1_{tag}", (C,)),
        ]

    def batchnorm(self, tag: str) -> list[str]:
        return [self.add(f"{p}_{tag}", (C,)) for p in ("scale", "shift", "mean", "var")]


def function(
    name: str, inputs: list[str], outputs: list[str], nodes: list[onnx.NodeProto]
) -> onnx.FunctionProto:
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_function(DOMAIN, name, inputs, outputs, nodes, opsets)


def repvgg_function(name: str = "RepVGGBlock") -> onnx.FunctionProto:
    """``relu(conv3x3(x) + conv1x1(x) + x)``, weights as inputs."""
    nodes = [
        helper.make_node("Conv", ["x", "w3", "b3"], ["a"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["b"], name="conv1"),
        helper.make_node("Add", ["a", "b"], ["s"], name="add0"),
        helper.make_node("Add", ["s", "x"], ["t"], name="add1"),
        helper.make_node("Relu", ["t"], ["y"], name="relu"),
    ]
    return function(name, ["x", "w3", "b3", "w1", "b1"], ["y"], nodes)


def activation_function(name: str = "Act") -> onnx.FunctionProto:
    """``sigmoid(x) * x``: nothing for the passes."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
        helper.make_node("Mul", ["s", "x"], ["y"], name="mul"),
    ]
    return function(name, ["x"], ["y"], nodes)


def lone_batchnorm_function(name: str = "ReluBN") -> onnx.FunctionProto:
    """``bn(relu(x))``: a BatchNormalization with no linear neighbour inside the function."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("BatchNormalization", ["r", "g", "h", "m", "v"], ["y"], name="bn"),
    ]
    return function(name, ["x", "g", "h", "m", "v"], ["y"], nodes)


def call(name: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return helper.make_node(name, inputs, [output], domain=DOMAIN, name=f"call_{output}")


def model_of(
    nodes: list[onnx.NodeProto],
    functions: list[onnx.FunctionProto],
    weights: Weights,
    output: str = "y",
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, C, SIZE, SIZE])
    graph = helper.make_graph(nodes, "main", [x], [y], weights.tensors)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions, ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def repvgg_and_activation_model() -> onnx.ModelProto:
    """``x → RepVGGBlock → Act → RepVGGBlock → Act → RepVGGBlock``: one function to fuse,
    called three times, one with nothing to fuse, called twice."""
    weights = Weights()
    nodes = [
        call("RepVGGBlock", ["x", *weights.repvgg("0")], "h0"),
        call("Act", ["h0"], "a0"),
        call("RepVGGBlock", ["a0", *weights.repvgg("1")], "h1"),
        call("Act", ["h1"], "a1"),
        call("RepVGGBlock", ["a1", *weights.repvgg("2")], "y"),
    ]
    return model_of(nodes, [repvgg_function(), activation_function()], weights)


def nested_model() -> onnx.ModelProto:
    """``Stage(x) = Act(RepVGGBlock(x))`` called twice: a function to fuse inside another."""
    stage = function(
        "Stage",
        ["x", "w3", "b3", "w1", "b1"],
        ["y"],
        [
            helper.make_node(
                "RepVGGBlock", ["x", "w3", "b3", "w1", "b1"], ["h"], domain=DOMAIN, name="block"
            ),
            helper.make_node("Act", ["h"], ["y"], domain=DOMAIN, name="act"),
        ],
    )
    weights = Weights()
    nodes = [
        call("Stage", ["x", *weights.repvgg("0")], "s0"),
        call("Stage", ["s0", *weights.repvgg("1")], "y"),
    ]
    return model_of(nodes, [stage, repvgg_function(), activation_function()], weights)


# ---- fuse ----------------------------------------------------------------------------------


def test_the_function_to_fuse_is_inlined_and_the_other_stays_a_function():
    model = repvgg_and_activation_model()
    result = repvgg_onnx.fuse(model, verify=False)
    fused = result.model
    assert [f.name for f in fused.functions] == ["Act"]
    assert counts(fused) == {"Conv": 3, "Relu": 3, "Act": 2}
    assert len(result.report.fused) == 3
    inlining = result.report.inlining
    assert (inlining.functions, inlining.calls, inlining.kept) == (("RepVGGBlock",), 3, ("Act",))
    onnx.checker.check_model(fused, full_check=True)
    assert_same_outputs(model, fused)
    assert [f.name for f in model.functions] == ["RepVGGBlock", "Act"]  # input untouched


def test_nested_functions_are_inlined_along_the_call_path():
    model = nested_model()
    result = repvgg_onnx.fuse(model, verify=False)
    assert [f.name for f in result.model.functions] == ["Act"]
    assert counts(result.model) == {"Conv": 2, "Relu": 2, "Act": 2}
    inlining = result.report.inlining
    assert inlining.functions == ("Stage", "RepVGGBlock")
    assert inlining.calls == 4  # two Stage calls, each with one RepVGGBlock call
    assert_same_outputs(model, result.model)


def test_a_function_whose_calls_hold_a_lone_batchnorm_is_inlined_to_be_reported():
    weights = Weights()
    nodes = [
        call("RepVGGBlock", ["x", *weights.repvgg("0")], "h"),
        call("ReluBN", ["h", *weights.batchnorm("0")], "y"),
    ]
    model = model_of(nodes, [repvgg_function(), lone_batchnorm_function()], weights)
    result = repvgg_onnx.fuse(model, verify=False)
    assert list(result.model.functions) == []
    assert counts(result.model)["BatchNormalization"] == 1
    assert_same_outputs(model, result.model)
    inspection = repvgg_onnx.inspect(result.model)
    assert not inspection.deploy_form and len(inspection.batchnorms) == 1


def test_a_model_whose_functions_hold_nothing_is_left_as_it_is():
    weights = Weights()
    nodes = [call("Act", ["x"], "a"), call("Act", ["a"], "y")]
    model = model_of(nodes, [activation_function()], weights)
    result = repvgg_onnx.fuse(model, verify=False)
    assert [f.name for f in result.model.functions] == ["Act"]
    assert not result.report.inlining and result.report.inlining.kept == ("Act",)
    assert "Functions" not in result.report.to_text()
    assert repvgg_onnx.inspect(model).deploy_form


def test_weights_as_constants_inside_the_function_body_fuse_too():
    """Other exporters keep weights in the body as Constant nodes."""
    rng = np.random.default_rng(3)

    def constant(name: str, shape: tuple[int, ...]) -> onnx.NodeProto:
        value = numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)
        return helper.make_node("Constant", [], [name], value=value, name=f"const_{name}")

    body = [
        constant("w3", (C, C, 3, 3)),
        constant("w1", (C, C, 1, 1)),
        helper.make_node("Conv", ["x", "w3"], ["a"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Conv", ["x", "w1"], ["b"], name="conv1"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    model = model_of(
        [call("Block", ["x"], "h"), call("Block", ["h"], "y")],
        [function("Block", ["x"], ["y"], body)],
        Weights(),
    )
    result = repvgg_onnx.fuse(model, verify=False)
    assert counts(result.model) == {"Conv": 2}
    assert result.report.inlining.calls == 2
    assert_same_outputs(model, result.model)


def test_the_report_says_what_was_inlined_in_text_markdown_html_and_json():
    report = repvgg_onnx.fuse(repvgg_and_activation_model()).report
    message = "inlined 3 calls of 1 function: RepVGGBlock (kept as functions: Act)"
    assert report.inlining.describe() == message
    assert message in report.to_text()
    assert message in report.to_markdown()
    assert message in report.to_html()
    data = json.loads(report.to_json())
    jsonschema.validate(data, report_schema())
    assert data["inlining"] == {
        "functions": ["RepVGGBlock"],
        "calls": 3,
        "kept": ["Act"],
        "message": message,
    }


def test_two_functions_are_named_in_the_message():
    report = repvgg_onnx.fuse(nested_model(), verify=False).report
    assert report.inlining.describe() == (
        "inlined 4 calls of 2 functions: Stage, RepVGGBlock (kept as functions: Act)"
    )


def test_the_schema_refuses_a_malformed_inlining_record():
    data = json.loads(repvgg_onnx.fuse(nested_model(), verify=False).report.to_json())
    data["inlining"]["calls"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, report_schema())


# ---- inspect and diff ----------------------------------------------------------------------


def test_inspect_looks_inside_functions_and_diff_sees_the_blocks():
    model = repvgg_and_activation_model()
    before = repvgg_onnx.inspect(model)
    assert len(before.fusable) == 3 and not before.deploy_form
    assert before.inlining.functions == ("RepVGGBlock",)
    fused = repvgg_onnx.fuse(model, verify=False).model
    after = repvgg_onnx.inspect(fused)
    assert after.fusable == [] and after.deploy_form
    difference = repvgg_onnx.diff(model, fused)
    assert len(difference.blocks) == 3
    assert difference.changes["functions"] == ["inlined function 'RepVGGBlock' (only A has it)"]
    jsonschema.validate(json.loads(before.to_json()), report_schema())
    jsonschema.validate(json.loads(difference.to_json()), report_schema())


def test_fail_if_fusable_gates_a_function_model(tmp_path):
    training, fused = tmp_path / "training.onnx", tmp_path / "fused.onnx"
    onnx.save(repvgg_and_activation_model(), training)
    runner = CliRunner()
    assert runner.invoke(main, ["fuse", str(training), str(fused), "-q"]).exit_code == 0
    failing = runner.invoke(main, ["inspect", str(training), "--fail-if-fusable"])
    assert failing.exit_code == 1
    assert "inlined 3 calls of 1 function: RepVGGBlock" in failing.output
    assert runner.invoke(main, ["inspect", str(fused), "--fail-if-fusable", "-q"]).exit_code == 0


# ---- the committed PyTorch exports ---------------------------------------------------------


def test_tiny_repvgg_block_as_a_function_fuses_like_its_torchscript_twin():
    """Done-when of issue 15: the functions export reaches the ts17 export's fused op counts."""
    forms = TINY["tiny_block"]["forms"]
    training = onnx.load(MODELS / forms["ts17_functions"]["file"])
    twin = onnx.load(MODELS / forms["ts17"]["file"])
    assert any(f.name == "RepVGGBlock" for f in training.functions)
    result = repvgg_onnx.fuse(training, verify=False)
    assert counts(result.model) == counts(repvgg_onnx.fuse(twin, verify=False).model)
    assert counts(result.model) == counts(onnx.load(MODELS / forms["reference"]["file"]))
    assert result.report.inlining.functions == ("RepVGGBlock",)
    assert list(result.model.functions) == []
    assert_same_outputs(training, result.model)


FAMILY_DIR = MODELS / "fixtures" / "families"
FAMILIES = json.loads((FAMILY_DIR / "manifest.json").read_text())["families"]
WITH_FUNCTIONS = [name for name, info in FAMILIES.items() if "ts17_functions" in info["forms"]]


@pytest.mark.parametrize("name", WITH_FUNCTIONS)
def test_family_as_functions_fuses_like_its_torchscript_twin(name):
    forms = FAMILIES[name]["forms"]
    training = onnx.load(FAMILY_DIR / forms["ts17_functions"]["file"])
    twin = onnx.load(FAMILY_DIR / forms["ts17"]["file"])
    result = repvgg_onnx.fuse(training, verify=False)
    assert counts(result.model) == counts(repvgg_onnx.fuse(twin, verify=False).model)
    assert list(result.model.functions) == []
    assert_same_outputs(training, result.model)


def test_nested_torchscript_functions_are_all_inlined():
    """FastViT's RepMixerBlock calls RepMixer, which calls two DepthwiseMobileOne bodies."""
    path = FAMILY_DIR / FAMILIES["fastvit_repmixer"]["forms"]["ts17_functions"]["file"]
    inlining = repvgg_onnx.fuse(onnx.load(path), verify=False).report.inlining
    assert inlining.describe() == (
        "inlined 8 calls of 4 functions: RepMixerBlock, RepMixer, DepthwiseMobileOne.1, "
        "DepthwiseMobileOne"
    )


def test_relu_in_branch_block_as_a_function_is_not_merged():
    forms = TINY["tiny_relu_in_branch"]["forms"]
    training = onnx.load(MODELS / forms["ts17_functions"]["file"])
    twin = repvgg_onnx.fuse(onnx.load(MODELS / forms["ts17"]["file"]), verify=False)
    result = repvgg_onnx.fuse(training, verify=False)
    assert counts(result.model) == counts(twin.model)
    assert len(result.report.skipped) == len(twin.report.skipped) > 0
    assert_same_outputs(training, result.model)


# ---- control-flow bodies -------------------------------------------------------------------


def body_with_batchnorm_and_branches(weights: Weights) -> onnx.GraphProto:
    """``bn(conv3x3(x) + conv1x1(x))`` on an outer tensor ``x``, in a subgraph."""
    w3, b3, w1, b1 = weights.repvgg("body")
    nodes = [
        helper.make_node("Conv", ["x", w3, b3], ["ba"], pads=[1, 1, 1, 1], name="body_conv3"),
        helper.make_node("Conv", ["x", w1, b1], ["bb"], name="body_conv1"),
        helper.make_node("Add", ["ba", "bb"], ["bs"], name="body_add"),
        helper.make_node(
            "BatchNormalization", ["bs", *weights.batchnorm("body")], ["bo"], name="body_bn"
        ),
    ]
    out = helper.make_tensor_value_info("bo", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    return helper.make_graph(nodes, "then_body", [], [out])


def if_model() -> onnx.ModelProto:
    weights = Weights()
    then_branch = body_with_batchnorm_and_branches(weights)
    identity = helper.make_node("Identity", ["x"], ["eo"], name="else_identity")
    else_out = helper.make_tensor_value_info("eo", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    else_branch = helper.make_graph([identity], "else_body", [], [else_out])
    weights.tensors.append(numpy_helper.from_array(np.array(True), "flag"))
    node = helper.make_node(
        "If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if_0"
    )
    return model_of([node], [], weights)


def one_trip_loop(
    body_nodes: list[onnx.NodeProto], body_output: str, weights: Weights
) -> list[onnx.NodeProto]:
    """Main-graph nodes: ``loop_0``, one trip of a body running ``body_nodes`` (which write
    ``body_output`` from the outer ``x``), then ``y``, the one scan output."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"], name="cond"), *body_nodes],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info(body_output, TensorProto.FLOAT, [1, C, SIZE, SIZE]),
        ],
    )
    weights.tensors += [
        numpy_helper.from_array(np.array(1, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "go"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    return [
        helper.make_node("Loop", ["trips", "go"], ["stacked"], body=body, name="loop_0"),
        helper.make_node("Gather", ["stacked", "zero"], ["y"], axis=0, name="first"),
    ]


def loop_model() -> onnx.ModelProto:
    """A Loop whose body computes ``bn(conv3x3(x) + conv1x1(x))``."""
    weights = Weights()
    body = body_with_batchnorm_and_branches(weights)
    return model_of(one_trip_loop(list(body.node), "bo", weights), [], weights)


@pytest.mark.parametrize(
    ("build", "place"),
    [(if_model, "the then_branch of If 'if_0'"), (loop_model, "the body of Loop 'loop_0'")],
)
def test_a_body_with_batchnorm_and_branches_is_not_deploy_form(build, place, tmp_path):
    model = build()
    inspection = repvgg_onnx.inspect(model)
    assert inspection.fusable == [] and inspection.batchnorms == []
    assert not inspection.deploy_form
    (finding,) = inspection.in_subgraphs
    assert (finding.batchnorms, finding.branch_sums) == (1, 1)
    message = f"1 BatchNormalization and 1 sum of linear branches inside {place}"
    assert finding.message == f"{message}: not fused by this tool"
    text = inspection.to_text()
    assert "deploy form." not in text.replace("not deploy form.", "")
    assert message in text
    assert "not deploy form" in inspection.to_markdown()
    jsonschema.validate(json.loads(inspection.to_json()), report_schema())
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    gate = CliRunner().invoke(main, ["inspect", str(path), "--fail-if-fusable", "-q"])
    assert gate.exit_code == 1
    assert place in gate.output


def test_a_function_called_inside_a_loop_body_is_looked_into():
    """The Loop body calls RepVGGBlock: fuse leaves the body alone, inspect sees the sum."""
    weights = Weights()
    w3, b3, w1, b1 = weights.repvgg("0")
    body_call = helper.make_node(
        "RepVGGBlock", ["x", w3, b3, w1, b1], ["bo"], domain=DOMAIN, name="body_call"
    )
    nodes = one_trip_loop([body_call], "bo", weights)
    model = model_of(nodes, [repvgg_function()], weights)
    inspection = repvgg_onnx.inspect(model)
    assert not inspection.deploy_form
    assert [(f.owner, f.branch_sums) for f in inspection.in_subgraphs] == [("loop_0", 1)]
    result = repvgg_onnx.fuse(model, verify=False)
    assert [f.name for f in result.model.functions] == ["RepVGGBlock"]
    assert_same_outputs(model, result.model)


def test_a_body_with_neither_is_deploy_form():
    model = if_model()
    (then_branch,) = [a.g for a in model.graph.node[0].attribute if a.name == "then_branch"]
    del then_branch.node[1:]
    then_branch.output[0].name = "ba"
    assert repvgg_onnx.inspect(model).deploy_form


def relu_in_branch_function(name: str = "ReluInBranch") -> onnx.FunctionProto:
    """``relu(conv3x3(x)) + conv1x1(x)``: a sum the passes must skip (a ReLU in one branch)."""
    nodes = [
        helper.make_node("Conv", ["x", "w3", "b3"], ["a"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["b"], name="conv1"),
        helper.make_node("Add", ["r", "b"], ["y"], name="add"),
    ]
    return function(name, ["x", "w3", "b3", "w1", "b1"], ["y"], nodes)


def test_a_function_holding_a_skipped_candidate_is_inlined_so_the_skip_is_reported():
    weights = Weights()
    nodes = [
        call("ReluInBranch", ["x", *weights.repvgg("0")], "h"),
        call("Act", ["h"], "y"),
    ]
    model = model_of(nodes, [relu_in_branch_function(), activation_function()], weights)
    result = repvgg_onnx.fuse(model, verify=False)
    assert result.report.fused == []
    assert [s.node for s in result.report.skipped] == ["add__1"]
    assert result.report.inlining.functions == ("ReluInBranch",)
    assert [f.name for f in result.model.functions] == ["Act"]
    assert_same_outputs(model, result.model)
    assert [s.node for s in repvgg_onnx.inspect(model).skipped] == ["add__1"]


def test_tiny_functions_exports_are_up_to_date(tmp_path):
    """With torch: exporting again gives the committed op counts, and the committed files
    compute what the rebuilt nets compute."""
    torch = pytest.importorskip("torch")
    export = repository_module("models.export")
    blocks = repository_module("models.blocks")
    for name, modules in export.TINY_FUNCTION_MODULES.items():
        model = blocks.randomize_batchnorm_(blocks.TINY_MODELS[name](), export.SEED).eval()
        entry = TINY[name]["forms"]["ts17_functions"]
        path = tmp_path / f"{name}.onnx"
        shape = blocks.TINY_INPUT_SHAPE
        export.export_onnx(model, path, "ts17_functions", shape, function_modules=modules)
        assert export.op_counts(path) == entry["op_counts"], name
        x = export.random_input(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = run(onnx.load(MODELS / entry["file"]), {"input": x.numpy()})
        export.check_close(name, actual, expected)


def test_findings_name_nested_bodies_and_ignore_non_linear_sums():
    """A BN in an If inside a Loop body is found and placed; ``x + x`` and a sum with a ReLU
    in one branch are not sums of linear branches."""
    weights = Weights()
    w3, b3, _, _ = weights.repvgg("0")
    inner_nodes = [
        helper.make_node("Conv", ["x", w3, b3], ["ca"], pads=[1, 1, 1, 1], name="inner_conv"),
        helper.make_node("Relu", ["ca"], ["cr"], name="inner_relu"),
        helper.make_node("Add", ["cr", "x"], ["cs"], name="inner_relu_sum"),
        helper.make_node("Add", ["x", "x"], ["cd"], name="inner_double"),
        helper.make_node("BatchNormalization", ["cd", *weights.batchnorm("0")], ["io"], name="bn"),
    ]
    out = helper.make_tensor_value_info("io", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    inner = helper.make_graph(inner_nodes, "inner_then", [], [out])
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["eo"], name="inner_else")],
        "inner_else",
        [],
        [helper.make_tensor_value_info("eo", TensorProto.FLOAT, [1, C, SIZE, SIZE])],
    )
    weights.tensors.append(numpy_helper.from_array(np.array(True), "flag"))
    inner_if = helper.make_node(
        "If", ["flag"], ["bo"], then_branch=inner, else_branch=other, name="inner_if"
    )
    nodes = one_trip_loop([inner_if], "bo", weights)
    (finding,) = repvgg_onnx.inspect(model_of(nodes, [], weights)).in_subgraphs
    assert (finding.batchnorms, finding.branch_sums) == (1, 0)
    assert finding.place == "the then_branch of If 'inner_if' (in the body of Loop 'loop_0')"


def tidy_only_function(name: str = "Tidy") -> onnx.FunctionProto:
    """``relu(identity(reshape(x, own shape)))``: the passes would only tidy it (a Constant,
    a Reshape to its own shape, an Identity), nothing to fuse."""
    shape = numpy_helper.from_array(np.array([1, C, SIZE, SIZE], np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape, name="shape"),
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
        helper.make_node("Identity", ["r"], ["i"], name="identity"),
        helper.make_node("Relu", ["i"], ["y"], name="relu"),
    ]
    return function(name, ["x"], ["y"], nodes)


def test_a_function_the_passes_would_only_tidy_stays_a_function():
    weights = Weights()
    nodes = [
        call("RepVGGBlock", ["x", *weights.repvgg("0")], "h"),
        call("Tidy", ["h"], "y"),
    ]
    model = model_of(nodes, [repvgg_function(), tidy_only_function()], weights)
    result = repvgg_onnx.fuse(model, verify=False)
    assert result.report.inlining.functions == ("RepVGGBlock",)
    assert [f.name for f in result.model.functions] == ["Tidy"]
    assert_same_outputs(model, result.model)


def test_a_function_between_a_conv_and_its_batchnorm_is_inlined():
    """``bn(Pass(conv(x)))`` with ``Pass`` an Identity function: the BN folds into the conv
    through it, so ``Pass`` is part of the block and is inlined."""
    weights = Weights()
    passthrough = function(
        "Pass", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"], name="identity")]
    )
    w3, b3, _, _ = weights.repvgg("0")
    nodes = [
        helper.make_node("Conv", ["x", w3, b3], ["c"], pads=[1, 1, 1, 1], name="conv"),
        call("Pass", ["c"], "p"),
        helper.make_node("BatchNormalization", ["p", *weights.batchnorm("0")], ["y"], name="bn"),
    ]
    model = model_of(nodes, [passthrough], weights)
    result = repvgg_onnx.fuse(model, verify=False)
    assert result.report.inlining.functions == ("Pass",)
    assert counts(result.model) == {"Conv": 1}
    assert_same_outputs(model, result.model)


def test_a_function_that_calls_itself_is_refused_with_its_call_path():
    """ONNX functions cannot recurse: ``Loop → Loop`` is refused in one line (exit 2), never
    followed until Python's recursion limit."""
    from repvgg_onnx.errors import UnsupportedModelError

    looping = function("Loop", ["x"], ["y"], [call("Loop", ["x"], "y")])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, SIZE, SIZE])
    graph = helper.make_graph([call("Loop", ["x"], "y")], "main", [x], [y])
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[looping], ir_version=10)
    with pytest.raises(UnsupportedModelError, match="local function 'Loop' calls itself"):
        repvgg_onnx.fuse(model, verify=False)
