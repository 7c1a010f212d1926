"""``Add(MatMul(A, B), C)`` on matrices becomes ``Gemm(A, B, C)`` whatever ``A``, ``B``, ``C`` are.

The region pass already turns ``x·W + b`` with constant ``W`` and a per-channel ``b`` into one
Gemm. What it leaves, onnxoptimizer and onnxscript still fuse: a weight that is a graph input
or computed, and a bias of the output's full ``[M, N]`` shape (one value per position, not per
channel). Gemm computes ``A·B + C`` with ``C`` broadcast one way to ``[M, N]``, so the rewrite
is exact when ``A`` and ``B`` are 2-D, ``C`` has rank ≤ 2 and each of its dims is 1 or the
output's (known) dim, the MatMul's result is read by the Add alone, and the element type is
one Gemm computes (float16/32/64, bfloat16).

Invariant: the graph computes the same function; the Add's output keeps its name (the Gemm
writes it, in the Add's place, so the graph stays in topological order).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .contracts import KEEPS_INTERFACE_AND_NAMES, WELL_FORMED, contract
from .graph_utils import (
    UniqueNames,
    broadcasts_into,
    has_single_use,
    is_standard,
    producer,
    splice_nodes,
)
from .pass_result import FusedBlock, PassResult

RULE = "matmul_add_to_gemm"
_GEMM_TYPES = ("float16", "float32", "float64", "bfloat16")


@contract(requires=WELL_FORMED, ensures=KEEPS_INTERFACE_AND_NAMES)
def fuse_matmul_add_into_gemm(graph: gs.Graph) -> PassResult:
    """Rewrite every exact ``Add(MatMul(A, B), C)`` of matrices into one Gemm."""
    names = UniqueNames(graph)
    placements, fused = [], []
    for node in graph.nodes:
        match = _match(graph, node)
        if match is None:
            continue
        matmul, bias = match
        output = node.outputs[0]
        gemm = gs.Node(
            "Gemm", names(f"{node.name or output.name}_gemm"), inputs=[*matmul.inputs, bias]
        )
        node.outputs.clear()
        gemm.outputs.append(output)
        placements.append((node, [gemm]))
        fused.append(FusedBlock(RULE, output.name, gemm.name, ("MatMul", "Add"), "Gemm"))
    if placements:
        splice_nodes(graph, placements)
    return PassResult(fused=fused)


def _match(graph: gs.Graph, node: gs.Node) -> tuple[gs.Node, gs.Tensor] | None:
    """The MatMul and the bias of an exact ``Add(MatMul(A, B), C)``, else ``None``."""
    if node.op != "Add" or not is_standard(node) or len(node.inputs) != 2:
        return None
    for product, bias in (node.inputs, node.inputs[::-1]):
        matmul = producer(product)
        if matmul is None or matmul.op != "MatMul" or not is_standard(matmul):
            continue
        if not has_single_use(graph, product) or product is bias:
            continue
        if _gemm_computes(matmul, product, bias, node.outputs[0]):
            return matmul, bias
    return None


def _gemm_computes(matmul: gs.Node, product: gs.Tensor, bias: gs.Tensor, out: gs.Tensor) -> bool:
    """``Gemm(A, B, bias)`` equals ``A·B + bias``: matrices, a one-way broadcast bias."""
    a, b = matmul.inputs
    shapes = [t.shape for t in (a, b, product, bias)]
    if any(shape is None for shape in shapes) or len(shapes[0]) != 2 or len(shapes[1]) != 2:
        return False
    product_shape, bias_shape = shapes[2], shapes[3]
    if len(product_shape) != 2 or not broadcasts_into(bias_shape, product_shape):
        return False
    try:
        dtypes = {np.dtype(t.dtype).name for t in (a, b, bias, out) if t.dtype is not None}
    except TypeError:
        return False
    return len(dtypes) == 1 and dtypes.pop() in _GEMM_TYPES and a.dtype is not None
