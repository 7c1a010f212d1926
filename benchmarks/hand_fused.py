"""The least code that fuses RepVGG blocks on our stack: a floor for ``fuse`` on such models.

``floors.py``'s ``hand-fused`` job runs :func:`hand_fuse`: the same guarantees and the same
graph API as ``repvgg-onnx fuse --no-verify`` (checked load, graphsurgeon, shape inference,
float64 weight math, ``onnx.checker`` on the result, fsynced atomic save), and one hard-coded
pattern in place of the passes: a ``Relu`` reading a tree of ``Add`` nodes whose terms are
``BN(Conv(x))``, ``Conv(x)``, ``BN(x)`` or ``x``, all of one ``x``, with centred kernels.
It finds nothing else, explains nothing, and never plans a region; so its time is what the
edit itself costs on graphsurgeon, and what ``fuse`` takes beyond it is the price of finding
every re-parameterizable form and saying why the others stay.

Invariant: where it rewrites a block, the Conv it writes computes the block's Add tree (float64
sums, stored in the weight's type); a block it cannot prove that for is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.affine_conv import batchnorm_scale_shift
from repvgg_onnx.passes.graph_utils import constant_values, has_single_use, producer

#: A term of a block: ``(weights, shift, conv)``: a Conv's kernel and bias (BN folded in) and the
#: Conv; for an identity a per-channel scale and shift (``None``, ``None``: the input itself) and
#: ``None``.
_Term = tuple[np.ndarray, np.ndarray, gs.Node | None]


def hand_fuse(source: str, target: str) -> int:
    """Fuse the RepVGG blocks of the model at ``source`` into ``target``; the number fused."""
    from repvgg_onnx import io
    from repvgg_onnx.api import check_fused_model
    from repvgg_onnx.graph.crossing import export_graph, import_graph
    from repvgg_onnx.graph.shapes import annotate_shapes, inferred_shapes

    model = io.load_model(source)
    graph, empty_lists = import_graph(model)
    annotate_shapes(graph, inferred_shapes(model))
    fused = fuse_repvgg_blocks(graph)
    result = export_graph(graph, empty_lists)
    result.ir_version = model.ir_version
    del result.opset_import[:]
    result.opset_import.extend(model.opset_import)
    check_fused_model(result, model)
    io.save_model(result, target)
    return fused


def fuse_repvgg_blocks(graph: gs.Graph) -> int:
    """Every ``Relu(Σ terms of x)`` with centred kernels becomes ``Relu(Conv(x))``; the count."""
    replaced: dict[int, gs.Node] = {}
    dead: set[int] = set()
    for node in graph.nodes:
        if node.op != "Relu":
            continue
        block = _block(graph, node.inputs[0])
        if block is None:
            continue
        source, terms, nodes = block
        conv = _merged_conv(source, terms, node.inputs[0])
        if conv is None:
            continue
        node.inputs[0] = conv.outputs[0]
        replaced[id(node)] = conv
        dead.update(id(n) for n in nodes)
    order = []
    for node in graph.nodes:
        if id(node) in dead:
            continue
        if id(node) in replaced:
            order.append(replaced[id(node)])
        order.append(node)
    graph.nodes = order
    return len(replaced)


def _block(graph: gs.Graph, sum_tensor: gs.Tensor):
    """``(x, terms, nodes)`` of the Add tree computing ``sum_tensor``, or ``None``."""
    top = producer(sum_tensor)
    if top is None or top.op != "Add":
        return None
    leaves, nodes, stack = [], [], [sum_tensor]
    while stack:
        tensor = stack.pop()
        writer = producer(tensor)
        if writer is not None and writer.op == "Add" and has_single_use(graph, tensor):
            nodes.append(writer)
            stack.extend(writer.inputs)
        else:
            leaves.append(tensor)
    terms, sources = [], set()
    for leaf in leaves:
        term = _term(graph, leaf, nodes)
        if term is None:
            return None
        source, kernel, bias, conv = term
        sources.add(id(source))
        terms.append((kernel, bias, conv))
    if len(sources) != 1:
        return None
    return source, terms, nodes


def _term(graph: gs.Graph, tensor: gs.Tensor, nodes: list[gs.Node]):
    """``(x, kernel or scale, bias, conv)`` of one leaf of the Add tree, or ``None``."""
    writer = producer(tensor) if has_single_use(graph, tensor) else None
    scale, shift = None, None
    if writer is not None and writer.op == "BatchNormalization":
        scale, shift = _batchnorm(writer)
        nodes.append(writer)
        tensor = writer.inputs[0]
        writer = producer(tensor) if has_single_use(graph, tensor) else None
    if writer is None or writer.op != "Conv":
        if scale is None:
            return tensor, None, None, None
        return tensor, scale, shift, None
    weight = constant_values(writer.inputs[1])
    if weight is None:
        return None
    kernel = weight.astype(np.float64)
    bias = np.zeros(kernel.shape[0])
    if len(writer.inputs) > 2 and writer.inputs[2].name:
        values = constant_values(writer.inputs[2])
        if values is None:
            return None
        bias = values.astype(np.float64)
    if scale is not None:
        kernel = kernel * scale[:, None, None, None]
        bias = bias * scale + shift
    nodes.append(writer)
    return writer.inputs[0], kernel, bias, writer


def _batchnorm(node: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (constant_values(t) for t in node.inputs[1:5])
    return batchnorm_scale_shift(gamma, beta, mean, var, node.attrs.get("epsilon", 1e-5))


def _merged_conv(source: gs.Tensor, terms: list[_Term], output: gs.Tensor) -> gs.Node | None:
    """One Conv equal to the sum of ``terms`` of ``source``, or ``None`` if the convs differ in
    anything but a centred kernel size."""
    convs = [conv for _, _, conv in terms if conv is not None]
    if not convs:
        return None
    main = max(convs, key=lambda c: c.inputs[1].shape[-1])
    size, groups = main.inputs[1].shape[-1], main.attrs.get("group", 1)
    channels, per_group = main.inputs[1].shape[:2]
    for conv in convs:
        k = conv.inputs[1].shape[-1]
        square = tuple(conv.inputs[1].shape[2:]) == (k, k)
        same = all(conv.attrs.get(a) == main.attrs.get(a) for a in ("strides", "dilations"))
        centred = list(conv.attrs.get("pads", [0] * 4)) == [(k - 1) // 2] * 4 and k % 2
        if not (square and same and centred and conv.attrs.get("group", 1) == groups):
            return None
    if list(main.attrs.get("dilations", [1, 1])) != [1, 1]:
        return None
    kernel = np.zeros((channels, per_group, size, size))
    bias = np.zeros(channels)
    centre = size // 2
    for weights, shift, conv in terms:
        if conv is None:  # an identity: weights are a per-channel scale (None: the input itself)
            if list(main.attrs.get("strides", [1, 1])) != [1, 1] or per_group * groups != channels:
                return None
            rows = np.arange(channels)
            kernel[rows, rows % per_group, centre, centre] += 1.0 if weights is None else weights
        else:  # a smaller kernel sits at the centre of the largest
            offset = (size - weights.shape[-1]) // 2
            kernel[:, :, offset : size - offset, offset : size - offset] += weights
        if shift is not None:
            bias += shift
    dtype = constant_values(main.inputs[1]).dtype
    fused_output = gs.Variable(f"{output.name}_fused", output.dtype, output.shape)
    attrs = {"group": groups, "pads": [centre] * 4}
    if "strides" in main.attrs:
        attrs["strides"] = list(main.attrs["strides"])
    return gs.Node(
        "Conv",
        f"{output.name}_fused_conv",
        attrs=attrs,
        inputs=[
            source,
            gs.Constant(f"{output.name}_fused_weight", kernel.astype(dtype)),
            gs.Constant(f"{output.name}_fused_bias", bias.astype(dtype)),
        ],
        outputs=[fused_output],
    )
