"""HTML pages of the reports: self-contained, escaped, robust to missing keys, drawn right (unit
tests), and rendered by a real browser without script errors (chromium, skipped if absent)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import pytest

from repvgg_onnx.reports.render.html import OPEN_BLOCKS, render_html

EVIL = "<script>alert(1)</script>\"'&"

EXAMPLE_DIFF = {
    "schema_version": 2,
    "kind": "diff",
    "a": {
        "path": "train.onnx",
        "ir_version": 8,
        "producer": "pytorch 2.13.0",
        "opsets": {"": 17},
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}],
        "op_counts": {"Conv": 44, "Add": 39, "BatchNormalization": 61, "Relu": 22},
        "parameters": 1981502,
        "size_bytes": 7982311,
        "metadata": {"key": "value"},
    },
    "b": {
        "path": "deploy.onnx",
        "ir_version": 8,
        "producer": "pytorch 2.13.0",
        "opsets": {"": 17},
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}],
        "op_counts": {"Conv": 22, "Relu": 22},
        "parameters": 1974846,
        "size_bytes": 7950211,
        "metadata": {},
    },
    "op_changes": [
        {"op": "BatchNormalization", "a": 61, "b": 0},
        {"op": "Conv", "a": 44, "b": 22},
        {"op": "Relu", "a": 22, "b": 22},
    ],
    "changes": {"inputs": [], "outputs": [], "opsets": [], "metadata": ["removed key 'x'"]},
    "nodes_added": [{"name": "/stage0/Add/reparam", "op": "Conv"}],
    "nodes_removed": [{"name": "/stage0/rbr_dense/conv/Conv", "op": "Conv"}],
    "initializers_added": ["/stage0/Add_output_0.reparam.weight"],
    "initializers_removed": ["stage0.rbr_dense.conv.weight"],
    "blocks": [
        {
            "output": "/stage0/Add_output_0",
            "inputs": ["input"],
            "summary": "Conv3x3/s2+BN, Conv1x1/s2+BN → Conv3x3/s2",
            "a_nodes": [
                {
                    "name": "/stage0/rbr_dense/conv/Conv",
                    "op": "Conv",
                    "label": "Conv 3x3 /s2",
                    "inputs": ["input"],
                    "outputs": ["/stage0/rbr_dense/conv/Conv_output_0"],
                },
                {
                    "name": "/stage0/rbr_dense/bn/BatchNormalization",
                    "op": "BatchNormalization",
                    "label": "BatchNormalization",
                    "inputs": ["/stage0/rbr_dense/conv/Conv_output_0"],
                    "outputs": ["/stage0/rbr_dense/bn/BatchNormalization_output_0"],
                },
                {
                    "name": "/stage0/rbr_1x1/conv/Conv",
                    "op": "Conv",
                    "label": "Conv 1x1 /s2",
                    "inputs": ["input"],
                    "outputs": ["t1"],
                },
                {
                    "name": "/stage0/rbr_1x1/bn/BatchNormalization",
                    "op": "BatchNormalization",
                    "label": "BatchNormalization",
                    "inputs": ["t1"],
                    "outputs": ["t2"],
                },
                {
                    "name": "/stage0/Add",
                    "op": "Add",
                    "label": "Add",
                    "inputs": ["/stage0/rbr_dense/bn/BatchNormalization_output_0", "t2"],
                    "outputs": ["/stage0/Add_output_0"],
                },
            ],
            "b_nodes": [
                {
                    "name": "/stage0/Add/reparam",
                    "op": "Conv",
                    "label": "Conv 3x3 /s2",
                    "inputs": ["input"],
                    "outputs": ["/stage0/Add_output_0"],
                }
            ],
        }
    ],
}

FUSE = {
    "schema_version": 2,
    "kind": "fuse",
    "fused": [
        {
            "rule": "merge_parallel_convs",
            "output": "/stage1/stage1.1/Add_1_output_0",
            "node": "/stage1/stage1.1/Add_1/reparam",
            "branches": ["Conv3x3+BN", "Conv1x1+BN", "BN"],
            "result": "Conv3x3",
        }
    ],
    "skipped": [
        {
            "rule": "merge_parallel_convs",
            "node": "/head/Add",
            "reason": "1x1 branch has stride 1, 3x3 has stride 2",
        }
    ],
    "before": {
        "op_counts": {"Conv": 3, "BatchNormalization": 3, "Add": 2},
        "parameters": 99,
        "size_bytes": 4000,
    },
    "after": {"op_counts": {"Conv": 1}, "parameters": 80, "size_bytes": 3100},
    "verification": {
        "passed": True,
        "seed": 0,
        "rtol": 1e-4,
        "atol": None,
        "input_shapes": {"input": [1, 3, 224, 224]},
        "outputs": [
            {
                "name": "output",
                "shape": [1, 1000],
                "max_abs_error": 2.1e-6,
                "max_rel_error": 3.4e-5,
                "scale": 11.2,
                "atol": 1.12e-4,
                "rtol": 1e-4,
                "passed": True,
                "required_atol": 1.0e-6,
            }
        ],
    },
    "rounds": 2,
    "seconds": {"load": 0.12, "fuse": 0.4, "verify": 1.3},
}

VERIFY = {
    "schema_version": 2,
    "kind": "verify",
    "passed": False,
    "a_path": "train.onnx",
    "b_path": "deploy.onnx",
    "seed": 0,
    "batches": 3,
    "rtol": 1e-4,
    "atol": None,
    "input_shapes": {"input": [1, 3, 224, 224]},
    "outputs": [
        {
            "name": "output",
            "b_name": "logits",
            "shape": [1, 1000],
            "max_abs_error": 0.37,
            "max_rel_error": 0.05,
            "mean_abs_error": 0.02,
            "cosine_similarity": 0.99871,
            "top1_agreement": 2 / 3,
            "atol": 1.1e-4,
            "rtol": 1e-4,
            "passed": False,
        }
    ],
    "warnings": ["input 'input' has a dynamic batch dim; used 1"],
    "localization": {
        "tensor": "/stage2/stage2.0/Add_output_0",
        "max_abs_error": 0.31,
        "a_producer": "/stage2/stage2.0/Add",
        "b_producer": "/stage2/stage2.0/Add/reparam",
        "consumers": ["/stage2/stage2.0/Relu"],
        "message": "first divergence at tensor '/stage2/stage2.0/Add_output_0'",
    },
}

INSPECT = {
    "schema_version": 2,
    "kind": "inspect",
    "path": "train.onnx",
    "summary": copy.deepcopy(EXAMPLE_DIFF["a"]),
    "fusable": [copy.deepcopy(FUSE["fused"][0]) for _ in range(3)],
    "skipped": copy.deepcopy(FUSE["skipped"]),
}

REPORTS = {"diff": EXAMPLE_DIFF, "fuse": FUSE, "verify": VERIFY, "inspect": INSPECT}


def _node(name: str, op: str, label: str, inputs: list[str], outputs: list[str]) -> dict:
    return {"name": name, "op": op, "label": label, "inputs": inputs, "outputs": outputs}


def _branchy_block(scope: str, source: str, conv_branches: int, identity: bool) -> dict:
    """A training-time block: ``conv_branches`` Conv+BN branches (the first 3x3, the rest 1x1),
    an optional identity BN, summed by a chain of Adds (as PyTorch exports ``a + b + c``)."""
    nodes, sums = [], []
    for k in range(conv_branches):
        kernel = "3x3" if k == 0 else "1x1"
        conv, bn = f"{scope}/branch{k}/conv", f"{scope}/branch{k}/bn"
        nodes.append(_node(f"{conv}/Conv", "Conv", f"Conv {kernel}", [source], [f"{conv}_out"]))
        nodes.append(
            _node(f"{bn}/BatchNormalization", "BatchNormalization", "BatchNormalization",
                  [f"{conv}_out"], [f"{bn}_out"])
        )  # fmt: skip
        sums.append(f"{bn}_out")
    if identity:
        bn = f"{scope}/identity/BatchNormalization"
        nodes.append(_node(bn, "BatchNormalization", "BatchNormalization", [source], [bn + "_out"]))
        sums.append(bn + "_out")
    total = sums[0]
    for k, term in enumerate(sums[1:]):
        add_out = f"{scope}/Add_{k}_output_0"
        nodes.append(_node(f"{scope}/Add_{k}", "Add", "Add", [total, term], [add_out]))
        total = add_out
    merged = _node(f"{scope}/Add/reparam", "Conv", "Conv 3x3", [source], [total])
    return {
        "output": total,
        "inputs": [source],
        "summary": f"{conv_branches}×Conv+BN{', BN' if identity else ''} → Conv3x3",
        "a_nodes": nodes,
        "b_nodes": [merged],
    }


def _diff_with_blocks(count: int) -> dict:
    """The example diff with ``count`` blocks: RepVGG blocks and, every seventh, a MobileOne
    block of five conv branches and an identity."""
    report = copy.deepcopy(EXAMPLE_DIFF)
    blocks, source = [], "input"
    for i in range(count):
        branches = 5 if i % 7 == 3 else 2
        block = _branchy_block(f"/stages/stage.{i}", source, branches, identity=i % 4 != 0)
        blocks.append(block)
        source = f"/stages/stage.{i}/Relu_output_0"
    report["blocks"] = blocks
    return report


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def _boxes(svg: ET.Element) -> dict[str, tuple[float, float, float]]:
    """Tooltip's first line → (x, y, width) of the box's rectangle."""
    boxes = {}
    for group in svg.iter("g"):
        rect = group.find("rect")
        title = group.findtext("title").split("\n")[0]
        boxes[title] = (float(rect.get("x")), float(rect.get("y")), float(rect.get("width")))
    return boxes


def _centre(box: tuple[float, float, float]) -> float:
    return box[0] + box[2] / 2


def _poisoned(value: object) -> object:
    """``value`` with ``EVIL`` appended to every string but ``kind``, and to every key of the
    maps whose keys are names (ops, opset domains, inputs, phases)."""
    if isinstance(value, str):
        return value + EVIL
    if isinstance(value, list):
        return [_poisoned(v) for v in value]
    if not isinstance(value, dict):
        return value
    poisoned = {}
    for key, item in value.items():
        if key == "kind":
            poisoned[key] = item
        elif isinstance(item, dict) and key in ("op_counts", "opsets", "input_shapes", "seconds"):
            poisoned[key] = {name + EVIL: _poisoned(v) for name, v in item.items()}
        else:
            poisoned[key] = _poisoned(item)
    return poisoned


# ---------------------------------------------------------------- unit tests


@pytest.mark.parametrize("kind", REPORTS)
def test_page_is_self_contained(kind: str) -> None:
    page = render_html(_diff_with_blocks(20) if kind == "diff" else REPORTS[kind])
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page.lower() and "@import" not in page
    assert not re.search(r"""\bsrc\s*=\s*["']?(?!data:)""", page, flags=re.I)
    assert not re.search(r"url\((?!data:)", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


@pytest.mark.parametrize("kind", REPORTS)
def test_every_report_string_is_escaped(kind: str) -> None:
    page = render_html(_poisoned(REPORTS[kind]))
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page


def test_untrusted_node_name_renders_as_text_in_pictures_and_tables() -> None:
    report = copy.deepcopy(EXAMPLE_DIFF)
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    report["blocks"][0]["a_nodes"][0]["name"] = evil
    report["blocks"][0]["a_nodes"][0]["label"] = evil
    page = render_html(report)
    assert "<script>alert" not in page and "<img" not in page
    svg = _svgs(page)[0]
    assert any(evil in (title.text or "") for title in svg.iter("title"))
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;"
        in page
    )


def test_diff_shows_summary_and_changes() -> None:
    page = render_html(EXAMPLE_DIFF)
    assert "<code>train.onnx</code> → <code>deploy.onnx</code>" in page
    assert re.search(r'<tr class="changed"><td>BatchNormalization</td>.*?−61', page)
    assert "<tr><td>Relu</td>" in page
    assert "1,981,502" in page and "1,974,846" in page and "−0.34%" in page
    assert "8.0 MB" in page and "−0.4%" in page
    assert "removed key &#x27;x&#x27;" in page
    assert "/stage0/Add/reparam" in page and "stage0.rbr_dense.conv.weight" in page


def test_every_block_has_a_before_and_an_after_picture_with_labels() -> None:
    report = _diff_with_blocks(12)
    page = render_html(report)
    blocks = page.split('<details class="block"')[1:]
    assert len(blocks) == 12
    for block, data in zip(blocks, report["blocks"], strict=True):
        assert block.count("<svg") == 2
        for node in data["a_nodes"] + data["b_nodes"]:
            assert f">{node['label']}</text>" in block
            assert f"<code>{node['name']}</code>" in block
    example = copy.deepcopy(EXAMPLE_DIFF)
    example["blocks"][0]["a_nodes"][4] |= {"op": "Sum", "label": "Sum"}
    svg = _svgs(render_html(example))[0]
    colour = {group.find("text").text: group.get("class") for group in svg.iter("g")}
    assert colour["Conv 3x3 /s2"] == colour["Conv 1x1 /s2"] == "node op-conv"
    assert colour["BatchNormalization"] == "node op-bn"
    assert colour["Sum"] == "node op-other"
    assert colour["input"] == "tensor"
    assert "node op-add" in render_html(EXAMPLE_DIFF)


def test_picture_layers_follow_longest_paths_from_the_inputs() -> None:
    before, after = _svgs(render_html(EXAMPLE_DIFF))
    boxes = _boxes(before)
    y = {name: box[1] for name, box in boxes.items()}
    dense, one, add = "/stage0/rbr_dense", "/stage0/rbr_1x1", "/stage0/Add"
    assert y["input"] < y[f"{dense}/conv/Conv"] == y[f"{one}/conv/Conv"]
    assert y[f"{dense}/conv/Conv"] < y[f"{dense}/bn/BatchNormalization"]
    assert y[f"{dense}/bn/BatchNormalization"] == y[f"{one}/bn/BatchNormalization"] < y[add]
    assert y[add] < y["/stage0/Add_output_0"]
    x = {name: _centre(box) for name, box in boxes.items()}
    assert x["input"] == pytest.approx((x[f"{dense}/conv/Conv"] + x[f"{one}/conv/Conv"]) / 2)
    assert x[add] == pytest.approx(x["input"]) == pytest.approx(x["/stage0/Add_output_0"])
    assert len(before.findall("path")) == 7
    assert set(_boxes(after)) == {"input", "/stage0/Add/reparam", "/stage0/Add_output_0"}


def test_parallel_branches_spread_without_overlap() -> None:
    block = _branchy_block("/mobileone", "x", conv_branches=5, identity=True)
    report = copy.deepcopy(EXAMPLE_DIFF) | {"blocks": [block]}
    boxes = _boxes(_svgs(render_html(report))[0])
    convs = [box for name, box in boxes.items() if name.endswith("/Conv")]
    first_layer = [*convs, boxes["/mobileone/identity/BatchNormalization"]]
    assert len({y for _, y, _ in first_layer}) == 1
    lefts = sorted((x, x + width) for x, _, width in first_layer)
    assert all(right < next_left for (_, right), (next_left, _) in pairwise(lefts))


def test_long_names_are_shortened_in_the_picture_with_the_full_name_as_tooltip() -> None:
    report = copy.deepcopy(EXAMPLE_DIFF)
    long_name = "/backbone/" + "very_long_module_name/" * 8 + "Conv"
    report["blocks"][0]["a_nodes"][0]["name"] = long_name
    svg = _svgs(render_html(report))[0]
    texts = [text.text or "" for text in svg.iter("text")]
    assert max(len(text) for text in texts) < 30
    assert any(text.startswith("…") for text in texts)
    assert any((title.text or "").startswith(long_name) for title in svg.iter("title"))


@pytest.mark.parametrize("kind", [*REPORTS, "unknown"])
def test_missing_optional_keys_do_not_crash(kind: str) -> None:
    page = render_html({"schema_version": 2, "kind": kind})
    assert "</html>" in page


def test_malformed_values_and_unknown_keys_do_not_crash() -> None:
    report = copy.deepcopy(EXAMPLE_DIFF) | {"future_key": {"anything": [1, 2]}, "a": None}
    report["op_changes"] = None
    report["blocks"] += [
        {},
        {"a_nodes": None, "b_nodes": [None, {"op": None}]},
        {"output": "y", "a_nodes": [_node("p", "Add", "Add", ["q_out"], ["p_out"]),
                                    _node("q", "Add", "Add", ["p_out"], ["q_out"])]},
    ]  # fmt: skip
    page = render_html(report)
    assert page.count('<details class="block"') == 4
    assert "future_key" not in page
    assert "Report schema 1" in render_html({"schema_version": 1, "kind": "diff"})
    assert "Report schema" not in render_html({"schema_version": 2, "kind": "diff"})


def test_no_warning_banner_on_the_reports_of_a_clean_run(tmp_path: Path) -> None:
    """Every HTML report the CLI writes for a run where nothing is wrong (fuse, verify, diff
    and inspect of the README sample and its fused form) shows no warning banner: once, every
    page warned that it read an older report schema than the one written."""
    from click.testing import CliRunner

    from repvgg_onnx.cli import main

    sample = Path(__file__).resolve().parent.parent / "models" / "samples" / "repvgg_a0_half.onnx"
    fused = tmp_path / "fused.onnx"
    commands = {
        "fuse": ["fuse", str(sample), str(fused)],
        "verify": ["verify", str(sample), str(fused)],
        "diff": ["diff", str(sample), str(fused)],
        "inspect": ["inspect", str(fused)],
    }
    for name, command in commands.items():
        report = tmp_path / f"{name}.html"
        result = CliRunner().invoke(main, [*command, "-q", "--report", str(report)])
        assert result.exit_code == 0, (name, result.output)
        page = report.read_text()
        assert 'class="banner warn"' not in page, name
        assert "Report schema" not in page, name


def test_verdict_banners() -> None:
    assert 'class="banner fail"><strong>✗ FAILED' in render_html(VERIFY)
    assert 'class="banner pass"><strong>✓ Outputs match' in render_html(VERIFY | {"passed": True})
    assert 'class="banner pass"><strong>✓ 1 block fused · verified' in render_html(FUSE)
    unverified = render_html(FUSE | {"verification": None})
    assert 'class="banner none"><strong>1 block fused</strong>Not verified' in unverified
    failed = copy.deepcopy(FUSE)
    failed["verification"]["passed"] = False
    assert 'class="banner fail"><strong>✗ Verification FAILED' in render_html(failed)
    assert "<strong>3 fusable blocks</strong>" in render_html(INSPECT)
    assert "<strong>No fusable block</strong>" in render_html(INSPECT | {"fusable": []})


def test_verify_page_shows_errors_localization_and_warnings() -> None:
    page = render_html(VERIFY)
    for text in ("0.37", "0.99871", "66.7%", "✗ FAILED", "First divergence", "dynamic batch"):
        assert text in page
    assert "<code>output</code> / <code>logits</code>" in page
    assert "/stage2/stage2.0/Add/reparam" in page


def test_two_hundred_blocks_render_fast_and_mostly_collapsed() -> None:
    report = _diff_with_blocks(200)
    start = time.perf_counter()
    page = render_html(report)
    assert time.perf_counter() - start < 2.0
    assert page.count("<svg") == 400
    assert len(re.findall(r'<details class="block" id="block-\d+" open>', page)) == OPEN_BLOCKS


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install -y chromium)"
)


def _chromium(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Headless chromium without network, GPU or sandbox; its whole process group is killed if
    it outlives ``timeout``, so a hung browser fails the test instead of blocking CI."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
        "--v=0", *args,
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"chromium did not finish within {timeout} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Content Security Policy" in line)
    ]


@needs_chromium
@pytest.mark.parametrize("kind", REPORTS)
def test_browser_renders_the_page_without_script_errors(kind: str, tmp_path: Path) -> None:
    report = _diff_with_blocks(30) if kind == "diff" else REPORTS[kind]
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    result = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_errors(result.stderr) == []
    dom = result.stdout
    assert "</main>" in dom
    if kind == "diff":
        assert dom.count('<details class="block"') == 30
        assert dom.count("<svg") == 60
        # The script unhides the toolbar: it ran, under the page's Content-Security-Policy.
        assert '<div class="toolbar" id="toolbar">' in dom


@needs_chromium
def test_browser_screenshot_of_a_diff(tmp_path: Path) -> None:
    page = tmp_path / "diff.html"
    page.write_text(render_html(_diff_with_blocks(30)), encoding="utf-8")
    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
