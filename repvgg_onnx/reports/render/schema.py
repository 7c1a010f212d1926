"""The shape every JSON report shares: its schema version and its verdict.

``repvgg_onnx/schema/report.schema.json`` is the full schema; the records and the renderers
both take these from here, so what a report says and what a page reads cannot drift.
"""

from __future__ import annotations

import json
from importlib import resources

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


def report_verdict(report: dict) -> dict:
    """The report's ``verdict``; for a report written before schema 2, read off its
    ``verification`` (or ``passed``)."""
    if isinstance(report.get("verdict"), dict):
        return report["verdict"]
    verification = report if report.get("kind") == "verify" else report.get("verification")
    if isinstance(verification, dict) and "passed" in verification:
        return verdict("passed" if verification["passed"] else "failed")
    return verdict("skipped")


def report_schema() -> dict:
    """The JSON schema every report's ``to_dict()`` follows (``schema_version`` 2)."""
    text = resources.files("repvgg_onnx").joinpath("schema/report.schema.json").read_text()
    return json.loads(text)
