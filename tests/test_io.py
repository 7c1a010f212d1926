"""Tests of repvgg_onnx.io: loading refuses what is not a safe, valid model;
saving is atomic."""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import subprocess
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

from helpers import use_named_temporaries
from repvgg_onnx import io
from repvgg_onnx.errors import ModelLoadError, ModelSaveError
from repvgg_onnx.io import model_tensors, save

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


def data_file_of(path: Path) -> str:
    """The one data file next to ``path``, named ``<path name>.<our pid>.<8 hex>.data``."""
    names = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    assert len(names) == 1, names
    assert re.fullmatch(rf"{re.escape(path.name)}\.{os.getpid()}\.[0-9a-f]{{8}}\.data", names[0])
    return names[0]


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

    monkeypatch.setattr(model_tensors, "INLINE_LIMIT_BYTES", -1)
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


@pytest.mark.usefixtures("temporaries")
def test_saved_file_mode_follows_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "out.onnx"
    umask = os.umask(0o027)
    try:
        io.save_model(two_conv_model(), path, external_data=True)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / data_file_of(path)).stat().st_mode) == 0o640


# --- save_model: temporaries that a killed process cannot leave behind -------------------------

TEMP_NAME = rf"\.out\.onnx\.repvgg-onnx\.{os.getpid()}\.[0-9a-f]{{16}}\.tmp"


def spy(monkeypatch: pytest.MonkeyPatch, function: str) -> list[tuple]:
    """Record the arguments of every call of ``os.<function>``."""
    calls: list[tuple] = []
    real = getattr(os, function)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, function, recording)
    return calls


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")
def test_files_are_written_unnamed_then_linked_where_o_tmpfile_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened, linked, replaced = (spy(monkeypatch, f) for f in ("open", "link", "replace"))
    path = tmp_path / "out.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    monkeypatch.undo()

    unnamed = [args for args in opened if args[1] & os.O_TMPFILE == os.O_TMPFILE]
    assert [Path(args[0]) for args in unnamed] == [tmp_path, tmp_path]
    assert not [args for args in opened if args[1] & os.O_CREAT], "no named temporary"
    assert [args[0].rsplit("/", 1)[0] for args in linked] == ["/proc/self/fd"] * 2
    data = data_file_of(path)
    assert linked[0][1] == data, "the data file is linked under its final name"
    assert re.fullmatch(TEMP_NAME, linked[1][1]), "the model under a temporary name"
    assert [(Path(a).name, Path(b)) for a, b in replaced] == [(linked[1][1], path)]
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", data]
    assert io.load_model(path) == two_conv_model()


def test_without_o_tmpfile_the_temporary_is_named_after_our_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_named_temporaries(monkeypatch)
    opened = spy(monkeypatch, "open")
    path = tmp_path / "out.onnx"
    io.save_model(two_conv_model(), path)
    monkeypatch.undo()

    created = [args for args in opened if args[1] & os.O_CREAT]
    assert len(created) == 1
    assert re.fullmatch(TEMP_NAME, Path(created[0][0]).name)
    assert created[0][1] & os.O_EXCL, "never another file"
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]
    assert io.load_model(path) == two_conv_model()


def refusing_o_tmpfile(code: int) -> Callable[..., int]:
    real = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(code, os.strerror(code))
        return real(path, flags, *args, **kwargs)

    return open_


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")
@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
def test_a_filesystem_without_o_tmpfile_gets_named_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    monkeypatch.setattr(os, "open", refusing_o_tmpfile(code))
    opened = spy(monkeypatch, "open")
    path = tmp_path / "out.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    monkeypatch.undo()
    assert sum(1 for args in opened if args[1] & os.O_CREAT) == 2
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", data_file_of(path)]
    assert io.load_model(path) == two_conv_model()


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux's")
def test_other_o_tmpfile_errors_are_reported_not_worked_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous content")
    monkeypatch.setattr(os, "open", refusing_o_tmpfile(errno.EACCES))
    with pytest.raises(ModelSaveError) as err:
        io.save_model(two_conv_model(), path)
    monkeypatch.undo()
    assert "Permission denied" in assert_user_message(err, path)
    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]


def test_a_named_temporary_never_replaces_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_named_temporaries(monkeypatch)
    monkeypatch.setattr(secrets, "token_hex", lambda n: "ab" * n)
    squatter = tmp_path / f".out.onnx.repvgg-onnx.{os.getpid()}.{'ab' * 8}.tmp"
    squatter.write_bytes(b"not ours")
    with pytest.raises(ModelSaveError) as err:
        io.save_model(two_conv_model(), tmp_path / "out.onnx")
    assert "File exists" in assert_user_message(err, tmp_path / "out.onnx")
    assert squatter.read_bytes() == b"not ours"
    assert sorted(os.listdir(tmp_path)) == [squatter.name]


@pytest.mark.usefixtures("temporaries")
def test_a_save_removes_only_the_stale_temporaries_of_our_naming(tmp_path: Path) -> None:
    """What a killed save left (our pattern, a dead pid) goes; everything else stays."""
    dead, hex16 = dead_pid(), "0123456789abcdef"
    stale = [
        f".out.onnx.repvgg-onnx.{dead}.{hex16}.tmp",
        f".other.onnx.repvgg-onnx.{dead}.{hex16}.tmp",  # any output's, in this folder
        f".out.onnx.{dead}.0123abcd.data.repvgg-onnx.{dead}.{hex16}.tmp",
    ]
    kept = [
        f".out.onnx.repvgg-onnx.{os.getpid()}.{hex16}.tmp",  # a running writer's
        ".out.onnx.repvgg-onnx.1.0123456789abcdef.tmp",  # pid 1 runs
        f".out.onnx.repvgg-onnx.{dead}.0123.tmp",  # not our pattern
        f".out.onnx.repvgg-onnx.{dead}.{hex16}.tmp.bak",
        f"out.onnx.repvgg-onnx.{dead}.{hex16}.tmp",
        f".out.onnx.{hex16}.tmp",  # an older version's, without a pid
        "notes.tmp",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    folder = tmp_path / f".dir.repvgg-onnx.{dead}.{hex16}.tmp"
    folder.mkdir()
    link = tmp_path / f".link.repvgg-onnx.{dead}.{hex16}.tmp"
    link.symlink_to("notes.tmp")
    io.save_model(two_conv_model(), tmp_path / "out.onnx")
    expected = sorted(["out.onnx", *kept, folder.name, link.name])
    assert sorted(os.listdir(tmp_path)) == expected
    assert (tmp_path / "notes.tmp").read_bytes() == b"x"
    assert io.load_model(tmp_path / "out.onnx") == two_conv_model()


def test_save_external_round_trip(tmp_path: Path) -> None:
    model = two_conv_model()
    path = tmp_path / "out.onnx"
    io.save_model(model, path, external_data=True)
    assert model == two_conv_model(), "the caller's model must not change"
    data = data_file_of(path)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", data]
    assert (tmp_path / data).stat().st_size == 2 * WEIGHT_BYTES
    assert path.stat().st_size < WEIGHT_BYTES, "external weights must not stay inline too"

    on_disk = onnx.load_model(path, load_external_data=False)
    external = {t.name for t in model_tensors.all_tensors(on_disk) if uses_external_data(t)}
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
    external = {t.name for t in model_tensors.all_tensors(on_disk) if uses_external_data(t)}
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
    monkeypatch.setattr(model_tensors, "INLINE_LIMIT_BYTES", tensor_bytes)
    io.save_model(two_conv_model(), tmp_path / "at.onnx")
    monkeypatch.setattr(model_tensors, "INLINE_LIMIT_BYTES", tensor_bytes - 1)
    io.save_model(two_conv_model(), tmp_path / "above.onnx")
    io.save_model(two_conv_model(), tmp_path / "forced-inline.onnx", external_data=False)
    data = data_file_of(tmp_path / "above.onnx")
    assert sorted(os.listdir(tmp_path)) == ["above.onnx", data, "at.onnx", "forced-inline.onnx"]


def test_size_estimate_counts_typed_data_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    model = two_conv_model()
    model.graph.initializer.append(helper.make_tensor("F", TensorProto.FLOAT, [500], [0.5] * 500))
    model.graph.initializer.append(helper.make_tensor("I", TensorProto.INT64, [100], [-1] * 100))
    assert (
        model_tensors._estimated_size(model)
        == 2 * WEIGHT_BYTES + 2 * BIAS_BYTES + 500 * 4 + 100 * 10
    )


def test_save_over_the_loaded_input(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    first = data_file_of(path)
    model = io.load_model(path)
    model.graph.initializer[0].raw_data = bytes(WEIGHT_BYTES)
    io.save_model(model, path, external_data=True)
    second = data_file_of(path)
    assert second != first, "a data file is never rewritten in place"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", second]
    assert io.load_model(path) == model

    io.save_model(model, path)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
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
        save._write_model(file, model=Unserializable(), path=path)  # type: ignore[arg-type]
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


INTERRUPT = KeyboardInterrupt()
#: Every system call of a save that can fail before the output is replaced, by the call's
#: number: (O_TMPFILE used, external data, function of os, call number, error).
FAILURES_BEFORE_REPLACE = [
    (True, False, "open", 1, ENOSPC),  # the unnamed model file
    (True, False, "fsync", 1, ENOSPC),  # its content
    (True, False, "link", 1, EIO),  # its temporary name
    (True, False, "replace", 1, EIO),
    (True, False, "replace", 1, INTERRUPT),
    (True, True, "open", 2, ENOSPC),  # the unnamed model file, after the data file's
    (True, True, "fsync", 1, ENOSPC),  # the data
    (True, True, "fsync", 2, INTERRUPT),  # the model
    (True, True, "link", 1, EIO),  # the data file's name
    (True, True, "fsync", 3, EIO),  # the folder, with the data file's name
    (True, True, "open", 5, EIO),  # the folder, to name the model file
    (True, True, "link", 2, INTERRUPT),  # the model's temporary name
    (True, True, "replace", 1, EIO),
    (False, False, "open", 1, ENOSPC),
    (False, False, "fsync", 1, ENOSPC),
    (False, False, "replace", 1, INTERRUPT),
    (False, True, "fsync", 1, ENOSPC),
    (False, True, "fsync", 2, ENOSPC),
    (False, True, "rename", 1, EIO),  # the data file's name
    (False, True, "fsync", 3, INTERRUPT),
    (False, True, "replace", 1, EIO),
]


def failure_id(case: tuple) -> str:
    unnamed, external_data, function, number, error = case
    return (
        f"{'tmpfile' if unnamed else 'named'}-{'data' if external_data else 'inline'}-"
        f"{function}{number}-{type(error).__name__}"
    )


@pytest.mark.parametrize("case", FAILURES_BEFORE_REPLACE, ids=failure_id)
def test_failed_save_leaves_the_old_output_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple
) -> None:
    unnamed, external_data, function, number, error = case
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous content")
    if not unnamed:
        use_named_temporaries(monkeypatch)
    monkeypatch.setattr(os, function, failing_on_call(number, error, getattr(os, function)))
    expected = ModelSaveError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        io.save_model(two_conv_model(), path, external_data=external_data)
    monkeypatch.undo()

    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]
    if isinstance(error, OSError):
        assert error.strerror in assert_user_message(err, path)


@pytest.mark.usefixtures("temporaries")
def test_a_failed_folder_fsync_after_the_replace_is_reported_and_keeps_the_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new model is in place but may not be durable: the error says so, and its data file
    stays (as does the one the previous model names, for a power cut to find)."""
    path = tmp_path / "out.onnx"
    io.save_model(two_conv_model(), path, external_data=True)
    previous = data_file_of(path)
    monkeypatch.setattr(os, "fsync", failing_on_call(4, EIO, os.fsync))
    changed = two_conv_model()
    changed.graph.initializer[0].raw_data = bytes(WEIGHT_BYTES)
    with pytest.raises(ModelSaveError) as err:
        io.save_model(changed, path, external_data=True)
    monkeypatch.undo()
    assert "Input/output error" in assert_user_message(err, path)
    assert io.load_model(path) == changed
    assert len(os.listdir(tmp_path)) == 3
    assert (tmp_path / previous).exists()


@pytest.mark.usefixtures("temporaries")
def test_an_interrupt_right_after_the_replace_keeps_the_new_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous content")
    real_replace = os.replace

    def replace_then_interrupt(*args: Any, **kwargs: Any) -> None:
        real_replace(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        io.save_model(two_conv_model(), path, external_data=True)
    monkeypatch.undo()
    assert io.load_model(path) == two_conv_model()
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", data_file_of(path)]


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


def test_the_skeleton_size_bound_counts_constant_nodes_and_strings() -> None:
    """The bound that decides whether the checker gets the skeleton or the path is never
    below what the skeleton's tensors hold: a large Constant node, a long string."""
    from repvgg_onnx.io.stripped_model import model_skeleton

    big = numpy_helper.from_array(np.ones(50_000, np.float32), "c")
    words = helper.make_tensor("s", TensorProto.STRING, [1], [b"x" * 300_000])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=big)],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [50_000])],
        initializer=[words],
    )
    skeleton = model_skeleton(helper.make_model(graph))
    assert model_tensors.skeleton_size_bound(skeleton) >= 200_000 + 300_000


def test_external_data_without_a_length_runs_to_the_end_of_its_file(tmp_path: Path) -> None:
    """``length`` is optional in an external data entry: the tensor's bytes run from its
    offset to the end of the data file."""
    model = two_conv_model()
    w1 = model.graph.initializer[0]
    expected = numpy_helper.to_array(w1)
    (tmp_path / "w1.bin").write_bytes(b"\xff" * 16 + w1.raw_data)
    set_external_data(w1, "w1.bin", 16)
    w1.ClearField("raw_data")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = io.load_model(path)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), expected)


def test_a_long_checker_message_is_cut_to_one_short_line(tmp_path: Path) -> None:
    """A node with a 2,000-character name that the checker rejects: its message quotes the
    name; the error line stays short."""
    model = two_conv_model()
    model.graph.node[0].name = "n" * 2000
    model.graph.node[0].input[0] = "nowhere"
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    message = load_error(path)
    assert "fails the ONNX checker" in message and "..." in message
    assert "\n" not in message and len(message) < 500
