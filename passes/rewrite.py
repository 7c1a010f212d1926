"""Turn a planned form into ONNX nodes, and a region plan into graph edits.

Each form says which standard op computes it, as plain data
(:class:`~repvgg_onnx.algebra.form.NodeSpec`): a Conv (any spatial rank), a Gemm (``[N, C]``)
or MatMul+Add (``[..., C]``) for a linear map of channels, a ConvTranspose, or a per-channel
map as Mul and Add (never a BatchNormalization: a deploy-form model has none); here the specs
become graphsurgeon nodes. Weights are new constants computed in float64 and cast once to the
model's type; a cast that overflows is refused before any edit.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.form import NodeSpec
from repvgg_onnx.algebra.linear_forms import Form

from .graph_utils import UniqueNames
from .pass_result import Refusal, attempt


def node_specs(
    form: Form, dtype: np.dtype, channels_last: bool, source_rank: int | None
) -> list[NodeSpec] | Refusal:
    """The nodes computing ``form`` on a tensor of rank ``source_rank``, weights as ``dtype``
    (:meth:`~repvgg_onnx.algebra.form.LinearForm.node_specs`), or why not: the form cannot be
    written here, or its weights do not fit ``dtype``."""
    specs = attempt(lambda: form.node_specs(dtype, channels_last, source_rank))
    if isinstance(specs, Refusal):
        return specs
    for spec in specs:
        for _, values in spec.constants:
            if not np.all(np.isfinite(values)):
                return Refusal.because(f"the fused weights overflow {np.dtype(dtype).name}")
    return specs


def chain_nodes(
    specs: list[NodeSpec],
    source: gs.Tensor,
    output: gs.Tensor,
    stem: str,
    names: UniqueNames,
) -> list[gs.Node]:
    """``specs`` as a chain of new nodes from ``source`` (not yet in any graph); the last
    node writes ``output``.

    Every node after the first is a per-channel Mul or Add, so the tensors between them have
    ``output``'s shape and type.
    """
    created, current = [], source
    for index, spec in enumerate(specs):
        last = index == len(specs) - 1
        result = (
            output
            if last
            else gs.Variable(names(f"{stem}_{spec.op.lower()}"), output.dtype, output.shape)
        )
        inputs = [current] + [
            gs.Constant(names(f"{stem}.reparam.{name}"), values) for name, values in spec.constants
        ]
        node = gs.Node(
            spec.op,
            name=names(f"{stem}/reparam" if index == 0 else f"{stem}/reparam_{spec.op}"),
            attrs=spec.attrs,
            inputs=inputs,
            outputs=[result],
        )
        created.append(node)
        current = result
    return created
