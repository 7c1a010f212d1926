"""Evaluate constant subexpressions once, so their results are constants the readers see.

Exporters compute weights in the graph (DBB's ``W + I``, EfficientViM's ``Sigmoid(α)``, a
layer scale ``Mul(γ, c)``, ``Unsqueeze(initializer)``) and shapes from ``Shape`` of tensors
whose shape is static (DBB's slice assignments). A node whose inputs are all constants is
evaluated by the runtime the caller deploys on (onnxruntime, passed in by the pipeline),
checked against onnx's reference evaluator (:mod:`.constant_evaluation`), and its outputs
become constants of the same names; a node the two disagree on stays, skipped with the
reason. ``Shape``/``Size`` of a tensor with a fully known shape become constants too.

Not folded: ops outside the standard domain, random ops, nodes with subgraphs, graph outputs,
initializers a caller may override (listed as graph inputs), and results much larger than
their inputs (``Expand``/``Tile``/``ConstantOfShape`` blow-ups stay computed at run time).

Invariant: the graph computes the same function (each folded value is exactly what the node
computed).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.graph.gs_versions import node_proto
from repvgg_onnx.graph.unread_nodes import remove_unread_nodes

from .computed_shapes import infer_shapes_read_by_shape_nodes
from .constant_evaluation import NodeValues, Runtime, evaluate_constants
from .contracts import KEEPS_INTERFACE_AND_NAMES, WELL_FORMED, contract
from .exact_ops import EXACT_OPS, exact_output
from .graph_utils import (
    attribute,
    constant_values,
    ensure_topological_order,
    has_subgraph,
    is_graph_output,
    is_omitted,
    is_standard,
    replace_uses,
    static_shape,
)
from .pass_result import PassResult, Refusal

RULE = "fold_constants"

_NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
_SKIPPED = _NONDETERMINISTIC | {"Constant", "Bernoulli"}

#: Set on a constant node no evaluator could be trusted on: its refusal ("" if none computed it).
_UNFOLDABLE = "_repvgg_onnx_unfoldable"

#: A folded result may hold this many elements, or as many as its inputs together.
MAX_FOLDED_ELEMENTS = 1 << 16


@contract(requires=WELL_FORMED, ensures=KEEPS_INTERFACE_AND_NAMES)
def fold_constants(graph: gs.Graph, runtime: Runtime | None = None) -> PassResult:
    """Replace every foldable node's outputs by constants; ``shapes_stale`` when any was.

    The constant subgraph is evaluated at once (exporters emit thousands of small index
    computations) by ``runtime`` (onnxruntime, from the pipeline) and checked against onnx's
    reference evaluator (:func:`~.constant_evaluation.evaluate_constants`); a node the two
    disagree on, or that only an unchecked reference computes, is skipped with the reason."""
    made: set[int] = set()
    folded = rewrites = _fold_once(graph, runtime, made)
    while folded and infer_shapes_read_by_shape_nodes(graph, made):
        made.clear()
        folded = _fold_once(graph, runtime, made)
        rewrites += folded
    skipped = [
        Refusal(RULE, node.name or node.outputs[0].name, reason)
        for node in graph.nodes
        if (reason := getattr(node, _UNFOLDABLE, None))
    ]
    if rewrites:
        remove_unread_nodes(graph)
        ensure_topological_order(graph)
    return PassResult(skipped=skipped, rewrites=rewrites, shapes_stale=bool(rewrites))


def _fold_once(graph: gs.Graph, runtime: Runtime | None, made: set[int]) -> int:
    """Fold every ``Shape``/``Size`` of a static shape and the constant subgraph; how many
    nodes were folded (their outputs taken away: what reads nothing now goes in one cleanup
    at the end). The ids of the constants written go to ``made``."""
    folded = 0
    for node in list(graph.nodes):
        if node.op in ("Shape", "Size") and _foldable(graph, node):
            values = _shape_of(node)
            if values is not None:
                folded += _replace_outputs(node, values, made)
    nodes = _constant_subgraph(graph)
    decisions = _evaluate_all(graph, nodes, runtime) if nodes else []
    written = _within_budgets(nodes, decisions)
    for node, decision in zip(nodes, decisions, strict=True):
        if id(node) in written:
            folded += _replace_outputs(node, decision.outputs, made, written)
        elif decision.outputs is None:  # not evaluated again in later rounds
            setattr(node, _UNFOLDABLE, decision.refusal or "")
    return folded


def _replace_outputs(
    node: gs.Node, values: list, made: set[int], written: frozenset[int] | set[int] = frozenset()
) -> int:
    """Make what reads ``node``'s outputs read constants of their values, and take the outputs
    away. An output read only by nodes in ``written`` (their outputs taken away as well) gets
    no constant: nothing would be left to read it."""
    for tensor, value in zip(node.outputs, values, strict=True):
        if all(id(reader) in written for reader in tensor.outputs):
            continue
        constant = gs.Constant(tensor.name, np.asarray(value))
        replace_uses(tensor, constant)
        made.add(id(constant))
    node.outputs.clear()
    return 1


def _foldable(graph: gs.Graph, node: gs.Node) -> bool:
    """A standard, deterministic node without subgraphs, named outputs, none a graph output."""
    if not is_standard(node) or node.op in _SKIPPED or not node.outputs:
        return False
    if not all(t.name for t in node.outputs):
        return False
    if any(is_graph_output(graph, t) for t in node.outputs):
        return False
    return not has_subgraph(node)


def _constant_subgraph(graph: gs.Graph) -> list[gs.Node]:
    """The foldable nodes whose inputs are constants or outputs of such nodes (graph order).

    A ``Shape``/``Size`` is one only if it reads such a node's output: its value is then
    evaluated with the rest, and what reads it folds in the same round (the shape of a
    constant was folded already, and reading a stored weight just for its shape would
    send the weight to the evaluators)."""
    computed: set[int] = set()
    nodes = []
    for node in graph.nodes:
        inputs = [t for t in node.inputs if not is_omitted(t)]
        if not inputs:
            continue
        if node.op in ("Shape", "Size"):
            constant = id(inputs[0]) in computed
        else:
            constant = all(id(t) in computed or constant_values(t) is not None for t in inputs)
        # ``constant`` first: most nodes read a variable, and it is the cheaper test
        if constant and _foldable(graph, node) and not hasattr(node, _UNFOLDABLE):
            nodes.append(node)
            computed.update(id(t) for t in node.outputs)
    return nodes


def _within_budgets(nodes: list[gs.Node], decisions: list[NodeValues]) -> set[int]:
    """The ids of the ``nodes`` whose values may be written: each result at most as large as
    ``MAX_FOLDED_ELEMENTS`` or the constants its node reads together (``Expand``, ``Tile``
    blow-ups stay computed), counting the results of earlier nodes written as constants."""
    written: set[int] = set()
    sizes: dict[int, int] = {}
    for node, decision in zip(nodes, decisions, strict=True):
        if decision.outputs is None:
            continue
        read = sum(
            math.prod(t.shape) if isinstance(t, gs.Constant) else sizes.get(id(t), 0)
            for t in node.inputs
        )
        results = [np.asarray(o).size for o in decision.outputs]
        if sum(results) <= max(MAX_FOLDED_ELEMENTS, read):
            written.add(id(node))
            sizes.update((id(t), size) for t, size in zip(node.outputs, results, strict=True))
    return written


def _evaluate_all(
    graph: gs.Graph, nodes: list[gs.Node], runtime: Runtime | None
) -> list[NodeValues]:
    """What may be written for each of ``nodes``, evaluated together on the constants they
    read: the exact ops (:mod:`.exact_ops`) on the nodes as they are, the others as protos by
    :func:`~.constant_evaluation.evaluate_constants`."""
    inside = {id(t) for node in nodes for t in node.outputs}
    values = {}
    for node in nodes:
        for tensor in node.inputs:
            if not is_omitted(tensor) and id(tensor) not in inside:
                values[tensor.name] = constant_values(tensor)
    opset = int(graph.opset or 17)
    exact = _exact_values(nodes, values, opset)
    rest = [node for node in nodes if node.outputs[0].name not in exact]
    if rest:
        protos = [node_proto(node) for node in rest]
        decided = iter(evaluate_constants(protos, values | exact, opset, runtime))
    return [
        NodeValues([exact[node.outputs[0].name]])
        if node.outputs[0].name in exact
        else next(decided)
        for node in nodes
    ]


def _exact_values(
    nodes: list[gs.Node], values: dict[str, np.ndarray], opset: int
) -> dict[str, np.ndarray]:
    """:func:`~.exact_ops.evaluate_exact_ops` on graphsurgeon nodes (their attributes already
    read, so no proto is written for them): each output computed, by name."""
    known = dict(values)
    computed: dict[str, np.ndarray] = {}
    for node in nodes:  # standard and of one output, as every foldable exact op is
        if node.op not in EXACT_OPS:
            continue
        attributes = {
            name: constant_values(value) if isinstance(value, gs.Constant) else value
            for name, value in node.attrs.items()
        }  # a value the op cannot read (a tensor not loaded) makes numpy raise: declined
        inputs = ["" if is_omitted(t) else t.name for t in node.inputs]
        output = exact_output(node.op, inputs, attributes, known, opset)
        if output is not None:
            known[node.outputs[0].name] = computed[node.outputs[0].name] = output
    return computed


def _shape_of(node: gs.Node) -> list[np.ndarray] | None:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return [np.array(math.prod(shape), dtype=np.int64)]
    start, end = attribute(node, "start", 0), attribute(node, "end", None)
    return [np.array(shape[start:end], dtype=np.int64)]
