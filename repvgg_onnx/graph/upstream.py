"""The nodes of a ``GraphProto`` that compute given tensors, walked back to a boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import onnx


def upstream_nodes(
    outputs: Iterable[str],
    producer: Mapping[str, onnx.NodeProto],
    stops_at: Callable[[str], bool],
) -> list[onnx.NodeProto]:
    """Every node that computes one of ``outputs``, and the nodes computing their inputs, back
    to the tensors ``stops_at`` names (their producers are not taken) and to tensors no node
    of ``producer`` writes; each node once, in the order found."""
    found: dict[int, onnx.NodeProto] = {}
    pending = list(outputs)
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in found:
            continue
        found[id(node)] = node
        pending.extend(name for name in node.input if name and not stops_at(name))
    return list(found.values())
