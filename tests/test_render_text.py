"""The reports' wording that the CLI tests do not reach: sizes and their units, relative
changes, the lines a text report leaves out when it has nothing to say, and a Markdown page
that lists less to fit a pull-request comment rather than being cut."""

from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from test_regions import Builder

from helpers import REPO_ROOT
from repvgg_onnx.api import fuse
from repvgg_onnx.cli import main
from repvgg_onnx.reports.render.markdown import MARKDOWN_LIMIT, render_markdown
from repvgg_onnx.reports.render.text import change_text, render_text, size_text

SAMPLE = REPO_ROOT / "models" / "samples" / "repvgg_a0_half.onnx"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (2_700, "2.7 KB"),
        (5_100_000, "5.1 MB"),
        (2_520_000_000, "2.5 GB"),
        (3_000_000_000_000, "3000.0 GB"),
    ],
)
def test_a_size_is_written_in_the_largest_unit_it_reaches(size, text):
    assert size_text(size) == text


@pytest.mark.parametrize(
    ("before", "after", "text"),
    [(100, 100, ""), (0, 5, ""), (200, 150, " (-25.0%)"), (100, 125, " (+25.0%)")],
)
def test_a_change_is_a_signed_percentage_unless_there_is_none_to_tell(before, after, text):
    assert change_text(before, after) == text


def relu_model():
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="act")],
        "plain",
        [value("x", TensorProto.FLOAT, [1, 4])],
        [value("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_fuse_report_with_nothing_to_tell_says_so_in_its_first_line_only():
    report = fuse(relu_model(), verify=False).report.to_dict()
    lines = render_text(report).splitlines()
    assert lines[0] == "Fused nothing: no re-parameterizable block found."
    assert not any(line.startswith(("Skipped", "  ", "Canonicalized")) for line in lines)
    assert any(line.startswith("Time:       load ") for line in lines)
    del report["seconds"]
    assert not any(line.startswith("Time:") for line in render_text(report).splitlines())


def test_inspect_lists_the_candidates_left_alone_and_only_when_there_are_some(tmp_path):
    builder = Builder(1)
    kept = builder.model(builder.conv(builder.batchnorm("x"), (3, 3), "centre", 1, 1))
    for name, model in (("kept.onnx", kept), ("plain.onnx", relu_model())):
        onnx.save(model, tmp_path / name)
    kept_text = CliRunner().invoke(main, ["inspect", str(tmp_path / "kept.onnx")]).output
    lines = kept_text.splitlines()
    index = lines.index("1 candidate left alone:")
    assert "cannot absorb the BN (BatchNormalization" in lines[index + 1]
    assert lines[index + 1].startswith("  Conv")
    plain_text = CliRunner().invoke(main, ["inspect", str(tmp_path / "plain.onnx")]).output
    assert "left alone" not in plain_text


def sample_fuse_report() -> dict:
    return fuse(SAMPLE, verify=False).report.to_dict()


def test_markdown_lists_every_block_when_the_page_has_room():
    report = sample_fuse_report()
    page = render_markdown(report)
    assert "cut to fit" not in page
    assert "**22 blocks, 2 kinds**" in page
    assert "| Conv3x3+BN, Conv1x1+BN, BN → Conv3x3 | 17 | " in page
    assert "more kind" not in page and "Candidates left alone" not in page
    assert not any(line.startswith("… ") for line in page.splitlines())


def test_markdown_lists_the_first_candidates_left_alone_and_counts_the_rest():
    report = sample_fuse_report()
    report["skipped"] = [
        {"rule": "affine_region", "node": f"node{i}", "reason": "a reason"} for i in range(300)
    ]
    lines = render_markdown(report).splitlines()
    assert "<details><summary>Candidates left alone (300)</summary>" in lines
    assert sum(line.startswith("- `node") for line in lines) == 200
    assert "… 100 more" in lines
    report["skipped"] = report["skipped"][:3]
    lines = render_markdown(report).splitlines()
    assert sum(line.startswith("- `node") for line in lines) == 3
    assert not any(line.startswith("… ") for line in lines)


def test_markdown_of_many_blocks_lists_fewer_to_fit_a_comment_without_cutting_it():
    """100 rows of these blocks would be 100 KB: the page lists 40 kinds and counts the rest."""
    report = sample_fuse_report()
    block = report["fused"][0]
    report["fused"] = [
        {**block, "output": f"/a/rather/long/path/of/layer/{i:05d}/output_0", "branches": [
            f"Conv3x3+BN of stage {i} with a description long enough to fill a page"] * 12}
        for i in range(3000)
    ]  # fmt: skip
    page = render_markdown(report)
    assert len(page) <= MARKDOWN_LIMIT
    assert "cut to fit" not in page
    assert page.count("/a/rather/long/path") < 3000
    [more] = [line for line in page.splitlines() if "more kinds" in line]
    assert more.startswith("… ") and more.endswith(" blocks)")


def test_markdown_of_a_deploy_form_model_says_there_is_no_block(tmp_path):
    onnx.save(relu_model(), tmp_path / "plain.onnx")
    page = CliRunner().invoke(
        main, ["inspect", str(tmp_path / "plain.onnx"), "--format", "markdown"]
    )
    lines = page.output.splitlines()
    assert "No fusable block." in lines
    assert not any("blocks," in line or "<details" in line for line in lines)


@pytest.mark.parametrize("count", [0, 3])
def test_markdown_counts_canonicalized_nodes_apart_from_blocks(count):
    report = sample_fuse_report()
    report["canonicalized"] = count
    lines = render_markdown(report).splitlines()
    wanted = [f"Canonicalized: {count} nodes (not blocks)"] if count else []
    assert [line for line in lines if line.startswith("Canonicalized")] == wanted
