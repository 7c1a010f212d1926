"""Small queries and edits on onnx-graphsurgeon graphs shared by the passes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The tensor's value if it is a constant (initializer), else ``None``."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes ``tensor``, or ``None`` for graph inputs and constants."""
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(output is tensor for output in graph.outputs)


def has_single_use(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """True iff exactly one node input reads ``tensor`` and it is not a graph output."""
    uses = sum(1 for node in tensor.outputs for t in node.inputs if t is tensor)
    return uses == 1 and not is_graph_output(graph, tensor)


def describe_uses(graph: gs.Graph, tensor: gs.Tensor, besides: gs.Node) -> str:
    """Who else reads ``tensor``: ``"node 'Relu_3'"``, ``"the graph output"``."""
    others = [f"node '{node.name}'" for node in tensor.outputs if node is not besides]
    if is_graph_output(graph, tensor):
        others.append("the graph output")
    return ", ".join(others) or f"node '{besides.name}' twice"


def replace_uses(tensor: gs.Tensor, replacement: gs.Tensor) -> None:
    """Make every node that reads ``tensor`` read ``replacement`` instead."""
    for node in list(tensor.outputs):
        for index, value in enumerate(node.inputs):
            if value is tensor:
                node.inputs[index] = replacement


def attribute(node: gs.Node, name: str, default):
    return node.attrs.get(name, default)


class UniqueNames:
    """Hands out tensor and node names that do not clash with any name in the graph."""

    def __init__(self, graph: gs.Graph) -> None:
        self._taken = set(graph.tensors()) | {node.name for node in graph.nodes}

    def __call__(self, wanted: str) -> str:
        name, suffix = wanted, 1
        while name in self._taken:
            name = f"{wanted}_{suffix}"
            suffix += 1
        self._taken.add(name)
        return name
