"""GitHub Actions workflow commands for ``inspect`` reports: one annotation per model.

A line ``::error file=PATH,title=TITLE::MESSAGE`` printed in a job's log becomes an annotation
on PATH in the pull request (``::notice`` for a model that passes). In the message, ``%``,
CR and LF are written ``%25``, ``%0D``, ``%0A``; in a property value ``:`` and ``,`` are
also written ``%3A`` and ``%2C``, as GitHub's runner reads them back.
"""

from __future__ import annotations

from repvgg_onnx.reports.render.gate import ModelState, gate_fix, model_states


def escape_data(text: str) -> str:
    """A workflow command's message: ``%`` first, so no escape is read twice."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``file=``, ``title=``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str) -> str:
    """``::command key=value,key=value::message``, every part escaped."""
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def render_github(report: dict) -> str:
    """One annotation per model of an ``inspect`` or ``inspect_many`` report, on its file:
    ``::error`` for a model the gate refuses (with the fix) or that could not be read,
    ``::notice`` for the others."""
    models = report["models"] if report["kind"] == "inspect_many" else [report]
    states = model_states({"models": models})
    return "\n".join(_annotation(state, model) for state, model in zip(states, models, strict=True))


def _annotation(state: ModelState, model: dict) -> str:
    where = {"file": model["path"]} if model.get("path") else {}
    if state.label == "unusable":
        return workflow_command("error", state.detail, **where, title="repvgg-onnx: unusable model")
    if state.label == "training form":
        message = f"{state.detail}; {gate_fix(model)}."
        return workflow_command("error", message, **where, title="repvgg-onnx: training-form model")
    detail = state.detail or "nothing left to fuse"
    return workflow_command("notice", f"{state.label}: {detail}.", **where, title="repvgg-onnx")
