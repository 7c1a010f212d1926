"""What ``fuse`` and ``inspect --fail-if-fusable`` do on one model of each export route.

    python benchmarks/exporters.py [--tool PATH/TO/repvgg-onnx]

One row per case: the op counts before and after ``fuse --no-verify`` (and, for a local-functions
export, whether they equal its TorchScript twin's fused counts), the largest difference between
the two models in onnxruntime (graph optimizations off, seeded normal inputs; a changed output
shape is reported as such), and the gate's exit codes on the training and the fused model.
``--tool`` runs another installation (an older one, to compare). The two last cases are built
by the tests' own builders (``tests/test_constant_folding.py``, ``tests/test_shapes.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "models" / "fixtures"
SHOWN = ("Conv", "Gemm", "Add", "Mul", "BatchNormalization", "Concat")


def fixture_cases() -> list[tuple[str, Path, Path | None]]:
    families, keras, paddle = FIXTURES / "families", FIXTURES / "keras", FIXTURES / "paddle"
    return [
        (
            "functions: tiny_block",
            FIXTURES / "tiny_block/ts17_functions.onnx",
            FIXTURES / "tiny_block/ts17.onnx",
        ),
        ("functions: acnet", families / "acnet/ts17_functions.onnx", families / "acnet/ts17.onnx"),
        (
            "functions: fastvit_repmixer (nested)",
            families / "fastvit_repmixer/ts17_functions.onnx",
            families / "fastvit_repmixer/ts17.onnx",
        ),
        ("tf2onnx: keras_repvgg tf17_nhwc", keras / "keras_repvgg/tf17_nhwc.onnx", None),
        (
            "tf2onnx: keras_repvgg tf13_nchw_keras2",
            keras / "keras_repvgg/tf13_nchw_keras2.onnx",
            None,
        ),
        (
            "tf2onnx: keras_mobileone tf17_nhwc_dynbatch",
            keras / "keras_mobileone/tf17_nhwc_dynbatch.onnx",
            None,
        ),
        ("paddle2onnx: paddle_dbb opset11", paddle / "paddle_dbb/opset11.onnx", None),
        ("paddle2onnx: paddle_dbb_assign opset17", paddle / "paddle_dbb_assign/opset17.onnx", None),
        ("paddle2onnx: paddle_repvgg opset11", paddle / "paddle_repvgg/opset11.onnx", None),
        ("YOLOv7 implicit head: ts17", families / "yolo_implicit/ts17.onnx", None),
        ("TorchScript opset 11: tiny_repvgg", FIXTURES / "tiny_repvgg/ts11.onnx", None),
    ]


def built_cases(folder: Path) -> list[tuple[str, Path, Path | None]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_constant_folding import _conv_bn_scale_shift
    from test_shapes import LIES, _model

    unsqueeze, lying = folder / "unsqueeze_neg_axes.onnx", folder / "lying_value_info.onnx"
    onnx.save(_conv_bn_scale_shift(11), unsqueeze)
    onnx.save(_model(LIES[0][1]), lying)
    return [
        ("opset 11: Conv, BN, Mul/Add by Unsqueeze(axes=[-2,-1])", unsqueeze, None),
        ("a lying value_info: Add(t, zeros[1,1,1])", lying, None),
    ]


def counts(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def shown(c: Counter) -> str:
    return ", ".join(f"{op} {c[op]}" for op in SHOWN if c[op]) or "-"


def outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    initializers = {t.name for t in model.graph.initializer}
    return {
        value.name: rng.normal(
            size=[d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        ).astype(np.float32)
        for value in model.graph.input
        if value.name not in initializers
    }


def difference(a: Path, b: Path) -> str:
    feeds = random_feeds(a)
    pairs = list(zip(outputs(a, feeds), outputs(b, feeds), strict=True))
    if any(x.shape != y.shape for x, y in pairs):
        return "shape " + ", ".join(f"{x.shape} → {y.shape}" for x, y in pairs)
    return f"{max(float(np.abs(x - y).max()) for x, y in pairs):.2g}"


def row(tool: str, folder: Path, label: str, path: Path, twin: Path | None) -> str:
    fused = folder / f"{path.stem}.fused.onnx"
    run = subprocess.run(
        [tool, "fuse", str(path), str(fused), "--no-verify", "-q", "--force"],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode:
        return f"| {label} | fuse exit {run.returncode}: {run.stderr.strip()} | | |"
    gates = [
        subprocess.run(
            [tool, "inspect", str(p), "--fail-if-fusable", "-q"], capture_output=True, check=False
        ).returncode
        for p in (path, fused)
    ]
    after = shown(counts(fused))
    if twin is not None:
        twin_fused = folder / f"{twin.stem}.twin.onnx"
        subprocess.run(
            [tool, "fuse", str(twin), str(twin_fused), "--no-verify", "-q", "--force"], check=True
        )
        after += (
            " (= twin)"
            if counts(twin_fused) == counts(fused)
            else " (twin: " + shown(counts(twin_fused)) + ")"
        )
    return (
        f"| {label} | {shown(counts(path))} → {after} | {difference(path, fused)} | "
        f"{gates[0]} / {gates[1]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tool", default="repvgg-onnx", help="the CLI to run (default: %(default)s)"
    )
    tool = parser.parse_args().tool
    print("| case | ops before → after fuse | max abs difference | gate exit: training / fused |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for label, path, twin in fixture_cases() + built_cases(folder):
            print(row(tool, folder, label, path, twin), flush=True)


if __name__ == "__main__":
    main()
