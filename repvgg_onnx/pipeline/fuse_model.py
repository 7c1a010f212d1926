"""ModelProto in, ModelProto out: the passes applied to a model, nothing else.

Imports the graph into onnx-graphsurgeon, gives tensors their inferred shapes, runs the
pipeline to a fixpoint and exports, keeping the original's model-level fields. No files, no
verification: :mod:`repvgg_onnx.api` adds those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.graph.constant_views import mark_overridable, tensor_map
from repvgg_onnx.graph.crossing import (
    dismantle,
    export_graph,
    import_graph,
    release_dropped,
    watch,
)
from repvgg_onnx.graph.detached_weights import attach_weights, detach_weights
from repvgg_onnx.graph.memory_release import (
    collection_paused,
    return_free_memory,
    trim_free_heap,
    worth_returning,
)
from repvgg_onnx.graph.node_metadata import BRANCHES_KEY, RULE_KEY
from repvgg_onnx.graph.shapes import annotate_shapes, inferred_shapes
from repvgg_onnx.passes.pass_result import FusedBlock
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES, Pass, PipelineResult, run_passes

_METADATA_MIN_IR_VERSION = 10  # NodeProto.metadata_props exists from IR version 10 on


def fuse_graph(
    model: onnx.ModelProto,
    passes: Sequence[Pass] = DEFAULT_PASSES,
    progress: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, PipelineResult]:
    """Run ``passes`` to a fixpoint on a copy of ``model``'s graph; no checks, no verification.
    ``progress`` hears each round."""
    if not model.graph.output:
        raise UnsupportedModelError(
            "the model declares no graph outputs, so it computes nothing to keep or compare; "
            "list its outputs in graph.output."
        )
    with collection_paused():
        graph, empty_lists = import_graph(model)
        imported = watch(graph)
        _mark_overridable_initializers(graph, model)
        _annotate_shapes(graph, model)
        outcome = run_passes(graph, passes, progress)
        large = worth_returning(model)
        if large:  # what the passes dropped (graphsurgeon objects are cycles), before the export
            if release_dropped(graph, imported):
                trim_free_heap()  # freed by reference counting just now
            else:
                return_free_memory()  # a collection, where a body may read what was dropped
        fused = export_like(graph, model, outcome.fused, empty_lists)
        dismantle(graph, imported)  # freed now, before a save allocates; no collection walks it
    if large:
        trim_free_heap()
    return fused, outcome


#: From IR version 4 on, an initializer need not be a graph input; one that is listed anyway
#: is a default the caller may override. Before, every initializer had to be listed.
_OVERRIDABLE_MIN_IR_VERSION = 4


def _mark_overridable_initializers(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Initializers also listed as graph inputs (IR >= 4) are not constants: no pass may bake
    them in, and the exported model lists them again (graphsurgeon drops the listing)."""
    listed = _initializer_inputs(model)
    if model.ir_version < _OVERRIDABLE_MIN_IR_VERSION or not listed:
        return
    tensors = tensor_map(graph)
    for name in listed:
        if name in tensors:
            mark_overridable(tensors[name])


def _initializer_inputs(model: onnx.ModelProto) -> list[str]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name in initializers]


def _annotate_shapes(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Give intermediate tensors the shapes inference finds (never the file's ``value_info``),
    so passes can prove a ``+ 0`` does not broadcast and count an identity branch's channels."""
    annotate_shapes(graph, inferred_shapes(model))


def export_like(
    graph: gs.Graph,
    original: onnx.ModelProto,
    fused: Sequence[FusedBlock] = (),
    empty_lists: dict | None = None,
) -> onnx.ModelProto:
    """Export ``graph`` keeping ``original``'s model-level fields, and tag fused nodes. The
    graph's large weights move into the model (the graph is spent afterwards).

    Kept: IR version, opset imports, producer, domain, model version, doc strings, graph name,
    metadata. A node a pass created gets ``metadata_props`` naming the rule and the branches
    (when the IR version has them), so ``diff`` and debugging can tell what it came from.
    """
    weights = detach_weights(graph)
    model = export_graph(graph, empty_lists or {})
    model.ir_version = original.ir_version
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, name, getattr(original, name))
    del model.opset_import[:]
    model.opset_import.extend(original.opset_import)
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    _keep_value_info_of(model, original)
    _list_initializer_inputs(model, original)
    model.graph.name = original.graph.name
    model.graph.doc_string = original.graph.doc_string
    _restore_node_annotations(model, original)
    if original.ir_version >= _METADATA_MIN_IR_VERSION:
        _tag_fused_nodes(model, fused)
    attach_weights(model, weights)
    return model


def _list_initializer_inputs(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Keep the original's graph inputs, in order, including initializers it listed there;
    below IR version 4 every initializer, new ones included, must be listed."""
    present = {value.name for value in model.graph.input}
    initializers = {tensor.name for tensor in model.graph.initializer}
    kept: dict[str, onnx.TensorProto] = {}
    if any(value.name not in present for value in original.graph.input):
        kept = {tensor.name: tensor for tensor in original.graph.initializer}
    inputs = []
    for value in original.graph.input:
        if value.name in present:
            inputs.append(next(v for v in model.graph.input if v.name == value.name))
        elif value.name in kept:
            inputs.append(value)
            if value.name not in initializers:
                model.graph.initializer.append(kept[value.name])
                initializers.add(value.name)
    listed = {value.name for value in inputs}
    inputs += [v for v in model.graph.input if v.name not in listed]
    if original.ir_version < _OVERRIDABLE_MIN_IR_VERSION:
        listed = {value.name for value in inputs}
        for tensor in model.graph.initializer:
            if tensor.name not in listed:
                inputs.append(
                    onnx.helper.make_tensor_value_info(
                        tensor.name, tensor.data_type, list(tensor.dims)
                    )
                )
    del model.graph.input[:]
    model.graph.input.extend(inputs)


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
                (RULE_KEY, block.rule),
                (BRANCHES_KEY, ", ".join(block.branches)),
            ):
                node.metadata_props.add(key=key, value=value)
