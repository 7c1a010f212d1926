"""Export the Keras families of :mod:`models.keras_blocks` with tf2onnx, and their references.

Run ``python -m models.keras_export`` from the repository root (with the ``keras-export`` extra:
tensorflow-cpu, tf-keras, tf2onnx) to regenerate ``models/fixtures/keras/<family>/<form>.onnx``
and ``models/fixtures/keras/manifest.json`` (the schema of ``models/fixtures/families``).

Each training form (:data:`FORMS`) is the Keras model wrapped in a ``tf.function`` and converted
by ``tf2onnx.convert.from_function``; its reference ``<form>_reference`` is the numpy deploy spec
(:func:`models.keras_reparam.deploy`) built as a Keras model of the same Keras version and
converted with the same settings. Every file is checked with onnxruntime against the Keras
training model's ``predict`` (relative error ``max|onnx − keras| / max|keras|`` ≤
:data:`RELATIVE_TOLERANCE`), the reference files included.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from models import keras_blocks, keras_reparam, onnx_files

CHECK_INPUT_SEED = 1234
RELATIVE_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "output"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "keras"
REFERENCE_SUFFIX = "_reference"
GENERATED_NAME = re.compile(r"^(?P<stem>.*)__(?P<number>\d+)(?P<port>:\d+)?$")
"""A name tf2onnx made (``utils.make_name``): ``Conv__393``, ``const_fold_opt__66``, ``unk__12``."""


class ExportMismatchError(RuntimeError):
    """An exported file does not compute what the Keras training model computes."""


@dataclass(frozen=True)
class TfForm:
    """How one ONNX form is produced from a Keras model with tf2onnx."""

    opset: int
    nchw: bool = False
    keras_major: int = 3
    dynamic_batch: bool = False

    def settings(self, reparameterized: bool) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return {
            "exporter": "tf2onnx",
            "opset": self.opset,
            "layout": "NCHW" if self.nchw else "NHWC",
            "inputs_as_nchw": self.nchw,
            "outputs_as_nchw": self.nchw,
            "keras": self.keras_major,
            "batchnorm": "fused (FusedBatchNormV3)" if self.keras_major == 2 else "Keras 3",
            "dynamic_batch": self.dynamic_batch,
            "reparameterized": reparameterized,
        }


FORMS: dict[str, TfForm] = {
    "tf13_nhwc": TfForm(opset=13),
    "tf13_nchw": TfForm(opset=13, nchw=True),
    "tf17_nhwc": TfForm(opset=17),
    "tf17_nchw": TfForm(opset=17, nchw=True),
    "tf17_nhwc_keras2": TfForm(opset=17, keras_major=2),
    "tf13_nchw_keras2": TfForm(opset=13, nchw=True, keras_major=2),
    "tf17_nchw_keras2": TfForm(opset=17, nchw=True, keras_major=2),
    "tf17_nhwc_dynbatch": TfForm(opset=17, dynamic_batch=True),
}
"""Every training form, by fixture file stem."""

FAMILY_FORMS: dict[str, tuple[str, ...]] = {
    "keras_repvgg": (
        "tf17_nhwc",
        "tf13_nhwc",
        "tf17_nchw",
        "tf17_nhwc_keras2",
        "tf13_nchw_keras2",
    ),
    "keras_acnet": ("tf17_nchw", "tf13_nhwc", "tf17_nhwc_keras2", "tf17_nchw_keras2"),
    "keras_mobileone": ("tf17_nhwc", "tf13_nchw", "tf17_nhwc_keras2", "tf17_nhwc_dynbatch"),
    "keras_relu_in_branch": ("tf13_nhwc", "tf17_nchw_keras2"),
}
"""The training forms of each family; the first one's reference is the family's reference."""

COMMON_NOTES = (
    "tf2onnx folds a BatchNormalization after a Conv2D into the Conv in every form (Keras 3: "
    "kernel '.../convolution/merged_input', bias '.../batchnorm/sub'; Keras 2: "
    "'..._weights_fused_bn', '..._bias_fused_bn').",
    "A BN of a block's input (the identity branch) is Mul + Add with Keras 3 and a "
    "BatchNormalization with Keras 2 (fused=True, FusedBatchNormV3).",
    "NHWC forms: one Transpose after the input and one before the output (tf2onnx's transpose "
    "optimizer removes the others); NCHW forms (inputs_as_nchw, outputs_as_nchw): none.",
    "Convs have explicit pads (TF SAME resolved on the static spatial size), never auto_pad.",
)
"""Notes of every family."""

NOTES: dict[str, tuple[str, ...]] = {
    "keras_repvgg": (
        "The stride-2 block (l2) on the 16x16 input: TF SAME pads the 3x3 by 0 before and 1 "
        "after (Conv pads 0,0,1,1) and the 1x1 by nothing; both outputs are 8x8 and the 1x1 "
        "reads the 3x3's top-left tap, where the reference places it.",
    ),
    "keras_mobileone": (
        "Keras 3: tf2onnx does not fold the BN after a DepthwiseConv2D: each depthwise branch "
        "is Conv(group=8) + Mul + Add. Keras 2: it folds it into the depthwise Conv.",
        "tf17_nhwc_dynbatch: the batch dim of the input and output is symbolic ('unk__*').",
    ),
    "keras_relu_in_branch": (
        "Negative case: tf2onnx folds every BN into its conv, so each training form already has "
        "its reference's ops; a tool must leave the Add (its first term reads a Relu).",
    ),
}
"""Per family: how tf2onnx wrote it, where that is not the obvious one op per layer."""


def random_input(batch: int = 1, seed: int = CHECK_INPUT_SEED) -> np.ndarray:
    """A standard-normal float32 NHWC input of the families' shape, batch ``batch``."""
    shape = (batch, *keras_blocks.INPUT_SHAPE[1:])
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def export_onnx(model: Any, path: Path, form: TfForm) -> Path:
    """Convert the Keras ``model`` to ``path`` with tf2onnx, input ``input``, output ``output``."""
    batch = None if form.dynamic_batch else 1
    spec = tf.TensorSpec((batch, *keras_blocks.INPUT_SHAPE[1:]), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def forward(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(x, training=False)}

    # tf2onnx numbers the nodes it makes from a process-wide counter: start each file afresh,
    # so a file's names do not depend on what was converted before it.
    tf2onnx.utils.INTERNAL_NAME = 1
    layout = {"inputs_as_nchw": [INPUT_NAME], "outputs_as_nchw": [OUTPUT_NAME]}
    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=[spec], opset=form.opset, **(layout if form.nchw else {})
    )
    make_reproducible_(proto)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, path)
    return path


def make_reproducible_(model: onnx.ModelProto) -> None:
    """Number the names tf2onnx made (:data:`GENERATED_NAME`) 1, 2, … by first appearance,
    order the initializers by first use, and drop the traced function's number from the graph's
    doc string (``converted from b'__inference_forward_795'``: TensorFlow's count of traces).

    tf2onnx numbers them from a counter whose count varies from run to run (its constant
    folding visits nodes in no fixed order, and lists the folded constants in that order);
    this makes the files reproducible and changes nothing else. Every generated name is
    renamed, so no new name meets an old one.
    """
    graph = model.graph
    graph.doc_string = re.sub(r"_\d+'$", "'", graph.doc_string)
    numbers: dict[str, int] = {}

    def renamed(name: str) -> str:
        match = GENERATED_NAME.match(name)
        if match is None:
            return name
        number = numbers.setdefault(f"{match['stem']}__{match['number']}", len(numbers) + 1)
        return f"{match['stem']}__{number}{match['port'] or ''}"

    for value in [*graph.input, *graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = renamed(dim.dim_param)
    for node in graph.node:
        node.name = renamed(node.name)
        node.input[:] = [renamed(name) for name in node.input]
        node.output[:] = [renamed(name) for name in node.output]
    for item in [*graph.initializer, *graph.value_info, *graph.input, *graph.output]:
        item.name = renamed(item.name)
    first_use = {}
    for index, name in enumerate(name for node in graph.node for name in node.input):
        first_use.setdefault(name, index)
    ordered = sorted(
        graph.initializer, key=lambda t: (first_use.get(t.name, len(first_use)), t.name)
    )
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def run_onnx(path: Path, x_nhwc: np.ndarray, nchw: bool) -> np.ndarray:
    """The output of ``path`` on ``x_nhwc`` (transposed in and out for an NCHW form), as NHWC."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = x_nhwc.transpose(0, 3, 1, 2) if nchw else x_nhwc
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: feed})
    return output.transpose(0, 2, 3, 1) if nchw else output


def check_close(what: str, actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual − expected| / max|expected|``; raises above :data:`RELATIVE_TOLERANCE`."""
    if actual.shape != expected.shape:
        raise ExportMismatchError(f"{what}: shape {actual.shape} != {expected.shape}")
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    if not error <= RELATIVE_TOLERANCE:
        raise ExportMismatchError(f"{what}: relative error {error:.3g} > {RELATIVE_TOLERANCE}")
    return error


def check_export(path: Path, model: Any, form: TfForm) -> float:
    """Check ``path`` against the Keras ``model`` (batch 1, and 2 when dynamic); worst error."""
    errors = []
    for batch in (1, 2) if form.dynamic_batch else (1,):
        x = random_input(batch)
        expected = model.predict(x, verbose=0)
        errors.append(
            check_close(f"{path} (batch {batch})", run_onnx(path, x, form.nchw), expected)
        )
    return max(errors)


def io_shape(value: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input's or output's shape, a symbolic dim by its name."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def file_summary(path: Path, root: Path) -> dict[str, Any]:
    """:func:`models.onnx_files.file_summary`, with the file's input and output shapes."""
    model = onnx.load(path)
    return {
        **onnx_files.file_summary(path, root),
        "input_shape": io_shape(model.graph.input[0]),
        "output_shape": io_shape(model.graph.output[0]),
    }


def export_form(name: str, form_name: str, root: Path) -> dict[str, dict[str, Any]]:
    """Export training form ``form_name`` of family ``name`` and its reference; their entries."""
    form = FORMS[form_name]
    net = keras_blocks.build(name)
    batch = None if form.dynamic_batch else 1
    training = keras_blocks.build_keras(net, form.keras_major, batch)
    deployed = keras_reparam.deploy(net, keras_blocks.INPUT_SHAPE[1:3])
    reference = keras_blocks.build_keras(deployed, form.keras_major, batch)
    x = random_input()
    keras_error = check_close(
        f"{name} numpy deploy form ({form_name})",
        reference.predict(x, verbose=0),
        training.predict(x, verbose=0),
    )
    entries = {}
    for stem, model, reparameterized in (
        (form_name, training, False),
        (form_name + REFERENCE_SUFFIX, reference, True),
    ):
        path = export_onnx(model, root / name / f"{stem}.onnx", form)
        error = check_export(path, training, form)
        print(f"  {name}/{stem}: relative error {error:.2e}")
        entries[stem] = {**form.settings(reparameterized), **file_summary(path, root)}
    entries[form_name]["deploy_op_counts"] = entries[form_name + REFERENCE_SUFFIX]["op_counts"]
    print(f"  {name} ({form_name}): Keras deploy model relative error {keras_error:.2e}")
    return entries


def export_family(name: str, root: Path) -> dict[str, Any]:
    """Export and check every form of family ``name`` into ``root/name``; return its entry."""
    forms: dict[str, Any] = {}
    for form_name in FAMILY_FORMS[name]:
        forms.update(export_form(name, form_name, root))
    reference_form = FAMILY_FORMS[name][0] + REFERENCE_SUFFIX
    output_shape = list(keras_blocks.build_keras(keras_blocks.build(name), 3).output.shape)
    return {
        "description": (keras_blocks.NETS[name].__doc__ or "").strip(),
        "input": {"name": INPUT_NAME, "shape": list(keras_blocks.INPUT_SHAPE)},
        "output": {"name": OUTPUT_NAME, "shape": output_shape},
        "training_forms": list(FAMILY_FORMS[name]),
        "reference_form": reference_form,
        "reference_op_counts": forms[reference_form]["op_counts"],
        "notes": [*COMMON_NOTES, *NOTES.get(name, ())],
        "forms": forms,
    }


def versions() -> dict[str, str]:
    """The versions of every package that shaped the files."""
    import keras
    import tf_keras

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Regenerate every Keras family's fixtures and ``manifest.json`` under ``--root``."""
    parser = argparse.ArgumentParser(prog="python -m models.keras_export", description=__doc__)
    parser.add_argument("--root", type=Path, default=FIXTURES_DIR, help="default: %(default)s")
    root: Path = parser.parse_args(argv).root
    manifest: dict[str, Any] = {
        "generated_by": "python -m models.keras_export",
        "file_paths_relative_to": "models/fixtures/keras/",
        "versions": versions(),
        "seed": keras_blocks.SEED,
        "check": {"input_seed": CHECK_INPUT_SEED, "relative_tolerance": RELATIVE_TOLERANCE},
        "field_meanings": {
            "input/output": "NHWC, the Keras model's; each form's input_shape/output_shape is "
            "the file's own (NCHW for the inputs_as_nchw forms, 'unk__*' for a dynamic batch)",
            "reference_op_counts": "op counts of the family's reference form",
            "deploy_op_counts": "per training form: op counts of its own <form>_reference file "
            "(the numpy deploy model converted with that form's settings), the fusion target",
        },
        "families": {name: export_family(name, root) for name in keras_blocks.NETS},
    }
    manifest_path = root / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    total = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    print(f"wrote {manifest_path}; keras fixtures total {total} bytes")


if __name__ == "__main__":
    main()
