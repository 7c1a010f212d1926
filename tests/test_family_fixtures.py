"""The family fixtures (models/fixtures/families, written by ``python -m models.families``).

Without torch: every family in the manifest has every form on disk and nothing else is there,
each file matches its manifest entry (hash, op counts, opset, input and output), and every
training form computes the same function as the family's reference in onnxruntime (graph
optimizations off, several random inputs). The fusion tool itself is not exercised here.

With torch (skipped otherwise): each net is rebuilt from ``models/``, its deploy form matches
it, the committed files compute what the rebuilt net computes (so they are up to date), and the
stride-2 DBB block, which has no committed fixture, deploys and exports exactly.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import onnx.inliner
import pytest

from family_manifests import (
    assert_close_to_scale,
    case_id,
    folder_bytes,
    form_cases,
    load_checked_entry,
    unlisted_files,
)
from helpers import random_feeds, run

REPO_ROOT = Path(__file__).resolve().parents[1]
FAMILIES_DIR = REPO_ROOT / "models" / "fixtures" / "families"
MANIFEST = json.loads((FAMILIES_DIR / "manifest.json").read_text())
FAMILIES: dict[str, Any] = MANIFEST["families"]
FORMS = {"ts13", "ts17", "ts17_nofold", "dynamo18", "reference"}
FUNCTIONS_FORM = "ts17_functions"
#: The families also exported with their blocks as ONNX local functions.
WITH_FUNCTIONS = {"mobileone", "repvit", "acnet", "repconv_silu", "fastvit_repmixer"}
INPUT_SEEDS = (1, 2, 3)
MAX_TOTAL_BYTES = 2_000_000

FORM_CASES = form_cases(FAMILIES)
TRAINING_CASES = form_cases(FAMILIES, "training_forms")


def load(name: str, form: str) -> onnx.ModelProto:
    return onnx.load(FAMILIES_DIR / FAMILIES[name]["forms"][form]["file"])


def test_manifest_lists_the_seventeen_families():
    assert set(FAMILIES) == {
        "mobileone",
        "repvit",
        "acnet",
        "repconv_silu",
        "replk",
        "dilated",
        "fastvit_repmixer",
        "fastvit_repcpe",
        "efficientvim_gate",
        "repghost",
        "dbb",
        "prebn",
        "prebn_padded",
        "bn_linear_head",
        "distill_head",
        "levit_linearnorm",
        "yolo_implicit",
    }


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_has_every_form(name):
    family = FAMILIES[name]
    forms = FORMS | ({FUNCTIONS_FORM} if name in WITH_FUNCTIONS else set())
    assert set(family["forms"]) == forms
    assert set(family["training_forms"]) == forms - {"reference"}
    assert family["reference_form"] == "reference"
    for entry in family["forms"].values():
        assert (FAMILIES_DIR / entry["file"]).is_file()


def test_no_file_outside_the_manifest():
    assert unlisted_files(FAMILIES_DIR, FAMILIES) == set()


def test_fixtures_stay_small():
    assert folder_bytes(FAMILIES_DIR) < MAX_TOTAL_BYTES


@pytest.mark.parametrize("case", FORM_CASES, ids=case_id)
def test_file_matches_its_manifest_entry(case):
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    model = load_checked_entry(FAMILIES_DIR, entry)
    assert entry["dynamic_batch"] is False
    assert entry["pytorch_reparameterized"] is (form == "reference")
    # TorchScript names a second body of one class "Class.1"
    functions = {f.name.split(".")[0] for f in model.functions}
    assert functions == set(entry.get("modules_as_functions", []))
    assert bool(functions) is (form == FUNCTIONS_FORM)


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
    (output,) = run(model, random_feeds(model))
    assert list(output.shape) == family["output"]["shape"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_reference_op_counts_are_the_reference_files(name):
    family = FAMILIES[name]
    assert family["reference_op_counts"] == family["forms"]["reference"]["op_counts"]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_training_form_computes_the_reference(case):
    name, form = case
    training = load(name, form)
    reference = load(name, "reference")
    for seed in INPUT_SEEDS:
        feeds = random_feeds(reference, seed=seed)
        (expected,) = run(reference, feeds)
        (actual,) = run(training, feeds)
        assert_close_to_scale(actual, expected, f"{name}/{form}, input seed {seed}")


@pytest.mark.parametrize("case", TRAINING_CASES, ids=case_id)
def test_fusion_leaves_fewer_ops(case):
    """The deploy form has fewer nodes than the training form (its functions inlined): there is
    something to fuse."""
    name, form = case
    entry = FAMILIES[name]["forms"][form]
    inlined = onnx.inliner.inline_local_functions(load(name, form))
    deployed, training = sum(entry["deploy_op_counts"].values()), len(inlined.graph.node)
    if name == "prebn_padded":
        assert entry["deploy_op_counts"] == entry["op_counts"]
    else:
        assert deployed < training


def test_prebn_padded_reference_keeps_its_batchnorms():
    """The negative case: a BN before a padded conv cannot be folded, so the reference keeps it."""
    family = FAMILIES["prebn_padded"]
    assert family["reference_op_counts"] == family["forms"]["ts17"]["op_counts"]
    assert family["reference_op_counts"]["BatchNormalization"] == 2


# ---- torch-only: rebuild the nets from models/ -------------------------------------------------


@pytest.fixture(scope="module")
def families() -> ModuleType:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("models.families")


def torch_inputs(shape: list[int]) -> list[Any]:
    import torch

    return [
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) for seed in INPUT_SEEDS
    ]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_deploy_form_matches_the_training_net(families, name):
    import torch

    model = families.build(name)
    deployed = families.deploy(model)
    for x in torch_inputs([2, *FAMILIES[name]["input"]["shape"][1:]]):
        with torch.no_grad():
            expected = model(x).numpy()
            actual = deployed(x).numpy()
        assert_close_to_scale(actual, expected, f"{name} deploy form")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_committed_files_compute_the_rebuilt_net(families, name):
    import torch

    model = families.build(name)
    family = FAMILIES[name]
    for x in torch_inputs(family["input"]["shape"]):
        with torch.no_grad():
            expected = model(x).numpy()
        for form in family["forms"]:
            (actual,) = run(load(name, form), {family["input"]["name"]: x.numpy()})
            assert_close_to_scale(actual, expected, f"{name}/{form}")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_parameter_and_statistic_is_random(families, name):
    import torch

    model = families.build(name)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.numel() == 1 or float(parameter.std()) > 0, parameter_name
    batchnorms = [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for bn in batchnorms:
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    if batchnorms:
        assert 1e-3 in {bn.eps for bn in batchnorms}


@pytest.mark.parametrize("form", ["ts17", "reference", FUNCTIONS_FORM])
def test_reexport_gives_the_manifest_op_counts(families, form, tmp_path):
    """Same torch as the manifest: exporting again gives the committed op counts."""
    import torch

    if torch.__version__ != MANIFEST["versions"]["torch"]:
        pytest.skip(f"fixtures written with torch {MANIFEST['versions']['torch']}")
    export = families.export
    for family_name, family in FAMILIES.items():
        if form not in family["forms"]:
            continue
        model = families.build(family_name)
        source = families.deploy(model) if form == "reference" else model
        path = tmp_path / f"{family_name}.onnx"
        modules = families.FUNCTION_MODULES[family_name] if form == FUNCTIONS_FORM else ()
        export.export_onnx(source, path, form, families.INPUT_SHAPE, function_modules=modules)
        assert export.op_counts(path) == family["forms"][form]["op_counts"], family_name


def test_dbb_stride_2_deploys_and_exports_exactly(families, tmp_path):
    """The stride-2 DBB block (left out of the fixtures for size) is exact in every exporter."""
    import torch

    dbb, export = families.dbb, families.export
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        dbb.DiverseBranchBlock(8, 16, stride=2),
    )
    model = families.blocks.randomize_batchnorm_(net, export.SEED).eval()
    deployed = families.deploy(model)
    for x in torch_inputs(list(families.INPUT_SHAPE)):
        with torch.no_grad():
            assert_close_to_scale(deployed(x).numpy(), model(x).numpy(), "dbb stride 2 deploy")
    for form in ("ts17", "dynamo18"):
        path = export.export_onnx(model, tmp_path / f"{form}.onnx", form, families.INPUT_SHAPE)
        export.check_export(path, model, families.INPUT_SHAPE, batch_sizes=(1,))
        assert export.op_counts(path)["ScatterND"] == 8
