"""Give a graph's tensors the shapes onnx's shape inference finds for them.

Passes decide legality from shapes (a ``+ 0`` that cannot broadcast, a channel count, the
static shape a ``Shape`` node folds to); exporters leave most intermediate tensors shapeless.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.gs_export import export_onnx
from repvgg_onnx.passes.graph_utils import tensor_map
from repvgg_onnx.skeleton import inferred_value_info
from repvgg_onnx.weightless import weights_detached


def annotate_shapes(graph: gs.Graph, inferred: dict[str, onnx.ValueInfoProto]) -> None:
    """Give shapeless (or partly known) variables their inferred shape and type."""
    for tensor in tensor_map(graph).values():
        value = inferred.get(tensor.name)
        if not isinstance(tensor, gs.Variable) or value is None:
            continue
        tensor_type = value.type.tensor_type
        if tensor.dtype is None and tensor_type.elem_type:
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if tensor_type.HasField("shape") and not _fully_known(tensor.shape):
            tensor.shape = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor_type.shape.dim
            ]


def _fully_known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def reinfer_shapes(graph: gs.Graph) -> None:
    """Run shape inference on the graph as it is now and annotate it (after constants were
    folded, tensors whose shape depended on them get one)."""
    try:
        with weights_detached(graph):
            model = export_onnx(graph)
    except Exception:  # graphsurgeon raises assorted types; shapes are a help, not a need
        return
    annotate_shapes(graph, inferred_value_info(model))
