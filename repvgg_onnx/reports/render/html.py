"""Self-contained HTML pages for the JSON reports of ``fuse``, ``verify``, ``diff`` and ``inspect``.

A page is one string: inline CSS, inline SVG pictures, a few lines of inline JavaScript that only
add conveniences (filter, expand all), no network access. Every string taken from a report is
escaped — node and tensor names come from untrusted models — and a Content-Security-Policy that
admits no script but ours backs that up. Unknown keys are ignored and a missing value shows as
"—", so a report from an older or newer version still renders.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from functools import partial

from repvgg_onnx.reports.render.gate import model_states
from repvgg_onnx.reports.render.schema import SCHEMA_VERSION, report_verdict
from repvgg_onnx.reports.render.svg import PictureNode, block_picture, common_scope
from repvgg_onnx.reports.render.svg import as_dict as _dict
from repvgg_onnx.reports.render.svg import as_list as _list
from repvgg_onnx.reports.render.svg import esc as _e
from repvgg_onnx.reports.render.text import inlining_lines, many_summary_line, reference_name

#: Blocks of a diff shown open; the rest start collapsed so a 200-block page stays short.
OPEN_BLOCKS = 10

_CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --subtle: #f6f8fa; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
  sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 48px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: 12.5px; overflow-wrap: anywhere; }
.tool { color: var(--muted); font-size: 12px; letter-spacing: .06em; text-transform: uppercase; }
h1 { font-size: 22px; font-weight: 600; margin: 2px 0 16px; overflow-wrap: anywhere; }
h1 code { font-size: 20px; }
h2 { font-size: 17px; margin: 28px 0 12px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
.count { background: #eff2f5; border-radius: 10px; color: var(--muted); font-size: 12px;
  font-weight: 500; padding: 1px 8px; }
.muted { color: var(--muted); }
.banner { border: 1px solid; border-radius: 6px; padding: 12px 16px; margin: 0 0 8px; }
.banner strong { font-size: 16px; margin-right: 8px; }
.pass { background: #dafbe1; border-color: #4ac26b; } .pass strong { color: #1a7f37; }
.fail { background: #ffebe9; border-color: #ff8182; } .fail strong { color: #d1242f; }
.info { background: #ddf4ff; border-color: #54aeff; } .info strong { color: #0969da; }
.warn { background: #fff8c5; border-color: #d4a72c; } .warn strong { color: #9a6700; }
.none { background: var(--subtle); border-color: var(--line); }
.banner.warn ul, .banner.fail ul { margin: 4px 0 0; padding-left: 20px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 0 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--subtle); font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.changed td { background: #fff8c5; }
tr.failed td { background: #ffebe9; }
.bad { color: #d1242f; font-weight: 600; } .good { color: #1a7f37; }
.grid2 { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px;
  align-items: start; }
ul.changes { margin: 0; padding-left: 20px; }
details > summary { cursor: pointer; list-style: none; }
details > summary::-webkit-details-marker { display: none; }
details > summary::before { content: "▸"; color: var(--muted); display: inline-block; width: 1em; }
details[open] > summary::before { content: "▾"; }
details.list { margin: 6px 0; }
details.list > summary { font-weight: 600; }
details.list table { margin-top: 6px; }
.toolbar { display: flex; gap: 8px; align-items: center; margin: 0 0 8px; }
.toolbar input { flex: 1; font: inherit; padding: 4px 8px; border: 1px solid var(--line);
  border-radius: 6px; }
.toolbar button { font: inherit; padding: 4px 12px; border: 1px solid var(--line);
  border-radius: 6px; background: var(--subtle); cursor: pointer; }
.legend { display: flex; gap: 16px; font-size: 12px; color: var(--muted); margin: 0 0 8px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; border: 1px solid;
  vertical-align: -2px; margin-right: 4px; }
details.block { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 6px; }
details.block > summary { background: var(--subtle); border-radius: 6px; padding: 6px 12px;
  display: grid; grid-template-columns: 1em 3em minmax(0, 24em) minmax(0, 1fr) auto; gap: 8px;
  align-items: baseline; }
details.block[open] > summary { border-bottom: 1px solid var(--line); border-radius: 6px 6px 0 0; }
.block .idx { color: var(--muted); font-variant-numeric: tabular-nums; }
.block .out { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.block .nodes { color: var(--muted); white-space: nowrap; font-size: 12px; }
.pictures { display: grid; grid-template-columns: minmax(0, 1fr) auto minmax(0, 1fr); gap: 8px;
  padding: 12px; align-items: start; }
.pictures.stacked { grid-template-columns: minmax(0, 1fr); }
.pictures .to { color: var(--muted); font-size: 22px; align-self: center; justify-self: center; }
figure { margin: 0; text-align: center; }
figcaption { color: var(--muted); font-size: 12px; margin-bottom: 4px; }
details.names { padding: 0 12px 10px; font-size: 13px; }
svg.dag { max-width: 100%; height: auto; }
.dag text { font: 600 12px system-ui, -apple-system, "Segoe UI", Arial, sans-serif; fill: var(--fg);
  text-anchor: middle; dominant-baseline: central; }
.dag text.name, .dag .tensor text { font: 400 10px ui-monospace, Menlo, Consolas,
  "DejaVu Sans Mono", monospace; fill: var(--muted); }
.dag rect { stroke-width: 1.2; }
.op-conv rect, .swatch.op-conv { fill: #ddf4ff; background: #ddf4ff; stroke: #54aeff;
  border-color: #54aeff; }
.op-bn rect, .swatch.op-bn { fill: #fff8c5; background: #fff8c5; stroke: #d4a72c;
  border-color: #d4a72c; }
.op-add rect, .swatch.op-add { fill: #dafbe1; background: #dafbe1; stroke: #4ac26b;
  border-color: #4ac26b; }
.op-other rect, .swatch.op-other { fill: #fbefff; background: #fbefff; stroke: #c297ff;
  border-color: #c297ff; }
.tensor rect, .swatch.tensor { fill: #fff; background: #fff; stroke: #8c959f;
  border-color: #8c959f; stroke-dasharray: 3 2; border-style: dashed; }
.dag .edge { fill: none; stroke: #8c959f; stroke-width: 1.4; }
.dag .arrow { fill: #8c959f; }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; }
@media print {
  main { max-width: none; padding: 0; }
  .toolbar { display: none !important; }
  details.block, .pictures, tr { break-inside: avoid; }
}
"""

_JS = """
(() => {
  const bar = document.getElementById("toolbar");
  const blocks = [...document.querySelectorAll("details.block")];
  if (bar) {
    bar.hidden = false;
    bar.addEventListener("click", (event) => {
      const open = event.target.dataset ? event.target.dataset.open : undefined;
      if (open) blocks.forEach((block) => { block.open = open === "all"; });
    });
    bar.querySelector("input").addEventListener("input", (event) => {
      const query = event.target.value.trim().toLowerCase();
      blocks.forEach((block) => {
        block.hidden = query !== "" && !block.textContent.toLowerCase().includes(query);
      });
    });
  }
  addEventListener("beforeprint", () => {
    document.querySelectorAll("details").forEach((details) => { details.open = true; });
  });
})();
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


#: Only our own style sheet and script may apply, whatever a report smuggles into the page.
_CSP = f"default-src 'none'; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}"


def render_html(report: dict) -> str:
    """One self-contained HTML page (no network, no CDN, no external fonts/scripts) for a report
    dict of any kind (``report["kind"]``: ``fuse``, ``verify``, ``diff`` or ``inspect``)."""
    kind = str(report.get("kind") or "unknown")
    renderer = _error_body if "error" in report else _RENDERERS.get(kind, _unknown_body)
    title, body = renderer(report)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
{_schema_note(report)}{body}
<footer>repvgg-onnx {_e(kind)} report · schema {_e(report.get("schema_version", "—"))}</footer>
</main>
<script>{_JS}</script>
</body>
</html>
"""


# ---------------------------------------------------------------- diff


def _diff_body(report: dict) -> tuple[str, str]:
    """Header, summary, one before/after picture per fused block, added/removed lists."""
    a, b = _dict(report.get("a")), _dict(report.get("b"))
    a_path, b_path = str(a.get("path") or "A"), str(b.get("path") or "B")
    blocks = [_dict(block) for block in _list(report.get("blocks"))]
    parts = [
        _header("diff", f"<code>{_e(a_path)}</code> → <code>{_e(b_path)}</code>"),
        _diff_banner(report, a, b, blocks),
        "<h2>Summary</h2>",
        '<div class="grid2"><div>',
        _op_table(_op_rows(a, b, report.get("op_changes")), "A", "B"),
        "</div><div>",
        _facts_table([a, b], ["A", "B"]),
        _changes_list(_dict(report.get("changes"))),
        "</div></div>",
        f'<h2>Fused blocks <span class="count">{len(blocks)}</span></h2>',
        _blocks_list(blocks) if blocks else '<p class="muted">No block was re-parameterized.</p>',
        "<h2>Nodes and initializers</h2>",
        _node_list("Nodes added", report.get("nodes_added")),
        _node_list("Nodes removed", report.get("nodes_removed")),
        _name_list("Initializers added", report.get("initializers_added")),
        _name_list("Initializers removed", report.get("initializers_removed")),
    ]
    return f"diff {a_path} → {b_path}", "\n".join(parts)


def _diff_banner(report: dict, a: dict, b: dict, blocks: list[dict]) -> str:
    """Blocks fused and what they saved; a warning when the model's interface changed."""
    changes = _dict(report.get("changes"))
    interface = [*_list(changes.get("inputs")), *_list(changes.get("outputs"))]
    a_nodes, b_nodes = _node_total(a), _node_total(b)
    detail = (
        f"Nodes {_count(a_nodes)} → {_count(b_nodes)}, parameters "
        f"{_percent_change(a.get('parameters'), b.get('parameters')) or 'unchanged'}, size "
        f"{_percent_change(a.get('size_bytes'), b.get('size_bytes')) or 'unchanged'}."
    )
    headline = _plural(len(blocks), "block") + " fused" if blocks else "No fused block"
    if interface:
        detail += "<ul>" + "".join(f"<li>{_e(change)}</li>" for change in interface) + "</ul>"
        return _banner("warn", headline + " · inputs or outputs changed", detail)
    return _banner("info" if blocks else "none", headline, detail)


def _changes_list(changes: dict) -> str:
    """The interface and metadata changes, one line per change, or a line saying there is none."""
    items = [
        f"<li><strong>{label}:</strong> {_e(change)}</li>"
        for key, label in (
            ("inputs", "Inputs"),
            ("outputs", "Outputs"),
            ("opsets", "Opsets"),
            ("metadata", "Metadata"),
        )
        for change in _list(changes.get(key))
    ]
    if not items:
        return '<p class="muted">✓ Inputs, outputs, opsets and metadata unchanged.</p>'
    return f'<ul class="changes">{"".join(items)}</ul>'


def _blocks_list(blocks: list[dict]) -> str:
    """Legend, filter toolbar (shown by the script) and one collapsible entry per block."""
    legend = "".join(
        f'<span><span class="swatch {cls}"></span>{name}</span>'
        for cls, name in (
            ("op-conv", "Conv"),
            ("op-bn", "BatchNormalization"),
            ("op-add", "Add"),
            ("op-other", "other op"),
            ("tensor", "tensor"),
        )
    )
    toolbar = (
        '<div class="toolbar" id="toolbar" hidden>'
        '<input type="search" placeholder="Filter blocks by tensor, node or op" '
        'aria-label="Filter blocks">'
        '<button type="button" data-open="all">Expand all</button>'
        '<button type="button" data-open="none">Collapse all</button></div>'
    )
    entries = (_block(i, block) for i, block in enumerate(blocks, start=1))
    return f'<div class="legend">{legend}</div>{toolbar}' + "\n".join(entries)


def _block(index: int, block: dict) -> str:
    """One fused block: a summary line, the before and after pictures, the full node names."""
    a_nodes = [PictureNode.of(node) for node in _list(block.get("a_nodes"))]
    b_nodes = [PictureNode.of(node) for node in _list(block.get("b_nodes"))]
    inputs = [str(name) for name in _list(block.get("inputs"))]
    output = str(block.get("output") or "")
    scope = common_scope(node.name for node in a_nodes + b_nodes)
    before, before_width = block_picture(a_nodes, inputs, output, scope)
    after, after_width = block_picture(b_nodes, inputs, output, scope)
    stacked = max(before_width, after_width) > 560
    summary = str(block.get("summary") or "")
    return f"""<details class="block" id="block-{index}"{" open" if index <= OPEN_BLOCKS else ""}>
<summary><span class="idx">#{index}</span><code class="out" title="{_e(output)}">{_e(output)}</code>
<span>{_e(summary)}</span>
<span class="nodes">{len(a_nodes)} → {_plural(len(b_nodes), "node")}</span></summary>
<div class="pictures{" stacked" if stacked else ""}">
<figure><figcaption>Before (A) · {_plural(len(a_nodes), "node")}</figcaption>{before}</figure>
<div class="to">{"↓" if stacked else "→"}</div>
<figure><figcaption>After (B) · {_plural(len(b_nodes), "node")}</figcaption>{after}</figure>
</div>
<details class="names"><summary>Node names</summary>{_node_names(a_nodes, b_nodes)}</details>
</details>"""


def _node_names(a_nodes: list[PictureNode], b_nodes: list[PictureNode]) -> str:
    """Full names of a block's nodes, with the tensors each reads and writes."""
    rows = [
        [side, _e(node.op), f"<code>{_e(node.name)}</code>", _code_list(node.inputs),
         _code_list(node.outputs)]
        for side, nodes in (("A", a_nodes), ("B", b_nodes))
        for node in nodes
    ]  # fmt: skip
    return _table(["", "Op", "Name", "Reads", "Writes"], rows)


def _node_list(title: str, nodes: object) -> str:
    """A collapsed table of ``{name, op}`` entries."""
    rows = [
        [_e(_dict(n).get("op")), f"<code>{_e(_dict(n).get('name'))}</code>"] for n in _list(nodes)
    ]
    return _collapsed(title, len(rows), _table(["Op", "Name"], rows))


def _name_list(title: str, names: object) -> str:
    """A collapsed table of plain names."""
    rows = [[f"<code>{_e(name)}</code>"] for name in _list(names)]
    return _collapsed(title, len(rows), _table(["Name"], rows))


# ---------------------------------------------------------------- pictures


def _fuse_body(report: dict) -> tuple[str, str]:
    """Verdict, before → after sizes, blocks fused and skipped, verification, timing."""
    fused, skipped = _list(report.get("fused")), _list(report.get("skipped"))
    before, after = _dict(report.get("before")), _dict(report.get("after"))
    verification = report.get("verification")
    headline = _plural(len(fused), "block") + " fused" if fused else "No re-parameterizable block"
    verdict = report_verdict(report)
    reason = _e(verdict.get("reason") or "")
    if verdict.get("status") == "passed" and isinstance(verification, dict):
        banner = _banner("pass", headline + " · verified", _verification_line(verification))
    elif verdict.get("status") == "failed":
        detail = _verification_line(verification) if isinstance(verification, dict) else ""
        banner = _banner("fail", "Verification FAILED", f"{reason} {detail}".strip())
    else:
        banner = _banner("none", headline, f"Not verified: {reason or 'not run'}.")
    seconds = _dict(report.get("seconds"))
    timing = ", ".join(f"{_e(phase)} {_seconds(s)}" for phase, s in seconds.items())
    parts = [
        _header("fuse", "Fuse report"),
        banner,
        "<h2>Summary</h2>",
        '<div class="grid2"><div>',
        _op_table(_op_rows(before, after, None), "Before", "After"),
        "</div><div>",
        _facts_table([before, after], ["Before", "After"]),
        "</div></div>",
        _blocks_section("Fused blocks", fused),
        *(f"<p>{_e(line)}</p>" for line in inlining_lines(report.get("inlining"))),
        _skipped_section(skipped),
    ]
    if isinstance(verification, dict):
        parts += ["<h2>Verification</h2>", _outputs_table(_list(verification.get("outputs")))]
    if timing:
        parts.append(f'<p class="muted">Time: {timing}</p>')
    return "fuse report", "\n".join(parts)


def _verify_body(report: dict) -> tuple[str, str]:
    """Verdict, first diverging tensor, warnings, per-output errors."""
    a_path, b_path = reference_name(report), str(report.get("b_path") or "B")
    passed = bool(report.get("passed"))
    verdict = ("pass", "Outputs match") if passed else ("fail", "FAILED: outputs differ")
    parts = [
        _header("verify", f"<code>{_e(a_path)}</code> vs <code>{_e(b_path)}</code>"),
        _banner(*verdict, _verification_line(report)),
    ]
    localization = report.get("localization")
    if isinstance(localization, dict):
        parts.append(_localization(localization))
    warnings = _list(report.get("warnings"))
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(_banner("warn", "Warnings", f"<ul>{items}</ul>"))
    parts += ["<h2>Outputs</h2>", _outputs_table(_list(report.get("outputs")))]
    return f"verify {a_path} vs {b_path}", "\n".join(parts)


def _inspect_body(report: dict) -> tuple[str, str]:
    """Model facts, interface, op counts, and the blocks ``fuse`` would fuse or skip."""
    path = str(report.get("path") or "model")
    summary = _dict(report.get("summary"))
    fusable = _list(report.get("fusable"))
    in_subgraphs = [str(_dict(f).get("message")) for f in _list(report.get("in_subgraphs"))]
    sums = [str(_dict(s).get("reason")) for s in _list(report.get("branch_sums"))]
    if fusable:
        banner = _banner("info", _plural(len(fusable), "fusable block"), "Run fuse to fold them.")
    elif in_subgraphs:
        banner = _banner("warn", "Not deploy form", _e("; ".join(in_subgraphs)))
    elif sums:
        banner = _banner("warn", "Not deploy form", _e("; ".join(sums)))
    else:
        banner = _banner("none", "No fusable block", "The model has no re-parameterizable block.")
    counts = {str(op): n for op, n in _dict(summary.get("op_counts")).items()}
    op_rows = [[_e(op), _count(n)] for op, n in sorted(counts.items(), key=_by_count)]
    parts = [
        _header("inspect", f"<code>{_e(path)}</code>"),
        banner,
        "<h2>Model</h2>",
        '<div class="grid2"><div>',
        _facts_table([summary], ["Value"]),
        _interface(summary),
        "</div><div>",
        _table(["Op", "Count"], op_rows, numeric=(1,)),
        "</div></div>",
        _blocks_section("Fusable blocks", fusable),
        *(f"<p>{_e(line)}</p>" for line in inlining_lines(report.get("inlining"))),
        _skipped_section(_list(report.get("skipped"))),
    ]
    return f"inspect {path}", "\n".join(parts)


def _inspect_many_body(report: dict) -> tuple[str, str]:
    """A table of every model's state, then each readable model's inspect page."""
    states = model_states(report)
    failing = bool(_list(report.get("gate_failed")) or _list(report.get("unusable")))
    rows = [[f"<code>{_e(s.path)}</code>", _e(s.label), _text(s.detail)] for s in states]
    parts = [
        _header("inspect", _e(_plural(len(states), "model"))),
        _banner("fail" if failing else "pass", _e(many_summary_line(report))),
        _table(["Model", "State", "Why"], rows),
    ]
    for model in _list(report.get("models")):
        if "error" not in _dict(model):
            parts.append(_inspect_body(_dict(model))[1])
    return f"inspect {_plural(len(states), 'model')}", "\n".join(parts)


def _error_body(report: dict) -> tuple[str, str]:
    """The page of a run that stopped on an error: what went wrong and the exit code."""
    error = _dict(report.get("error"))
    kind = str(report.get("kind") or "report")
    headline = f"{kind} stopped: exit {_e(error.get('exit_code'))}"
    return f"{kind} error", _banner("fail", headline, _e(error.get("message") or ""))


def _unknown_body(report: dict) -> tuple[str, str]:
    """A page for a report this version does not know how to draw."""
    detail = "This version of repvgg-onnx renders fuse, verify, diff and inspect reports."
    kind = report.get("kind")
    return "report", _banner("none", f"Unknown report kind: {_e(kind)}", detail)


_RENDERERS = {
    "diff": _diff_body,
    "fuse": _fuse_body,
    "verify": _verify_body,
    "inspect": _inspect_body,
    "inspect_many": _inspect_many_body,
}


def _verification_line(verification: dict) -> str:
    """``2 outputs compared on input:1x3x224x224, 3 batches, seed 0, rtol 1e-4``."""
    shapes = ", ".join(
        f"{_e(name)}:{_shape(shape)}"
        for name, shape in _dict(verification.get("input_shapes")).items()
    )
    parts = [f"{_plural(len(_list(verification.get('outputs'))), 'output')} compared"]
    parts += [f"on {shapes}"] if shapes else []
    if _is_number(verification.get("batches")):
        parts.append(_plural(verification["batches"], "batch", "batches"))
    parts += [
        f"{key} {_sci(verification[key])}"
        for key in ("seed", "rtol", "atol")
        if verification.get(key) is not None
    ]
    return ", ".join(parts) + "."


def _outputs_table(outputs: list) -> str:
    """Per-output errors against the allowed tolerance, a column per metric the report has;
    failing rows highlighted."""
    outputs = [_dict(output) for output in outputs]
    columns = [column for column in _OUTPUT_COLUMNS if any(column[1] in o for o in outputs)]
    rows, classes = [], []
    for output in outputs:
        name = f"<code>{_e(output.get('name'))}</code>"
        if output.get("b_name") not in (None, output.get("name")):
            name += f" / <code>{_e(output['b_name'])}</code>"
        passed = output.get("passed") is True
        metrics = [fmt(output.get(key)) for _, key, fmt in columns]
        rows.append([name, _shape(output.get("shape")), *metrics, _verdict(passed)])
        classes.append("" if passed else "failed")
    head = ["Output", "Shape", *(title for title, _, _ in columns), ""]
    return _table(head, rows, numeric=tuple(range(2, 2 + len(columns))), row_classes=classes)


def _localization(found: dict) -> str:
    """Where the two models first diverge, as a failure box."""
    consumers = _code_list(_list(found.get("consumers"))) or "no node"
    detail = (
        f"<p>{_e(found.get('message'))}</p>"
        f"<table><tr><th>Tensor</th><td><code>{_e(found.get('tensor'))}</code></td></tr>"
        f"<tr><th>Max abs err</th><td>{_sci(found.get('max_abs_error'))}</td></tr>"
        f"<tr><th>Computed in A by</th><td><code>{_e(found.get('a_producer'))}</code></td></tr>"
        f"<tr><th>Computed in B by</th><td><code>{_e(found.get('b_producer'))}</code></td></tr>"
        f"<tr><th>Read by</th><td>{consumers}</td></tr></table>"
    )
    return _banner("fail", "First divergence", detail)


def _blocks_section(title: str, blocks: list) -> str:
    """Fused (or fusable) blocks as a table: rule, output tensor, branches → result, node."""
    rows = [
        [str(i), _e(b.get("rule")), f"<code>{_e(b.get('output'))}</code>",
         f"{_e(', '.join(map(str, _list(b.get('branches')))))} → <b>{_e(b.get('result'))}</b>",
         f"<code>{_e(b.get('node'))}</code>"]
        for i, b in enumerate(map(_dict, blocks), start=1)
    ]  # fmt: skip
    table = _table(["#", "Rule", "Output", "Branches → result", "Node"], rows, numeric=(0,))
    count = f' <span class="count">{len(rows)}</span>'
    return f"<h2>{title}{count}</h2>" + (table if rows else '<p class="muted">None.</p>')


def _skipped_section(skipped: list) -> str:
    """Candidates left alone, each with its reason; nothing when there are none."""
    rows = [
        [_e(s.get("rule")), f"<code>{_e(s.get('node'))}</code>", _e(s.get("reason"))]
        for s in map(_dict, skipped)
    ]
    if not rows:
        return ""
    table = _table(["Rule", "Node", "Reason"], rows)
    return f'<h2>Skipped candidates <span class="count">{len(rows)}</span></h2>{table}'


def _interface(model: dict) -> str:
    """The model's inputs and outputs: name, element type, shape."""
    rows = [
        [role, f"<code>{_e(_dict(v).get('name'))}</code>", _e(_dict(v).get("dtype")),
         _shape(_dict(v).get("shape"))]
        for role, key in (("Input", "inputs"), ("Output", "outputs"))
        for v in _list(model.get(key))
    ]  # fmt: skip
    return _table(["", "Name", "Type", "Shape"], rows)


# ---------------------------------------------------------------- shared pieces


def _facts_table(models: list[dict], titles: list[str]) -> str:
    """Size and provenance of one model, or of two side by side with the relative change and
    changed rows highlighted; facts no model has are left out."""
    pair = len(models) == 2
    rows, classes = [], []
    for fact, value_of, fmt in _FACTS:
        values = [value_of(model) for model in models]
        if all(value is None for value in values):
            continue
        change = [_percent_change(*values) if fmt is not _text else ""] if pair else []
        rows.append([fact, *map(fmt, values), *change])
        classes.append("changed" if pair and values[0] != values[1] else "")
    head = ["", *titles, *(["Change"] if pair else [])]
    return _table(head, rows, numeric=tuple(range(1, len(head))), row_classes=classes)


def _op_rows(a: dict, b: dict, given: object) -> list[tuple[str, object, object]]:
    """``(op, count in a, count in b)``: the report's ``op_changes`` if present, else every op
    of either histogram, most frequent first."""
    if isinstance(given, list) and given:
        return [
            (str(_dict(c).get("op")), _dict(c).get("a", 0), _dict(c).get("b", 0)) for c in given
        ]
    a_counts, b_counts = _dict(a.get("op_counts")), _dict(b.get("op_counts"))
    ops = sorted(
        set(a_counts) | set(b_counts), key=lambda op: (-_number(a_counts.get(op)), str(op))
    )
    return [(str(op), a_counts.get(op, 0), b_counts.get(op, 0)) for op in ops]


def _op_table(rows: list[tuple[str, object, object]], a_label: str, b_label: str) -> str:
    """Op counts before → after; changed rows highlighted, with the signed difference."""
    body = [[_e(op), _count(x), _count(y), _signed(_number(y) - _number(x))] for op, x, y in rows]
    changed = ["changed" if x != y else "" for _, x, y in rows]
    return _table(["Op", a_label, b_label, "Δ"], body, numeric=(1, 2, 3), row_classes=changed)


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: tuple[int, ...] = (),
    row_classes: Sequence[str] = (),
) -> str:
    """A table of already-escaped cells; ``numeric`` columns are right-aligned."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="num">{v}</{tag}>' if i in numeric else f"<{tag}>{v}</{tag}>"
            for i, v in enumerate(values)
        )

    lines = [f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        lines.append(f'<tr class="{cls}">' if cls else "<tr>")
        lines.append(f"{cells('td', row)}</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _header(kind: str, title_html: str) -> str:
    return f'<header><div class="tool">repvgg-onnx {kind}</div><h1>{title_html}</h1></header>'


def _banner(state: str, headline: str, detail: str = "") -> str:
    """A verdict box; ``state`` is ``pass``, ``fail``, ``warn``, ``info`` or ``none``."""
    icon = {"pass": "✓ ", "fail": "✗ ", "warn": "⚠ "}.get(state, "")
    return f'<div class="banner {state}"><strong>{icon}{headline}</strong>{detail}</div>'


def _collapsed(title: str, count: int, body: str) -> str:
    if not count:
        return f'<p class="muted">{title}: none.</p>'
    summary = f'<summary>{title} <span class="count">{count}</span></summary>'
    return f'<details class="list">{summary}{body}</details>'


def _schema_note(report: dict) -> str:
    version = report.get("schema_version")
    if version == SCHEMA_VERSION:
        return ""
    detail = f" This page reads schema {SCHEMA_VERSION}; some fields may be missing."
    return _banner("warn", f"Report schema {_e(version)}", detail)


def _code_list(names: Iterable[object]) -> str:
    return ", ".join(f"<code>{_e(name)}</code>" for name in names)


def _text(value: object) -> str:
    return "—" if value is None or value == "" else _e(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object) -> float:
    return value if _is_number(value) else 0


def _by_count(entry: tuple[str, object]) -> tuple[float, str]:
    return -_number(entry[1]), entry[0]


def _node_total(model: dict) -> int | None:
    counts = _dict(model.get("op_counts"))
    return sum(int(_number(n)) for n in counts.values()) if counts else None


def _opsets(opsets: object) -> str | None:
    """``{"": 17, "com.microsoft": 1}`` → ``ai.onnx 17, com.microsoft 1``."""
    if not isinstance(opsets, dict):
        return None
    return ", ".join(
        f"{domain or 'ai.onnx'} {version}" for domain, version in sorted(opsets.items())
    )


def _shape(shape: object) -> str:
    """``["batch", 3, 224, 224]`` → ``batch×3×224×224``; a scalar is ``[]``."""
    if not isinstance(shape, list):
        return "—"
    return "×".join(_e(d if d is not None else "?") for d in shape) or "[]"


def _count(value: object) -> str:
    return f"{value:,}" if _is_number(value) else "—"


def _sci(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if _is_number(value) else "—"


def _share(value: object) -> str:
    return f"{value:.1%}" if _is_number(value) else "—"


def _verdict(passed: bool) -> str:
    return '<span class="good">✓ passed</span>' if passed else '<span class="bad">✗ FAILED</span>'


def _seconds(value: object) -> str:
    return f"{value:.2f} s" if _is_number(value) else "—"


def _signed(delta: float) -> str:
    return "" if delta == 0 else f"{'+' if delta > 0 else '−'}{abs(delta):,g}"


def _percent_change(a: object, b: object) -> str:
    """``(b − a)/a`` as ``−12.5%``; empty when equal, "new" from zero, "—" when unknown."""
    if not (_is_number(a) and _is_number(b)):
        return "—"
    if a == b:
        return ""
    if a == 0:
        return "new"
    percent = (b - a) / a * 100
    magnitude = f"{abs(percent):.1f}" if abs(percent) >= 1 else f"{abs(percent):.2g}"
    return f"{'+' if percent > 0 else '−'}{magnitude}%"


def _bytes(size: object) -> str:
    """Decimal units, as the text report prints them: ``7982311`` → ``8.0 MB``."""
    if not _is_number(size):
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


#: The metrics of an output comparison: column title, report key, formatter.
_OUTPUT_COLUMNS = (
    ("Max abs err", "max_abs_error", _sci),
    ("Max rel err", "max_rel_error", _sci),
    ("Mean abs err", "mean_abs_error", _sci),
    ("Cosine", "cosine_similarity", partial(_sci, digits=7)),
    ("Top-1", "top1_agreement", _share),
    ("atol", "atol", _sci),
    ("rtol", "rtol", _sci),
    ("Needed atol", "required_atol", _sci),
)

#: The facts of a model: row title, how to read it from a report's model dict, formatter.
_FACTS = (
    ("Parameters", lambda model: model.get("parameters"), _count),
    ("Size", lambda model: model.get("size_bytes"), _bytes),
    ("Nodes", _node_total, _count),
    ("IR version", lambda model: model.get("ir_version"), _text),
    ("Producer", lambda model: model.get("producer"), _text),
    ("Opsets", lambda model: _opsets(model.get("opsets")), _text),
)
