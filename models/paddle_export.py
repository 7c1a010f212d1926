"""Export the Paddle nets of :mod:`models.paddle_blocks` with paddle2onnx.

Run ``python -m models.paddle_export`` from the repository root, in an environment made from
``models/requirements-paddle-export.txt`` (paddle2onnx pins ``onnx<=1.17``, so not the
project's own environment), to regenerate ``models/fixtures/paddle/<family>/<form>.onnx`` and
``models/fixtures/paddle/manifest.json`` (same schema as ``models/fixtures/families``).

Each family is exported in every form of :data:`FORMS`, and so is its deploy model (the net after
its own ``re_parameterize()``), as the form ``<form>_reference``. Every file is checked with
onnxruntime against the Paddle net it was exported from, and every training form against its
reference; a relative error ``max|a − b| / max|b|`` above :data:`RELATIVE_TOLERANCE` raises
:class:`ExportMismatchError`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import paddle
import paddle2onnx

from models import onnx_files, paddle_blocks

SEED = 0
CHECK_INPUT_SEED = 1234
RELATIVE_TOLERANCE = 1e-4
INPUT_NAME = "input"
INPUT_SHAPE = (1, 8, 16, 16)
FORMS = {"opset11": 11, "opset17": 17}
"""Form name → ONNX opset (paddle2onnx's default optimization, no opset upgrade)."""
FAMILY_FORMS = {"paddle_dbb_assign": {"opset17": 17}}
"""Families paddle2onnx exports at fewer opsets: slice assignment (``set_value``) needs 17."""

MODELS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = MODELS_DIR / "fixtures" / "paddle"

DESCRIPTIONS = {
    "paddle_repvgg": "PaddleClas-style RepVGG: block 8→8 (3x3-BN + 1x1-BN + identity BN, ReLU), "
    "block 8→16 stride 2 (3x3-BN + 1x1-BN, ReLU).",
    "paddle_lcnetv2": "PP-LCNetV2-style RepDepthwiseSeparable: 8→16 stride 1 (depthwise 5x5, 3x3, "
    "1x1 conv-BN and identity BN summed, ReLU, pointwise conv-BN-ReLU), 16→16 stride 2 "
    "(depthwise 5x5 and 3x3 only).",
    "paddle_dbb": "DiverseBranchBlock 8→16, k3, stride 1: kxk conv-BN, 1x1 conv-BN, "
    "1x1→BN-and-pad→avgpool→BN, (W+I) 1x1→BN-and-pad→kxk conv→BN; the BN-then-pad border built "
    "with paddle.concat of the BN's shift expanded to the border strips.",
    "paddle_dbb_assign": "The paddle_dbb block with the official BN-then-pad: F.pad with zeros, "
    "then four slice assignments of the BN's shift (output[:, :, 0:p, :] = pad_values, ...).",
}
NOTES = {
    "paddle_repvgg": [
        "paddle2onnx keeps every Conv-BN pair (no BN folding) and adds Identity nodes.",
    ],
    "paddle_lcnetv2": [
        "re_parameterize() also folds the pointwise conv-BN (PaddleClas leaves that to its "
        "inference fusion), so the reference has no BatchNormalization.",
    ],
    "paddle_dbb": [
        "BNAndPadLayer: BN, then Concat(strip, BN, strip) along W and Concat(strip, ·, strip) "
        "along H; paddle2onnx's Polygraphy constant folding turns the expanded shift strips "
        "into initializers, so the border is Concat of per-channel constants (no Pad).",
        "AveragePool is exported with count_include_pad=0 and pads 0 (Paddle's exclusive=True), "
        "exact because it pads nothing.",
    ],
    "paddle_dbb_assign": [
        "BNAndPadLayer: BN, Unsqueeze to 5-D, Pad (pad3d), Squeeze, then four ScatterElements "
        "(one per slice assignment; their indices and updates folded to constants).",
        "paddle2onnx 2.1.0 writes the fill value of that Pad from uninitialized memory (seen: "
        "6.3e-30, -3.2e-06, 1.7e+28), so the file's bytes differ on each export; its function "
        "does not, since the slice assignments overwrite the whole border.",
    ],
}


class ExportMismatchError(RuntimeError):
    """An exported file does not compute what it was exported from."""


def export_onnx(model: paddle.nn.Layer, path: Path, opset: int) -> Path:
    """``model`` saved with ``paddle.jit.save`` (static input shape) and converted by
    paddle2onnx at ``opset`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = [paddle.static.InputSpec(list(INPUT_SHAPE), "float32", INPUT_NAME)]
    with tempfile.TemporaryDirectory() as directory:
        prefix = Path(directory) / "model"
        static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
        paddle.jit.save(static, str(prefix), input_spec=spec)
        paddle2onnx.export(
            str(prefix) + ".json",
            str(prefix) + ".pdiparams",
            str(path),
            opset_version=opset,
            auto_upgrade_opset=False,
        )
    return path


def check_input() -> np.ndarray:
    return np.random.default_rng(CHECK_INPUT_SEED).normal(size=INPUT_SHAPE).astype(np.float32)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    scale = max(float(np.abs(expected).max()), 1e-12)
    return float(np.abs(actual.astype(np.float64) - expected).max()) / scale


def check_close(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    error = relative_error(actual, expected)
    if error > RELATIVE_TOLERANCE:
        raise ExportMismatchError(f"{what}: relative error {error:.3g} > {RELATIVE_TOLERANCE}")
    return error


def file_entry(path: Path, opset: int, reparameterized: bool) -> dict[str, Any]:
    """The export settings and :func:`models.onnx_files.file_summary` of one file."""
    return {
        "exporter": "paddle2onnx",
        "opset": opset,
        "enable_optimize": True,
        "dynamic_batch": False,
        "reparameterized": reparameterized,
        **onnx_files.file_summary(path, FIXTURES_DIR),
    }


def export_family(name: str) -> dict[str, Any]:
    """Every form of family ``name`` and its reference, checked; the manifest entry."""
    model = paddle_blocks.build(name, SEED)
    deployed = copy.deepcopy(model)
    deployed.re_parameterize()
    x = check_input()
    expected = model(paddle.to_tensor(x)).numpy()
    check_close(deployed(paddle.to_tensor(x)).numpy(), expected, f"{name} re_parameterize()")
    forms: dict[str, Any] = {}
    family_forms = FAMILY_FORMS.get(name, FORMS)
    for form, opset in family_forms.items():
        training = export_onnx(model, FIXTURES_DIR / name / f"{form}.onnx", opset)
        reference = export_onnx(deployed, FIXTURES_DIR / name / f"{form}_reference.onnx", opset)
        check_close(run_onnx(training, x), expected, f"{name}/{form}")
        reference_out = run_onnx(reference, x)
        check_close(reference_out, expected, f"{name}/{form}_reference")
        check_close(run_onnx(training, x), reference_out, f"{name}/{form} vs its reference")
        forms[form] = file_entry(training, opset, False) | {
            "reference": f"{form}_reference",
            "deploy_op_counts": onnx_files.op_counts(onnx.load(reference)),
        }
        forms[f"{form}_reference"] = file_entry(reference, opset, True)
    sample = onnx.load(FIXTURES_DIR / name / f"{next(iter(family_forms))}.onnx").graph
    reference_form = f"{list(family_forms)[-1]}_reference"
    return {
        "description": DESCRIPTIONS[name],
        "input": {"name": sample.input[0].name, "shape": list(INPUT_SHAPE)},
        "output": {"name": sample.output[0].name, "shape": list(expected.shape)},
        "training_forms": list(family_forms),
        "reference_form": reference_form,
        "reference_op_counts": forms[reference_form]["op_counts"],
        "notes": NOTES[name],
        "forms": forms,
    }


def manifest(families: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_by": "python -m models.paddle_export",
        "file_paths_relative_to": "models/fixtures/paddle/",
        "versions": {
            "paddlepaddle": paddle.__version__,
            "paddle2onnx": paddle2onnx.__version__,
            "onnx": onnx.__version__,
            "polygraphy": version("polygraphy"),
        },
        "seed": SEED,
        "check": {"input_seed": CHECK_INPUT_SEED, "relative_tolerance": RELATIVE_TOLERANCE},
        "field_meanings": {
            "reference_op_counts": "op counts of the reference form (the Paddle net after its "
            "re_parameterize(), exported like the last training form)",
            "deploy_op_counts": "per training form: op counts of its reference (the "
            "re-parameterized net exported with that form's settings), the fusion target",
        },
        "families": families,
    }


def main() -> None:
    families = {name: export_family(name) for name in paddle_blocks.BUILDERS}
    path = FIXTURES_DIR / "manifest.json"
    path.write_text(json.dumps(manifest(families), indent=1, ensure_ascii=False) + "\n")
    for name, family in families.items():
        sizes = ", ".join(f"{f} {e['bytes']} B" for f, e in family["forms"].items())
        print(f"{name}: {sizes}")


if __name__ == "__main__":
    main()
