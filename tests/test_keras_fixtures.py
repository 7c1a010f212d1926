"""The Keras fixtures (models/fixtures/keras, written by ``python -m models.keras_export``).

Without TensorFlow: every family in the manifest has every form on disk and nothing else is
there, each file matches its manifest entry (hash, op counts, opset, input and output), each
training form's ``deploy_op_counts`` are its own reference's op counts, every training form
computes the same function as its reference in onnxruntime (graph optimizations off, several
random inputs), and the numpy placement of a branch under TF ``SAME`` padding is the one
worked out in :mod:`models.keras_reparam`. The fusion tool itself is not exercised here.

With TensorFlow and tf2onnx (skipped otherwise): each committed file computes what the Keras
model rebuilt from ``models/`` computes, and, with the manifest's versions, one form per family
exported again is byte for byte the committed file.
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest

from family_manifests import (
    FIXTURES,
    MANIFESTS,
    assert_close_to_scale,
    case_id,
    form_cases,
    load_checked_entry,
    unlisted_files,
)
from helpers import random_feeds, repository_module, run

KERAS_DIR = FIXTURES / "keras"
MANIFEST = MANIFESTS[KERAS_DIR]
FAMILIES: dict[str, Any] = MANIFEST["families"]
SUFFIX = "_reference"
INPUT_SEEDS = (1, 2, 3)
MAX_FILE_BYTES = 60_000
MAX_TOTAL_BYTES = 600_000

FORM_CASES = form_cases(FAMILIES)
TRAINING_CASES = form_cases(FAMILIES, "training_forms")
NEGATIVE = "keras_relu_in_branch"


def load(name: str, form: str) -> onnx.ModelProto:
    return onnx.load(KERAS_DIR / FAMILIES[name]["forms"][form]["file"])


def test_manifest_lists_the_four_families():
    assert set(FAMILIES) == {
        "keras_repvgg",
        "keras_acnet",
        "keras_mobileone",
        "keras_relu_in_branch",
    }
    assert MANIFEST["generated_by"] == "python -m models.keras_export"
    assert {"tensorflow", "tf2onnx", "onnx"} <= set(MANIFEST["versions"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_has_each_training_form_and_its_reference(name):
    family = FAMILIES[name]
    training = family["training_forms"]
    assert set(family["forms"]) == {*training, *(form + SUFFIX for form in training)}
    assert family["reference_form"] == training[0] + SUFFIX
    assert family["reference_op_counts"] == family["forms"][family["reference_form"]]["op_counts"]
    for form in training:
        entry = family["forms"][form]
        assert entry["deploy_op_counts"] == family["forms"][form + SUFFIX]["op_counts"]


def test_every_export_axis_is_covered_twice():
    """Opsets 13 and 17, NHWC and NCHW, Keras 3 and Keras 2 BN: each in at least two forms."""
    training = [FAMILIES[name]["forms"][form] for name, form in TRAINING_CASES]
    for field, values in {"opset": (13, 17), "layout": ("NHWC", "NCHW"), "keras": (2, 3)}.items():
        seen = Counter(entry[field] for entry in training)
        assert all(seen[value] >= 2 for value in values), (field, seen)
    assert any(entry["dynamic_batch"] for entry in training)


def test_no_file_outside_the_manifest():
    assert unlisted_files(KERAS_DIR, FAMILIES) == set()


def test_fixtures_stay_small():
    sizes = [path.stat().st_size for path in KERAS_DIR.rglob("*.onnx")]
    assert max(sizes) < MAX_FILE_BYTES and sum(sizes) < MAX_TOTAL_BYTES


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_file_matches_its_manifest_entry(case):
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    model = load_checked_entry(KERAS_DIR, entry)
    assert entry["exporter"] == "tf2onnx" and model.producer_name == "tf2onnx"
    assert entry["reparameterized"] is form.endswith(SUFFIX)
    assert entry["inputs_as_nchw"] is (entry["layout"] == "NCHW")


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_file_has_the_manifest_input_and_output(case):
    """Names ``input``/``output``; NHWC shapes as the family's, NCHW ones their transposes."""
    name, form = case
    family, entry = FAMILIES[name], FAMILIES[name]["forms"][form]
    model = load(name, form)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    assert [value.name for value in inputs] == [family["input"]["name"]]
    assert [value.name for value in model.graph.output] == [family["output"]["name"]]
    to_layout = [0, 3, 1, 2] if entry["layout"] == "NCHW" else [0, 1, 2, 3]
    for key, shape_key in (("input", "input_shape"), ("output", "output_shape")):
        expected = [family[key]["shape"][axis] for axis in to_layout]
        actual = entry[shape_key]
        if entry["dynamic_batch"]:
            assert isinstance(actual[0], str)
            actual = [1, *actual[1:]]
        assert actual == expected, (key, form)
    (output,) = run(model, random_feeds(model, batch=1))
    assert list(output.shape) == [family["output"]["shape"][axis] for axis in to_layout]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_training_form_computes_its_reference(case):
    name, form = case
    training = load(name, form)
    reference = load(name, form + SUFFIX)
    for seed in INPUT_SEEDS:
        feeds = random_feeds(reference, seed=seed)
        (expected,) = run(reference, feeds)
        (actual,) = run(training, feeds)
        assert_close_to_scale(actual, expected, f"{name}/{form}, input seed {seed}")


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_fusion_leaves_fewer_ops(case):
    """The reference has fewer nodes than the training form, except in the negative family,
    whose training forms already are their references (tf2onnx folds each BN into its conv)."""
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    if name == NEGATIVE:
        assert entry["deploy_op_counts"] == entry["op_counts"]
        assert entry["op_counts"]["Add"] == 1
    else:
        assert sum(entry["deploy_op_counts"].values()) < sum(entry["op_counts"].values())
        assert "Add" not in entry["deploy_op_counts"]


# ---- numpy only: the placement the references are built with -----------------------------------


@pytest.fixture(scope="module")
def keras_reparam() -> ModuleType:
    return repository_module("models.keras_reparam")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "begin"),
    [(16, 3, 1, 1), (16, 1, 1, 0), (16, 3, 2, 0), (15, 3, 2, 1), (16, 1, 2, 0), (8, 5, 2, 1)],
)
def test_same_begin_pad_is_tensorflows(keras_reparam, size, kernel, stride, begin):
    assert keras_reparam.same_begin_pad(size, kernel, stride) == begin


@pytest.mark.parametrize(
    ("size", "stride", "tap"), [(16, 2, (0, 0)), (15, 2, (1, 1)), (16, 1, (1, 1))]
)
def test_a_1x1_lands_on_the_3x3_tap_tf_same_reads(keras_reparam, size, stride, tap):
    """Stride 2: the top-left tap on an even input, the centre on an odd one; stride 1: the
    centre."""
    one = (np.ones((1, 1, 2, 2)), np.zeros(2))
    three = (np.zeros((3, 3, 2, 2)), np.zeros(2))
    kernel, _ = keras_reparam.merge([three, one], stride, (size, size))
    assert [tuple(t) for t in np.argwhere(kernel[:, :, 0, 0] != 0)] == [tap]


def test_a_branch_off_the_grid_is_refused(keras_reparam):
    """A 3x3 under a 1x1 main kernel does not fit: no silent truncation."""
    with pytest.raises(keras_reparam.PlacementError):
        keras_reparam.place(np.ones((3, 3, 1, 1)), (1, 1), (0, 0))


# ---- TensorFlow: rebuild the Keras models from models/ -----------------------------------------


@pytest.fixture(scope="module")
def keras_export() -> ModuleType:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    pytest.importorskip("tf2onnx")
    return repository_module("models.keras_export")


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_committed_file_computes_the_rebuilt_keras_model(keras_export, case):
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    blocks = keras_export.keras_blocks
    model = blocks.build_keras(blocks.build(name), entry["keras"])
    path = KERAS_DIR / entry["file"]
    for seed in INPUT_SEEDS:
        x = keras_export.random_input(seed=seed)
        expected = model.predict(x, verbose=0)
        actual = keras_export.run_onnx(path, x, entry["layout"] == "NCHW")
        assert_close_to_scale(actual, expected, f"{name}/{form}, input seed {seed}")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_reexport_gives_the_committed_files(keras_export, name, tmp_path):
    """Same versions as the manifest: the first form and its reference, exported again, are
    the committed files (the export is reproducible): byte for byte, or, where TensorFlow's
    constant folding of a weight rounds differently on another CPU (its kernels vectorize by
    the instruction set: one ulp on a merged ACNet kernel between two Xeons), the same file
    but for floating weights within a few units in the last place."""
    if keras_export.versions() != MANIFEST["versions"]:
        pytest.skip(f"fixtures written with {MANIFEST['versions']}")
    form = FAMILIES[name]["training_forms"][0]
    entries = keras_export.export_form(name, form, tmp_path)
    for stem, entry in entries.items():
        committed = FAMILIES[name]["forms"][stem]
        if entry["sha256"] != committed["sha256"]:
            _assert_same_but_weight_rounding(
                onnx.load(tmp_path / name / f"{stem}.onnx"),
                onnx.load(KERAS_DIR / committed["file"]),
            )


#: How far a re-exported floating weight may be from the committed one, in units in the last
#: place of the tensor's largest magnitude (a BatchNormalization's ``β − μ·γ/σ`` cancels, and
#: keeps the absolute error of its terms).
_WEIGHT_ULPS = 4


def _assert_same_but_weight_rounding(exported: onnx.ModelProto, committed: onnx.ModelProto) -> None:
    """The two models are the same, byte for byte, once their initializers' values are set
    aside; each floating initializer within :data:`_WEIGHT_ULPS` of its scale, every other one
    equal."""
    from onnx import numpy_helper

    pairs = list(zip(exported.graph.initializer, committed.graph.initializer, strict=True))
    for ours, theirs in pairs:
        a, b = numpy_helper.to_array(ours), numpy_helper.to_array(theirs)
        assert (ours.name, a.dtype, a.shape) == (theirs.name, b.dtype, b.shape), ours.name
        if a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=ours.name)
            continue
        largest = a.dtype.type(max(np.abs(a).max(initial=0), np.abs(b).max(initial=0)))
        assert np.all(np.abs(a - b) <= _WEIGHT_ULPS * np.spacing(largest)), ours.name
    for model in (exported, committed):
        for tensor in model.graph.initializer:
            tensor.ClearField("raw_data")
    assert exported.SerializeToString() == committed.SerializeToString()
