"""Renderers of a report's JSON-ready dict: plain text, Markdown, HTML with SVG pictures."""
