"""ONNX model-local functions: their ids, their calls, and onnx's own inliner behind one error.

A node calls a local function when its ``(domain, op_type)`` is a function's
``(domain, name)``. Inlining replaces each call by the function's body (renamed apart), in the
main graph, in subgraphs and in the bodies of the functions that are kept; the functions
inlined leave ``model.functions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import onnx
import onnx.inliner

from repvgg_onnx.errors import UnsupportedModelError, first_line

FunctionId = tuple[str, str]
"""``(domain, name)``: how a node calls a local function and how onnx's inliner selects it."""


def function_id(function: onnx.FunctionProto) -> FunctionId:
    return (function.domain, function.name)


def inline_functions(model: onnx.ModelProto, functions: Iterable[FunctionId]) -> onnx.ModelProto:
    """A copy of ``model`` with every call of ``functions`` inlined (``model`` unchanged);
    ``model`` itself when there is nothing to inline."""
    selected = list(functions)
    if not selected:
        return model
    try:
        return onnx.inliner.inline_selected_functions(model, selected, exclude=False)
    except Exception as error:  # the C++ inliner raises assorted types
        raise UnsupportedModelError(
            f"onnx's inliner cannot inline this model's local functions ({first_line(error)}); "
            "re-export the model without functions (e.g. without export_modules_as_functions)."
        ) from error


def inline_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every call of every local function inlined (``model`` unchanged)."""
    return inline_functions(model, [function_id(f) for f in model.functions])


def count_inlined_calls(model: onnx.ModelProto, chosen: set[FunctionId]) -> int:
    """How many call nodes inlining ``chosen`` removes: those of the main graph (and its
    subgraphs) with the calls inside each inlined body, plus those in the kept bodies."""
    bodies = {function_id(f): f for f in model.functions}

    def calls(nodes: Sequence[onnx.NodeProto]) -> int:
        total = 0
        for node in all_nodes(nodes):
            callee = (node.domain, node.op_type)
            if callee in chosen:
                total += 1 + calls(bodies[callee].node)
        return total

    kept = [f for f in model.functions if function_id(f) not in chosen]
    return calls(model.graph.node) + sum(calls(f.node) for f in kept)


def all_nodes(nodes: Sequence[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    """``nodes`` and, depth first, the nodes of their subgraph attributes."""
    for node in nodes:
        yield node
        for attribute in node.attribute:
            for graph in (attribute.g, *attribute.graphs):
                yield from all_nodes(graph.node)
