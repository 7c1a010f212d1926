"""No linear op is left without a reason: on every committed model, each BatchNormalization,
per-channel constant Mul/Add/Sub/Div next to a linear op, and Add/Sub of two linear branches
that survives ``fuse`` is named by ``inspect`` (a skipped candidate with its reason, or a
remaining BatchNormalization with its reason)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import repvgg_onnx

MODELS = Path(__file__).resolve().parent.parent / "models"
FIXTURES = sorted(path for path in MODELS.rglob("*.onnx") if path.stat().st_size < 10_000_000)
#: Ops that compute a linear map of their first input (with constant weights).
LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"})


def _constants(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names.update(
        out for node in model.graph.node if node.op_type == "Constant" for out in node.output
    )
    return names


def _is_matmul_bias(node: onnx.NodeProto, data_producer: onnx.NodeProto | None) -> bool:
    """``Add(MatMul(x, W), b)``: a Linear on N-d data, which has no one-op form."""
    return node.op_type == "Add" and data_producer is not None and data_producer.op_type == "MatMul"


def leftover_linear_ops(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of ``model`` a fusion could still act on (see the module docstring)."""
    constants = _constants(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            found.append(node)
            continue
        if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
            continue
        data = [name for name in node.input if name not in constants]
        sources = [producers.get(name) for name in data]
        if len(data) == 1:
            before = sources[0]
            after = [r for r in readers.get(node.output[0], []) if r.op_type in LINEAR]
            linear_before = before is not None and before.op_type in LINEAR
            if (linear_before and not _is_matmul_bias(node, before)) or any(
                r.input[0] == node.output[0] for r in after
            ):
                found.append(node)
        elif node.op_type in ("Add", "Sub") and all(
            s is not None and s.op_type in LINEAR for s in sources
        ):
            found.append(node)
    return found


@pytest.mark.parametrize("path", FIXTURES, ids=[str(p.relative_to(MODELS)) for p in FIXTURES])
def test_every_leftover_linear_op_has_a_reason(path):
    model = onnx.load(path)
    inspection = repvgg_onnx.inspect(model)
    fused = repvgg_onnx.fuse(model, verify=False).model
    reasons = [(s.node, s.reason) for s in inspection.skipped]
    reasons += [(bn.node, bn.reason) for bn in inspection.batchnorms]
    silent = [
        f"{node.op_type} '{node.name}'"
        for node in leftover_linear_ops(fused)
        if not any(name == node.name or f"'{node.name}'" in reason for name, reason in reasons)
    ]
    assert silent == [], silent
