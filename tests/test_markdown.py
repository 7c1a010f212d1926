"""Markdown reports fit a pull-request comment (GitHub's limit is 65,536 characters) on any
model, say their verdict, and say what they cut."""

from __future__ import annotations

import repvgg_onnx
from helpers import repvgg_chain
from repvgg_onnx.passes.pass_result import FusedBlock, Skipped
from repvgg_onnx.reports.fuse_report import FuseReport, ModelStats
from repvgg_onnx.reports.inspection import Inspection, RemainingBatchNorm
from repvgg_onnx.reports.render.markdown import MARKDOWN_LIMIT
from repvgg_onnx.reports.summary import ModelSummary


def test_the_diff_of_a_5000_block_model_fits_a_comment():
    training, deploy = repvgg_chain(5000, channels=2, size=2)
    diff = repvgg_onnx.diff(training, deploy)
    assert len(diff.blocks) == 5000
    text = diff.to_markdown()
    assert len(text) < MARKDOWN_LIMIT
    assert "5000 blocks, 1 kind" in text
    assert "| Conv3x3+BN, Conv1x1+BN, BN → Conv3x3 | 5000 |" in text
    assert "verification skipped" in text
    assert "… " in text and "more" in text  # the long node lists are cut, and say so


def _blocks(count: int) -> list[FusedBlock]:
    return [
        FusedBlock("affine_region", f"/stage{i}/Add_output_0", f"n{i}", (f"Conv{i % 3000}x1",), "C")
        for i in range(count)
    ]


def _skips(count: int) -> list[Skipped]:
    return [
        Skipped("affine_region", f"node{i}", f"a reason that is long {i} " * 4)
        for i in range(count)
    ]


def test_a_fuse_report_with_thousands_of_kinds_of_block_fits():
    stats = ModelStats({"Conv": 10000}, 1, 1)
    report = FuseReport(_blocks(5000), _skips(5000), stats, stats)
    text = report.to_markdown()
    assert len(text) < MARKDOWN_LIMIT
    assert "5000 blocks, 3000 kinds" in text and "more kinds" in text
    assert "verification skipped: not requested (--no-verify)" in text


def test_an_inspect_report_with_thousands_of_candidates_fits():
    summary = ModelSummary.of(repvgg_chain(1)[0])
    bns = [RemainingBatchNorm(f"bn{i}", f"reason {i} " * 8) for i in range(3000)]
    inspection = Inspection(summary, _blocks(5000), _skips(5000), bns)
    text = inspection.to_markdown()
    assert len(text) < MARKDOWN_LIMIT
    assert "3000 BatchNormalizations" not in text or "more" in text
    assert "inspect runs no model" in text
