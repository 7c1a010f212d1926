"""External data: a model and its data file are written as a consistent pair, at every moment.

Each save writes a data file of a fresh name (``<model name>.<pid>.<random>.data``), replaces
the model at once, then removes the data file the previous model named. These tests look at
the folder after (and during) each save, and compare models in onnxruntime themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from helpers import data_file_locations, repository_module
from repvgg_onnx import api, io
from repvgg_onnx.cli import main
from repvgg_onnx.errors import ModelSaveError
from repvgg_onnx.io import save
from repvgg_onnx.io.mapped_weights import mapped_location

synthetic = repository_module("models.synthetic")


def repvgg_model(
    channels: int, blocks: int, store: synthetic.Store = synthetic.in_memory
) -> onnx.ModelProto:
    """``blocks`` RepVGG training blocks of ``channels`` channels on a ``1xCx4x4`` input
    (:func:`models.synthetic.repvgg_chain`)."""
    return synthetic.repvgg_chain(blocks, channels, size=4, store=store)


def run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """The model's output in onnxruntime (graph optimizations off), from memory or a path."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def random_input(channels: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, channels, 4, 4)).astype(np.float32)


def assert_same_outputs(expected: np.ndarray, actual: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def ours(path: Path) -> list[str]:
    """Our data files for ``path`` in its folder: ``<name>.<pid>.<8 hex>.data``."""
    pattern = re.compile(rf"{re.escape(path.name)}\.[0-9]+\.[0-9a-f]{{8}}\.data")
    return sorted(p.name for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def weights(model: onnx.ModelProto) -> dict[str, bytes]:
    """Each initializer's values (whether it was stored inline or in a data file)."""
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


def changed(model: onnx.ModelProto, value: float) -> onnx.ModelProto:
    """A copy of ``model`` whose first weight is filled with ``value``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    weight = next(t for t in copy.graph.initializer if len(t.dims) == 4)
    array = np.full(tuple(weight.dims), value, np.float32)
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    return copy


def export_with_data_file(model: onnx.ModelProto, path: Path, location: str) -> None:
    """Save as an exporter does, with onnx's own external data (which changes the model it
    is given, so it gets a copy)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, str(path), save_as_external_data=True, location=location)


SMALL = repvgg_model(channels=16, blocks=2)


# --- the pair is consistent at every moment ----------------------------------------------------


@pytest.mark.usefixtures("temporaries")
@pytest.mark.parametrize(
    ("before", "after"),
    [(True, True), (True, False), (False, True)],
    ids=["data-to-data", "data-to-inline", "inline-to-data"],
)
def test_every_change_to_the_folder_leaves_a_consistent_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: bool, after: bool
) -> None:
    """After every link, rename, replace and unlink of a save, the model on disk loads with
    its data and is either the previous model or the new one."""
    path = tmp_path / "out.onnx"
    old, new = changed(SMALL, 1.0), changed(SMALL, 2.0)
    names = {"old": weights(old), "new": weights(new)}
    io.save_model(old, path, external_data=before)
    seen: list[str] = []

    def checking(function: str) -> Callable[..., Any]:
        real = getattr(os, function)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            loaded = onnx.load(str(path))
            onnx.checker.check_model(loaded)
            which = [name for name, values in names.items() if weights(loaded) == values]
            seen.append(f"{function}:{which[0] if which else '?'}")
            return result

        return call

    for function in ("link", "rename", "replace", "unlink"):
        monkeypatch.setattr(os, function, checking(function))
    io.save_model(new, path, external_data=after)
    monkeypatch.undo()

    assert "replace:new" in seen and all(not s.endswith("?") for s in seen), seen
    assert seen.index("replace:new") == len(seen) - (1 if before else 0) - 1, seen
    assert io.load_model(path) == new
    assert ours(path) == sorted(data_file_locations(path))


def test_a_data_file_is_never_rewritten_and_the_superseded_one_goes(tmp_path: Path) -> None:
    path = tmp_path / "out.onnx"
    names = []
    for value in (1.0, 2.0, 3.0):
        io.save_model(changed(SMALL, value), path, external_data=True)
        names.extend(ours(path))
        assert len(ours(path)) == 1
        assert sorted(os.listdir(tmp_path)) == ["out.onnx", *ours(path)]
        assert data_file_locations(path) == set(ours(path))
        assert io.load_model(path) == changed(SMALL, value)
    assert len(set(names)) == 3, "each save writes a data file of a new name"

    io.save_model(SMALL, path, external_data=False)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]


def test_a_failed_save_keeps_the_previous_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.onnx"
    io.save_model(changed(SMALL, 1.0), path, external_data=True)
    before = sorted(os.listdir(tmp_path))
    fsyncs = 0
    real = os.fsync

    def fail_on_the_model(descriptor: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        if fsyncs == 2:
            raise OSError(28, "No space left on device")
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fail_on_the_model)
    with pytest.raises(ModelSaveError):
        io.save_model(changed(SMALL, 2.0), path, external_data=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before
    assert io.load_model(path) == changed(SMALL, 1.0)


# --- saving in place ---------------------------------------------------------------------------


@pytest.mark.parametrize("external_data", [True, False], ids=["data", "inline"])
def test_in_place_over_an_exporters_data_file_leaves_that_file_alone(
    tmp_path: Path, external_data: bool
) -> None:
    """``model.onnx.data`` is not a name we write: it may be a user's export; never removed."""
    path = tmp_path / "model.onnx"
    export_with_data_file(SMALL, path, "model.onnx.data")
    data = tmp_path / "model.onnx.data"
    content, mtime = data.read_bytes(), data.stat().st_mtime_ns

    model = io.load_model(path)
    io.save_model(changed(model, 5.0), path, external_data=external_data)
    assert data.read_bytes() == content and data.stat().st_mtime_ns == mtime
    assert io.load_model(path) == changed(SMALL, 5.0)
    expected = ["model.onnx", "model.onnx.data", *ours(path)]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
    assert len(ours(path)) == (1 if external_data else 0)


def test_in_place_over_our_own_output_replaces_its_data_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    io.save_model(SMALL, path, external_data=True)
    first = ours(path)
    io.save_model(changed(io.load_model(path), 3.0), path, external_data=True)
    assert ours(path) != first and len(ours(path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", *ours(path)]
    assert io.load_model(path) == changed(SMALL, 3.0)


# --- what is removed, and what never is --------------------------------------------------------


def test_a_data_file_another_model_names_is_kept(tmp_path: Path) -> None:
    """A copy or a renamed model in the folder still names the data file: it must stay."""
    path = tmp_path / "out.onnx"
    io.save_model(changed(SMALL, 1.0), path, external_data=True)
    shutil.copy(path, tmp_path / "copy.onnx")
    io.save_model(changed(SMALL, 2.0), path, external_data=True)
    path.rename(tmp_path / "renamed.onnx")
    io.save_model(changed(SMALL, 3.0), path, external_data=True)
    io.save_model(changed(SMALL, 4.0), path, external_data=True)

    assert io.load_model(tmp_path / "copy.onnx") == changed(SMALL, 1.0)
    assert io.load_model(tmp_path / "renamed.onnx") == changed(SMALL, 2.0)
    assert io.load_model(path) == changed(SMALL, 4.0)
    assert len(ours(path)) == 3, "the third save's data file went"


def test_orphans_of_dead_writers_go_and_nothing_else(tmp_path: Path) -> None:
    """Our data files for this output that no model names and whose writer is gone go; a
    running writer's, other outputs', other names' and non-files stay."""
    dead = dead_pid()
    orphan = tmp_path / f"out.onnx.{dead}.0123abcd.data"
    kept = [
        "out.onnx.1.0123abcd.data",  # pid 1 runs: perhaps a save in progress
        f"out.onnx.{os.getpid()}.0123abcd.data",
        "out.onnx.data",
        f"out.onnx.{dead}.data",
        f"out.onnx.{dead}.0123abcd.data.bak",
        f"out.onnx.{dead}.0123ABCD.data",
        f"other.onnx.{dead}.0123abcd.data",
        f"xout.onnx.{dead}.0123abcd.data",
    ]
    for name in [orphan.name, *kept]:
        (tmp_path / name).write_bytes(b"weights")
    (tmp_path / f"out.onnx.{dead}.aaaabbbb.data").symlink_to("out.onnx.data")
    (tmp_path / f"out.onnx.{dead}.ccccdddd.data").mkdir()
    kept += [f"out.onnx.{dead}.aaaabbbb.data", f"out.onnx.{dead}.ccccdddd.data"]

    io.save_model(SMALL, tmp_path / "out.onnx", external_data=True)
    new = sorted(data_file_locations(tmp_path / "out.onnx"))
    assert sorted(os.listdir(tmp_path)) == sorted(["out.onnx", *new, *kept])
    assert all((tmp_path / name).read_bytes() == b"weights" for name in kept[:-2])


def test_over_a_file_that_is_not_a_model_only_dead_writers_files_go(tmp_path: Path) -> None:
    path = tmp_path / "out.onnx"
    path.write_bytes(b"not a model")
    running = tmp_path / f"out.onnx.{os.getpid()}.0123abcd.data"
    (tmp_path / f"out.onnx.{dead_pid()}.0123abcd.data").write_bytes(b"weights")
    running.write_bytes(b"weights")
    io.save_model(SMALL, path)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", running.name]


# --- the API and the CLI -----------------------------------------------------------------------


def test_fuse_result_save_writes_external_data_when_asked(tmp_path: Path) -> None:
    result = api.fuse(SMALL)
    path = tmp_path / "deploy.onnx"
    result.save(path, external_data=True)
    assert len(ours(path)) == 1 and data_file_locations(path) == set(ours(path))
    x = random_input(16)
    assert_same_outputs(run(SMALL, x), run(path, x))
    result.save(path)
    assert sorted(os.listdir(tmp_path)) == ["deploy.onnx"], "under 2 GB: inline by default"
    assert_same_outputs(run(SMALL, x), run(onnx.load(str(path)), x))


@pytest.mark.parametrize("flag", [True, False], ids=["external-data", "default"])
def test_cli_external_data_option(tmp_path: Path, flag: bool) -> None:
    source = tmp_path / "in.onnx"
    onnx.save(SMALL, str(source))
    out = tmp_path / "out.onnx"
    args = ["fuse", str(source), str(out), *(["--external-data"] if flag else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(ours(out)) == (1 if flag else 0)
    fused = onnx.load(str(out))
    assert [n.op_type for n in fused.graph.node].count("Add") == 0
    x = random_input(16)
    assert_same_outputs(run(SMALL, x), run(fused, x))


def test_cli_fuse_in_place_with_external_data(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    export_with_data_file(SMALL, path, "model.onnx.data")
    for _ in range(2):
        result = CliRunner().invoke(main, ["fuse", str(path), str(path), "--external-data"])
        assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == sorted(["model.onnx", "model.onnx.data", *ours(path)])
    assert len(ours(path)) == 1
    x = random_input(16)
    assert_same_outputs(run(SMALL, x), run(onnx.load(str(path)), x))


# --- over 2 GB ---------------------------------------------------------------------------------

BIG_CHANNELS = 2048
#: 15 blocks of 2048 channels: 2.52 GB of weights in, 2.26 GB out: each more than the 2 GiB
#: one protobuf can hold.
BIG_BLOCKS = 15
#: The disk the test needs free: the data file in (2.52 GB), the one out (2.26 GB), and room
#: for everything else on the machine to go on writing while they exist.
BIG_DISK_BYTES = 6 * 10**9


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RUN_SLOW") != "1", reason="over 2 GB of weights; set RUN_SLOW=1 to run"
)
def test_fuse_a_model_over_2_gb_with_external_data(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < BIG_DISK_BYTES:
        pytest.skip(
            f"needs {BIG_DISK_BYTES / 1e9:.0f} GB free under {tmp_path}, has {free / 1e9:.1f}"
        )
    try:
        fuse_a_model_over_2_gb(tmp_path)
    finally:  # passed or failed, its 5 GB must not fill the disk under the tests that follow
        for path in tmp_path.iterdir():
            path.unlink()


def fuse_a_model_over_2_gb(tmp_path: Path) -> None:
    source = tmp_path / "big.onnx"
    with (tmp_path / "big.onnx.data").open("wb") as data:
        model = repvgg_model(
            BIG_CHANNELS, BIG_BLOCKS, store=synthetic.DataFileStore(data, "big.onnx.data")
        )
    source.write_bytes(model.SerializeToString())
    del model
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31

    out = tmp_path / "deploy.onnx"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "repvgg_onnx", "fuse", str(source), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"fuse of {BIG_BLOCKS}x{BIG_CHANNELS}: {time.perf_counter() - start:.1f} s")
    assert done.returncode == 0, done.stderr

    data_files = ours(out)
    assert len(data_files) == 1 and data_file_locations(out) == set(data_files)
    assert (tmp_path / data_files[0]).stat().st_size > 2**31
    fused = onnx.load(str(out))
    assert [n.op_type for n in fused.graph.node].count("Conv") == BIG_BLOCKS
    assert sum(len(t.raw_data) for t in fused.graph.initializer) > 2**31
    del fused
    onnx.checker.check_model(str(out))

    x = random_input(BIG_CHANNELS)
    expected = run(source, x)
    assert_same_outputs(expected, run(out, x))


def test_a_name_split_across_read_chunks_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(save, "_SCAN_CHUNK_BYTES", 5)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x12\x1bout.onnx.12.0123abcd.data\x00out.onnx.34.0123abcd.data")
    names = {f"out.onnx.{pid}.0123abcd.data" for pid in (12, 34, 56)}
    assert save._names_in_file(path, names) == names - {"out.onnx.56.0123abcd.data"}


# --- what is verified is the file about to be published ----------------------------------------


@pytest.mark.parametrize("external", [True, False], ids=["data-file", "inline"])
def test_save_checks_the_bytes_before_it_publishes(tmp_path: Path, external: bool) -> None:
    """``check`` sees the model as written (weights read from the new data file), while the
    output still holds its previous content; the model returned is that one too."""
    path = tmp_path / "out.onnx"
    onnx.save(SMALL, str(path))
    previous = path.read_bytes()
    seen = []

    def check(written: onnx.ModelProto) -> None:
        assert path.read_bytes() == previous, "checked before the output is replaced"
        locations = {t.name: mapped_location(t) for t in written.graph.initializer}
        mapped = {name: where for name, where in locations.items() if where}
        if external:
            assert mapped and {Path(f).parent for f, _, _ in mapped.values()} == {tmp_path}
            assert {Path(f).name for f, _, _ in mapped.values()} == set(ours(path))
        else:
            assert not mapped
        seen.append(weights(io.self_contained(written)))

    written = io.save_model(SMALL, path, external_data=external, check=check)
    assert seen == [weights(SMALL)] == [weights(io.self_contained(written))]
    assert_same_outputs(run(SMALL, random_input(16)), run(path, random_input(16)))


@pytest.mark.parametrize("external", [True, False], ids=["data-file", "inline"])
def test_a_failed_check_publishes_nothing(tmp_path: Path, external: bool) -> None:
    path = tmp_path / "out.onnx"
    onnx.save(SMALL, str(path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def refuse(written: onnx.ModelProto) -> None:
        raise RuntimeError("the outputs differ")

    with pytest.raises(RuntimeError, match="the outputs differ"):
        io.save_model(changed(SMALL, 0.5), path, external_data=external, check=refuse)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_fuse_to_a_path_verifies_the_data_file_it_publishes(tmp_path: Path, monkeypatch) -> None:
    """``fuse(model, output)``: the fused model verified is the one read back from the data
    file about to be published, no second copy; the result's model reads it from there."""
    from repvgg_onnx.verification import isolation

    monkeypatch.setattr(isolation, "can_isolate", lambda: False)  # the spy runs here
    path = tmp_path / "deploy.onnx"
    candidates = []
    real = api.verify_models

    def spy(reference, candidate, **options):
        candidates.append([mapped_location(t) for t in candidate.graph.initializer])
        assert not path.exists(), "verified before it is published"
        return real(reference, candidate, **options)

    monkeypatch.setattr(api, "verify_models", spy)
    result = api.fuse(SMALL, path, external_data=True)
    assert result.verification.passed
    [locations] = candidates
    big = [where for where in locations if where]
    assert big and {Path(f).name for f, _, _ in big} == set(ours(path))
    assert [mapped_location(t) for t in result.model.graph.initializer] == locations
    x = random_input(16)
    assert_same_outputs(run(SMALL, x), run(path, x))
    assert_same_outputs(run(SMALL, x), run(io.self_contained(result.model), x))


@pytest.mark.parametrize("verify", [False, True])
def test_fuse_to_a_path_holds_the_original_only_for_the_verification(
    tmp_path: Path, monkeypatch, verify: bool
) -> None:
    """While the fused model is written, ``fuse`` holds the model it loaded (or the passes'
    copy of it) only if the verification still reads it: the save must not keep the original
    weights beside the fused ones (RepVGG-B1g4 ``fuse --no-verify``: 717 MB peak RSS with
    them, 565 MB without)."""
    loaded = []
    real_load = api.load

    def load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        loaded.append(model)
        return model

    held = []
    real_staged = io.StagedModel

    def staged(*args, **kwargs):
        held.append(sys.getrefcount(loaded[0]) - 2)  # but this list and getrefcount's argument
        return real_staged(*args, **kwargs)

    source = tmp_path / "training.onnx"
    onnx.save(SMALL, source)
    monkeypatch.setattr(api, "load", load)
    monkeypatch.setattr(io, "StagedModel", staged)
    api.fuse(source, tmp_path / "deploy.onnx", verify=verify)
    assert held == [1 if verify else 0]  # the verification's own reference, or none


def test_fuse_to_a_path_that_fails_verification_leaves_it_alone(
    tmp_path: Path, monkeypatch
) -> None:
    import repvgg_onnx.passes.readers as readers

    real = readers.batchnorm_scale_shift
    monkeypatch.setattr(
        readers, "batchnorm_scale_shift", lambda g, b, m, v, eps: real(g, b, m, v, eps * 100)
    )
    path = tmp_path / "deploy.onnx"
    onnx.save(SMALL, str(path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(api.FuseVerificationError):
        api.fuse(SMALL, path, external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
