"""Constant subgraphs evaluated by onnxruntime, for constant folding.

The passes know nothing about onnxruntime: :func:`fold_constants_on_onnxruntime` hands
:func:`~repvgg_onnx.passes.fold_constants.fold_constants` the runtime users deploy on.

The constant subgraph becomes one small model (its nodes, the constants they read as
initializers, every node output as a graph output) run by one session with graph
optimizations off; only if that fails is it run node by node. The session runs in a forked
child (:func:`~repvgg_onnx.isolation.isolated`), as verification does: onnxruntime never loads
in the tool's own process, so verification can still fork, and a crash of onnxruntime on an
odd constant costs that constant's folding (the reference's checked ops still fold), never
the run. Cost, measured on this 2-vCPU machine: a fork and onnxruntime's import, ~0.1 s per
call with constants to fold (the index-only batch of a classifier's ``flatten`` needs none),
and ~4 ms for a session over 200 nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.errors import ModelRunError
from repvgg_onnx.isolation import isolated
from repvgg_onnx.passes.constant_evaluation import evaluate_in_order
from repvgg_onnx.passes.fold_constants import fold_constants
from repvgg_onnx.passes.result import PassResult
from repvgg_onnx.sessions import create_session


def fold_constants_on_onnxruntime(graph: gs.Graph) -> PassResult:
    """:func:`~repvgg_onnx.passes.fold_constants.fold_constants` with onnxruntime's values."""
    return fold_constants(graph, runtime=onnxruntime_values)


def onnxruntime_values(
    nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray], opset: int
) -> dict[str, np.ndarray]:
    """The outputs of ``nodes`` onnxruntime computes from ``values``, by name (none if it
    crashes)."""
    try:
        return isolated(evaluate_in_order, run_on_onnxruntime, nodes, values, opset)
    except ModelRunError:  # the child died: onnxruntime computes none of them
        return {}


def run_on_onnxruntime(model: onnx.ModelProto) -> list[np.ndarray]:
    """``model``'s outputs by a CPU session with graph optimizations off."""
    return create_session(model, "constant subgraph").run(None, {})
