"""Summaries of exported ONNX files for the fixture manifests (onnx only, no framework)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import onnx


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the main graph's nodes, sorted by op type."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def file_summary(path: Path, root: Path) -> dict[str, Any]:
    """Path (relative to ``root``), size, sha256, opset and op counts of one exported file."""
    model = onnx.load(path)
    data = path.read_bytes()
    return {
        "file": path.relative_to(root).as_posix(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")),
        "initializers": len(model.graph.initializer),
        "op_counts": op_counts(model),
    }
