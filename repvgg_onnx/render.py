"""Text and Markdown renderings of every report, from its JSON-ready dict (``to_dict()``).

One renderer per kind (``fuse``, ``verify``, ``diff``, ``inspect``) and format; the HTML view
is :mod:`repvgg_onnx.html`. Renderers only read the dict: what the dict says is what the page
says, whichever format a user picks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

#: Version of every JSON report (``repvgg_onnx/schema/report.schema.json``). 2: every report
#: has a ``verdict``; a fuse report's ``verification`` is ``null`` only when it did not run;
#: a run that stopped on an error writes an ``error`` report.
SCHEMA_VERSION = 2


def verdict(status: str, reason: str | None = None) -> dict:
    """``{"status": "passed" | "failed" | "skipped" | "error", "reason": …}``: what every
    report says about whether the two models were shown to compute the same function."""
    return {"status": status, "reason": reason}


def error_report(kind: str, message: str, exit_code: int) -> dict:
    """The report of a run that stopped on an error (written so CI always has one)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "error": {"message": message, "exit_code": exit_code},
        "verdict": verdict("error", message),
    }


class Rendered:
    """``to_text``, ``to_markdown``, ``to_json`` and ``to_html`` of a result with ``to_dict``."""

    def to_dict(self) -> dict:
        raise NotImplementedError

    def to_text(self) -> str:
        return render(self.to_dict(), "text")

    def to_markdown(self) -> str:
        return render(self.to_dict(), "markdown")

    def to_json(self) -> str:
        return render(self.to_dict(), "json")

    def to_html(self) -> str:
        return render(self.to_dict(), "html")


def render(report: dict, output_format: str) -> str:
    """``report`` as ``"text"``, ``"markdown"``, ``"json"`` or ``"html"``."""
    if output_format == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, default=_json_default)
    if output_format == "html":
        from repvgg_onnx.html import render_html

        return render_html(report)
    if "error" in report:
        return _error_markdown(report) if output_format == "markdown" else _error_text(report)
    renderers = _MARKDOWN if output_format == "markdown" else _TEXT
    return renderers[report["kind"]](report)


def _error_text(report: dict) -> str:
    error = report["error"]
    return f"repvgg-onnx {report['kind']}: error (exit {error['exit_code']}): {error['message']}"


def _error_markdown(report: dict) -> str:
    error = report["error"]
    return (
        f"### repvgg-onnx {report['kind']}: ❌ error (exit {error['exit_code']})\n\n"
        f"{_cell(error['message'])}\n"
    )


def report_verdict(report: dict) -> dict:
    """The report's ``verdict``; for a report written before schema 2, read off its
    ``verification`` (or ``passed``)."""
    if isinstance(report.get("verdict"), dict):
        return report["verdict"]
    verification = report if report.get("kind") == "verify" else report.get("verification")
    if isinstance(verification, dict) and "passed" in verification:
        return verdict("passed" if verification["passed"] else "failed")
    return verdict("skipped")


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _change(before: float, after: float) -> str:
    if not before:
        return ""
    return f" ({(after - before) / before:+.1%})"


def _shape(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _interface(summary: dict) -> list[str]:
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in summary["opsets"].items())
    lines = [f"IR {summary['ir_version']}, opsets {opsets}, producer {summary['producer'] or '?'}"]
    lines += [f"input  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in summary["inputs"]]
    lines += [f"output {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in summary["outputs"]]
    ops = ", ".join(
        f"{op} {n}" for op, n in sorted(summary["op_counts"].items(), key=lambda x: -x[1])
    )
    lines.append(f"ops: {ops}")
    lines.append(f"parameters {summary['parameters']:,}, size {_size(summary['size_bytes'])}")
    return lines


def _comparison_line(output: dict) -> str:
    name = output["name"] + (f" ↔ {output['b_name']}" if output.get("b_name") else "")
    if output.get("problem"):
        return f"'{name}' DIFFERS: {output['problem']}"
    top1 = output.get("top1_agreement")
    parts = [
        f"max abs {_num(output['max_abs_error'])}",
        f"max rel {_num(output['max_rel_error'])}",
        f"mean abs {_num(output.get('mean_abs_error'))}",
        f"cosine {_num(output.get('cosine_similarity'), '.7f')}",
    ]
    if top1 is not None:
        parts.append(f"top-1 agreement {top1:.1%}")
    allowed = f"allowed {output['atol']:.3g} + {output['rtol']:g}·|A|"
    verdict = "ok" if output["passed"] else "DIFFERS"
    return f"'{name}' {verdict}: " + ", ".join(parts) + f" ({allowed})"


def _rewrite(block: dict) -> str:
    """``"Conv3x3+BN, Conv1x1+BN, BN → Conv3x3"`` for a fused block's dict."""
    return f"{', '.join(block['branches'])} → {block['result']}"


def _num(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


# --- text ------------------------------------------------------------------------------------


def _fuse_text(report: dict) -> str:
    before, after = report["before"], report["after"]
    fused = report["fused"]
    if fused:
        rules: dict[str, int] = {}
        for block in fused:
            rules[block["rule"]] = rules.get(block["rule"], 0) + 1
        detail = ", ".join(f"{rule}: {count}" for rule, count in rules.items())
        lines = [f"Fused {_plural(len(fused), 'block')} ({detail}):"]
    else:
        lines = ["Fused nothing: no re-parameterizable block found."]
    lines += [f"  {b['output']}: {_rewrite(b)}" for b in fused]
    if report.get("canonicalized"):
        lines.append(
            f"Canonicalized: {_plural(report['canonicalized'], 'node')} rewritten or removed "
            "(no-ops, Constant nodes, constant subexpressions; not blocks)"
        )
    if report["skipped"]:
        lines.append(f"Skipped {_plural(len(report['skipped']), 'candidate')}:")
        lines += [f"  {s['node']}: {s['reason']}" for s in report["skipped"]]
    lines.append("Ops:        " + _op_changes(before["op_counts"], after["op_counts"]))
    lines.append(f"Parameters: {before['parameters']:,} → {after['parameters']:,}")
    lines.append(f"Size:       {_size(before['size_bytes'])} → {_size(after['size_bytes'])}")
    lines.append("Verified:   " + _verification_line(report))
    if report.get("seconds"):
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in report["seconds"].items())
        lines.append(f"Time:       {timing}")
    return "\n".join(lines)


def _op_changes(before: dict[str, int], after: dict[str, int]) -> str:
    ops = sorted(set(before) | set(after), key=lambda op: (-before.get(op, 0), op))
    changed = [op for op in ops if before.get(op, 0) != after.get(op, 0)]
    parts = [f"{op} {before.get(op, 0)} → {after.get(op, 0)}" for op in changed]
    parts += [f"{op} {before[op]}" for op in ops if op not in changed]
    return ", ".join(parts) if parts else "(empty graph)"


def _verification_line(report: dict) -> str:
    verification = report.get("verification")
    if verification is None:
        return "skipped: " + (report_verdict(report).get("reason") or "not run")
    verdict = "passed" if verification["passed"] else "FAILED"
    parts = [
        f"'{o['name']}' max abs err {_num(o['max_abs_error'])} (allowed {o['atol']:.3g} + "
        f"{o['rtol']:g}·|ref|, scale {o['scale']:.3g}){'' if o['passed'] else ' ✗'}"
        for o in verification["outputs"]
    ]
    shapes = ", ".join(
        f"{k}:{'x'.join(map(str, v))}" for k, v in verification["input_shapes"].items()
    )
    return f"{verdict} on {shapes} (seed {verification['seed']}): " + "; ".join(parts)


def _verify_text(report: dict) -> str:
    verdict = (
        "PASSED: the models compute the same function"
        if report["passed"]
        else ("FAILED: the models differ")
    )
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    lines = [
        f"{verdict} ({report.get('a_path') or 'A'} vs {report.get('b_path') or 'B'}; "
        f"{_plural(report['batches'], 'batch')} of {shapes}, seed {report['seed']})"
    ]
    lines += [f"  {_comparison_line(output)}" for output in report["outputs"]]
    lines += [f"warning: {warning}" for warning in report.get("warnings", [])]
    if report.get("localization"):
        lines.append(f"localized: {report['localization']['message']}")
    return "\n".join(lines)


def _diff_text(report: dict) -> str:
    a, b = report["a"], report["b"]
    lines = [f"diff {a.get('path') or 'A'} → {b.get('path') or 'B'}"]
    changed = [r for r in report["op_changes"] if r["a"] != r["b"]]
    lines.append(
        "ops: " + (", ".join(f"{r['op']} {r['a']} → {r['b']}" for r in changed) or "unchanged")
    )
    lines.append(
        f"parameters {a['parameters']:,} → {b['parameters']:,}"
        f"{_change(a['parameters'], b['parameters'])}, size {_size(a['size_bytes'])} → "
        f"{_size(b['size_bytes'])}{_change(a['size_bytes'], b['size_bytes'])}"
    )
    for kind, items in report["changes"].items():
        lines += [f"{kind}: {item}" for item in items]
    lines.append(
        f"nodes: {len(report['nodes_added'])} added, {len(report['nodes_removed'])} removed; "
        f"initializers: {len(report['initializers_added'])} added, "
        f"{len(report['initializers_removed'])} removed"
    )
    lines.append(f"{_plural(len(report['blocks']), 'fused block')}:")
    lines += [f"  {block['output']}: {block['summary']}" for block in report["blocks"]]
    return "\n".join(lines)


def _inspect_text(report: dict) -> str:
    lines = [f"{report.get('path') or 'model'}"]
    lines += [f"  {line}" for line in _interface(report["summary"])]
    fusable = report["fusable"]
    batchnorms = report.get("batchnorms", [])
    if fusable:
        lines.append(f"{_plural(len(fusable), 'fusable block')} (repvgg-onnx fuse would fuse):")
        lines += [f"  {b['output']}: {_rewrite(b)}" for b in fusable]
    elif batchnorms:
        lines.append("No fusable block, but BatchNormalization remains: not deploy form.")
    else:
        lines.append("No fusable block and no BatchNormalization: the model is in deploy form.")
    if batchnorms:
        lines.append(f"{_plural(len(batchnorms), 'BatchNormalization')} would remain:")
        lines += [f"  {bn['node']}: {bn['reason']}" for bn in batchnorms]
    if report["skipped"]:
        lines.append(f"{_plural(len(report['skipped']), 'candidate')} left alone:")
        lines += [f"  {s['node']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


# --- markdown --------------------------------------------------------------------------------


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'").replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fuse_markdown(report: dict) -> str:
    before, after = report["before"], report["after"]
    lines = [f"### repvgg-onnx fuse: {_plural(len(report['fused']), 'block')} fused", ""]
    lines += _op_table(before["op_counts"], after["op_counts"])
    lines += ["", _size_line(before, after), ""]
    lines += _blocks_table([(b["output"], _rewrite(b)) for b in report["fused"]])
    lines += _skipped_list(report["skipped"])
    lines += ["", f"**{_markdown_verdict(report)}**", ""]
    verification = report.get("verification")
    if verification is not None:
        lines += [f"- {_cell(_comparison_line(o))}" for o in verification["outputs"]]
    return "\n".join(lines) + "\n"


def _markdown_verdict(report: dict) -> str:
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


def _verify_markdown(report: dict) -> str:
    verdict = "✅ same function" if report["passed"] else "❌ the models differ"
    lines = [
        f"### repvgg-onnx verify: {verdict}",
        "",
        f"{_code(report.get('a_path') or 'A')} vs {_code(report.get('b_path') or 'B')}, "
        f"{_plural(report['batches'], 'batch')}, seed {report['seed']}",
        "",
        "| output | verdict | max abs | max rel | mean abs | cosine | top-1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in report["outputs"]:
        top1 = "" if o.get("top1_agreement") is None else f"{o['top1_agreement']:.1%}"
        lines.append(
            f"| {_code(o['name'])} | {'ok' if o['passed'] else '**differs**'} | "
            f"{_num(o['max_abs_error'])} | {_num(o['max_rel_error'])} | "
            f"{_num(o.get('mean_abs_error'))} | "
            f"{_num(o.get('cosine_similarity'), '.7f')} | {top1} |"
        )
    lines += [""] + [f"> ⚠️ {_cell(w)}" for w in report.get("warnings", [])]
    if report.get("localization"):
        lines.append(f"**Localized:** {_cell(report['localization']['message'])}")
    return "\n".join(lines) + "\n"


def _diff_markdown(report: dict) -> str:
    a, b = report["a"], report["b"]
    lines = [
        f"### repvgg-onnx diff: {_code(a.get('path') or 'A')} → {_code(b.get('path') or 'B')}",
        "",
    ]
    lines += _op_table(a["op_counts"], b["op_counts"])
    lines += ["", _size_line(a, b), ""]
    interface = [item for items in report["changes"].values() for item in items]
    lines.append(
        "**Interface:** " + ("unchanged" if not interface else "; ".join(map(_cell, interface)))
    )
    lines.append("")
    lines += _blocks_table([(blk["output"], blk["summary"]) for blk in report["blocks"]])
    details = [
        ("Nodes added", [f"{n['op']} {_code(n['name'])}" for n in report["nodes_added"]]),
        ("Nodes removed", [f"{n['op']} {_code(n['name'])}" for n in report["nodes_removed"]]),
        ("Initializers added", [_code(n) for n in report["initializers_added"]]),
        ("Initializers removed", [_code(n) for n in report["initializers_removed"]]),
    ]
    for title, items in details:
        if items:
            lines += ["", f"<details><summary>{title} ({len(items)})</summary>", ""]
            lines += [f"- {item}" for item in items] + ["", "</details>"]
    return "\n".join(lines) + "\n"


def _inspect_markdown(report: dict) -> str:
    fusable = report["fusable"]
    batchnorms = report.get("batchnorms", [])
    if fusable:
        verdict = f"❌ {_plural(len(fusable), 'fusable block')} (training form)"
    elif batchnorms:
        verdict = f"⚠️ no fusable block, {_plural(len(batchnorms), 'BatchNormalization')} left"
    else:
        verdict = "✅ no fusable block, no BatchNormalization (deploy form)"
    lines = [f"### repvgg-onnx inspect {_code(report.get('path') or 'model')}: {verdict}", ""]
    lines += [f"- {_cell(line)}" for line in _interface(report["summary"])]
    lines.append("")
    lines += _blocks_table([(b["output"], _rewrite(b)) for b in fusable])
    if batchnorms:
        lines += ["", f"**{_plural(len(batchnorms), 'BatchNormalization')} would remain:**", ""]
        lines += [f"- {_code(bn['node'])}: {_cell(bn['reason'])}" for bn in batchnorms]
    lines += _skipped_list(report["skipped"])
    return "\n".join(lines) + "\n"


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
        f"{_change(before['parameters'], after['parameters'])} · **Size** "
        f"{_size(before['size_bytes'])} → {_size(after['size_bytes'])}"
        f"{_change(before['size_bytes'], after['size_bytes'])}"
    )


def _blocks_table(rows: list[tuple[str, str]]) -> list[str]:
    if not rows:
        return ["No fused block."]
    lines = [f"**{_plural(len(rows), 'block')}**", "", "| block output | before → after |"]
    lines.append("| --- | --- |")
    lines += [f"| {_code(output)} | {_cell(summary)} |" for output, summary in rows]
    return lines


def _skipped_list(skipped: list[dict]) -> list[str]:
    if not skipped:
        return []
    lines = ["", f"<details><summary>{_plural(len(skipped), 'candidate')} left alone</summary>", ""]
    lines += [f"- {_code(s['node'])}: {_cell(s['reason'])}" for s in skipped]
    return [*lines, "", "</details>"]


_TEXT: dict[str, Callable[[dict], str]] = {
    "fuse": _fuse_text,
    "verify": _verify_text,
    "diff": _diff_text,
    "inspect": _inspect_text,
}
_MARKDOWN: dict[str, Callable[[dict], str]] = {
    "fuse": _fuse_markdown,
    "verify": _verify_markdown,
    "diff": _diff_markdown,
    "inspect": _inspect_markdown,
}
