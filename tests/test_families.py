"""Generality: every re-parameterizable family of the committed family manifests (our own
PyTorch definitions with their PyTorch deploy conversions, and our own Keras blocks exported with
tf2onnx with their numpy deploy conversions, see tests/family_manifests.py) reaches its deploy
form in every exporter form, computes the same function (compared here in onnxruntime), and
``inspect`` agrees: the training form is fusable, the fused output is not. A negative family
(every training form already has its reference's ops) is left as it is, with the reason."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import repvgg_onnx
from family_manifests import (
    FAMILIES,
    FIXTURES,
    MANIFESTS,
    TRAINING_CASES,
    form_path,
    nothing_to_fuse,
)
from family_manifests import (
    load_form as load,
)
from helpers import op_counts, random_feeds, run
from repvgg_onnx.cli import main

CASES = TRAINING_CASES
#: Families whose deploy form keeps a BatchNormalization (a BN before a zero-padded conv).
KEEPS_BATCHNORM = {
    n for n, info in FAMILIES.items() if "BatchNormalization" in info["reference_op_counts"]
}
KERAS_CASES = [
    (name, form)
    for name, info in MANIFESTS[FIXTURES / "keras"]["families"].items()
    for form in info["training_forms"]
]
PADDLE_CASES = [
    (name, form)
    for name, info in MANIFESTS[FIXTURES / "paddle"]["families"].items()
    for form in info["training_forms"]
]


@pytest.fixture(scope="module")
def fused_models() -> dict:
    return {case: repvgg_onnx.fuse(load(*case), verify=False) for case in CASES}


@pytest.mark.parametrize(("name", "form"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_family_reaches_its_deploy_form(name, form, fused_models):
    """No op is more frequent than in the PyTorch deploy model exported the same way (fewer
    is allowed: e.g. GELU's 0.5 folds into the next conv), and the function is the same."""
    training = load(name, form)
    fused = fused_models[(name, form)].model
    deploy = Counter(FAMILIES[name]["forms"][form]["deploy_op_counts"])
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
    elif nothing_to_fuse(name):
        assert blocks == 0 and before.deploy_form and after.deploy_form
        assert before.skipped and all(skip.reason for skip in before.skipped)
        assert op_counts(fused.model) == op_counts(training)
    else:
        assert before.fusable and not before.deploy_form
        assert after.deploy_form


def test_fusing_a_reference_merges_no_layer():
    """A deploy export (PyTorch's conversion, or our numpy one for Keras) has no layer left to
    merge (fuse may still fold a GELU's 0.5 into the next conv, which PyTorch's does not)."""
    for name, info in FAMILIES.items():
        for form in set(info["forms"]) - set(info["training_forms"]):
            reference = load(name, form)
            fused = repvgg_onnx.fuse(reference, verify=False).model
            before = Counter(node.op_type for node in reference.graph.node)
            after = Counter(node.op_type for node in fused.graph.node)
            for op in ("Conv", "Gemm", "MatMul", "BatchNormalization"):
                assert after[op] == before[op], (name, form, op)


GATE_CASES = [
    *(
        (name, "ts17_nofold")
        for name in ("dbb", "fastvit_repmixer", "levit_linearnorm", "repghost")
    ),
    *((name, "ts17_functions") for name in FAMILIES if "ts17_functions" in FAMILIES[name]["forms"]),
    *KERAS_CASES,
    *PADDLE_CASES,
]


@pytest.mark.parametrize(("name", "form"), GATE_CASES, ids=[f"{n}-{f}" for n, f in GATE_CASES])
def test_fail_if_fusable_gate_on_training_and_fused_forms(name, form, tmp_path):
    """Exit 1 on a training form with something to fuse (0 on a negative family's), 0 on the
    fused output."""
    training = form_path(name, form)
    fused = tmp_path / "fused.onnx"
    runner = CliRunner()
    assert runner.invoke(main, ["fuse", str(training), str(fused), "-q"]).exit_code == 0
    gate = runner.invoke(main, ["inspect", str(training), "--fail-if-fusable", "-q"])
    assert gate.exit_code == (0 if nothing_to_fuse(name) else 1)
    assert runner.invoke(main, ["inspect", str(fused), "--fail-if-fusable", "-q"]).exit_code == 0
