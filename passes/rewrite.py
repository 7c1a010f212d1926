"""The one graph edit the fusing passes make: a subgraph's output becomes a new Conv's output."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra import AffineConv, materialize

from .graph_utils import UniqueNames


def replace_with_conv(
    graph: gs.Graph,
    last_node: gs.Node,
    source: gs.Tensor,
    conv: AffineConv,
    dtype: np.dtype,
    names: UniqueNames,
) -> gs.Node:
    """Make a new Conv of ``source`` compute ``last_node``'s output tensor, keeping its name.

    ``last_node`` is disconnected from its output; the nodes that only fed it become dead and
    are removed by the caller's ``graph.cleanup()``. Weights are new constants (never an edit
    of a shared initializer) of ``dtype``, computed in float64.
    """
    conv = materialize(conv, dtype)
    output = last_node.outputs[0]
    last_node.outputs.clear()
    stem = output.name or last_node.name
    weight = gs.Constant(names(f"{stem}.reparam.weight"), conv.kernel)
    bias = gs.Constant(names(f"{stem}.reparam.bias"), conv.bias.astype(dtype))
    node = gs.Node(
        "Conv",
        name=names(f"{last_node.name or stem}/reparam"),
        attrs={
            "dilations": list(conv.dilations),
            "group": conv.groups,
            "kernel_shape": list(conv.kernel_shape),
            "pads": list(conv.pads),
            "strides": list(conv.strides),
        },
        inputs=[source, weight, bias],
        outputs=[output],
    )
    graph.nodes.append(node)
    return node
