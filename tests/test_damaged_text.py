"""Text that is not valid UTF-8, and element types ONNX does not define: damaged files that pass
``onnx.checker``. Every command ends with its exit code and one line naming what is damaged (or
does its work where the damage does not matter), never an internal error; nothing is written.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from helpers import REPVGG_BRANCHES, assert_same_function, block_model, fuse_model
from repvgg_onnx import api, io
from repvgg_onnx.cli import main
from repvgg_onnx.errors import ModelLoadError
from repvgg_onnx.io.text_fields import invalid_text

MARKER = "MARKERTEXT"
#: The marker's last letter replaced by a lead byte with nothing after it.
DAMAGED = MARKER.encode()[:-1] + b"\xc3"


def _marked(field: str) -> onnx.ModelProto:
    """A RepVGG block whose ``field`` reads ``MARKER`` (with 16 channels, so that its 3x3
    weight is a large initializer, for the weight's name)."""
    model = block_model(REPVGG_BRANCHES, cin=16, cout=16)
    graph = model.graph
    if field == "graph doc string":
        graph.doc_string = MARKER
    elif field == "producer":
        model.producer_name = MARKER
    elif field == "initializer name":
        old = graph.initializer[0].name
        graph.initializer[0].name = MARKER
        for node in graph.node:
            node.input[:] = [MARKER if name == old else name for name in node.input]
    elif field == "relu name":
        next(node for node in graph.node if node.op_type == "Relu").name = MARKER
    else:
        raise ValueError(field)
    return model


def _damaged_file(folder: Path, field: str) -> Path:
    data = _marked(field).SerializeToString()
    assert MARKER.encode() in data
    path = folder / "damaged.onnx"
    path.write_bytes(data.replace(MARKER.encode(), DAMAGED))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("graph doc string", "the name or doc string of the graph"),
        ("producer", "the model's producer, domain, doc string or metadata"),
        ("relu name", "the name, type or a tensor name of node 7 of the graph"),
        ("initializer name", "the name or doc string of initializer 0 of the graph"),
    ],
)
def test_every_command_names_the_damaged_text(tmp_path, field, where):
    """The skeleton the checker reads (a large weight's name) or graphsurgeon's export meets
    the damaged text: each command that writes it back exits 2 with one line saying where it
    is, and writes nothing; ``verify`` and ``diff`` may do their work where they never write
    it."""
    path = _damaged_file(tmp_path, field)
    before = _digest(path)
    out = tmp_path / "out.onnx"
    expected = f"error: {path}: holds text that is not valid UTF-8 ({where}); "
    for args in (["fuse", path, out], ["fuse", path, out, "--no-verify"], ["inspect", path]):
        code, lines = _run(*args)
        assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), (args, lines)
    for args in (["verify", path, path], ["diff", path, path]):
        code, lines = _run(*args)
        assert code in (0, 2) and len(lines) <= 1, (args, lines)
        assert code == 0 or lines[0].startswith(expected), (args, lines)
    assert not out.exists() and _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.onnx"]
    with pytest.raises(ModelLoadError, match="holds text that is not valid UTF-8"):
        api.inspect(path)


def test_invalid_text_names_the_field_and_finds_none_in_a_sound_model():
    assert invalid_text(block_model(REPVGG_BRANCHES)) is None
    damaged = onnx.ModelProto()
    data = _marked("relu name").SerializeToString().replace(MARKER.encode(), DAMAGED)
    damaged.ParseFromString(data)
    relu = next(i for i, n in enumerate(damaged.graph.node) if n.op_type == "Relu")
    assert invalid_text(damaged) == f"the name, type or a tensor name of node {relu} of the graph"


def test_failures_of_other_kinds_pass_through_text_errors_unchanged():
    """A ``TypeError`` of a sound model is not blamed on its text, nor a failure of another
    kind on a damaged model's."""
    sound = (block_model(REPVGG_BRANCHES), "sound.onnx")
    with pytest.raises(TypeError, match="not about text"), io.text_errors(sound):
        raise TypeError("not about text")
    damaged = onnx.ModelProto()
    damaged.ParseFromString(
        _marked("relu name").SerializeToString().replace(MARKER.encode(), DAMAGED)
    )
    with pytest.raises(RuntimeError, match="not about text"), io.text_errors((damaged, "d")):
        raise RuntimeError("not about text")


def _with_output_type(elem_type: int, where: str) -> onnx.ModelProto:
    model = block_model(REPVGG_BRANCHES)
    values = model.graph.input if where == "input" else model.graph.output
    values[0].type.tensor_type.elem_type = elem_type
    return model


@pytest.mark.parametrize("where", ["input", "output"])
def test_an_element_type_onnx_does_not_define_is_named_not_crashed_on(tmp_path, where):
    """``elem_type = 999`` passes the checker: ``diff`` shows it as what it is, and ``verify``
    refuses the model in one line (no random data, or onnxruntime cannot load it)."""
    path = tmp_path / "typed.onnx"
    onnx.save(_with_output_type(999, where), path)
    code, lines = _run("diff", path, path, "--format", "json")
    assert code == 0 and lines == []
    code, lines = _run("verify", path, path)
    assert code == 2 and len(lines) == 1, lines
    if where == "input":
        assert "has type 999 (not an ONNX type)" in lines[0]


def test_constants_whose_reference_values_overflow_fold_without_a_warning():
    """``Sigmoid`` of ±1000 overflows in the reference evaluator's ``exp``: a value to compare
    with onnxruntime's, not a RuntimeWarning on stderr (the CLI's one line)."""
    gate = numpy_helper.from_array(
        np.array([-1000.0, 0.0, 1000.0, 3.0], np.float32).reshape(1, 4, 1, 1), "gate_logits"
    )
    nodes = [
        helper.make_node("Sigmoid", ["gate_logits"], ["gate"]),
        helper.make_node("Mul", ["x", "gate"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        [gate],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused, _ = fuse_model(model)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert_same_function(model, fused)
