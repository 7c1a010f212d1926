"""Fold an inference BatchNormalization into the Conv before it.

``BN(conv(x)) = conv'(x)`` with ``W' = W·γ/σ``, ``b' = β + (b − μ)·γ/σ``, ``σ = sqrt(var + ε)``
(RepVGG eq. 3), legal when the Conv's output is read by the BatchNormalization alone.

Invariant: the graph computes the same function (to float rounding); the new Conv writes the
BatchNormalization's output tensor under the same name.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from repvgg_onnx.algebra import fold_batchnorm as fold_batchnorm_weights

from .graph_utils import UniqueNames, describe_uses, has_single_use, producer
from .normal_form import batchnorm_parameters, conv_as_affine, conv_dtype, describe_conv
from .result import FusedBlock, PassResult, Skipped
from .rewrite import replace_with_conv

RULE = "fold_batchnorm"


def fold_batchnorm(graph: gs.Graph) -> PassResult:
    """Replace each Conv → BatchNormalization pair by one Conv."""
    plans = []
    skipped: list[Skipped] = []
    for node in graph.nodes:
        if node.op != "BatchNormalization":
            continue
        conv = producer(node.inputs[0])
        if conv is None or conv.op != "Conv":
            continue
        outcome = _plan_fold(graph, node, conv)
        if isinstance(outcome, str):
            skipped.append(Skipped(RULE, node.name, outcome))
        else:
            plans.append((node, conv, outcome))
    names = UniqueNames(graph)
    fused = []
    for batchnorm, conv, (original, folded) in plans:
        output = batchnorm.outputs[0].name
        new = replace_with_conv(graph, batchnorm, conv.inputs[0], folded, conv_dtype(conv), names)
        label = describe_conv(original)
        fused.append(FusedBlock(RULE, output, new.name, (label + "+BN",), describe_conv(folded)))
    if fused:
        graph.cleanup().toposort()
    return PassResult(fused=fused, skipped=skipped)


def _plan_fold(graph: gs.Graph, batchnorm: gs.Node, conv: gs.Node):
    """``(conv form, folded form)`` or the reason the pair cannot be folded."""
    conv_output = batchnorm.inputs[0]
    if not has_single_use(graph, conv_output):
        return (
            f"the output of Conv '{conv.name}' ('{conv_output.name}') is also read by "
            f"{describe_uses(graph, conv_output, batchnorm)}, so it must keep its value"
        )
    form = conv_as_affine(conv)
    if isinstance(form, str):
        return form
    params = batchnorm_parameters(batchnorm)
    if isinstance(params, str):
        return params
    try:
        folded = fold_batchnorm_weights(
            form, params.gamma, params.beta, params.mean, params.var, params.eps
        )
    except ValueError as error:
        return f"BatchNormalization '{batchnorm.name}' does not fit Conv '{conv.name}': {error}"
    return form, folded
