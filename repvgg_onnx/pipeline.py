"""The ordered passes, run to a fixpoint, and their merged report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.passes.canonicalize import canonicalize
from repvgg_onnx.passes.fold_batchnorm import fold_batchnorm
from repvgg_onnx.passes.fold_scale import fold_scale
from repvgg_onnx.passes.merge_branches import merge_parallel_branches
from repvgg_onnx.passes.normal_form import is_training_batchnorm
from repvgg_onnx.passes.result import FusedBlock, PassResult, Skipped

Pass = Callable[[gs.Graph], PassResult]

#: Canonicalize first so the others see plain Conv/BN/Add; merge before folding so a block's
#: Conv+BN branches are described as such; fold after merging so a BN after a merged block
#: (RepViT's BN after the sum) folds into the new Conv on the next round; a per-channel
#: constant Mul/Add after a Conv (PP-YOLOE's alpha) folds so its branch merges next round.
DEFAULT_PASSES: tuple[Pass, ...] = (
    canonicalize,
    merge_parallel_branches,
    fold_batchnorm,
    fold_scale,
)

MAX_ROUNDS = 16


@dataclass
class PipelineResult:
    """All blocks fused over all rounds; the candidates still skipped in the final round."""

    fused: list[FusedBlock] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    rounds: int = 0


def check_inference_graph(graph: gs.Graph) -> None:
    """Refuse a graph exported in training mode: its BatchNormalization depends on the batch."""
    for node in graph.nodes:
        if is_training_batchnorm(node):
            raise UnsupportedModelError(
                f"BatchNormalization '{node.name}' runs in training mode (training_mode=1 or "
                "running-statistics outputs); re-export the model with model.eval() and "
                "torch.onnx.export(..., training=torch.onnx.TrainingMode.EVAL)."
            )


def run_passes(graph: gs.Graph, passes: Sequence[Pass] = DEFAULT_PASSES) -> PipelineResult:
    """Run ``passes`` in order, repeatedly, until a round changes nothing.

    Invariant: every pass preserves the graph's function, so the fixpoint does too.
    """
    check_inference_graph(graph)
    result = PipelineResult()
    for _ in range(MAX_ROUNDS):
        result.rounds += 1
        outcomes = [run(graph) for run in passes]
        for outcome in outcomes:
            result.fused.extend(outcome.fused)
        result.skipped = [skip for outcome in outcomes for skip in outcome.skipped]
        if not any(outcome.modified for outcome in outcomes):
            break
    return result
