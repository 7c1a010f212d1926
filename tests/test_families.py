"""Generality: other re-parameterizable families (models/families.py), every exporter form,
fuse to one Conv per block (stem + 2 blocks = 3 Convs) with equal outputs."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import repvgg_onnx
from helpers import op_counts

FAMILIES = Path(__file__).resolve().parent.parent / "models" / "fixtures" / "families"
FILES = sorted(FAMILIES.glob("*/*.onnx"))


def test_every_family_is_present():
    assert {path.parent.name for path in FILES} == {
        "mobileone",
        "repvit",
        "acnet",
        "repconv_silu",
        "replk",
        "dilated",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_family_fuses_to_one_conv_per_block(path):
    result = repvgg_onnx.fuse(path)
    counts = op_counts(result.model)
    assert counts["Conv"] == 3
    assert counts.get("Add", 0) == 0 and counts.get("BatchNormalization", 0) == 0
    assert result.report.skipped == []
    assert result.verification.passed
    merged = [b for b in result.report.fused if len(b.branches) > 1]
    assert len(merged) == 2
    onnx.checker.check_model(result.model, full_check=True)
