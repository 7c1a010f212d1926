"""Give a graph's tensors the shapes the tool infers for them, never the shapes a file claims.

Passes decide legality from shapes (a ``+ 0`` that cannot broadcast, a channel count, the
static shape a ``Shape`` node folds to); exporters leave most intermediate tensors shapeless,
and a ``value_info`` entry can lie (it claims ``t`` is ``[1, 1, 1, C]`` where ``t`` is
``[1, C]``: ``t + zeros[1, 1, 1]`` then looks like ``x + 0`` and is not). So shapes come from
onnx's shape inference run on the model with its ``value_info`` and its output shapes cleared:
what it derives from the graph inputs (which onnxruntime enforces) and the constants. An
intermediate tensor inference finds nothing for has no shape; a graph output keeps its
declared shape unless inference finds one that contradicts it.
"""

from __future__ import annotations

import math

import onnx
import onnx_graphsurgeon as gs

from repvgg_onnx.graph.constant_views import tensor_map
from repvgg_onnx.graph.detached_weights import weights_detached
from repvgg_onnx.graph.fast_export import export_onnx
from repvgg_onnx.io.stripped_model import model_skeleton

Shape = list[int | str | None]


def inferred_shapes(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Types and shapes of the model's intermediate tensors and outputs by name, inferred
    from its graph inputs and constants alone (empty if inference fails)."""
    skeleton = model_skeleton(model)
    del skeleton.graph.value_info[:]
    for output in skeleton.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    try:
        inferred = _infer(skeleton)
    except Exception:  # inference is a help, never a requirement
        return {}
    values = [*inferred.graph.value_info, *inferred.graph.output]
    return {value.name: value for value in values if value.type.HasField("tensor_type")}


def _infer(skeleton: onnx.ModelProto) -> onnx.ModelProto:
    """Strict inference; where the graph holds something it cannot type (a custom op), the
    lenient kind, which infers what it can and leaves the rest unknown. With data propagation
    (the values of shape computations), unless a result it would build is too large."""
    propagate = _propagation_is_bounded(skeleton)
    try:
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=True, data_prop=propagate)
    except Exception:  # onnx raises its own error types and RuntimeError
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=propagate)


#: Ops whose 1-D result onnx's data propagation builds element by element when its length
#: comes from constants: a ``Range`` to 10^8 that a ``Slice`` reads takes 8 s to propagate,
#: one to 2^32 (a damaged conv's pads) runs out of memory. (Shapes are 1-D and short.)
_SIZED_BY_CONSTANTS = frozenset({"Range", "ConstantOfShape", "Expand", "Tile"})

#: A 1-D result of more elements is not propagated: no shape is that long.
MAX_PROPAGATED_ELEMENTS = 1 << 20


def _propagation_is_bounded(model: onnx.ModelProto) -> bool:
    """No op of :data:`_SIZED_BY_CONSTANTS` in ``model`` makes a 1-D result of more than
    :data:`MAX_PROPAGATED_ELEMENTS` elements from its constant inputs."""
    sized, constant_nodes = [], []
    for node in model.graph.node:  # one pass: this runs before every inference
        op = node.op_type
        if op in _SIZED_BY_CONSTANTS:
            sized.append(node)
        elif op == "Constant":
            constant_nodes.append(node)
    if not sized:
        return True
    read = {name for node in sized for name in node.input}
    constants = {t.name: t for t in model.graph.initializer if t.name in read}
    for node in constant_nodes:
        value = node.attribute[0] if node.attribute else None
        if node.output[0] in read and value is not None and value.name == "value":
            constants[node.output[0]] = value.t
    return all(_vector_length(node, constants) <= MAX_PROPAGATED_ELEMENTS for node in sized)


def _vector_length(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> float:
    """The length of ``node``'s result if its constant inputs make it 1-D, else 0."""
    values = [
        onnx.numpy_helper.to_array(constants[name]) if name in constants else None
        for name in node.input
    ]
    if node.op_type == "Range":
        if len(values) != 3 or any(v is None or v.size != 1 for v in values):
            return 0
        start, limit, delta = (float(v.reshape(-1)[0]) for v in values)
        return max(math.ceil((limit - start) / delta), 0) if delta else 0
    sizes = values[1] if node.op_type in ("Expand", "Tile") and len(values) > 1 else values[0]
    if sizes is None or sizes.size != 1:  # a shape or repeats of one element: a 1-D result
        return 0
    return abs(float(sizes.reshape(-1)[0]))


def annotate_shapes(graph: gs.Graph, inferred: dict[str, onnx.ValueInfoProto]) -> None:
    """Give every variable but the graph inputs its inferred type and shape; an intermediate
    without one loses what it had, a graph output keeps its declaration unless contradicted."""
    inputs = {id(tensor) for tensor in graph.inputs}
    outputs = {id(tensor) for tensor in graph.outputs}
    for tensor in tensor_map(graph).values():
        if not isinstance(tensor, gs.Variable) or id(tensor) in inputs:
            continue
        value = inferred.get(tensor.name)
        if value is None:
            if id(tensor) not in outputs:
                tensor.shape = None
            continue
        _annotate(tensor, value, is_output=id(tensor) in outputs)


def annotate_found_shapes(
    graph: gs.Graph, tensors: list[gs.Tensor], inferred: dict[str, onnx.ValueInfoProto]
) -> None:
    """Give each of ``tensors`` (variables computed by nodes) its inferred type and shape as
    :func:`annotate_shapes` would, where inference found one; the others keep theirs."""
    outputs = {id(tensor) for tensor in graph.outputs}
    for tensor in tensors:
        value = inferred.get(tensor.name)
        if value is not None and isinstance(tensor, gs.Variable):
            _annotate(tensor, value, is_output=id(tensor) in outputs)


def _annotate(tensor: gs.Variable, value: onnx.ValueInfoProto, is_output: bool) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type:
        tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    shape = _shape_of(tensor_type) if tensor_type.HasField("shape") else None
    if not is_output or not _consistent(tensor.shape, shape):
        tensor.shape = shape


def _shape_of(tensor_type: onnx.TypeProto.Tensor) -> Shape:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in tensor_type.shape.dim
    ]


def _consistent(declared: Shape | None, inferred: Shape | None) -> bool:
    """No contradiction: either unknown, or the same rank and no two known dims differ."""
    if declared is None or inferred is None:
        return True
    if len(declared) != len(inferred):
        return False
    return all(
        not (isinstance(a, int) and isinstance(b, int)) or a == b
        for a, b in zip(declared, inferred, strict=True)
    )


def reinfer_shapes(graph: gs.Graph) -> None:
    """Run shape inference on the graph as it is now and annotate it (after constants were
    folded, tensors whose shape depended on them get one)."""
    with weights_detached(graph):  # its failure is a fault here, never hidden
        model = export_onnx(graph)  # nor this one's: the fused graph is exported the same way
    inferred = inferred_shapes(model)
    if inferred:  # else the shapes inferred before stay
        annotate_shapes(graph, inferred)
