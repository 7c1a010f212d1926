"""Model-local functions whose bodies hold something for the passes, inlined before them.

An exporter may write each block as a call of an ONNX local function (PyTorch's
``export_modules_as_functions``): every Conv, BN and Add then sits in ``model.functions``,
out of the passes' reach. :func:`inline_for_passes` inlines, with onnx's own inliner, exactly
the functions whose calls hold a node of a block the passes would fuse, a candidate they would
skip or a BatchNormalization, so that ``fuse`` fuses it and ``inspect`` reports it; every
other function stays a function, also one the passes would only tidy (a Constant node made an
initializer, a no-op removed).

The choice is made on a scratch copy: each call of a function from another function's body
is given its own copy of the callee (the calls form a tree), every body node is tagged with
its call path, everything is inlined, and the passes run there. A node of a fused block's
region (:func:`replaced_nodes`), a skipped candidate's anchor or a remaining BN names the
functions on its call path; those are inlined in the real model
(by function id, so every call of a chosen function is inlined).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from repvgg_onnx.errors import UnsupportedModelError
from repvgg_onnx.graph.local_functions import (
    FunctionId,
    all_nodes,
    count_inlined_calls,
    function_id,
    inline_functions,
)
from repvgg_onnx.graph.upstream import upstream_nodes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.pipeline.pass_fixpoint import DEFAULT_PASSES, Pass

_PATH_KEY = "repvgg_onnx.function_path"

_NodeKey = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class Inlining:
    """The local functions inlined before the passes (``functions``, in the model's order),
    how many calls of them disappeared (``calls``), and the functions kept as they were."""

    functions: tuple[str, ...] = ()
    calls: int = 0
    kept: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.functions)

    def describe(self) -> str:
        """``"inlined 7 calls of 2 functions: RepVGGBlock, RepVGGBlock.1"``."""
        calls = f"{self.calls} call{'s' if self.calls != 1 else ''}"
        count = len(self.functions)
        of = f"{count} function{'s' if count != 1 else ''}"
        text = f"inlined {calls} of {of}: {', '.join(self.functions)}"
        if self.kept:
            text += f" (kept as functions: {', '.join(self.kept)})"
        return text

    def to_dict(self) -> dict:
        return {
            "functions": list(self.functions),
            "calls": self.calls,
            "kept": list(self.kept),
            "message": self.describe() if self else "",
        }


def inline_for_passes(
    model: onnx.ModelProto,
    passes: Sequence[Pass] = DEFAULT_PASSES,
) -> tuple[onnx.ModelProto, Inlining]:
    """``model`` with the local functions inlined whose calls hold a node of a block
    ``passes`` would fuse, of a candidate they would skip, or a BatchNormalization they would
    leave (see the module docstring), and the record of it. Without such a function,
    ``model`` itself (unchanged) and an empty record."""
    if not model.functions:
        return model, Inlining()
    chosen = functions_to_inline(model, passes)
    names = [f.name for f in model.functions]
    if not chosen:
        return model, Inlining(kept=tuple(names))
    order = [function_id(f) for f in model.functions if function_id(f) in chosen]
    calls = count_inlined_calls(model, set(order))
    inlined = inline_functions(model, order)
    kept = tuple(f.name for f in model.functions if function_id(f) not in chosen)
    return inlined, Inlining(tuple(name for _, name in order), calls, kept)


def functions_to_inline(model: onnx.ModelProto, passes: Sequence[Pass]) -> set[FunctionId]:
    """The ids of the functions on the call path of a node of a block the passes would fuse,
    of a candidate they would skip, or of a BatchNormalization they would leave, found on a
    fully inlined, path-tagged scratch copy."""
    scratch, paths = _call_tree_copy(model)
    inlined = inline_functions(scratch, [function_id(f) for f in scratch.functions])
    origin = {
        _key(node): paths[tag]
        for node in inlined.graph.node
        for tag in [_tag(node)]
        if tag is not None
    }
    if not origin:
        return set()
    fused, outcome = fuse_graph(inlined, passes)
    outputs = [block.output for block in outcome.fused]
    touched = [_key(node) for node in replaced_nodes(inlined.graph, fused.graph, outputs)]
    by_name = {key[0]: key for key in origin}
    touched += [by_name[s.node] for s in outcome.skipped if s.node in by_name]
    touched += [
        _key(node)
        for node in fused.graph.node
        if node.op_type == "BatchNormalization" and _key(node) in origin
    ]
    return {function for key in touched if key in origin for function in origin[key]}


def replaced_nodes(
    before: onnx.GraphProto, after: onnx.GraphProto, outputs: Sequence[str]
) -> list[onnx.NodeProto]:
    """The nodes of ``before`` that computed ``outputs`` (tensors a fused block writes again
    under their names) back from the tensors ``after`` still has: the blocks' regions, with
    the constant subexpressions and no-ops inside them, and nothing that was only tidied."""
    producer = {name: node for node in before.node for name in node.output if name}
    kept = {value.name for value in after.input} | {t.name for t in after.initializer}
    kept |= {name for node in after.node for name in node.output}
    return upstream_nodes(outputs, producer, kept.__contains__)


def _call_tree_copy(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, dict[str, tuple[FunctionId, ...]]]:
    """A copy of ``model`` in which every call has a function of its own (named
    ``name#k``), each body node tagged with ``k``; and the call path of each ``k``."""
    originals = {function_id(f): f for f in model.functions}
    copies: list[onnx.FunctionProto] = []
    paths: dict[str, tuple[FunctionId, ...]] = {}

    def instance(callee: FunctionId, path: tuple[FunctionId, ...]) -> str:
        if callee in path:
            raise UnsupportedModelError(
                f"local function '{callee[1]}' calls itself (through "
                f"{' → '.join(name for _, name in path)}); ONNX functions cannot recurse."
            )
        body = onnx.FunctionProto()
        body.CopyFrom(originals[callee])
        tag = str(len(copies))
        copies.append(body)
        body.name = f"{callee[1]}#{tag}"
        paths[tag] = (*path, callee)
        for node in body.node:
            node.metadata_props.add(key=_PATH_KEY, value=tag)
        _redirect_calls(body.node, lambda f: instance(f, paths[tag]), originals)
        return body.name

    scratch = onnx.ModelProto()
    scratch.CopyFrom(model)
    _redirect_calls(scratch.graph.node, lambda f: instance(f, ()), originals)
    del scratch.functions[:]
    scratch.functions.extend(copies)
    return scratch, paths


def _redirect_calls(
    nodes: Sequence[onnx.NodeProto],
    rename: Callable[[FunctionId], str],
    functions: dict[FunctionId, onnx.FunctionProto],
) -> None:
    for node in all_nodes(nodes):
        if (node.domain, node.op_type) in functions:
            node.op_type = rename((node.domain, node.op_type))


def _tag(node: onnx.NodeProto) -> str | None:
    return next((p.value for p in node.metadata_props if p.key == _PATH_KEY), None)


def _key(node: onnx.NodeProto) -> _NodeKey:
    return (node.name, node.op_type, tuple(node.output))
