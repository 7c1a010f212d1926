"""One report, any format: ``render`` picks the renderer, ``Rendered`` gives records the four
``to_*`` methods. The renderers import nothing from here, so the formats form no cycle; all
but the text one are imported on first use (the HTML page and its pictures alone cost a
``fuse`` run 30 ms of start-up)."""

from __future__ import annotations

import json

from repvgg_onnx.reports.render.text import render_text


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
    """``report`` as ``"text"``, ``"markdown"``, ``"json"``, ``"html"`` or ``"github"``
    (workflow commands; ``inspect`` reports only)."""
    if output_format == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, default=_json_default)
    if output_format == "html":
        from repvgg_onnx.reports.render.html import render_html

        return render_html(report)
    if output_format == "markdown":
        from repvgg_onnx.reports.render.markdown import render_markdown

        return render_markdown(report)
    if output_format == "github":
        from repvgg_onnx.reports.render.github import render_github

        return render_github(report)
    return render_text(report)


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot serialize {type(value).__name__}")
