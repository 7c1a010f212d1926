"""Names across graph scopes: a subgraph (an ``If`` branch, a ``Loop`` body) may read a
weight of the graph around it, and ONNX lets it define a name that graph defines too.

graphsurgeon keeps one tensor per name and writes a constant a subgraph reads from outside
into that subgraph as well: the fused model must read the weight where the original did
(once, with its values, not a second copy or an empty stub), and a model whose two tensors of
one name graphsurgeon would merge is refused in one line. Every fused model is compared with
the original in onnxruntime on both branches.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from helpers import run
from repvgg_onnx.api import fuse
from repvgg_onnx.cli import main

C = 64


def value(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def branch(nodes, output: str, name: str, initializers=()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [value(output, [1, C, 8, 8])], list(initializers))


def model_of(nodes, initializers, outputs) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("flag", TensorProto.BOOL, []), value("x", [1, C, 8, 8])]
    graph = helper.make_graph(nodes, "scopes", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def weight(seed: int = 3, small: bool = False) -> onnx.TensorProto:
    """``big``: a 3x3 conv weight (36,864 elements), or with ``small`` a per-channel scale."""
    rng = np.random.default_rng(seed)
    shape = (C, 1, 1) if small else (C, C, 3, 3)
    return numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), "big")


def conv(x: str, out: str, name: str, small: bool = False) -> onnx.NodeProto:
    """``x`` convolved with ``big`` (with ``small``: multiplied by it)."""
    if small:
        return helper.make_node("Mul", [x, "big"], [out], name=name)
    return helper.make_node("Conv", [x, "big"], [out], name=name, pads=[1, 1, 1, 1])


def if_node(then: onnx.GraphProto, other: onnx.GraphProto, name="pick") -> onnx.NodeProto:
    return helper.make_node(
        "If", ["flag"], ["picked"], name=name, then_branch=then, else_branch=other
    )


def identity_branch(name: str = "else") -> onnx.GraphProto:
    return branch([helper.make_node("Identity", ["x"], ["kept"], name="keep")], "kept", name)


def around(then: onnx.GraphProto, small: bool = False) -> onnx.ModelProto:
    """The graph: ``big`` read by a node of its own and by the If whose ``then`` branch is
    ``then``."""
    return model_of(
        [conv("x", "top", "top_conv", small), if_node(then, identity_branch())],
        [weight(small=small)],
        [value("top", [1, C, 8, 8]), value("picked", [1, C, 8, 8])],
    )


def nested(inner: onnx.GraphProto, name: str = "") -> onnx.GraphProto:
    """A ``then`` branch holding an If whose own ``then`` branch is ``inner``."""
    node = helper.make_node(
        "If", ["flag"], ["inner_picked"], name=name, then_branch=inner,
        else_branch=identity_branch("inner_else"),
    )  # fmt: skip
    return branch([node], "inner_picked", "then")


def shared_weight_model(small: bool = False) -> onnx.ModelProto:
    """``big`` read by a node of the graph and by one in the ``then`` branch of an If, which
    reads it from outside."""
    return around(branch([conv("x", "inner", "inner_conv", small)], "inner", "then"), small)


def assert_same_on_both_branches(original: onnx.ModelProto, fused: onnx.ModelProto) -> None:
    x = np.random.default_rng(0).normal(size=(1, C, 8, 8)).astype(np.float32)
    for flag in (True, False):
        feeds = {"flag": np.array(flag), "x": x}
        for want, got in zip(run(original, feeds), run(fused, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def subgraph_initializers(model: onnx.ModelProto) -> list[str]:
    return [
        tensor.name
        for node in model.graph.node
        for attribute in node.attribute
        for tensor in attribute.g.initializer
    ]


@pytest.mark.parametrize("small", [False, True], ids=["a large weight", "a small weight"])
def test_a_weight_read_inside_and_outside_a_branch_is_written_once(small, tmp_path):
    """The large weight is detached from the graph for the export: its copy in the branch
    was an empty stub, and the checker refused the fused model. A small one was written
    twice."""
    model = shared_weight_model(small)
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    fuse(source, target, verify=False)
    fused = onnx.load(target)
    onnx.checker.check_model(fused, full_check=True)
    assert [t.name for t in fused.graph.initializer] == ["big"]
    assert subgraph_initializers(fused) == []
    assert target.stat().st_size < source.stat().st_size + len(weight(small=small).raw_data)
    assert_same_on_both_branches(model, fused)


def test_a_weight_read_two_branches_down_is_written_once(tmp_path):
    inner = branch([conv("x", "deep", "deep_conv")], "deep", "inner_then")
    model = around(nested(inner, "inner_pick"))
    onnx.save(model, tmp_path / "in.onnx")
    fuse(tmp_path / "in.onnx", tmp_path / "out.onnx", verify=False)
    fused = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(fused, full_check=True)
    assert [t.name for t in fused.graph.initializer] == ["big"]
    assert_same_on_both_branches(model, fused)


def test_a_branch_weight_of_its_own_stays_in_the_branch(tmp_path):
    """A weight only the branch defines (and reads) is the branch's, before and after."""
    then = branch([conv("x", "inner", "inner_conv")], "inner", "then", [weight()])
    model = model_of([if_node(then, identity_branch())], [], [value("picked", [1, C, 8, 8])])
    onnx.save(model, tmp_path / "in.onnx")
    fuse(tmp_path / "in.onnx", tmp_path / "out.onnx", verify=False)
    fused = onnx.load(tmp_path / "out.onnx")
    assert subgraph_initializers(fused) == ["big"]
    assert_same_on_both_branches(model, fused)


def shadowing_model() -> onnx.ModelProto:
    """The branch defines its own ``big`` (other values) while the graph has one too."""
    return around(branch([conv("x", "inner", "inner_conv")], "inner", "then", [weight(seed=4)]))


@pytest.mark.parametrize("command", ["fuse", "inspect"])
def test_a_branch_shadowing_a_name_of_the_graph_is_refused_in_one_line(command, tmp_path):
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(shadowing_model(), source)
    args = [command, str(source)] + ([str(target)] if command == "fuse" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line == (
        "error: the subgraph 'then' of If 'pick' defines 'big', a name its enclosing graph "
        "defines too; onnx-graphsurgeon cannot keep two tensors of one name apart: rename "
        "one of them."
    )
    assert not target.exists()


def test_a_nested_branch_shadowing_a_name_two_scopes_up_is_refused(tmp_path):
    inner = branch([conv("x", "deep", "deep_conv")], "deep", "inner_then", [weight(seed=5)])
    model = around(nested(inner))
    onnx.save(model, tmp_path / "in.onnx")
    result = CliRunner().invoke(main, ["fuse", str(tmp_path / "in.onnx"), str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "the subgraph 'inner_then' of an unnamed If defines 'big'" in result.output


@pytest.mark.parametrize("name", ["x", "top"], ids=["a graph input", "a node output"])
def test_a_branch_initializer_shadowing_any_value_of_the_graph_is_refused(name, tmp_path):
    values = np.ones((1, C, 8, 8), np.float32)
    then = branch(
        [helper.make_node("Identity", [name], ["inner"], name="read")],
        "inner",
        "then",
        [numpy_helper.from_array(values, name)],
    )
    onnx.save(around(then), tmp_path / "in.onnx")
    result = CliRunner().invoke(main, ["fuse", str(tmp_path / "in.onnx"), str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"of If 'pick' defines '{name}', a name its enclosing graph defines" in result.output
