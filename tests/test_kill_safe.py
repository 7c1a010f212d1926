"""A save killed at any moment (SIGKILL: no handler runs) leaves the previous model or the new
one, complete and consistent with its data file, and nothing of ours the next save keeps.

A child process (this file run as a script) saves a ~100 MB model over and over, each time a
new *generation* whose number is in the metadata and in the first element of every weight.
The test kills it at seeded random moments and checks the folder after each kill.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from helpers import data_file_locations
from repvgg_onnx import io

WEIGHTS = 4
WEIGHT_ELEMENTS = 4 * 2**20 // 4  # 4 MB each
KILLS = 10
#: Each child is killed this long after it is ready, when it has saved a few times (a save
#: and the next model take about 0.1 s).
DELAY_SECONDS = (0.05, 0.8)
#: How each child stores weights ("mixed": external data on even generations) and whether it
#: has O_TMPFILE ("tmpfile") or falls back to named temporaries ("named").
SCHEDULE = [
    ("data", "tmpfile"),
    ("data", "named"),
    ("mixed", "tmpfile"),
    ("mixed", "named"),
    ("inline", "tmpfile"),
    ("inline", "named"),
    ("data", "tmpfile"),
    ("mixed", "named"),
    ("mixed", "tmpfile"),
    ("data", "named"),
]
TEMP = re.compile(r"\..*\.repvgg-onnx\.[0-9]+\.[0-9a-f]{16}\.tmp", re.DOTALL)
DATA = re.compile(r"out\.onnx\.[0-9]+\.[0-9a-f]{8}\.data")


def base_weights() -> list[bytes]:
    """Each weight's bytes, different in every tensor and element (cheap to make)."""
    elements = np.arange(WEIGHT_ELEMENTS, dtype=np.float32)
    return [(elements * (i + 1) % 9973).tobytes() for i in range(WEIGHTS)]


def generation_model(base: list[bytes], generation: int) -> onnx.ModelProto:
    """``y = x + W0 + W1 + …``; every ``Wi[0]`` and the metadata hold ``generation``."""
    shape = [WEIGHT_ELEMENTS]
    names = [f"W{i}" for i in range(len(base))]
    sums = [f"s{i}" for i in range(len(base))]
    nodes = [
        helper.make_node("Add", [x, name], [total])
        for x, name, total in zip(["x", *sums], names, sums, strict=False)
    ]
    graph = helper.make_graph(
        [*nodes, helper.make_node("Identity", [sums[-1]], ["y"])],
        "generations",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"generation": str(generation)})
    marker = np.float32(generation).tobytes()
    for name, weight in zip(names, base, strict=True):
        tensor = model.graph.initializer.add(name=name, data_type=TensorProto.FLOAT, dims=shape)
        tensor.raw_data = marker + weight[len(marker) :]
    return model


def external(storage: str, generation: int) -> bool:
    return storage == "data" or (storage == "mixed" and generation % 2 == 0)


def child_main(out: str, storage: str, temporaries: str) -> None:
    """Once told the first generation on stdin, save generation after generation to ``out``,
    printing each one once it is saved."""
    if temporaries == "named":
        del os.O_TMPFILE
    base = base_weights()
    print("ready", flush=True)
    first = int(sys.stdin.readline())
    for generation in range(first, first + 1000):
        model = generation_model(base, generation)
        io.save_model(model, out, external_data=external(storage, generation))
        print(generation, flush=True)


def start_child(out: Path, storage: str, temporaries: str) -> subprocess.Popen:
    """A child that imports and prepares while the test checks the folder, then waits."""
    return subprocess.Popen(
        [sys.executable, __file__, str(out), storage, temporaries],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def generation_on_disk(path: Path, base: list[bytes]) -> int:
    """The generation of the model at ``path``, after checking it is complete and consistent:
    it loads with its data (onnx's loader and ours), passes the checker, and every weight is
    that generation's."""
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    generation = int(next(p.value for p in model.metadata_props if p.key == "generation"))
    marker = np.float32(generation).tobytes()
    assert [t.raw_data for t in model.graph.initializer] == [
        marker + weight[len(marker) :] for weight in base
    ], f"weights of another generation than {generation}"
    return generation


def ours_left(folder: Path) -> tuple[list[str], list[str]]:
    """Our temporaries, and our data files the output does not name."""
    names = sorted(os.listdir(folder))
    named = data_file_locations(folder / "out.onnx") if (folder / "out.onnx").exists() else set()
    temps = [n for n in names if TEMP.fullmatch(n)]
    orphans = [n for n in names if DATA.fullmatch(n) and n not in named]
    return temps, orphans


def test_a_killed_save_leaves_a_complete_model_and_nothing_of_ours(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    folder = tmp_path / "work"
    folder.mkdir()
    out = folder / "out.onnx"
    base = base_weights()
    complete = 0  # the last generation known to be on disk, complete
    left_after_kills = {"tmpfile": 0, "named": 0}
    saves = 0
    children = [start_child(out, *SCHEDULE[0])]
    try:
        for kill, (_, temporaries) in enumerate(SCHEDULE):
            child = children[-1]
            assert child.stdin is not None and child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            child.stdin.write(f"{complete + 1}\n")
            child.stdin.flush()
            time.sleep(rng.uniform(*DELAY_SECONDS))
            assert child.poll() is None, "the child must die in the middle of its saves"
            child.send_signal(signal.SIGKILL)
            child.wait()
            if kill + 1 < len(SCHEDULE):
                children.append(start_child(out, *SCHEDULE[kill + 1]))
            saved = [int(line) for line in child.stdout.read().split()]
            saves += len(saved)
            complete = saved[-1] if saved else complete

            if complete == 0:
                assert not out.exists(), "a model no save completed cannot be on disk"
            else:
                on_disk = generation_on_disk(out, base)
                assert on_disk in (complete, complete + 1), (kill, on_disk, complete)
                complete = on_disk
            temps, orphans = ours_left(folder)
            if temporaries == "tmpfile":
                # Unnamed files vanish with the process. The one exception is the model file
                # killed in the microseconds between os.link (its temporary name) and
                # os.replace: the next save removes it (checked below).
                assert len(temps) <= 1, temps
                assert all(name.startswith(f".{out.name}.repvgg-onnx.") for name in temps)
            left_after_kills[temporaries] += len(temps) + len(orphans)

            # The next successful save leaves the output, its data file and nothing else.
            complete += 1
            io.save_model(generation_model(base, complete), out, external_data=kill % 2 == 0)
            expected = {"out.onnx", *data_file_locations(out)}
            assert sorted(os.listdir(folder)) == sorted(expected), kill
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert saves > 0
    print(f"{KILLS} kills, {saves} saves by the children, our files left: {left_after_kills}")


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2], sys.argv[3])
