"""isolation.py: work run in a forked child returns its result, raises its error, relays its
progress, and turns the child's death into a ModelRunError naming the model.

pytest has imported onnxruntime, so ``isolated`` would run in-process here; these tests force
the fork (the children below never touch onnxruntime).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repvgg_onnx.errors import CheckFailedError, ModelRunError
from repvgg_onnx.verification import isolation
from repvgg_onnx.verification.isolation import isolated, note


@pytest.fixture(autouse=True)
def forking(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this system")
    monkeypatch.setattr(isolation, "can_isolate", lambda: True)


def pid_and_sum(a: int, b: int) -> tuple[int, int]:
    return os.getpid(), a + b


def test_the_result_comes_back_from_another_process() -> None:
    pid, total = isolated(pid_and_sum, 2, b=3)
    assert total == 5 and pid != os.getpid()


def fail_as_fused() -> None:
    raise ModelRunError("cannot run", "fused", hint="try again")


def test_the_childs_error_is_raised_with_its_attributes() -> None:
    with pytest.raises(ModelRunError, match="cannot run") as caught:
        isolated(fail_as_fused)
    assert (caught.value.role, caught.value.hint) == ("fused", "try again")


def test_errors_pickle_with_every_attribute() -> None:
    error = pickle.loads(pickle.dumps(ModelRunError("m", "B", hint="h")))
    assert (str(error), error.role, error.hint, error.exit_code) == ("m", "B", "h", 2)
    assert pickle.loads(pickle.dumps(CheckFailedError("c"))).exit_code == 1


def crash_while(role: str | None) -> None:
    faulthandler.disable()  # pytest's handler would print the child's stack
    if role:
        note(role)
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crash_names_the_model_onnxruntime_was_running() -> None:
    with pytest.raises(ModelRunError, match=r"crashed \(SIGSEGV\) running the fused model") as e:
        isolated(crash_while, "fused")
    assert e.value.role == "fused" and e.value.hint is None


def test_a_crash_of_the_original_suggests_skipping_verification() -> None:
    with pytest.raises(ModelRunError, match="the original model") as caught:
        isolated(crash_while, "original")
    assert caught.value.role == "original" and "--no-verify" in caught.value.hint


def exit_early() -> None:
    os._exit(3)


def test_a_child_that_exits_without_a_result_is_reported() -> None:
    with pytest.raises(ModelRunError, match="exited with code 3 running the models"):
        isolated(exit_early)


def count(to: int, progress) -> int:
    for i in range(to):
        progress(f"step {i}")
    return to


def test_progress_is_heard_in_this_process_in_order() -> None:
    heard: list[str] = []
    assert isolated(count, 3, progress=heard.append) == 3
    assert heard == ["step 0", "step 1", "step 2"]


def test_without_fork_safety_the_function_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "can_isolate", lambda: False)
    assert isolated(pid_and_sum, 1, 1) == (os.getpid(), 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="isolation forks on Linux only")
def test_fuse_and_verify_run_onnxruntime_only_in_children(tmp_path) -> None:
    """In a process that has not imported onnxruntime (the CLI), verification and localization
    happen in forked children: onnxruntime never loads in the process itself."""
    sample = Path(__file__).resolve().parent.parent / "models" / "samples" / "repvgg_a0_half.onnx"
    script = f"""
import sys
import repvgg_onnx
result = repvgg_onnx.fuse({str(sample)!r})
assert result.report.verification.passed
check = repvgg_onnx.verify({str(sample)!r}, result.model, localize=True, atol=0, rtol=0)
print("onnxruntime" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("cut", [3, isolation._HEADER.size + 50], ids=["in-header", "in-payload"])
def test_a_message_the_child_did_not_finish_is_dropped(cut: int) -> None:
    """A child killed while writing leaves its last message cut short: what came whole is
    read, the rest dropped (then reported as a crash), never unpacked half."""
    import io

    note_message = isolation._HEADER.pack(b"n", 5) + b"fused"
    result = isolation._HEADER.pack(b"r", 100) + b"x" * 100
    channel = io.BytesIO((note_message + result)[: len(note_message) + cut])
    assert isolation._receive_all(channel, None) == ("fused", None)
