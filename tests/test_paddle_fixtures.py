"""The Paddle fixtures (models/fixtures/paddle, written by ``python -m models.paddle_export``).

Without Paddle: every family in the manifest has every form on disk and nothing else is there,
each file matches its manifest entry (hash, op counts, opset, input and output), and every
training form computes the same function as its reference (the net after Paddle's own
``re_parameterize()``) in onnxruntime. The fusion tool itself is not exercised here.

With Paddle (skipped otherwise; paddle2onnx is not needed): each net is rebuilt from
``models/paddle_blocks.py``, its ``re_parameterize()`` keeps its function, and the committed files
compute what the rebuilt net computes on the manifest's check input (so they are up to date).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import onnx
import pytest

from family_manifests import folder_bytes, form_cases, load_checked_entry, unlisted_files
from helpers import REPO_ROOT, random_feeds, repository_module, run

PADDLE_DIR = REPO_ROOT / "models" / "fixtures" / "paddle"
MANIFEST = json.loads((PADDLE_DIR / "manifest.json").read_text())
FAMILIES: dict[str, Any] = MANIFEST["families"]
TRAINING_FORMS = {"opset11", "opset17"}
#: paddle2onnx writes slice assignment (``set_value``) only from opset 17 on.
FAMILY_TRAINING_FORMS = {"paddle_dbb_assign": {"opset17"}}
INPUT_SEEDS = (1, 2, 3)
RTOL = 1e-4
MAX_TOTAL_BYTES = 300_000

FORM_CASES = form_cases(FAMILIES)
TRAINING_CASES = form_cases(FAMILIES, "training_forms")


def case_id(case: tuple[str, str]) -> str:
    return "-".join(case)


def load(name: str, form: str) -> onnx.ModelProto:
    return onnx.load(PADDLE_DIR / FAMILIES[name]["forms"][form]["file"])


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """``|actual − expected| ≤ RTOL·max|expected|`` everywhere, shapes equal."""
    assert actual.shape == expected.shape, what
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL * scale, err_msg=what)


def test_manifest_lists_the_four_families():
    assert set(FAMILIES) == {"paddle_repvgg", "paddle_lcnetv2", "paddle_dbb", "paddle_dbb_assign"}
    assert set(MANIFEST["versions"]) >= {"paddlepaddle", "paddle2onnx", "onnx"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_has_every_form(name):
    family = FAMILIES[name]
    training_forms = FAMILY_TRAINING_FORMS.get(name, TRAINING_FORMS)
    references = {f"{form}_reference" for form in training_forms}
    assert set(family["forms"]) == training_forms | references
    assert set(family["training_forms"]) == training_forms
    assert family["reference_form"] in references
    for form in family["training_forms"]:
        entry = family["forms"][form]
        reference = family["forms"][entry["reference"]]
        assert entry["deploy_op_counts"] == reference["op_counts"]
        assert reference["opset"] == entry["opset"]
    for entry in family["forms"].values():
        assert (PADDLE_DIR / entry["file"]).is_file()


def test_no_file_outside_the_manifest():
    assert unlisted_files(PADDLE_DIR, FAMILIES) == set()


def test_fixtures_stay_small():
    assert folder_bytes(PADDLE_DIR) < MAX_TOTAL_BYTES


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_file_matches_its_manifest_entry(case):
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    load_checked_entry(PADDLE_DIR, entry)
    assert entry["exporter"] == "paddle2onnx"
    assert entry["dynamic_batch"] is False
    assert entry["reparameterized"] is form.endswith("_reference")


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_file_has_the_manifest_input_and_output(case):
    name, form = case
    family = FAMILIES[name]
    model = load(name, form)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    assert [value.name for value in inputs] == [family["input"]["name"]]
    assert [value.name for value in model.graph.output] == [family["output"]["name"]]
    shape = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    assert shape == family["input"]["shape"]
    (output,) = run(model, random_feeds(model, batch=1))
    assert list(output.shape) == family["output"]["shape"]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_training_form_computes_its_reference(case):
    name, form = case
    training = load(name, form)
    reference = load(name, FAMILIES[name]["forms"][form]["reference"])
    for seed in INPUT_SEEDS:
        feeds = random_feeds(reference, seed=seed, batch=1)
        (expected,) = run(reference, feeds)
        (actual,) = run(training, feeds)
        assert_close_to_scale(actual, expected, f"{name}/{form}, input seed {seed}")


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_reference_has_fewer_ops_and_no_batchnorm(case):
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    assert sum(entry["deploy_op_counts"].values()) < sum(entry["op_counts"].values())
    assert "BatchNormalization" not in entry["deploy_op_counts"]


def test_dbb_border_is_built_with_concat_not_pad():
    """The case of issue 15: paddle2onnx writes the BN-then-pad border as Concat."""
    for form in TRAINING_FORMS:
        counts = FAMILIES["paddle_dbb"]["forms"][form]["op_counts"]
        assert counts["Concat"] == 4
        assert "Pad" not in counts and "ScatterND" not in counts


def test_dbb_slice_assignment_is_pad_and_scatter_elements():
    counts = FAMILIES["paddle_dbb_assign"]["forms"]["opset17"]["op_counts"]
    assert counts["ScatterElements"] == 8
    assert counts["Pad"] == 2
    assert "Concat" not in counts


# ---- paddle-only: rebuild the nets from models/ ------------------------------------------------


@pytest.fixture(scope="module")
def paddle_blocks():
    pytest.importorskip("paddle")
    return repository_module("models.paddle_blocks")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_committed_files_compute_the_rebuilt_net(paddle_blocks, name):
    import paddle

    family = FAMILIES[name]
    model = paddle_blocks.build(name, MANIFEST["seed"])
    deployed = copy.deepcopy(model)
    deployed.re_parameterize()
    rng = np.random.default_rng(MANIFEST["check"]["input_seed"])
    x = rng.normal(size=family["input"]["shape"]).astype(np.float32)
    expected = model(paddle.to_tensor(x)).numpy()
    assert_close_to_scale(deployed(paddle.to_tensor(x)).numpy(), expected, f"{name} deploy")
    for form in family["forms"]:
        (actual,) = run(load(name, form), {family["input"]["name"]: x})
        assert_close_to_scale(actual, expected, f"{name}/{form}")
