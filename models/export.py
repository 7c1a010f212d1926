"""Export the networks of :mod:`models.blocks` to ONNX in every form the tool must accept.

Run ``python -m models.export`` from the repository root to regenerate ``models/fixtures/``
(every tiny net in every form of :data:`FORMS`, plus ``manifest.json``) and ``models/samples/``.
Each file is checked with onnxruntime against the eval-mode PyTorch training form on a fixed
random input; a relative error ``max|onnx - torch| / max|torch|`` above
:data:`RELATIVE_TOLERANCE` raises :class:`ExportMismatchError`.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from models import blocks, onnx_files
from models.onnx_files import file_summary

SEED = 0
"""Seed of :func:`models.blocks.randomize_batchnorm_` for every exported model."""

CHECK_INPUT_SEED = 1234
"""Seed of the random input the exported files are checked on."""

RELATIVE_TOLERANCE = 1e-4
"""Largest accepted ``max|onnx - torch| / max|torch|``."""

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"

DYNAMO_STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
"""Node metadata the dynamo exporter fills with absolute source paths; removed for determinism."""

MODELS_DIR = Path(__file__).resolve().parent

SAMPLE_NAME = "repvgg_a0_half"
SAMPLE_INPUT_SHAPE = (1, 3, 224, 224)
SAMPLE_WIDTHS = (0.375, 0.375, 0.375, 1.25)
SAMPLE_NUM_CLASSES = 10
"""10, not 100: with 100 classes the training-form file is 8.2 MB, over the 8 MB budget."""
SAMPLE_WEIGHT_GAIN = 0.5
"""Conv weight gain of the 22-block sample: keeps its activations O(1)-O(10) (gain 1: ~1e3)."""

SAMPLE_MAX_BYTES = 8_000_000


@dataclass(frozen=True)
class ExportForm:
    """How one ONNX form is produced from an eval-mode model."""

    opset: int
    dynamo: bool = False
    constant_folding: bool = True
    dynamic_batch: bool = False
    reparameterize: bool = False
    functions: bool = False
    """Export the block modules as ONNX local functions (TorchScript's
    ``export_modules_as_functions``; the caller names the block classes)."""

    def settings(self, function_modules: Sequence[type] = ()) -> dict[str, Any]:
        """The settings as a JSON-ready dict (``function_modules``: for a functions form)."""
        settings: dict[str, Any] = {
            "exporter": "dynamo" if self.dynamo else "torchscript",
            "opset": self.opset,
            "do_constant_folding": self.constant_folding,
            "dynamic_batch": self.dynamic_batch,
            "pytorch_reparameterized": self.reparameterize,
        }
        if self.functions:
            settings["modules_as_functions"] = sorted(m.__name__ for m in function_modules)
        return settings


FORMS: dict[str, ExportForm] = {
    "ts11": ExportForm(opset=11),
    "ts13": ExportForm(opset=13),
    "ts17": ExportForm(opset=17),
    "ts17_nofold": ExportForm(opset=17, constant_folding=False),
    "ts17_dynbatch": ExportForm(opset=17, dynamic_batch=True),
    "ts17_functions": ExportForm(opset=17, functions=True),
    "dynamo18": ExportForm(opset=18, dynamo=True),
    "reference": ExportForm(opset=17, reparameterize=True),
}
"""Every export form, by fixture file stem."""


class ExportMismatchError(RuntimeError):
    """An exported file does not compute what the PyTorch training form computes."""


class FixtureSizeError(RuntimeError):
    """An exported file is larger than its budget in the repository."""


def random_input(shape: Sequence[int], seed: int = CHECK_INPUT_SEED) -> torch.Tensor:
    """A standard-normal float32 tensor of ``shape``, determined by ``seed``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def export_onnx(
    model: nn.Module,
    path: Path,
    form: str,
    input_shape: Sequence[int] = blocks.TINY_INPUT_SHAPE,
    *,
    dynamic_batch: bool | None = None,
    function_modules: Sequence[type] = (),
) -> Path:
    """Write ``model`` (left unchanged) to ``path`` as ONNX ``form``, input ``input`` / ``output``.

    ``dynamic_batch`` overrides the form's choice of a symbolic dim 0 (``"batch"``) on the input
    and output (TorchScript forms only). ``function_modules``: the module classes a functions
    form writes as ONNX local functions (required there, refused elsewhere). The file is
    self-contained (no external data).
    """
    spec = FORMS[form]
    use_dynamic_batch = spec.dynamic_batch if dynamic_batch is None else dynamic_batch
    if spec.dynamo and use_dynamic_batch:
        raise ValueError(f"form {form!r}: a dynamic batch is only implemented for TorchScript")
    if spec.functions != bool(function_modules):
        raise ValueError(f"form {form!r}: function_modules is required iff it is a functions form")
    export_model = copy.deepcopy(model).eval()
    if spec.reparameterize:
        blocks.reparameterize_blocks_(export_model)
    example = (random_input(input_shape, seed=SEED),)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if spec.dynamo:
            _export_dynamo(export_model, example, path, spec.opset)
        else:
            _export_torchscript(
                export_model, example, path, spec, use_dynamic_batch, function_modules
            )
    onnx.checker.check_model(onnx.load(path), full_check=True)
    return path


def _export_torchscript(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    spec: ExportForm,
    dynamic_batch: bool,
    function_modules: Sequence[type] = (),
) -> None:
    functions = {"export_modules_as_functions": set(function_modules)} if function_modules else {}
    batch_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            opset_version=spec.opset,
            do_constant_folding=spec.constant_folding,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=batch_axes if dynamic_batch else None,
            **functions,
        )
    if function_modules:
        name_the_output_(path)


def name_the_output_(path: Path) -> None:
    """Give the graph output the name :data:`OUTPUT_NAME`: with ``export_modules_as_functions``,
    TorchScript ignores ``output_names`` when a function call writes the output (torch 2.13)."""
    model = onnx.load(path)
    (output,) = model.graph.output
    old = output.name
    if old == OUTPUT_NAME:
        return
    for node in model.graph.node:
        for names in (node.input, node.output):
            for index, name in enumerate(names):
                if name == old:
                    names[index] = OUTPUT_NAME
    output.name = OUTPUT_NAME
    onnx.save(model, path)


def _export_dynamo(
    model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int
) -> None:
    program = torch.onnx.export(
        model,
        example,
        dynamo=True,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        external_data=False,
        verbose=False,
    )
    assert program is not None
    proto = program.model_proto
    strip_stack_traces_(proto)
    onnx.save(proto, path)


def strip_stack_traces_(model: onnx.ModelProto) -> None:
    """Remove :data:`DYNAMO_STACK_TRACE_KEY` from each node's ``metadata_props``, keep the rest."""
    for node in model.graph.node:
        kept = [prop for prop in node.metadata_props if prop.key != DYNAMO_STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    """The first output of ``path`` run by onnxruntime (CPU) on ``x`` as ``input``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max|expected|``; raises on a shape mismatch."""
    if actual.shape != expected.shape:
        raise ExportMismatchError(f"shape {actual.shape} != expected {expected.shape}")
    scale = float(np.abs(expected).max())
    return float(np.abs(actual - expected).max()) / max(scale, np.finfo(np.float32).tiny)


def check_close(what: str, actual: np.ndarray, expected: np.ndarray) -> float:
    """Return :func:`relative_error`, or raise :class:`ExportMismatchError` above tolerance."""
    error = relative_error(actual, expected)
    if not error <= RELATIVE_TOLERANCE:
        raise ExportMismatchError(f"{what}: relative error {error:.3g} > {RELATIVE_TOLERANCE}")
    return error


def check_export(
    path: Path, model: nn.Module, input_shape: Sequence[int], batch_sizes: Sequence[int]
) -> float:
    """Check ``path`` against eval-mode ``model`` at each batch size; return the worst error."""
    eval_model = copy.deepcopy(model).eval()
    errors = []
    for batch in batch_sizes:
        x = random_input((batch, *input_shape[1:]))
        with torch.no_grad():
            expected = eval_model(x).numpy()
        errors.append(check_close(f"{path} (batch {batch})", run_onnx(path, x), expected))
    return max(errors)


def check_pytorch_reference(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Check that the PyTorch re-parameterized copy of ``model`` equals its training form."""
    training_form = copy.deepcopy(model).eval()
    deploy_form = blocks.reparameterize_blocks_(copy.deepcopy(training_form))
    x = random_input(input_shape)
    with torch.no_grad():
        expected = training_form(x).numpy()
        actual = deploy_form(x).numpy()
    return check_close(f"{type(model).__name__} PyTorch reference", actual, expected)


def op_counts(path: Path) -> dict[str, int]:
    """``{op_type: count}`` of the main graph's nodes of the file ``path``, sorted by op type."""
    return onnx_files.op_counts(onnx.load(path))


def block_summary(model: nn.Module) -> dict[str, int]:
    """How many blocks of each kind ``model`` has: what a correct tool fuses (or must not)."""
    repvgg = [m for m in model.modules() if isinstance(m, blocks.RepVGGBlock)]
    return {
        "repvgg_blocks": len(repvgg),
        "with_identity_branch": sum(block.rbr_identity is not None for block in repvgg),
        "grouped": sum(block.groups > 1 for block in repvgg),
        "with_se": sum(isinstance(block.se, blocks.SEBlock) for block in repvgg),
        "relu_in_branch_blocks": sum(
            isinstance(m, blocks.ReluInBranchBlock) for m in model.modules()
        ),
        "batchnorms": sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
        "batchnorms_with_eps_1e-3": sum(
            isinstance(m, nn.BatchNorm2d) and m.eps == blocks.LARGE_EPS for m in model.modules()
        ),
    }


TINY_FUNCTION_MODULES: dict[str, tuple[type, ...]] = {
    "tiny_block": (blocks.RepVGGBlock,),
    "tiny_relu_in_branch": (blocks.ReluInBranchBlock,),
}
"""The tiny nets also written in the ``ts17_functions`` form, with the blocks as functions (the
others are left out for size)."""


def export_tiny_model(name: str, build: Callable[[], nn.Module], root: Path) -> dict[str, Any]:
    """Export and check every form of one tiny net into ``root/fixtures/name``; return its entry.

    A functions form is written only for the nets of :data:`TINY_FUNCTION_MODULES`."""
    model = blocks.randomize_batchnorm_(build(), SEED).eval()
    input_shape = blocks.TINY_INPUT_SHAPE
    pytorch_error = check_pytorch_reference(model, input_shape)
    modules = TINY_FUNCTION_MODULES.get(name, ())
    forms = {}
    for form, spec in FORMS.items():
        if spec.functions and not modules:
            continue
        path = export_onnx(
            model,
            root / "fixtures" / name / f"{form}.onnx",
            form,
            input_shape,
            function_modules=modules if spec.functions else (),
        )
        batch_sizes = (1, 2) if spec.dynamic_batch else (1,)
        error = check_export(path, model, input_shape, batch_sizes)
        print(f"  {name}/{form}: relative error {error:.2e}")
        forms[form] = {**spec.settings(modules), **file_summary(path, root)}
    print(f"  {name}: PyTorch reference relative error {pytorch_error:.2e}")
    return {
        "description": (build.__doc__ or "").strip(),
        "input": {"name": INPUT_NAME, "shape": list(input_shape)},
        "output": {"name": OUTPUT_NAME, "shape": list(_output_shape(model, input_shape))},
        "blocks": block_summary(model),
        "forms": forms,
    }


def _output_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model(random_input(input_shape)).shape)


def build_sample() -> blocks.RepVGG:
    """RepVGG-A0 with halved widths, :data:`SAMPLE_NUM_CLASSES` classes, randomized statistics."""
    model = blocks.repvgg_a0(width_multiplier=list(SAMPLE_WIDTHS), num_classes=SAMPLE_NUM_CLASSES)
    return blocks.randomize_batchnorm_(model, SEED, weight_gain=SAMPLE_WEIGHT_GAIN).eval()


def export_samples(root: Path) -> dict[str, Any]:
    """Export and check the README sample into ``root/samples``; return its manifest entry.

    The training file is the ``ts17_nofold`` form, the deploy file the ``reference`` form, both
    with a dynamic batch.
    """
    model = build_sample()
    check_pytorch_reference(model, SAMPLE_INPUT_SHAPE)
    files = {
        "training": (f"{SAMPLE_NAME}.onnx", "ts17_nofold"),
        "deploy": (f"{SAMPLE_NAME}.deploy.onnx", "reference"),
    }
    summary: dict[str, Any] = {
        "input": {"name": INPUT_NAME, "shape": [BATCH_DIM, *SAMPLE_INPUT_SHAPE[1:]]},
        "blocks": block_summary(model),
    }
    for role, (file_name, form) in files.items():
        path = root / "samples" / file_name
        export_onnx(model, path, form, SAMPLE_INPUT_SHAPE, dynamic_batch=True)
        error = check_export(path, model, SAMPLE_INPUT_SHAPE, batch_sizes=(1, 2))
        if path.stat().st_size > SAMPLE_MAX_BYTES:
            raise FixtureSizeError(f"{path} is larger than {SAMPLE_MAX_BYTES} bytes")
        print(f"  {path.name}: relative error {error:.2e}, {path.stat().st_size} bytes")
        summary[role] = {
            **FORMS[form].settings(),
            "dynamic_batch": True,
            **file_summary(path, root),
        }
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Regenerate ``<root>/fixtures`` (with ``manifest.json``) and ``<root>/samples``."""
    parser = argparse.ArgumentParser(prog="python -m models.export", description=__doc__)
    parser.add_argument("--root", type=Path, default=MODELS_DIR, help="default: models/")
    args = parser.parse_args(argv)
    root: Path = args.root
    print(f"fixtures -> {root / 'fixtures'}")
    manifest: dict[str, Any] = {
        "generated_by": "python -m models.export",
        "file_paths_relative_to": "models/",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "seed": SEED,
        "check": {"input_seed": CHECK_INPUT_SEED, "relative_tolerance": RELATIVE_TOLERANCE},
        "models": {
            name: export_tiny_model(name, build, root) for name, build in blocks.TINY_MODELS.items()
        },
    }
    print(f"samples -> {root / 'samples'}")
    manifest["samples"] = {SAMPLE_NAME: export_samples(root)}
    manifest_path = root / "fixtures" / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    fixture_bytes = sum(path.stat().st_size for path in (root / "fixtures").rglob("*"))
    print(f"wrote {manifest_path}; fixtures total {fixture_bytes} bytes")


if __name__ == "__main__":
    main()
