"""Find the first intermediate tensor on which two models disagree.

Copies of both models expose every tensor whose name both graphs compute as extra outputs;
both run on the same inputs; the shared tensors are compared in the reference's topological
order. A wrong fusion thus points at its block, not just at "output differs". The callers'
models are not changed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from repvgg_onnx.verification.compare import compare_output
from repvgg_onnx.verification.results import Localization
from repvgg_onnx.verification.sessions import create_session, run_session


def first_divergence(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    atol: float | None,
    rtol: float | None,
) -> Localization | None:
    """The first shared tensor (reference order) outside tolerance, or ``None`` if none is."""
    a_producers = _producers(reference)
    b_producers = _producers(candidate)
    shared = [name for name in a_producers if name in b_producers]
    if not shared:
        return None
    a_values = _run_exposing(reference, shared, feeds, "A")
    b_values = _run_exposing(candidate, shared, feeds, "B")
    for name in shared:
        comparison = compare_output(name, a_values[name], b_values[name], atol, rtol)
        if not comparison.passed:
            return Localization(
                tensor=name,
                max_abs_error=comparison.max_abs_error,
                a_producer=_describe(a_producers[name]),
                b_producer=_describe(b_producers[name]),
                consumers=tuple(
                    _describe(node) for node in candidate.graph.node if name in node.input
                ),
            )
    return None


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Every named tensor a main-graph node computes, in topological order, to its node."""
    return {name: node for node in model.graph.node for name in node.output if name}


def _run_exposing(
    model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray], role: str
) -> dict[str, np.ndarray]:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {output.name for output in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    return run_session(create_session(exposed, role), feeds, role)


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name}'"
