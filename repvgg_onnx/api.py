"""The Python API: the same power as the CLI, usable without touching files.

``fuse`` never modifies the ``onnx.ModelProto`` it is given; it returns a new one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx import io
from repvgg_onnx.errors import CheckFailedError, UnsupportedModelError
from repvgg_onnx.passes.result import FusedBlock
from repvgg_onnx.pipeline import DEFAULT_PASSES, Pass, PipelineResult, run_passes
from repvgg_onnx.report import FuseReport, ModelStats
from repvgg_onnx.skeleton import inferred_value_info, model_skeleton
from repvgg_onnx.verify import Verification, verify_models

ModelLike = onnx.ModelProto | str | os.PathLike

_METADATA_MIN_IR_VERSION = 10  # NodeProto.metadata_props exists from IR version 10 on


@dataclass
class FuseResult:
    """The deploy-form model, what was done to it, and the verification verdict."""

    model: onnx.ModelProto
    report: FuseReport

    @property
    def verification(self) -> Verification | None:
        return self.report.verification

    def save(self, path: str | os.PathLike) -> None:
        """Write the fused model atomically (external data when it exceeds 2 GB)."""
        io.save_model(self.model, path)


def load(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto as is, or the model at a path (with its external data)."""
    return model if isinstance(model, onnx.ModelProto) else io.load_model(model)


def fuse(
    model: ModelLike,
    *,
    verify: bool = True,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    passes: Sequence[Pass] = DEFAULT_PASSES,
) -> FuseResult:
    """Re-parameterize every fusable block of ``model`` and check the result in onnxruntime.

    The returned model computes the same function as ``model`` (verified on seeded random
    inputs unless ``verify=False``); graph inputs, outputs, opsets, IR version, producer and
    metadata are kept. A failed verification raises :class:`CheckFailedError`.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    original = load(model)
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    fused_model, outcome = fuse_graph(original, passes)
    check_fused_model(fused_model, original)
    seconds["fuse"] = time.perf_counter() - start

    report = FuseReport(
        fused=outcome.fused,
        skipped=outcome.skipped,
        before=ModelStats.of(original),
        after=ModelStats.of(fused_model),
        rounds=outcome.rounds,
        seconds=seconds,
    )
    if verify:
        start = time.perf_counter()
        report.verification = verify_models(
            original, fused_model, input_shapes=input_shapes, seed=seed, atol=atol, rtol=rtol
        )
        seconds["verify"] = time.perf_counter() - start
        if not report.verification.passed:
            raise FuseVerificationError(report)
    return FuseResult(fused_model, report)


class FuseVerificationError(CheckFailedError):
    """The fused model does not compute the same function; ``report`` says where."""

    def __init__(self, report: FuseReport) -> None:
        worst = max(report.verification.failures(), key=lambda o: o.required_atol)
        super().__init__(
            f"verification failed: output '{worst.name}' differs by up to "
            f"{worst.max_abs_error:.3g} (allowed {worst.atol:.3g} + {worst.rtol:g}·|ref|); "
            "nothing was written. Please report this model; --atol/--rtol loosen the check."
        )
        self.report = report


def fuse_graph(
    model: onnx.ModelProto, passes: Sequence[Pass] = DEFAULT_PASSES
) -> tuple[onnx.ModelProto, PipelineResult]:
    """Run ``passes`` to a fixpoint on a copy of ``model``'s graph; no checks, no verification."""
    graph = _import_graph(model)
    _annotate_shapes(graph, model)
    outcome = run_passes(graph, passes)
    return export_like(graph, model, outcome.fused), outcome


def _annotate_shapes(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Give shapeless intermediate tensors their inferred shape, so passes can prove a ``+ 0``
    does not broadcast and count an identity branch's channels."""
    inferred = inferred_value_info(model)
    for tensor in graph.tensors().values():
        value = inferred.get(tensor.name)
        if isinstance(tensor, gs.Variable) and tensor.shape is None and value is not None:
            tensor_type = value.type.tensor_type
            if tensor_type.HasField("shape"):
                tensor.shape = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tensor_type.shape.dim
                ]


def _import_graph(model: onnx.ModelProto) -> gs.Graph:
    try:
        return gs.import_onnx(model)
    except Exception as error:  # graphsurgeon raises assorted types on odd models
        raise UnsupportedModelError(
            f"onnx-graphsurgeon cannot read this model ({error}); please report it."
        ) from error


def export_like(
    graph: gs.Graph, original: onnx.ModelProto, fused: Sequence[FusedBlock] = ()
) -> onnx.ModelProto:
    """Export ``graph`` keeping ``original``'s model-level fields, and tag fused nodes.

    Kept: IR version, opset imports, producer, domain, model version, doc strings, graph name,
    metadata. A node a pass created gets ``metadata_props`` naming the rule and the branches
    (when the IR version has them), so ``diff`` and debugging can tell what it came from.
    """
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = original.ir_version
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, name, getattr(original, name))
    del model.opset_import[:]
    model.opset_import.extend(original.opset_import)
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    _keep_value_info_of(model, original)
    model.graph.name = original.graph.name
    model.graph.doc_string = original.graph.doc_string
    if original.ir_version >= _METADATA_MIN_IR_VERSION:
        _tag_fused_nodes(model, fused)
    return model


def _keep_value_info_of(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Keep only the value_info entries the original had (shape inference added the rest)."""
    known = {value.name for value in original.graph.value_info}
    kept = [value for value in model.graph.value_info if value.name in known]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _tag_fused_nodes(model: onnx.ModelProto, fused: Sequence[FusedBlock]) -> None:
    by_node = {block.node: block for block in fused}
    for node in model.graph.node:
        block = by_node.get(node.name)
        if block is not None:
            for key, value in (
                ("repvgg_onnx.rule", block.rule),
                ("repvgg_onnx.branches", ", ".join(block.branches)),
            ):
                node.metadata_props.add(key=key, value=value)


def check_fused_model(fused: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """``onnx.checker`` with strict shape inference on the result's skeleton (its weights are
    built from numpy arrays, valid by construction), unless the original itself fails it: we
    must not make a model worse, but need not make it better."""
    try:
        onnx.checker.check_model(model_skeleton(fused), full_check=True)
    except Exception as error:  # checker and shape inference raise several types
        try:
            onnx.checker.check_model(model_skeleton(original), full_check=True)
        except Exception:
            return
        raise CheckFailedError(
            f"the fused model fails onnx.checker ({str(error).strip().splitlines()[0]}); "
            "this is a bug in repvgg-onnx: please report it with the model."
        ) from error
