"""The ordered passes, run to a fixpoint, and their merged report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import onnx_graphsurgeon as gs

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.graph.constant_views import tensor_map
from repvgg_onnx.graph.shapes import reinfer_shapes
from repvgg_onnx.graph.unread_nodes import remove_unread_nodes
from repvgg_onnx.passes.affine_regions import fuse_affine_regions
from repvgg_onnx.passes.canonicalize import canonicalize
from repvgg_onnx.passes.fold_forward import fold_forward
from repvgg_onnx.passes.graph_utils import ensure_topological_order
from repvgg_onnx.passes.matmul_add_to_gemm import fuse_matmul_add_into_gemm
from repvgg_onnx.passes.pass_result import FusedBlock, PassResult, Skipped
from repvgg_onnx.passes.readers import is_training_batchnorm
from repvgg_onnx.passes.region_memory import current_memory as current_region_memory
from repvgg_onnx.passes.region_memory import remembering as remembering_regions
from repvgg_onnx.pipeline.constant_folding import fold_constants_on_onnxruntime, onnxruntime_worker

Pass = Callable[[gs.Graph], PassResult]

#: Canonicalize first so the region pass sees plain linear ops (no Identity, Constant or
#: neutral nodes) and constant subexpressions as constants (evaluated by onnxruntime, the
#: runtime users deploy on, checked against onnx's reference evaluator); then every affine
#: region becomes one node per source it reads; then a per-channel op read by several linear
#: ops (or by one through Transpose/Reshape) folds forward into all of them; last, what is
#: left of ``MatMul + Add`` on matrices (a computed weight, a full-shape bias) becomes a Gemm.
DEFAULT_PASSES: tuple[Pass, ...] = (
    canonicalize,
    fold_constants_on_onnxruntime,
    fuse_affine_regions,
    fold_forward,
    fuse_matmul_add_into_gemm,
)

MAX_ROUNDS = 16


@dataclass
class PipelineResult:
    """All blocks fused over all rounds; the candidates still skipped in the final round."""

    fused: list[FusedBlock] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    rounds: int = 0
    canonicalized: int = 0
    """No-op, Constant and constant-subexpression nodes removed (not blocks)."""


def check_inference_graph(graph: gs.Graph) -> None:
    """Refuse a graph exported in training mode: its BatchNormalization depends on the batch."""
    for node in graph.nodes:
        if is_training_batchnorm(node):
            raise UnsupportedModelError(
                f"BatchNormalization '{node.name}' runs in training mode (training_mode=1 or "
                "running-statistics outputs); re-export the model with model.eval() and "
                "torch.onnx.export(..., training=torch.onnx.TrainingMode.EVAL)."
            )


@onnxruntime_worker()  # one onnxruntime child folds the constants of every round of a run
@remembering_regions()  # a round plans again only the regions the last one could change
def run_passes(
    graph: gs.Graph,
    passes: Sequence[Pass] = DEFAULT_PASSES,
    progress: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run ``passes`` in order, repeatedly, until a round changes nothing (``progress`` hears
    each round).

    Invariant: every pass preserves the graph's function and its topological order, so the
    fixpoint does too. What else a pass keeps (no dangling reads, graph inputs and outputs,
    tensor names, no BatchNormalization created, no constant edited) is its ``contract``
    (:mod:`repvgg_onnx.passes.contracts`); the graph is sorted first to meet what they require.
    Nothing is checked here: ``tests/test_pass_contracts.py`` runs the passes wrapped in
    :func:`~repvgg_onnx.passes.contracts.checked` on every committed model.
    """
    check_inference_graph(graph)
    ensure_topological_order(graph)
    memory = current_region_memory()
    original_tensors = set(tensor_map(graph))
    result = PipelineResult()
    for _ in range(MAX_ROUNDS):
        result.rounds += 1
        if progress is not None:
            progress(f"passes, round {result.rounds}")
        outcomes = []
        for run in passes:
            first = len(outcomes)
            outcome = run(graph)
            outcomes.append(outcome)
            while outcome.shapes_stale:
                reinfer_shapes(graph)
                outcome = run(graph)
                outcomes.append(outcome)
            if any(outcome.modified for outcome in outcomes[first:]):
                memory.note_edit()  # the region pass's next run plans what this could change
        for outcome in outcomes:
            result.fused.extend(outcome.fused)
            result.canonicalized += outcome.rewrites
        result.skipped = [skip for outcome in outcomes for skip in outcome.skipped]
        if not any(outcome.modified for outcome in outcomes):
            break
    remove_unread_nodes(graph)  # passes splice and remove locally; what is left unread goes now
    result.fused = blocks_by_output(result.fused, original_tensors)
    return result


def blocks_by_output(fused: Sequence[FusedBlock], tensors: set[str]) -> list[FusedBlock]:
    """One block per tensor of the original graph that a new node computes, as ``diff`` sees
    them: rewrites of one tensor in several rounds become one block (first branches, last
    result); a tensor the passes themselves created is part of the block that made it."""
    merged: dict[str, FusedBlock] = {}
    for block in fused:
        if block.output not in tensors:
            continue
        first = merged.get(block.output)
        merged[block.output] = block if first is None else replace(first, result=block.result)
    return list(merged.values())
