"""Plain-text renderings of every report, from its JSON-ready dict (``to_dict()``), and the
phrases the Markdown and HTML renderers share with them (plurals, sizes, comparison lines).

One renderer per kind (``fuse``, ``verify``, ``diff``, ``inspect``). Renderers only read the
dict: what the dict says is what the page says, whichever format a user picks.
"""

from __future__ import annotations

from collections.abc import Callable

from repvgg_onnx.reports.render.gate import model_states
from repvgg_onnx.reports.render.schema import report_verdict


def render_text(report: dict) -> str:
    """``report`` as plain text: an error report's one line, or its kind's renderer."""
    if "error" in report:
        return _error_text(report)
    return _TEXT[report["kind"]](report)


def _error_text(report: dict) -> str:
    error = report["error"]
    return f"repvgg-onnx {report['kind']}: error (exit {error['exit_code']}): {error['message']}"


def plural(count: int, noun: str) -> str:
    """``1 block``, ``3 blocks``, ``3 batches``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('ch', 'sh', 's', 'x')) else 's'}"


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def change_text(before: float, after: float) -> str:
    if not before or after == before:
        return ""
    return f" ({(after - before) / before:+.1%})"


def _shape(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def interface_lines(summary: dict) -> list[str]:
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in summary["opsets"].items())
    lines = [f"IR {summary['ir_version']}, opsets {opsets}, producer {summary['producer'] or '?'}"]
    lines += [f"input  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in summary["inputs"]]
    lines += [f"output {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in summary["outputs"]]
    ops = ", ".join(
        f"{op} {n}" for op, n in sorted(summary["op_counts"].items(), key=lambda x: -x[1])
    )
    lines.append(f"ops: {ops}")
    lines.append(f"parameters {summary['parameters']:,}, size {size_text(summary['size_bytes'])}")
    return lines


def comparison_line(output: dict) -> str:
    name = output["name"] + (f" ↔ {output['b_name']}" if output.get("b_name") else "")
    if output.get("problem"):
        return f"'{name}' DIFFERS: {output['problem']}"
    top1 = output.get("top1_agreement")
    parts = [
        f"max abs {number(output['max_abs_error'])}",
        f"max rel {number(output['max_rel_error'])}",
        f"mean abs {number(output.get('mean_abs_error'))}",
        f"cosine {number(output.get('cosine_similarity'), '.7f')}",
    ]
    if top1 is not None:
        parts.append(f"top-1 agreement {top1:.1%}")
    allowed = f"allowed {output['atol']:.3g} + {output['rtol']:g}·|A|"
    verdict = "ok" if output["passed"] else "DIFFERS"
    return f"'{name}' {verdict}: " + ", ".join(parts) + f" ({allowed})"


def rewrite_text(block: dict) -> str:
    """``"Conv3x3+BN, Conv1x1+BN, BN → Conv3x3"`` for a fused block's dict."""
    return f"{', '.join(block['branches'])} → {block['result']}"


def number(value, spec: str = ".3g") -> str:
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
        lines = [f"Fused {plural(len(fused), 'block')} ({detail}):"]
    else:
        lines = ["Fused nothing: no re-parameterizable block found."]
    lines += [f"  {b['output']}: {rewrite_text(b)}" for b in fused]
    lines += inlining_lines(report.get("inlining"))
    if report.get("canonicalized"):
        lines.append(
            f"Canonicalized: {plural(report['canonicalized'], 'node')} rewritten or removed "
            "(no-ops, Constant nodes, constant subexpressions; not blocks)"
        )
    if report["skipped"]:
        lines.append(f"Skipped {plural(len(report['skipped']), 'candidate')}:")
        lines += [f"  {s['node']}: {s['reason']}" for s in report["skipped"]]
    lines.append("Ops:        " + _op_changes(before["op_counts"], after["op_counts"]))
    lines.append(f"Parameters: {before['parameters']:,} → {after['parameters']:,}")
    lines.append(
        f"Size:       {size_text(before['size_bytes'])} → {size_text(after['size_bytes'])}"
    )
    lines.append("Verified:   " + _verification_line(report))
    if report.get("seconds"):
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in report["seconds"].items())
        lines.append(f"Time:       {timing}")
    return "\n".join(lines)


def inlining_lines(inlining: dict | None) -> list[str]:
    """``["Functions: inlined 7 calls of 2 functions: A, B"]`` when functions were inlined."""
    if not inlining or not inlining.get("functions"):
        return []
    return [f"Functions:  {inlining['message']}"]


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
        f"'{o['name']}' max abs err {number(o['max_abs_error'])} (allowed {o['atol']:.3g} + "
        f"{o['rtol']:g}·|ref|, scale {o['scale']:.3g}){'' if o['passed'] else ' ✗'}"
        for o in verification["outputs"]
    ]
    shapes = ", ".join(
        f"{k}:{'x'.join(map(str, v))}" for k, v in verification["input_shapes"].items()
    )
    return f"{verdict} on {shapes} (seed {verification['seed']}): " + "; ".join(parts)


def reference_name(report: dict) -> str:
    """What a verify report compared B with: model A's path, or the file of saved outputs
    (and the model that recorded them, if the file said)."""
    reference = report.get("reference")
    if not isinstance(reference, dict) or reference.get("source") != "saved outputs":
        return str(report.get("a_path") or "A")
    recorded = f" by {report['a_path']}" if report.get("a_path") else ""
    return f"the outputs saved in {reference.get('path')}{recorded}"


def _verify_text(report: dict) -> str:
    verdict = (
        "PASSED: the models compute the same function"
        if report["passed"]
        else ("FAILED: the models differ")
    )
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    lines = [
        f"{verdict} ({reference_name(report)} vs {report.get('b_path') or 'B'}; "
        f"{plural(report['batches'], 'batch')} of {shapes}, seed {report['seed']})"
    ]
    lines += [f"  {comparison_line(output)}" for output in report["outputs"]]
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
        f"{change_text(a['parameters'], b['parameters'])}, size {size_text(a['size_bytes'])} → "
        f"{size_text(b['size_bytes'])}{change_text(a['size_bytes'], b['size_bytes'])}"
    )
    for kind, items in report["changes"].items():
        lines += [f"{kind}: {item}" for item in items]
    lines.append(
        f"nodes: {len(report['nodes_added'])} added, {len(report['nodes_removed'])} removed; "
        f"initializers: {len(report['initializers_added'])} added, "
        f"{len(report['initializers_removed'])} removed"
    )
    blocks = report["blocks"]
    lines.append(f"{plural(len(blocks), 'fused block')}:" if blocks else "No fused block.")
    lines += [f"  {block['output']}: {block['summary']}" for block in report["blocks"]]
    return "\n".join(lines)


def _inspect_text(report: dict) -> str:
    lines = [f"{report.get('path') or 'model'}"]
    lines += [f"  {line}" for line in interface_lines(report["summary"])]
    fusable = report["fusable"]
    batchnorms = report.get("batchnorms", [])
    in_subgraphs = report.get("in_subgraphs", [])
    sums = report.get("branch_sums", [])
    lines += [
        f"{line} (as fuse would, to look inside)" for line in inlining_lines(report.get("inlining"))
    ]
    if fusable:
        lines.append(f"{plural(len(fusable), 'fusable block')} (repvgg-onnx fuse would fuse):")
        lines += [f"  {b['output']}: {rewrite_text(b)}" for b in fusable]
    elif batchnorms:
        lines.append("No fusable block, but BatchNormalization remains: not deploy form.")
    elif in_subgraphs:
        lines.append(
            "No fusable block in the main graph, but control-flow bodies hold "
            "training-form ops: not deploy form."
        )
    elif sums:
        lines.append("No fusable block, but sums of linear branches remain: not deploy form.")
    else:
        lines.append("No fusable block and no BatchNormalization: the model is in deploy form.")
    if in_subgraphs:
        lines.append("In control-flow bodies (fuse does not rewrite them):")
        lines += [f"  {finding['message']}" for finding in in_subgraphs]
    if batchnorms:
        lines.append(f"{plural(len(batchnorms), 'BatchNormalization')} would remain:")
        lines += [f"  {bn['node']}: {bn['reason']}" for bn in batchnorms]
    if sums:
        lines.append(f"{plural(len(sums), 'sum')} of linear branches would remain:")
        lines += [f"  {remaining['node']}: {remaining['reason']}" for remaining in sums]
    if report["skipped"]:
        lines.append(f"{plural(len(report['skipped']), 'candidate')} left alone:")
        lines += [f"  {s['node']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


def _inspect_many_text(report: dict) -> str:
    """Each model's report (an unusable one's error line), then one line per model and the
    summary line."""
    parts = [render_text(model) for model in report["models"]]
    states = model_states(report)
    width = max((len(state.label) for state in states), default=0)
    lines = [f"  {state.label:<{width}}  {state.path}{state.detail_suffix}" for state in states]
    return "\n\n".join([*parts, "\n".join([*lines, many_summary_line(report)])])


def many_summary_line(report: dict) -> str:
    """``4 models: 2 in training form (a.onnx, b.onnx), 1 unusable (c.onnx), 1 in deploy
    form``."""
    states = model_states(report)
    counts: dict[str, list[str]] = {}
    for state in states:
        counts.setdefault(state.label, []).append(state.path)
    named = {"training form", "unusable"}
    pieces = [
        f"{len(paths)} {'in ' if label.endswith('form') else ''}{label}"
        + (f" ({', '.join(paths)})" if label in named else "")
        for label, paths in sorted(counts.items(), key=lambda item: _STATE_ORDER[item[0]])
    ]
    return f"{plural(len(states), 'model')}: {', '.join(pieces) or 'none'}"


_STATE_ORDER = {"training form": 0, "unusable": 1, "not deploy form": 2, "deploy form": 3}


_TEXT: dict[str, Callable[[dict], str]] = {
    "fuse": _fuse_text,
    "verify": _verify_text,
    "diff": _diff_text,
    "inspect": _inspect_text,
    "inspect_many": _inspect_many_text,
}
