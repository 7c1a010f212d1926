"""The values of constant nodes, computed by the runtime users deploy on and checked.

:func:`evaluate_constants` takes the nodes of a constant subgraph (in order) and the values of
the constants they read, and decides per node what constant folding may write:

- the runtime's values (onnxruntime, injected by the caller: this package never imports it),
  checked against onnx's reference evaluator wherever that also computes them; where the two
  disagree the node is refused, with both results in the reason (the reference propagates its
  own values, so a node downstream of a disagreement is checked against the reference's
  reading of it, and refused too unless both arrive at the same value);
- where the runtime cannot compute a node (an op or type it lacks, a crash), the reference's
  values, only for the ops in :data:`~.reference.CHECKED_OPS` (tested to agree with
  onnxruntime at every opset where their signature changes); other ops are refused;
- first, every node :func:`~.exact_ops.evaluate_exact_ops` computes (index and data-movement
  ops, integer arithmetic, and float32/float64 ``+ − × ÷ √`` on normal values, in numpy, bit
  for bit what onnxruntime computes: tested against it on random cases at opsets 9 to 18) is
  taken as computed; only the other nodes go to the runtime and the reference. TorchScript's
  ``flatten`` idiom in every classifier then costs no runtime start, nor do a DBB network's
  slice assignments (thousands of index nodes) and its weights computed in the graph.

Invariant: a value is returned for a node only if it is what onnxruntime computes for it, or
what a reference or numpy op tested to agree with onnxruntime on that op computes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .exact_ops import evaluate_exact_ops
from .reference_evaluator import CHECKED_OPS, reference_evaluator

#: Runs a model without graph inputs; its outputs, in order. Raises if it cannot.
ModelRunner = Callable[[onnx.ModelProto], list[np.ndarray]]

#: The outputs of some nodes, by name.
Values = dict[str, np.ndarray]
#: ``(nodes, values, opset)`` → a callable that returns the outputs of ``nodes`` it computed, by
#: name (as many as it could, each from the values of its inputs); what the caller deploys on.
#: It may return before computing them, so that the reference evaluates meanwhile.
Runtime = Callable[[Sequence[onnx.NodeProto], Values, int], Callable[[], Values]]

#: From this IR version on, an initializer need not be listed as a graph input.
_UNLISTED_INITIALIZERS_IR = 4


@dataclass(frozen=True)
class NodeValues:
    """What may be written for one node: its output values, or why not (``refusal``)."""

    outputs: list[np.ndarray] | None
    refusal: str | None = None


def evaluate_constants(
    nodes: Sequence[onnx.NodeProto],
    values: dict[str, np.ndarray],
    opset: int,
    runtime: Runtime | None,
) -> list[NodeValues]:
    """One :class:`NodeValues` per node of ``nodes`` (each reads ``values`` or earlier nodes'
    outputs); ``outputs`` is ``None`` with no refusal when nothing could compute the node.

    The nodes :func:`~.exact_ops.evaluate_exact_ops` computes are taken as computed. Of the
    others, nodes that compute the same thing (same op, attributes and input values, as
    exporters repeat a layer's computations) are evaluated once (:func:`distinct_nodes`); each
    copy gets its original's values and decision (decided once: a copy has the original's op
    and outputs, so :func:`_decide` could only repeat it)."""
    exact = evaluate_exact_ops(nodes, values, opset)
    rest = [node for node in nodes if node.output[0] not in exact]
    decided: dict[tuple[str, ...], NodeValues] = {}
    same_as: dict[str, str] = {}
    if rest:
        read = {name for node in rest for name in node.input}
        inputs = {name: value for name, value in (values | exact).items() if name in read}
        distinct, same_as = distinct_nodes(rest, inputs)
        pending = runtime(distinct, inputs, opset) if runtime is not None else dict
        try:
            reference = evaluate_in_order(run_reference, distinct, inputs, opset)
        finally:
            computed = pending()  # always collected: a worker's reply must not wait for the next
        decided = {
            tuple(node.output): _decide(node, computed, reference, runtime is not None)
            for node in distinct
        }
    return [
        NodeValues([exact[node.output[0]]])
        if node.output[0] in exact
        else decided[tuple(same_as.get(name, name) for name in node.output)]
        for node in nodes
    ]


def distinct_nodes(
    nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray]
) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """``nodes`` without the ones that repeat an earlier node's computation, and for each
    output of a repeat the output of the original it equals.

    Two nodes compute the same thing when they have the same op, domain and attributes and
    read the same values: equal constants (type, shape and bytes) or the same outputs of
    nodes that compute the same thing. (Nondeterministic ops never reach constant folding.)
    A kept node that reads a repeat's output reads its original's instead."""
    keys: dict[str, object] = {
        name: _value_key(value) for name, value in values.items() if isinstance(value, np.ndarray)
    }
    first: dict[tuple, onnx.NodeProto] = {}
    same_as: dict[str, str] = {}
    distinct: list[onnx.NodeProto] = []
    for node in nodes:
        key = (
            node.op_type,
            node.domain,
            tuple(sorted(a.SerializeToString(deterministic=True) for a in node.attribute)),
            tuple(keys.get(name, ("unknown", name)) if name else "" for name in node.input),
            len(node.output),
        )
        original = first.get(key)
        if original is not None:
            same_as.update(zip(node.output, original.output, strict=True))
        else:
            first[key] = node
            distinct.append(_reading_originals(node, same_as))
        for index, name in enumerate(node.output):
            keys[name] = (key, index)
    return distinct, same_as


def _value_key(value: np.ndarray) -> tuple:
    data = np.ascontiguousarray(value)
    return (data.dtype.str, data.shape, hashlib.blake2b(data.tobytes(), digest_size=16).digest())


def _reading_originals(node: onnx.NodeProto, same_as: dict[str, str]) -> onnx.NodeProto:
    """``node``, reading each original in place of a repeat's output (a copy if it changes)."""
    if not any(name in same_as for name in node.input):
        return node
    renamed = onnx.NodeProto()
    renamed.CopyFrom(node)
    renamed.input[:] = [same_as.get(name, name) for name in node.input]
    return renamed


def evaluate_in_order(
    run: ModelRunner, nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray], opset: int
) -> dict[str, np.ndarray]:
    """The outputs of ``nodes`` by ``run``: all in one model, or, if that fails, node by node
    (a node runs when its inputs are known); by name."""
    outputs = [name for node in nodes for name in node.output]
    try:
        return _tensors(outputs, run(constant_model(nodes, values, outputs, opset)))
    except Exception:  # evaluators raise assorted types; one node at a time then
        pass
    known = dict(values)
    for node in nodes:
        if not all(name in known for name in node.input if name):
            continue
        inputs = {name: known[name] for name in node.input if name}
        try:
            results = run(constant_model([node], inputs, list(node.output), opset))
        except Exception:  # this node cannot be evaluated; its readers cannot either
            continue
        known.update(_tensors(node.output, results))
    return {name: value for name, value in known.items() if name not in values}


def _tensors(names: Sequence[str], results: Sequence) -> dict[str, np.ndarray]:
    """The results that are tensors, by name (a sequence or optional output is not folded)."""
    return {
        name: np.asarray(result)
        for name, result in zip(names, results, strict=True)
        if isinstance(result, np.ndarray | np.generic)
    }


def constant_model(
    nodes: Sequence[onnx.NodeProto],
    values: dict[str, np.ndarray],
    outputs: Sequence[str],
    opset: int,
) -> onnx.ModelProto:
    """A model computing ``outputs`` from ``nodes`` with ``values`` as initializers."""
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        list(nodes),
        "constants",
        [],
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in values.items() if n in used],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    # the oldest IR version the opset allows (an older onnxruntime refuses a newer one), but
    # at least 4, from which initializers need not be listed as graph inputs
    with contextlib.suppress(ValueError):  # an opset this onnx does not know: its newest IR
        oldest = helper.find_min_ir_version_for(opsets)
        model.ir_version = max(_UNLISTED_INITIALIZERS_IR, oldest)
    return model


def run_reference(model: onnx.ModelProto) -> list[np.ndarray]:
    """The reference evaluator's values of ``model``'s outputs. Overflow and invalid values are
    results like any other (compared with onnxruntime's), not warnings on stderr."""
    with np.errstate(all="ignore"):
        return reference_evaluator(model).run(None, {})


def _decide(
    node: onnx.NodeProto,
    computed: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    has_runtime: bool,
) -> NodeValues:
    ours = _outputs(node, computed)
    theirs = _outputs(node, reference)
    if ours is not None:
        if theirs is None:
            return NodeValues(ours)
        difference = _difference(ours, theirs)
        if difference is None:
            return NodeValues(ours)
        return NodeValues(
            None,
            f"onnxruntime and onnx's reference evaluator disagree on this constant "
            f"{node.op_type} ({difference}), so it is left to compute at run time.",
        )
    if theirs is None:
        return NodeValues(None)
    if node.op_type in CHECKED_OPS:
        return NodeValues(theirs)
    runtime = "onnxruntime cannot evaluate" if has_runtime else "no runtime was given to check"
    return NodeValues(
        None,
        f"{runtime} this constant {node.op_type}, and onnx's reference evaluator is not "
        f"checked against onnxruntime on {node.op_type}, so it is left to compute at run time.",
    )


def _outputs(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    results = [values.get(name) for name in node.output]
    return None if any(r is None for r in results) else results


def _difference(ours: list[np.ndarray], theirs: list[np.ndarray]) -> str | None:
    """How the runtime's outputs differ from the reference's, or ``None`` if they agree
    (same shape and type; floats within a few units in the last place)."""
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        where = f"output {index}: " if len(ours) > 1 else ""
        if a.shape != b.shape:
            return f"{where}onnxruntime gives shape {list(a.shape)}, the reference {list(b.shape)}"
        if a.dtype != b.dtype:
            return f"{where}onnxruntime gives {a.dtype}, the reference {b.dtype}"
        if not _close(a, b):
            return f"{where}values differ by up to {_largest_gap(a, b):.3g}"
    return None


#: Floats agree within this many machine epsilons of the larger magnitude: onnxruntime's
#: vectorized ``Sigmoid``/``Exp`` and numpy's round differently, neither is more right.
_ULPS = 16


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.issubdtype(a.dtype, np.floating):
        return bool(np.array_equal(a, b))
    tolerance = _ULPS * float(np.finfo(a.dtype).eps)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return bool(np.allclose(a64, b64, rtol=tolerance, atol=tolerance, equal_nan=True))


def _largest_gap(a: np.ndarray, b: np.ndarray) -> float:
    gap = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(gap)) if gap.size else 0.0
