"""Markdown renderings of every report, sized for a pull-request comment.

GitHub rejects a comment over 65,536 characters, and a model with thousands of blocks lists
far more. Blocks with the same signature (``Conv3x3+BN, Conv1x1+BN, BN → Conv3x3``) are one
row with a count and example outputs; long lists are collapsed and cut with "… N more"; and if
the page is still over :data:`MARKDOWN_LIMIT`, it is rendered again with tighter
:data:`BUDGETS` until it fits. Every page carries its verdict line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from repvgg_onnx.reports.render.gate import model_states
from repvgg_onnx.reports.render.schema import report_verdict
from repvgg_onnx.reports.render.text import (
    change_text,
    comparison_line,
    inlining_lines,
    interface_lines,
    many_summary_line,
    number,
    plural,
    rewrite_text,
    size_text,
)

#: Below GitHub's 65,536-character limit for a comment, with room for a heading around it.
MARKDOWN_LIMIT = 60_000


@dataclass(frozen=True)
class Budget:
    """How much a page may list: kinds of block (table rows), items of a collapsed list."""

    rows: int
    items: int


BUDGETS = (Budget(100, 200), Budget(40, 50), Budget(15, 15), Budget(5, 3), Budget(2, 0))


def render_markdown(report: dict) -> str:
    """The report as Markdown of at most :data:`MARKDOWN_LIMIT` characters."""
    if "error" in report:
        return _error_markdown(report)
    renderer = _MARKDOWN[report["kind"]]
    text = ""
    for budget in BUDGETS:
        text = renderer(report, budget)
        if len(text) <= MARKDOWN_LIMIT:
            return text
    return text[: MARKDOWN_LIMIT - 100] + "\n\n… (cut to fit a pull-request comment)\n"


def _error_markdown(report: dict) -> str:
    error = report["error"]
    return (
        f"### repvgg-onnx {report['kind']}: ❌ error (exit {error['exit_code']})\n\n"
        f"{_cell(error['message'])}\n"
    )


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'").replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_verdict(report: dict) -> str:
    """``✅ verified``, ``❌ verification FAILED: …``, ``⚪ verification skipped: …``."""
    status = report_verdict(report)
    marks = {
        "passed": "✅ verified",
        "failed": "❌ verification FAILED",
        "skipped": "⚪ verification skipped",
        "error": "❌ error",
    }
    reason = f": {_cell(status['reason'])}" if status.get("reason") else ""
    return marks.get(status["status"], status["status"]) + reason


def _fuse_markdown(report: dict, budget: Budget) -> str:
    before, after = report["before"], report["after"]
    lines = [f"### repvgg-onnx fuse: {plural(len(report['fused']), 'block')} fused", ""]
    lines += [f"**{markdown_verdict(report)}**", ""]
    lines += _op_table(before["op_counts"], after["op_counts"])
    lines += ["", _size_line(before, after), ""]
    lines += [f"{_cell(line)}\n" for line in inlining_lines(report.get("inlining"))]
    if report.get("canonicalized"):
        lines += [f"Canonicalized: {plural(report['canonicalized'], 'node')} (not blocks)", ""]
    rows = [(b["output"], rewrite_text(b)) for b in report["fused"]]
    lines += _blocks_table(rows, budget, "Nothing fused: no training-time block.")
    lines += _skipped_list(report["skipped"], budget)
    verification = report.get("verification")
    if verification is not None:
        lines += [""] + [f"- {_cell(comparison_line(o))}" for o in verification["outputs"]]
    return "\n".join(lines) + "\n"


def _reference_markdown(report: dict) -> str:
    """Model A's path, or the file of saved outputs B was compared with."""
    reference = report.get("reference")
    if not isinstance(reference, dict) or reference.get("source") != "saved outputs":
        return _code(report.get("a_path") or "A")
    recorded = f" by {_code(report['a_path'])}" if report.get("a_path") else ""
    return f"the outputs saved in {_code(str(reference.get('path')))}{recorded}"


def _verify_markdown(report: dict, budget: Budget) -> str:
    verdict = "✅ same function" if report["passed"] else "❌ the models differ"
    lines = [
        f"### repvgg-onnx verify: {verdict}",
        "",
        f"**{markdown_verdict(report)}**",
        "",
        f"{_reference_markdown(report)} vs {_code(report.get('b_path') or 'B')}, "
        f"{plural(report['batches'], 'batch')}, seed {report['seed']}",
        "",
        "| output | verdict | max abs | max rel | mean abs | cosine | top-1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in report["outputs"][: max(budget.items, 10)]:
        top1 = "" if o.get("top1_agreement") is None else f"{o['top1_agreement']:.1%}"
        problem = f": {o['problem']}" if o.get("problem") else ""
        verdict = "ok" if o["passed"] else f"**differs**{problem}"
        lines.append(
            f"| {_code(o['name'])} | {_cell(verdict)} | "
            f"{number(o['max_abs_error'])} | {number(o['max_rel_error'])} | "
            f"{number(o.get('mean_abs_error'))} | "
            f"{number(o.get('cosine_similarity'), '.7f')} | {top1} |"
        )
    lines += _more(len(report["outputs"]) - max(budget.items, 10), "output")
    lines += [""] + [f"> ⚠️ {_cell(w)}" for w in report.get("warnings", [])]
    if report.get("localization"):
        lines.append(f"**Localized:** {_cell(report['localization']['message'])}")
    return "\n".join(lines) + "\n"


def _diff_markdown(report: dict, budget: Budget) -> str:
    a, b = report["a"], report["b"]
    lines = [
        f"### repvgg-onnx diff: {_code(a.get('path') or 'A')} → {_code(b.get('path') or 'B')}",
        "",
        f"**{markdown_verdict(report)}**",
        "",
    ]
    lines += _op_table(a["op_counts"], b["op_counts"])
    lines += ["", _size_line(a, b), ""]
    interface = [item for items in report["changes"].values() for item in items]
    lines.append(
        "**Interface:** " + ("unchanged" if not interface else "; ".join(map(_cell, interface)))
    )
    lines.append("")
    rows = [(blk["output"], blk["summary"]) for blk in report["blocks"]]
    lines += _blocks_table(rows, budget, "No fused block: the graphs compute their outputs alike.")
    details = [
        ("Nodes added", [f"{n['op']} {_code(n['name'])}" for n in report["nodes_added"]]),
        ("Nodes removed", [f"{n['op']} {_code(n['name'])}" for n in report["nodes_removed"]]),
        ("Initializers added", [_code(n) for n in report["initializers_added"]]),
        ("Initializers removed", [_code(n) for n in report["initializers_removed"]]),
    ]
    for title, items in details:
        lines += _collapsed(title, items, budget)
    return "\n".join(lines) + "\n"


def _inspect_markdown(report: dict, budget: Budget) -> str:
    fusable = report["fusable"]
    batchnorms = report.get("batchnorms", [])
    in_subgraphs = report.get("in_subgraphs", [])
    sums = report.get("branch_sums", [])
    if fusable:
        verdict = f"❌ {plural(len(fusable), 'fusable block')} (training form)"
    elif batchnorms:
        verdict = f"⚠️ no fusable block, {plural(len(batchnorms), 'BatchNormalization')} left"
    elif in_subgraphs:
        verdict = "❌ training-form ops inside control-flow bodies (not deploy form)"
    elif sums:
        verdict = f"⚠️ no fusable block, {plural(len(sums), 'sum')} of linear branches left"
    else:
        verdict = "✅ no fusable block, no BatchNormalization (deploy form)"
    lines = [f"### repvgg-onnx inspect {_code(report.get('path') or 'model')}: {verdict}", ""]
    lines += [f"**{markdown_verdict(report)}**", ""]
    lines += [f"- {_cell(line)}" for line in interface_lines(report["summary"])]
    lines.append("")
    lines += [f"{_cell(line)}\n" for line in inlining_lines(report.get("inlining"))]
    lines += [f"- {_cell(finding['message'])}" for finding in in_subgraphs]
    lines += [""] if in_subgraphs else []
    rows = [(b["output"], rewrite_text(b)) for b in fusable]
    lines += _blocks_table(rows, budget, "No fusable block.")
    items = [f"{_code(bn['node'])}: {_cell(bn['reason'])}" for bn in batchnorms]
    lines += _collapsed("BatchNormalization that would remain", items, budget, open_=True)
    items = [f"{_code(s['node'])}: {_cell(s['reason'])}" for s in sums]
    lines += _collapsed("Sums of linear branches that would remain", items, budget, open_=True)
    lines += _skipped_list(report["skipped"], budget)
    return "\n".join(lines) + "\n"


_STATE_MARKS = {
    "training form": "❌",
    "unusable": "❌",
    "not deploy form": "⚠️",
    "deploy form": "✅",
}


def _inspect_many_markdown(report: dict, budget: Budget) -> str:
    """The summary line, a table of every model's state, then each readable model's page."""
    states = model_states(report)
    failing = bool(report["gate_failed"] or report["unusable"])
    mark = "❌" if failing else "✅"
    lines = [f"### repvgg-onnx inspect: {mark} {_cell(many_summary_line(report))}", ""]
    lines += [f"**{markdown_verdict(report)}**", ""]
    lines += ["| model | state | why |", "| --- | --- | --- |"]
    lines += [
        f"| {_code(s.path)} | {_STATE_MARKS[s.label]} {s.label} | {_cell(s.detail)} |"
        for s in states
    ]
    pages = [_inspect_markdown(m, budget) for m in report["models"] if "error" not in m]
    return "\n".join(lines) + "\n" + "".join(f"\n{page}" for page in pages)


def _op_table(before: dict, after: dict) -> list[str]:
    ops = sorted(set(before) | set(after), key=lambda op: (before.get(op) == after.get(op), op))
    lines = ["| op | before | after | change |", "| --- | ---: | ---: | ---: |"]
    for op in ops:
        x, y = before.get(op, 0), after.get(op, 0)
        lines.append(f"| {op} | {x} | {y} | {y - x:+d} |" if x != y else f"| {op} | {x} | {y} | |")
    return lines


def _size_line(before: dict, after: dict) -> str:
    return (
        f"**Parameters** {before['parameters']:,} → {after['parameters']:,}"
        f"{change_text(before['parameters'], after['parameters'])} · **Size** "
        f"{size_text(before['size_bytes'])} → {size_text(after['size_bytes'])}"
        f"{change_text(before['size_bytes'], after['size_bytes'])}"
    )


def _blocks_table(rows: list[tuple[str, str]], budget: Budget, empty: str) -> list[str]:
    """Blocks grouped by signature, most frequent first: count and the first outputs."""
    if not rows:
        return [empty]
    groups: dict[str, list[str]] = {}
    for output, summary in rows:
        groups.setdefault(summary, []).append(output)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    lines = [
        f"**{plural(len(rows), 'block')}, {plural(len(groups), 'kind')}**",
        "",
        "| before → after | blocks | outputs |",
        "| --- | ---: | --- |",
    ]
    for summary, outputs in ordered[: budget.rows]:
        shown = ", ".join(_code(o) for o in outputs[:2])
        more = f", … {len(outputs) - 2} more" if len(outputs) > 2 else ""
        lines.append(f"| {_cell(summary)} | {len(outputs)} | {shown}{more} |")
    hidden = ordered[budget.rows :]
    if hidden:
        count = sum(len(outputs) for _, outputs in hidden)
        lines += ["", f"… {plural(len(hidden), 'more kind')} ({plural(count, 'block')})"]
    return lines


def _skipped_list(skipped: list[dict], budget: Budget) -> list[str]:
    items = [f"{_code(s['node'])}: {_cell(s['reason'])}" for s in skipped]
    return _collapsed("Candidates left alone", items, budget)


def _collapsed(title: str, items: list[str], budget: Budget, open_: bool = False) -> list[str]:
    """A ``<details>`` list of at most ``budget.items`` items, then "… N more"."""
    if not items:
        return []
    opening = "<details open>" if open_ else "<details>"
    lines = ["", f"{opening}<summary>{title} ({len(items)})</summary>", ""]
    lines += [f"- {item}" for item in items[: budget.items]]
    lines += _more(len(items) - budget.items)
    return [*lines, "", "</details>"]


def _more(hidden: int, noun: str = "") -> list[str]:
    """``… 12 more`` (``… 12 more outputs``) when a list was cut."""
    if hidden <= 0:
        return []
    return ["", f"… {hidden} more" + (f" {noun}{'' if hidden == 1 else 's'}" if noun else "")]


_MARKDOWN: dict[str, Callable[[dict, Budget], str]] = {
    "fuse": _fuse_markdown,
    "verify": _verify_markdown,
    "diff": _diff_markdown,
    "inspect": _inspect_markdown,
    "inspect_many": _inspect_many_markdown,
}
