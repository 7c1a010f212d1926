"""ModelProto in, ModelProto out: the passes applied to a model, nothing else.

Imports the graph into onnx-graphsurgeon, gives tensors their inferred shapes, runs the
pipeline to a fixpoint and exports, keeping the original's model-level fields. No files, no
verification: :mod:`repvgg_onnx.api` adds those.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.passes.result import FusedBlock
from repvgg_onnx.pipeline import DEFAULT_PASSES, Pass, PipelineResult, run_passes
from repvgg_onnx.skeleton import inferred_value_info

_METADATA_MIN_IR_VERSION = 10  # NodeProto.metadata_props exists from IR version 10 on


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
    _restore_node_annotations(model, original)
    if original.ir_version >= _METADATA_MIN_IR_VERSION:
        _tag_fused_nodes(model, fused)
    return model


def _restore_node_annotations(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give surviving nodes back the doc strings and metadata graphsurgeon does not carry."""
    annotated = {
        (node.name, node.op_type, tuple(node.output)): node
        for node in original.graph.node
        if node.doc_string or node.metadata_props
    }
    if not annotated:
        return
    for node in model.graph.node:
        source = annotated.get((node.name, node.op_type, tuple(node.output)))
        if source is not None:
            node.doc_string = source.doc_string
            node.metadata_props.extend(source.metadata_props)


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
