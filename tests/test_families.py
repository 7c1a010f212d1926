"""Generality: every re-parameterizable family of ``models/fixtures/families`` (our own PyTorch
definitions, their PyTorch deploy conversions as references) reaches its deploy form in every
exporter form, computes the same function (compared here in onnxruntime), and ``inspect``
agrees: the training form is fusable, the fused output is not."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import repvgg_onnx
from helpers import random_feeds, run
from repvgg_onnx.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Manifests (relative to the repository) whose families are all tested here; each form's
#: file is relative to the directory of the manifest that lists it.
MANIFEST_PATHS = [
    "models/fixtures/families/manifest.json",
    "models/fixtures/paddle/manifest.json",
]
# test_family_fixtures.py and test_paddle_fixtures.py check what each manifest lists.
MANIFEST: dict = {}
FAMILIES: dict[str, Path] = {}
for _path in MANIFEST_PATHS:
    _families = json.loads((REPO_ROOT / _path).read_text())["families"]
    assert not set(_families) & set(MANIFEST), f"a family of {_path} is listed twice"
    MANIFEST.update(_families)
    FAMILIES.update(dict.fromkeys(_families, (REPO_ROOT / _path).parent))
CASES = [(name, form) for name, info in MANIFEST.items() for form in info["training_forms"]]
#: Families whose deploy form keeps a BatchNormalization (a BN before a zero-padded conv).
KEEPS_BATCHNORM = {
    n for n, info in MANIFEST.items() if "BatchNormalization" in info["reference_op_counts"]
}


def path_of(name: str, form: str) -> Path:
    """The file of ``form``, relative to the manifest that lists family ``name``."""
    return FAMILIES[name] / MANIFEST[name]["forms"][form]["file"]


def load(name: str, form: str) -> onnx.ModelProto:
    return onnx.load(path_of(name, form))


@pytest.fixture(scope="module")
def fused_models() -> dict:
    return {case: repvgg_onnx.fuse(load(*case), verify=False) for case in CASES}


@pytest.mark.parametrize(("name", "form"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_family_reaches_its_deploy_form(name, form, fused_models):
    """No op is more frequent than in the PyTorch deploy model exported the same way (fewer
    is allowed: e.g. GELU's 0.5 folds into the next conv), and the function is the same."""
    training = load(name, form)
    fused = fused_models[(name, form)].model
    deploy = Counter(MANIFEST[name]["forms"][form]["deploy_op_counts"])
    counts = Counter(node.op_type for node in fused.graph.node)
    assert {op: n for op, n in counts.items() if n > deploy[op]} == {}, counts
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization"):
        assert counts[op] == deploy[op], op
    onnx.checker.check_model(fused, full_check=True)
    feeds = random_feeds(training, batch=1)
    for expected, actual in zip(run(training, feeds), run(fused, feeds), strict=True):
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize(("name", "form"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_inspect_and_diff_count_the_blocks_fuse_fused(name, form, fused_models):
    training, fused = load(name, form), fused_models[(name, form)]
    before, after = repvgg_onnx.inspect(training), repvgg_onnx.inspect(fused.model)
    blocks = len(fused.report.fused)
    assert len(before.fusable) == blocks == len(repvgg_onnx.diff(training, fused.model).blocks)
    assert after.fusable == []
    if name in KEEPS_BATCHNORM:
        assert not after.deploy_form and all(bn.reason for bn in after.batchnorms)
    else:
        assert before.fusable and not before.deploy_form
        assert after.deploy_form


def test_fusing_a_reference_merges_no_layer():
    """A PyTorch deploy export has no layer left to merge (fuse may still fold a GELU's 0.5
    into the next conv, which PyTorch's conversion does not)."""
    for name, info in MANIFEST.items():
        reference = load(name, info["reference_form"])
        fused = repvgg_onnx.fuse(reference, verify=False).model
        before = Counter(node.op_type for node in reference.graph.node)
        after = Counter(node.op_type for node in fused.graph.node)
        for op in ("Conv", "Gemm", "MatMul", "BatchNormalization"):
            assert after[op] == before[op], (name, op)


@pytest.mark.parametrize(
    ("name", "form"),
    [
        ("dbb", "ts17_nofold"),
        ("fastvit_repmixer", "ts17_nofold"),
        ("levit_linearnorm", "ts17_nofold"),
        ("repghost", "ts17_nofold"),
        ("paddle_repvgg", "opset11"),
        ("paddle_lcnetv2", "opset17"),
        ("paddle_dbb", "opset11"),
        ("paddle_dbb", "opset17"),
        ("paddle_dbb_assign", "opset17"),
    ],
)
def test_fail_if_fusable_gate_on_training_and_fused_forms(name, form, tmp_path):
    training = path_of(name, form)
    fused = tmp_path / "fused.onnx"
    runner = CliRunner()
    assert runner.invoke(main, ["fuse", str(training), str(fused), "-q"]).exit_code == 0
    assert runner.invoke(main, ["inspect", str(training), "--fail-if-fusable", "-q"]).exit_code == 1
    assert runner.invoke(main, ["inspect", str(fused), "--fail-if-fusable", "-q"]).exit_code == 0
