"""Tests of repvgg_onnx.io: loading refuses what is not a safe, valid model; saving is atomic."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from google.protobuf.message import EncodeError
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data, uses_external_data

from repvgg_onnx import io
from repvgg_onnx.errors import ModelLoadError, ModelSaveError

WEIGHT_BYTES = 8 * 8 * 3 * 3 * 4
BIAS_BYTES = 8 * 4


def two_conv_model() -> onnx.ModelProto:
    """Two 8-channel 3x3 convs: W1 is an initializer, W2 a Constant attribute, biases tiny."""
    rng = np.random.default_rng(0)

    def tensor(name: str, shape: tuple[int, ...]) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["W2"], value=tensor("W2", (8, 8, 3, 3))),
        helper.make_node("Conv", ["h", "W2", "B2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
        initializer=[tensor("W1", (8, 8, 3, 3)), tensor("B1", (8,)), tensor("B2", (8,))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_external_w1(model_path: Path, location: str, data_file: Path) -> None:
    """Save two_conv_model() with W1's bytes at offset 16 of data_file, referenced as location."""
    model = two_conv_model()
    w1 = model.graph.initializer[0]
    data_file.write_bytes(b"\xff" * 16 + w1.raw_data)
    set_external_data(w1, location, 16, len(w1.raw_data))
    w1.ClearField("raw_data")
    model_path.write_bytes(model.SerializeToString())


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file under folder, to prove nothing was touched."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def assert_user_message(err: pytest.ExceptionInfo[Exception], path: Path) -> str:
    """The message names the path and is one line, one sentence, with no Python repr."""
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message
    assert message.endswith(".")
    assert "Traceback" not in message and "Error(" not in message and "PosixPath" not in message
    return message


def load_error(path: Path) -> str:
    with pytest.raises(ModelLoadError) as err:
        io.load_model(path)
    return assert_user_message(err, path)


# --- load_model: files that are not models -------------------------------------------------


def test_load_round_trips_a_plain_model(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(two_conv_model().SerializeToString())
    assert io.load_model(path) == two_conv_model()
    assert io.load_model(str(path)) == two_conv_model()


def test_load_missing_file(tmp_path: Path) -> None:
    assert "not found" in load_error(tmp_path / "absent.onnx")


def test_load_directory(tmp_path: Path) -> None:
    assert "is a directory" in load_error(tmp_path)


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.touch()
    assert "file is empty" in load_error(path)


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(1).bytes(4096),
        b"ir_version: 8\ngraph { node { op_type: 'Relu' } }\n",
        b"\n",
        b"\x08\x08",
    ],
    ids=["random-bytes", "text", "newline", "ir-version-only"],
)
def test_load_not_a_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    assert "not an ONNX model" in load_error(path)


def test_load_every_truncation_is_refused(tmp_path: Path) -> None:
    content = two_conv_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(content), 7):
        path.write_bytes(content[:cut])
        load_error(path)


def test_load_model_without_nodes_or_opset(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    no_nodes = two_conv_model()
    del no_nodes.graph.node[:]
    path.write_bytes(no_nodes.SerializeToString())
    assert "no graph nodes" in load_error(path)
    no_opset = two_conv_model()
    del no_opset.opset_import[:]
    path.write_bytes(no_opset.SerializeToString())
    assert "no opset_import" in load_error(path)


DANGLING = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,4,4] x) => (float[1,2,4,4] y) {
  y = Conv<pads=[1,1,1,1]>(x, W)
}
"""


def test_load_dangling_weight_reference_fails_the_checker(tmp_path: Path) -> None:
    path = tmp_path / "dangling.onnx"
    path.write_bytes(onnx.parser.parse_model(DANGLING).SerializeToString())
    message = load_error(path)
    assert "fails the ONNX checker" in message
    assert "input 'W'" in message


def test_load_checks_the_skeleton_or_a_huge_one_through_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[object] = []
    real_check = onnx.checker.check_model

    def spy(model: object) -> None:
        checked.append(model)
        real_check(model)

    monkeypatch.setattr(onnx.checker, "check_model", spy)
    path = tmp_path / "m.onnx"
    path.write_bytes(two_conv_model().SerializeToString())
    io.load_model(path)
    assert isinstance(checked[-1], onnx.ModelProto)

    monkeypatch.setattr(io, "_INLINE_LIMIT_BYTES", -1)
    io.load_model(path)
    assert checked[-1] == str(path)
    path.write_bytes(onnx.parser.parse_model(DANGLING).SerializeToString())
    assert "fails the ONNX checker" in load_error(path)
    assert checked[-1] == str(path)


# --- load_model: external data ---------------------------------------------------------------


def test_load_external_data_at_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    write_external_w1(path, "w.bin", tmp_path / "w.bin")
    before = snapshot(tmp_path)
    assert io.load_model(path) == two_conv_model()
    assert snapshot(tmp_path) == before


def test_load_external_data_through_a_symlink_inside_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    write_external_w1(path, "link.bin", tmp_path / "w.bin")
    (tmp_path / "link.bin").symlink_to("w.bin")
    assert io.load_model(path) == two_conv_model()


def test_load_refuses_an_absolute_location(tmp_path: Path) -> None:
    data = tmp_path / "w.bin"
    write_external_w1(tmp_path / "m.onnx", str(data), data)
    before = snapshot(tmp_path)
    assert "absolute path" in load_error(tmp_path / "m.onnx")
    assert snapshot(tmp_path) == before


def test_load_refuses_a_location_with_dotdot(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_external_w1(folder / "m.onnx", "../w.bin", tmp_path / "w.bin")
    before = snapshot(tmp_path)
    assert "outside the model's folder" in load_error(folder / "m.onnx")
    assert snapshot(tmp_path) == before


def test_load_refuses_dotdot_even_when_it_comes_back_inside(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_external_w1(folder / "m.onnx", "../model/w.bin", folder / "w.bin")
    assert "outside the model's folder" in load_error(folder / "m.onnx")


def test_load_refuses_a_symlink_that_escapes_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_external_w1(folder / "m.onnx", "w.bin", tmp_path / "secret.bin")
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    before = snapshot(tmp_path)
    assert "outside the model's folder" in load_error(folder / "m.onnx")
    assert snapshot(tmp_path) == before


def test_load_refuses_a_missing_data_file(tmp_path: Path) -> None:
    write_external_w1(tmp_path / "m.onnx", "w.bin", tmp_path / "w.bin")
    (tmp_path / "w.bin").unlink()
    assert "missing" in load_error(tmp_path / "m.onnx")


def test_load_refuses_a_data_file_shorter_than_offset_plus_length(tmp_path: Path) -> None:
    write_external_w1(tmp_path / "m.onnx", "w.bin", tmp_path / "w.bin")
    with (tmp_path / "w.bin").open("r+b") as data:
        data.truncate(16 + WEIGHT_BYTES - 1)
    before = snapshot(tmp_path)
    assert "too short" in load_error(tmp_path / "m.onnx")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("offset", "-4", "invalid external data offset"),
        ("length", "many", "invalid external data offset"),
        ("location", "", "without a location"),
    ],
)
def test_load_refuses_malformed_external_entries(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    path = tmp_path / "m.onnx"
    write_external_w1(path, "w.bin", tmp_path / "w.bin")
    model = onnx.load_model(path, load_external_data=False)
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == key)
    entry.value = value
    path.write_bytes(model.SerializeToString())
    assert expected in load_error(path)


# --- save_model --------------------------------------------------------------------------------


def test_save_inline_round_trip_without_data_file(tmp_path: Path) -> None:
    path = tmp_path / "out.onnx"
    io.save_model(two_conv_model(), path)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]
    assert io.load_model(path) == two_conv_model()


def test_saved_file_mode_follows_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        io.save_model(two_conv_model(), tmp_path / "out.onnx")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.onnx").stat().st_mode) == 0o644


def test_save_external_round_trip(tmp_path: Path) -> None:
    model = two_conv_model()
    path = tmp_path / "out.onnx"
    io.save_model(model, path, external_data=True)
    assert model == two_conv_model(), "the caller's model must not change"
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "out.onnx.data"]
    assert (tmp_path / "out.onnx.data").stat().st_size == 2 * WEIGHT_BYTES
    assert path.stat().st_size < WEIGHT_BYTES, "external weights must not stay inline too"

    on_disk = onnx.load_model(path, load_external_data=False)
    external = {t.name for t in io._all_tensors(on_disk) if uses_external_data(t)}
    assert external == {"W1", "W2"}
    assert io.load_model(path) == model


def tensors_everywhere_model() -> onnx.ModelProto:
    """2 KiB tensors in an If's branches, a sparse initializer, a sparse Constant, a function."""

    def big(name: str) -> TensorProto:
        return numpy_helper.from_array(np.arange(512, dtype=np.float32) + len(name), name)

    def sparse(name: str) -> onnx.SparseTensorProto:
        indices = numpy_helper.from_array(np.arange(512, dtype=np.int64), name + "_indices")
        return helper.make_sparse_tensor(big(name), indices, [1024])

    def branch(name: str) -> onnx.GraphProto:
        constant = helper.make_node("Constant", [], [name], value=big(name))
        return helper.make_graph(
            [constant], name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [512])]
        )

    opset = helper.make_opsetid("", 17)
    fill = helper.make_node("Constant", [], ["o"], value=big("in_function"))
    function = helper.make_function("local", "Fill", [], ["o"], [fill], [opset])
    nodes = [
        helper.make_node(
            "If", ["c"], ["a"], then_branch=branch("then"), else_branch=branch("else")
        ),
        helper.make_node("Fill", [], ["f"], domain="local"),
        helper.make_node("Constant", [], ["unused"], sparse_value=sparse("sparse_value")),
        helper.make_node("Add", ["a", "f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "everywhere",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512])],
        sparse_initializer=[sparse("sparse_init")],
    )
    local = helper.make_opsetid("local", 1)
    return helper.make_model(graph, opset_imports=[opset, local], functions=[function])


def test_external_data_reaches_subgraphs_sparse_tensors_and_functions(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    io.save_model(tensors_everywhere_model(), path, external_data=True)
    on_disk = onnx.load_model(path, load_external_data=False)
    external = {t.name for t in io._all_tensors(on_disk) if uses_external_data(t)}
    sparse = {"sparse_init", "sparse_init_indices", "sparse_value", "sparse_value_indices"}
    assert external == {"then", "else", "in_function", *sparse}
    assert io.load_model(path) == tensors_everywhere_model()


def test_onnxruntime_runs_the_model_saved_with_external_data(tmp_path: Path) -> None:
    io.save_model(two_conv_model(), tmp_path / "out.onnx", external_data=True)
    x = np.random.default_rng(2).standard_normal((1, 8, 4, 4)).astype(np.float32)
    reference = ort.InferenceSession(two_conv_model().SerializeToString())
    saved = ort.InferenceSession(str(tmp_path / "out.onnx"))
    np.testing.assert_array_equal(saved.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])


def test_save_uses_external_data_only_above_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensor_bytes = 2 * WEIGHT_BYTES + 2 * BIAS_BYTES
    monkeypatch.setattr(io, "_INLINE_LIMIT_BYTES", tensor_bytes)
    io.save_model(two_conv_model(), tmp_path / "at.onnx")
    monkeypatch.setattr(io, "_INLINE_LIMIT_BYTES", tensor_bytes - 1)
    io.save_model(two_conv_model(), tmp_path / "above.onnx")
    io.save_model(two_conv_model(), tmp_path / "forced-inline.onnx", external_data=False)
    assert sorted(os.listdir(tmp_path)) == [
        "above.onnx",
        "above.onnx.data",
        "at.onnx",
        "forced-inline.onnx",
    ]


def test_size_estimate_counts_typed_data_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    model = two_conv_model()
    model.graph.initializer.append(helper.make_tensor("F", TensorProto.FLOAT, [500], [0.5] * 500))
    model.graph.initializer.append(helper.make_tensor("I", TensorProto.INT64, [100], [-1] * 100))
    assert io._estimated_size(model) == 2 * WEIGHT_BYTES + 2 * BIAS_BYTES + 500 * 4 + 100 * 10


def test_save_over_the_loaded_input(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    model = io.load_model(path)
    model.graph.initializer[0].raw_data = bytes(WEIGHT_BYTES)
    io.save_model(model, path, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    assert io.load_model(path) == model

    io.save_model(model, path)
    assert io.load_model(path) == model


def test_save_refuses_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "out.onnx"
    with pytest.raises(ModelSaveError) as err:
        io.save_model(two_conv_model(), path)
    assert "does not exist" in assert_user_message(err, path)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelSaveError) as err:
        io.save_model(two_conv_model(), tmp_path)
    assert "is a directory" in assert_user_message(err, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_tensors_whose_data_is_not_in_memory(tmp_path: Path) -> None:
    write_external_w1(tmp_path / "m.onnx", "w.bin", tmp_path / "w.bin")
    model = onnx.load_model(tmp_path / "m.onnx", load_external_data=False)
    path = tmp_path / "out.onnx"
    with pytest.raises(ModelSaveError) as err:
        io.save_model(model, path)
    assert "not in memory" in assert_user_message(err, path)
    assert not path.exists()


def test_save_reports_a_model_too_big_for_one_protobuf(tmp_path: Path) -> None:
    class Unserializable:
        def SerializeToString(self) -> bytes:
            raise EncodeError("Failed to serialize proto")

    path = tmp_path / "out.onnx"
    with pytest.raises(ModelSaveError) as err, path.open("wb") as file:
        io._write_model(file, model=Unserializable(), path=path)  # type: ignore[arg-type]
    assert "external data" in assert_user_message(err, path)


def failing_on_call(number: int, error: BaseException, real: Callable[..., Any]) -> Callable:
    """Wrap real so that its call number ``number`` (counting from 1) raises error instead."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == number:
            raise error
        return real(*args, **kwargs)

    return wrapper


EIO = OSError(errno.EIO, "Input/output error")
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("external_data", "target", "number", "error", "left"),
    [
        (False, "replace", 1, EIO, ["out.onnx"]),
        (False, "replace", 1, KeyboardInterrupt(), ["out.onnx"]),
        (False, "fsync", 1, ENOSPC, ["out.onnx"]),
        (True, "fsync", 1, ENOSPC, ["out.onnx"]),
        (True, "fsync", 2, ENOSPC, ["out.onnx"]),
        (True, "replace", 1, KeyboardInterrupt(), ["out.onnx"]),
        # The data file is replaced first, so it is the one file that may already be new.
        (True, "replace", 2, EIO, ["out.onnx", "out.onnx.data"]),
    ],
    ids=[
        "inline-replace-error",
        "inline-replace-interrupt",
        "inline-fsync-error",
        "data-fsync-error",
        "model-fsync-error",
        "data-replace-interrupt",
        "model-replace-error",
    ],
)
def test_failed_save_leaves_the_old_output_and_no_temp_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    external_data: bool,
    target: str,
    number: int,
    error: BaseException,
    left: list[str],
) -> None:
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous content")
    monkeypatch.setattr(os, target, failing_on_call(number, error, getattr(os, target)))
    expected = ModelSaveError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        io.save_model(two_conv_model(), path, external_data=external_data)
    monkeypatch.undo()

    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == left
    if isinstance(error, OSError):
        assert error.strerror in assert_user_message(err, path)


# --- model_file_size ---------------------------------------------------------------------------


def test_model_file_size_inline(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    io.save_model(two_conv_model(), path)
    assert io.model_file_size(path) == path.stat().st_size


def test_model_file_size_counts_each_data_file_once(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    (tmp_path / "unrelated.bin").write_bytes(bytes(100))
    expected = path.stat().st_size + 2 * WEIGHT_BYTES
    assert io.model_file_size(path) == expected
    assert io.model_file_size(str(path)) == expected


def test_model_file_size_refuses_unsafe_data(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_external_w1(folder / "m.onnx", "../w.bin", tmp_path / "w.bin")
    with pytest.raises(ModelLoadError) as err:
        io.model_file_size(folder / "m.onnx")
    assert "outside the model's folder" in assert_user_message(err, folder / "m.onnx")


@pytest.mark.parametrize("cut", [1, 4])
def test_load_refuses_a_large_initializer_shorter_than_its_shape(tmp_path: Path, cut: int) -> None:
    """Large tensors are checked by us, not by onnx.checker (which only sees the skeleton)."""
    weight = numpy_helper.from_array(np.ones((50, 50), np.float32), "big")
    weight.raw_data = weight.raw_data[:-cut]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["big"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [50, 50])],
        [weight],
    )
    path = tmp_path / "short.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    message = load_error(path)
    assert (
        f"initializer 'big' holds {10000 - cut} bytes but its shape [50, 50] needs 10000" in message
    )
