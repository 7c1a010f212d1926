"""Index and data-movement ops, and IEEE arithmetic, computed with numpy exactly as onnxruntime
computes them.

Exporters compute shapes and index tensors in the graph: TorchScript's ``flatten`` is
``Shape → Gather → Unsqueeze → Concat`` in nearly every classifier, and its slice assignments
(DBB's border writes) are hundreds of ``ConstantOfShape``, ``Range``, ``Expand``, ``Where``,
``Equal`` and integer ``Add``/``Mul`` nodes per layer; they also fold weights in the graph
(DBB's ``W + I``, a BatchNormalization's ``β − μγ/sqrt(var + ε)``). Each op here is one or two
numpy calls whose result the specification fixes bit for bit: copies and selections of
elements (any element type), integer arithmetic within range, comparisons, and ``Add``,
``Sub``, ``Mul``, ``Div``, ``Sqrt`` of float32/float64, each element one correctly rounded IEEE
754 operation in numpy as in onnxruntime (on finite, normal values with finite, normal
results: the sign and payload of a NaN, and subnormals a build may flush to zero, are left to
onnxruntime). ``tests/test_exact_ops.py`` compares every op with onnxruntime byte for byte on
random cases, invalid ones and every float trap included, at the opsets where its signature
changes.

:func:`evaluate_exact_ops` computes the nodes of a constant subgraph it can and leaves the rest
(a ``Sigmoid``, an op not here, an input it declines) to onnxruntime, checked against onnx's
reference evaluator (:mod:`.constant_evaluation`).

Invariant: a value is returned only for a node whose op, opset, attributes, input count and
element types are ones this module computes as the specification says; anything it is unsure
of (an attribute it does not know, mixed element types, an integer result out of range, an
output over :data:`MAX_ELEMENTS`) is declined, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_utils import STANDARD_DOMAINS

#: An output with more elements is declined before it is computed (onnxruntime computes it,
#: and constant folding's own budget decides whether it is written).
MAX_ELEMENTS = 1 << 22

#: Integer operands of ``Add``/``Sub`` within this magnitude cannot overflow int64; ``Mul``'s
#: within its square root.
_ADD_LIMIT = 1 << 62
_MUL_LIMIT = 1 << 31


class Declined(Exception):
    """The node is not one this module computes exactly; onnxruntime will."""


def evaluate_exact_ops(
    nodes: Sequence[onnx.NodeProto], values: dict[str, np.ndarray], opset: int
) -> dict[str, np.ndarray]:
    """The outputs, by name, of each of ``nodes`` (in order) whose inputs are in ``values`` or
    computed here before it and whose op this module computes exactly; the other nodes (and
    what reads them) are left out."""
    known = dict(values)
    computed: dict[str, np.ndarray] = {}
    for node in nodes:
        if node.op_type not in _OPS or node.domain not in STANDARD_DOMAINS or len(node.output) != 1:
            continue
        attributes = {a.name: _attribute_value(a) for a in node.attribute}
        output = exact_output(node.op_type, list(node.input), attributes, known, opset)
        if output is not None:
            known[node.output[0]] = computed[node.output[0]] = output
    return computed


def exact_output(
    op: str, inputs: list[str], attributes: dict, known: dict[str, np.ndarray], opset: int
) -> np.ndarray | None:
    """The one output of a standard-domain ``op`` node reading ``inputs`` (names, ``""`` for
    an omitted one) computed from ``known`` values, or ``None`` if it is not one this module
    computes exactly (or an input is unknown). ``attributes`` hold Python values, a tensor as
    a numpy array."""
    computes = _OPS.get(op)
    if computes is None or any(name and name not in known for name in inputs):
        return None
    since, attributes_by_opset, run = computes
    if opset < since or not attributes.keys() <= attributes_by_opset(opset):
        return None
    values = [known[name] if name else None for name in inputs]
    try:
        return np.asarray(run(values, attributes, opset))
    except (Declined, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError):
        return None  # numpy refuses what ONNX forbids, or the case is one we do not compute


def _attribute_value(attribute: onnx.AttributeProto) -> object:
    value = helper.get_attribute_value(attribute)
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def unsqueeze(data: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """``data`` with a dimension of size 1 at each of ``axes``, which count in the output's
    rank (``-1`` is its last dimension); repeated or out-of-range axes raise ``ValueError``."""
    rank = data.ndim + len(axes)
    if any(not -rank <= int(a) < rank for a in axes):
        raise ValueError(f"Unsqueeze axes {list(axes)} out of range for an output of rank {rank}")
    return np.expand_dims(data, tuple(int(a) % rank for a in axes))


def _count(inputs: list, least: int, most: int | None = None) -> None:
    """``least`` to ``most`` inputs, the first ``least`` present."""
    most = least if most is None else most
    if not least <= len(inputs) <= most or any(i is None for i in inputs[:least]):
        raise Declined


def _ints(
    value: np.ndarray | None, default: list[int] | None = None, types: tuple = (np.int64,)
) -> list[int]:
    """A 1-D (or scalar) tensor of one of ``types`` as Python ints; ``default`` for an omitted
    optional input (a required one is never omitted: :func:`_count` checked)."""
    if value is None:
        return default or []
    if value.dtype not in types or value.ndim > 1:
        raise Declined
    return [int(v) for v in value.reshape(-1)]


def _same_types(*arrays: np.ndarray) -> np.dtype:
    if len({a.dtype for a in arrays}) != 1 or arrays[0].dtype.kind not in "biuf":
        raise Declined
    return arrays[0].dtype


def _integers(*arrays: np.ndarray) -> np.dtype:
    dtype = _same_types(*arrays)
    if dtype.kind not in "iu" or dtype == np.uint64:
        raise Declined
    return dtype


def _within_limit(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The broadcast of ``shapes``, if it holds at most :data:`MAX_ELEMENTS` elements."""
    shape = np.broadcast_shapes(*(tuple(s) for s in shapes))
    if math.prod(shape) > MAX_ELEMENTS:
        raise Declined
    return shape


def _require_range(values: np.ndarray, dtype: np.dtype) -> None:
    """Every integer of ``values`` fits in the integer type ``dtype``."""
    limits = np.iinfo(dtype)
    if values.size and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        raise Declined


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise Declined
    return axis % rank


def _gather(inputs, attributes, opset):
    _count(inputs, 2)
    data, indices = inputs
    _same_types(data)
    if indices.dtype not in (np.int32, np.int64):  # numpy would take int8 or bool indices
        raise Declined
    axis = _axis(int(attributes.get("axis", 0)), data.ndim)
    _within_limit([data.size // max(data.shape[axis], 1) * indices.size])
    return np.take(data, indices, axis=axis)  # raises for an index out of range, as ONNX


def _unsqueeze(inputs, attributes, opset):
    _count(inputs, 2 if opset >= 13 else 1)  # axes: an input from opset 13 on
    _same_types(inputs[0])
    axes = _ints(inputs[1]) if opset >= 13 else list(attributes.get("axes", []))
    if not axes:
        raise Declined
    return unsqueeze(inputs[0], axes)


def _concat(inputs, attributes, opset):
    if not inputs or any(i is None for i in inputs) or "axis" not in attributes:
        raise Declined
    _same_types(*inputs)  # numpy raises for scalars and ranks that differ
    return np.concatenate(inputs, axis=_axis(int(attributes["axis"]), inputs[0].ndim))


def _identity(inputs, attributes, opset):
    _count(inputs, 1)
    _same_types(inputs[0])
    return inputs[0].copy()


def _reshape(inputs, attributes, opset):
    _count(inputs, 2)
    data = inputs[0]
    _same_types(data)
    shape = _ints(inputs[1])
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise Declined
    if not attributes.get("allowzero", 0):  # a 0 copies the input's dimension
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    # numpy raises where ONNX forbids: a 0 past the input's rank, an inferred -1 beside a 0
    return data.reshape(shape).copy()


def _expand(inputs, attributes, opset):
    _count(inputs, 2)
    data = inputs[0]
    _same_types(data)
    shape = _ints(inputs[1])  # numpy refuses a negative dimension
    return np.broadcast_to(data, _within_limit(data.shape, shape)).copy()


def _slice(inputs, attributes, opset):
    if opset < 10:
        _count(inputs, 1)
        if "starts" not in attributes or "ends" not in attributes:
            raise Declined
        starts, ends = list(attributes["starts"]), list(attributes["ends"])
        axes = list(attributes.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        _count(inputs, 3, 5)
        inputs = inputs + [None] * (5 - len(inputs))
        index_types = {i.dtype for i in inputs[1:] if i is not None}
        if len(index_types) != 1:
            raise Declined
        indices = (np.int32, np.int64)  # Slice's Tind
        starts, ends = _ints(inputs[1], types=indices), _ints(inputs[2], types=indices)
        axes = _ints(inputs[3], list(range(len(starts))), indices)
        steps = _ints(inputs[4], [1] * len(starts), indices)
    data = inputs[0]
    _same_types(data)
    axes = [_axis(a, data.ndim) for a in axes]
    if len(set(axes)) != len(axes):  # a step of 0 numpy refuses itself
        raise Declined
    window = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):  # equal lengths
        window[axis] = _clamped(start, end, step, data.shape[axis])
    return data[tuple(window)].copy()


def _clamped(start: int, end: int, step: int, size: int) -> slice:
    """The Python slice of ONNX ``Slice``'s clamping of one axis. A negative step with an end
    past the last element is declined: onnxruntime reads it as "to the first element", the
    specification as an empty slice."""
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), size), min(max(end, 0), size), step)
    if end >= size:
        raise Declined
    start, end = min(max(start, 0), size - 1), max(end, -1)
    return slice(start, None if end < 0 else end, step)


def _transpose(inputs, attributes, opset):
    _count(inputs, 1)
    data = inputs[0]
    _same_types(data)
    perm = list(attributes.get("perm", range(data.ndim - 1, -1, -1)))
    return np.transpose(data, perm).copy()  # raises unless perm permutes the axes


def _squeeze(inputs, attributes, opset):
    if opset >= 13:
        _count(inputs, 1, 2)
        axes = _ints(inputs[1]) if len(inputs) == 2 and inputs[1] is not None else None
    else:
        _count(inputs, 1)
        axes = list(attributes["axes"]) if "axes" in attributes else None
    data = inputs[0]
    _same_types(data)
    if axes is None:
        return data.reshape([d for d in data.shape if d != 1])
    if not axes:  # onnxruntime reads an empty axes input as none: every 1 goes
        raise Declined
    axes = [_axis(a, data.ndim) for a in axes]
    return np.squeeze(data, tuple(axes)).copy()  # raises for a repeated axis or a size not 1


def _shape(inputs, attributes, opset):
    _count(inputs, 1)
    rank = inputs[0].ndim
    start, end = int(attributes.get("start", 0)), attributes.get("end")
    end = rank if end is None else int(end)
    start, end = (min(max(a + rank if a < 0 else a, 0), rank) for a in (start, end))
    return np.array(inputs[0].shape[start:end], dtype=np.int64)


def _constant_of_shape(inputs, attributes, opset):
    _count(inputs, 1)
    shape = _ints(inputs[0])  # numpy refuses a negative dimension
    value = attributes.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if fill.dtype.kind not in "biuf":
        raise Declined
    return np.full(_within_limit(shape), fill.reshape(()), dtype=fill.dtype)  # one element


def _cast(inputs, attributes, opset):
    _count(inputs, 1)
    data = inputs[0]
    if data.dtype.kind not in "biu" or "to" not in attributes:
        raise Declined
    target = helper.tensor_dtype_to_np_dtype(int(attributes["to"]))
    if target.kind not in "biu" or target == np.uint64 or data.dtype == np.uint64:
        raise Declined
    if target.kind != "b":
        _require_range(data, target)  # a narrowing cast's wrap-around is not specified
    return data.astype(target)


def _range(inputs, attributes, opset):
    _count(inputs, 3)
    start, limit, delta = inputs
    dtype = _integers(start, limit, delta)
    if any(v.ndim != 0 for v in inputs):  # numpy 1.x would read a 1-element vector as one
        raise Declined
    if any(abs(int(v)) >= _MUL_LIMIT for v in inputs):
        raise Declined
    count = max(-(-(int(limit) - int(start)) // int(delta)), 0)  # ceil, in exact integers
    _within_limit([count])
    return (int(start) + int(delta) * np.arange(count, dtype=np.int64)).astype(dtype)


def _arithmetic(combine: Callable[[np.ndarray, np.ndarray], np.ndarray], limit: int):
    """A binary op of integers within ``limit`` or of float32/float64 values, each element one
    correctly rounded IEEE operation (see :func:`_ieee`)."""

    def run(inputs, attributes, opset):
        _count(inputs, 2)
        a, b = inputs
        _within_limit(a.shape, b.shape)
        if _same_types(a, b).kind == "f":
            return _ieee(combine, a, b)
        dtype = _integers(a, b)
        wide = [v.astype(np.int64) for v in (a, b)]
        if any(v.size and int(np.abs(v).max()) >= limit for v in wide):
            raise Declined
        result = combine(*wide)
        _require_range(result, dtype)
        return result.astype(dtype)

    return run


#: The float types whose +, −, ×, ÷ and square root numpy and onnxruntime both compute as
#: the one correctly rounded IEEE 754 result (float16 arithmetic may round twice).
_IEEE_TYPES = frozenset(map(np.dtype, ("float32", "float64")))


def _ieee(operation: Callable[..., np.ndarray], *operands: np.ndarray) -> np.ndarray:
    """``operation`` (one IEEE operation per element) of finite, normal float32/float64
    ``operands``, if its results are finite and normal too. Infinities, NaN (whose sign and
    payload implementations choose) and subnormals (which a build may flush to zero) are
    declined: onnxruntime computes those."""
    if operands[0].dtype not in _IEEE_TYPES:
        raise Declined
    with np.errstate(all="ignore"):
        result = operation(*operands)
    if not all(_normal(v) for v in (*operands, result)):
        raise Declined
    return result


def _normal(values: np.ndarray) -> bool:
    """Every element finite and zero or normal (not subnormal)."""
    magnitude = np.abs(values)
    tiny = np.finfo(values.dtype).tiny
    return bool(np.all(np.isfinite(values) & ((magnitude == 0) | (magnitude >= tiny))))


def _divide(inputs, attributes, opset):
    _count(inputs, 2)
    _same_types(*inputs)
    return _ieee(np.divide, *inputs)  # floats only: integer division is onnxruntime's


def _sqrt(inputs, attributes, opset):
    _count(inputs, 1)
    return _ieee(np.sqrt, inputs[0])


def _equal(inputs, attributes, opset):
    _count(inputs, 2)
    dtype = _same_types(*inputs)
    if opset < 11 and dtype not in (np.bool_, np.int32, np.int64):  # Equal-7's types
        raise Declined
    _within_limit(*(v.shape for v in inputs))
    return np.equal(*inputs)


#: The element types onnxruntime's ``Where`` kernel has (it lacks bool and int16).
_WHERE_TYPES = frozenset(map(np.dtype, ("uint8", "int8", "int32", "int64", "float32", "float64")))


def _where(inputs, attributes, opset):
    _count(inputs, 3)
    condition, x, y = inputs
    if condition.dtype != np.bool_ or _same_types(x, y) not in _WHERE_TYPES:
        raise Declined
    _within_limit(condition.shape, x.shape, y.shape)
    return np.where(condition, x, y)


def _only(*names: str) -> Callable[[int], frozenset[str]]:
    """The same attributes at every opset."""
    return lambda opset: frozenset(names)


def _until(opset: int, *names: str) -> Callable[[int], frozenset[str]]:
    """``names`` before ``opset`` (then they became inputs)."""
    return lambda at: frozenset(names if at < opset else ())


def _from(opset: int, *names: str) -> Callable[[int], frozenset[str]]:
    """``names`` from ``opset`` on."""
    return lambda at: frozenset(names if at >= opset else ())


#: op → (first opset it exists in, its attributes at an opset, how to compute it)
_OPS: dict[str, tuple[int, Callable[[int], frozenset[str]], Callable]] = {
    "Gather": (1, _only("axis"), _gather),
    "Unsqueeze": (1, _until(13, "axes"), _unsqueeze),
    "Concat": (4, _only("axis"), _concat),
    "Identity": (1, _only(), _identity),
    "Reshape": (5, _from(14, "allowzero"), _reshape),
    "Expand": (8, _only(), _expand),
    "Slice": (1, _until(10, "starts", "ends", "axes"), _slice),
    "Transpose": (1, _only("perm"), _transpose),
    "Squeeze": (1, _until(13, "axes"), _squeeze),
    "Shape": (1, _from(15, "start", "end"), _shape),
    "ConstantOfShape": (9, _only("value"), _constant_of_shape),
    "Cast": (6, _only("to"), _cast),
    "Range": (11, _only(), _range),
    "Add": (7, _only(), _arithmetic(np.add, _ADD_LIMIT)),
    "Sub": (7, _only(), _arithmetic(np.subtract, _ADD_LIMIT)),
    "Mul": (7, _only(), _arithmetic(np.multiply, _MUL_LIMIT)),
    "Div": (7, _only(), _divide),
    "Sqrt": (6, _only(), _sqrt),
    "Equal": (7, _only(), _equal),
    "Where": (9, _only(), _where),
}

#: The ops :func:`evaluate_exact_ops` computes (for some inputs).
EXACT_OPS = frozenset(_OPS)
