"""Every op :mod:`~repvgg_onnx.passes.exact_ops` computes gives what onnxruntime gives, bit for
bit, on random cases (invalid ones included: then it must decline), at the opsets where the
op's signature changes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import run
from repvgg_onnx.graph.crossing import import_graph
from repvgg_onnx.passes.exact_ops import EXACT_OPS, evaluate_exact_ops
from repvgg_onnx.passes.fold_constants import _exact_values

OPSETS = [9, 11, 13, 14, 15, 18]
_TYPES = [np.int64, np.int32, np.float32, np.bool_]


def _tensor(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(-9, 9, size=shape).astype(dtype)


def _floats(rng, shape, dtype):
    """Floats from far below the smallest normal number to far above the largest, with now and
    then a zero of either sign, an infinity, a NaN or a subnormal."""
    finfo = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.finfo(np.float32)
    exponent = rng.uniform(np.log10(finfo.tiny) - 3, np.log10(finfo.max) + 1, size=shape)
    with np.errstate(all="ignore"):
        values = (rng.choice([-1.0, 1.0], size=shape) * 10.0**exponent).astype(dtype)
        if rng.random() < 0.5:  # ordinary numbers, where most constants are
            values = rng.normal(0, 10, size=shape).astype(dtype)
    values = np.array(values)  # a 0-d array, not a numpy scalar, when the shape is []
    traps = [0.0, -0.0, np.inf, -np.inf, np.nan, float(finfo.tiny) / 8]
    for index in np.ndindex(*shape):
        if rng.random() < 0.05:
            values[index] = traps[int(rng.integers(len(traps)))]
    return np.asarray(values)


def _shape(rng, rank_low=0, rank_high=4, size_high=4):
    return [int(s) for s in rng.integers(1, size_high, rng.integers(rank_low, rank_high))]


def _int_vector(rng, values, dtype=np.int64):
    """Mostly ``dtype``; now and then int32 or a type no index input may have."""
    other = [np.int32, np.int8, np.float32][int(rng.integers(3))]
    return np.asarray(values, dtype=dtype if rng.random() < 0.85 else other)


def _case(op: str, rng: np.random.Generator, opset: int):
    """A random ``op`` node (maybe invalid), its inputs by name (``""`` for an omitted one) and
    attributes."""
    dtype = _TYPES[int(rng.integers(len(_TYPES)))]
    data = _tensor(rng, _shape(rng), dtype)
    inputs: dict[str, np.ndarray | None] = {"data": data}
    attributes: dict = {}
    rank = data.ndim
    if op == "Gather":
        axis = int(rng.integers(-rank - 1, rank + 1)) if rank else 0
        size = data.shape[axis] if -rank <= axis < rank else 1
        inputs["indices"] = _int_vector(
            rng, rng.integers(-size - 1, size + 1, _shape(rng, 0, 3, 3))
        )
        attributes["axis"] = axis
    elif op in ("Unsqueeze", "Squeeze"):
        if op == "Unsqueeze":
            count = int(rng.integers(1, 3))
            axes = rng.integers(-rank - count - 1, rank + count + 1, size=count)
        else:
            data = _tensor(
                rng, [int(s) for s in rng.choice([1, 1, 2], size=rng.integers(0, 4))], dtype
            )
            inputs["data"] = data
            axes = rng.integers(-data.ndim - 1, data.ndim + 1, size=rng.integers(0, 3))
        form = rng.choice(["input", "attribute", "both", "none"], p=[0.4, 0.4, 0.1, 0.1])
        if form in ("input", "both"):
            inputs["axes"] = _int_vector(rng, axes)
            if rng.random() < 0.05 and len(axes):
                inputs["axes"] = inputs["axes"].reshape(1, -1)  # axes must be 1-D
        if form in ("attribute", "both") and len(axes):
            attributes["axes"] = [int(a) for a in axes]
    elif op == "Concat":
        other_shape = list(data.shape)
        if rank and rng.random() < 0.7:
            other_shape[int(rng.integers(rank))] = int(rng.integers(1, 4))
        other_type = dtype if rng.random() < 0.9 else np.int32
        inputs["other"] = _tensor(rng, other_shape, other_type)
        if rng.random() < 0.9:
            attributes["axis"] = int(rng.integers(-rank - 1, rank + 1)) if rank else 0
    elif op == "Reshape":
        size = data.size
        target = [int(d) for d in rng.permutation(list(data.shape) + [1] * int(rng.integers(0, 2)))]
        for _ in range(int(rng.integers(0, 3)) if target else 0):
            target[int(rng.integers(len(target)))] = int(rng.choice([-1, 0, 0, 2, -2]))
        inputs["shape"] = _int_vector(rng, target if target else [size] * int(rng.integers(0, 2)))
        if opset >= 14 and rng.random() < 0.3:
            attributes["allowzero"] = int(rng.integers(0, 2))
    elif op == "Expand":
        shape = [
            int(rng.choice([1, 1, 2, 3, 0 if rng.random() < 0.1 else 1]))
            for _ in range(int(rng.integers(0, 5)))
        ]
        inputs["shape"] = _int_vector(rng, shape)
    elif op == "Slice":
        count = int(rng.integers(1, rank + 2)) if rank else 1
        big = np.iinfo(np.int64)
        starts = [int(rng.choice([rng.integers(-5, 5), big.min, big.max])) for _ in range(count)]
        ends = [
            int(rng.choice([rng.integers(-5, 5), rng.integers(-5, 5), big.min, big.max]))
            for _ in range(count)
        ]
        axes = [int(a) for a in rng.permutation(np.arange(-rank, rank))[:count]] if rank else [0]
        steps = [
            int(rng.choice([1, 1, 2, -1, -2, 3, 0 if rng.random() < 0.1 else 1]))
            for _ in range(count)
        ]
        if opset < 10:
            attributes.update(starts=starts, ends=ends)
            if rng.random() < 0.1:
                del attributes[["starts", "ends"][int(rng.integers(2))]]
            if rng.random() < 0.7:
                attributes["axes"] = axes
        else:
            index = np.int64 if rng.random() < 0.7 else np.int32
            big32 = np.iinfo(np.int32)
            clip = (
                (lambda v: [min(max(x, big32.min), big32.max) for x in v])
                if index == np.int32
                else list
            )
            inputs["starts"] = np.asarray(clip(starts), index)
            other = np.int32 if index == np.int64 else np.int64  # now and then a mixed pair
            inputs["ends"] = np.asarray(
                [min(max(x, big32.min), big32.max) for x in ends],
                index if rng.random() < 0.9 else other,
            )
            form = int(rng.integers(3))
            if form >= 1:
                inputs["axes"] = np.asarray(axes, index)
            elif rng.random() < 0.3:
                inputs[""] = None  # omitted axes, steps given
            if form == 2 or "" in inputs:
                inputs["steps"] = np.asarray(steps, index)
    elif op == "Transpose":
        if rng.random() < 0.8 and rank:
            perm = [int(p) for p in rng.permutation(rank)]
            if rng.random() < 0.1 and rank:
                perm[0] = perm[-1]
            attributes["perm"] = perm
    elif op == "Shape":
        if opset >= 15 and rng.random() < 0.6:
            attributes["start"] = int(rng.integers(-rank - 2, rank + 2))
            if rng.random() < 0.5:
                attributes["end"] = int(rng.integers(-rank - 2, rank + 2))
    elif op == "ConstantOfShape":
        inputs = {
            "shape": _int_vector(
                rng, rng.integers(-1 if rng.random() < 0.1 else 0, 4, size=rng.integers(0, 4))
            )
        }
        if rng.random() < 0.7:
            attributes["value"] = numpy_helper.from_array(_tensor(rng, [1], dtype), "value")
    elif op == "Cast":
        source = [np.int64, np.int32, np.int8, np.uint8, np.bool_, np.float32][int(rng.integers(6))]
        with np.errstate(all="ignore"):
            inputs = {
                "data": (
                    rng.integers(-300, 300, _shape(rng)) * (1.25 if source == np.float32 else 1)
                    if source != np.bool_
                    else rng.random(_shape(rng)) < 0.5
                ).astype(source)
            }
        attributes["to"] = int(
            rng.choice(
                [
                    TensorProto.INT64,
                    TensorProto.INT32,
                    TensorProto.INT8,
                    TensorProto.UINT8,
                    TensorProto.BOOL,
                    TensorProto.FLOAT,
                ]
            )
        )
    elif op == "Range":
        kind = [np.int64, np.int32, np.int16, np.float32][int(rng.integers(4))]
        values = rng.integers(-20, 20, size=3) * (0.75 if kind == np.float32 else 1)
        if rng.random() < 0.1:
            values[2] = 0
        names = ("start", "limit", "delta")
        shape = () if rng.random() < 0.9 else (1,)  # Range reads scalars only
        inputs = {n: np.full(shape, v, kind) for n, v in zip(names, values, strict=True)}
    elif op in ("Add", "Sub", "Mul", "Div", "Equal"):
        other = [int(s) for s in data.shape[int(rng.integers(0, rank + 1)) :]]
        other = [1 if rng.random() < 0.3 else s for s in other]
        other_type = dtype if rng.random() < 0.9 else np.int32
        if rng.random() < 0.5 and op != "Equal":  # floats of every magnitude, and their traps
            dtype = other_type = [np.float32, np.float64][int(rng.integers(2))]
            inputs["data"] = _floats(rng, data.shape, dtype)
            inputs["other"] = _floats(rng, other, other_type)
        else:
            if rng.random() < 0.2 and dtype != np.bool_:
                inputs["data"] = (data.astype(np.int64) * (1 << 40)).astype(dtype)
            inputs["other"] = _tensor(rng, other, other_type)
    elif op == "Sqrt":
        dtype = [np.float32, np.float64, np.float16][int(rng.choice(3, p=[0.45, 0.45, 0.1]))]
        sign = 1 if rng.random() < 0.8 else -1
        with np.errstate(all="ignore"):
            inputs["data"] = np.abs(_floats(rng, data.shape, dtype)) * sign
    elif op == "Where":
        inputs = {
            "condition": _tensor(rng, data.shape, np.bool_ if rng.random() < 0.9 else np.int64),
            "x": data,
            "y": _tensor(
                rng,
                data.shape[int(rng.integers(0, rank + 1)) :],
                dtype if rng.random() < 0.9 else np.int32,
            ),
        }
    elif op == "Identity":
        pass
    inputs = {n: None if v is None else np.asarray(v) for n, v in inputs.items()}
    return helper.make_node(op, list(inputs), ["out"], **attributes), inputs


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("op", sorted(EXACT_OPS))
def test_each_op_computes_what_onnxruntime_computes(op, opset):
    rng = np.random.default_rng([opset, *op.encode()])
    computed = 0
    for _ in range(60):
        node, inputs = _case(op, rng, opset)
        feeds = {n: v for n, v in inputs.items() if n}
        graph = helper.make_graph(
            [node],
            "exact",
            [
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for n, v in feeds.items()
            ],
            [helper.make_empty_tensor_value_info("out")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7
        got = evaluate_exact_ops([node], feeds, opset).get("out")
        [gs_node] = import_graph(model)[0].nodes  # the same node, its attributes read by gs
        from_gs = _exact_values([gs_node], feeds, opset).get("out")
        assert (got is None) == (from_gs is None), (node, inputs)
        if got is not None:
            assert got.dtype == from_gs.dtype
            np.testing.assert_array_equal(got, from_gs)
        try:
            [want] = run(model, feeds)
        except Exception as error:  # an invalid case: ours must decline it, never compute
            assert got is None, (node, inputs, error)
            continue
        if got is not None:
            computed += 1
            want = np.asarray(want)
            assert got.dtype == want.dtype and got.shape == want.shape, (node, inputs, got, want)
            assert got.tobytes() == want.tobytes(), (node, inputs, got, want)  # -0.0 too
    assert computed or op in _NOT_AT.get(opset, ()), f"no case of {op} was computed at {opset}"


#: Ops that do not exist (or are declined) at an opset of the test.
_NOT_AT = {9: ("Range",)}


@pytest.mark.parametrize(
    ("op", "values"),
    [
        # a subnormal operand: a build that flushes subnormals to zero reads it as 0
        ("Mul", [np.float32(1e-40), np.float32(1e30)]),
        ("Add", [np.float64(5e-320), np.float64(1.0)]),
        # a subnormal or infinite result, a NaN
        ("Mul", [np.float32(1e-20), np.float32(1e-20)]),
        ("Mul", [np.float32(1e30), np.float32(1e30)]),
        ("Sub", [np.float32(np.inf), np.float32(np.inf)]),
        ("Sqrt", [np.float64(-1.0)]),
        # float16 arithmetic may round twice
        ("Add", [np.float16(0.1), np.float16(0.2)]),
        ("Sqrt", [np.float16(2.0)]),
        # integer division is onnxruntime's
        ("Div", [np.int64(7), np.int64(-2)]),
    ],
)
def test_float_traps_are_left_to_onnxruntime(op, values):
    """What a build or an implementation may compute differently is declined, whatever this
    build of onnxruntime computes for it."""
    names = [f"in{i}" for i in range(len(values))]
    node = helper.make_node(op, names, ["out"])
    feeds = {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
    assert evaluate_exact_ops([node], feeds, 17) == {}


def test_ordinary_float_arithmetic_is_computed():
    """The other side of the traps above: the same ops on normal values are computed."""
    feeds = {"a": np.array([3.0, -0.5], np.float32), "b": np.array([0.25, 4.0], np.float32)}
    for op, want in [("Add", [3.25, 3.5]), ("Sub", [2.75, -4.5]), ("Mul", [0.75, -2.0]),
                     ("Div", [12.0, -0.125])]:  # fmt: skip
        got = evaluate_exact_ops([helper.make_node(op, ["a", "b"], ["out"])], feeds, 17)
        np.testing.assert_array_equal(got["out"], np.array(want, np.float32))
    got = evaluate_exact_ops([helper.make_node("Sqrt", ["b"], ["out"])], feeds, 17)
    np.testing.assert_array_equal(got["out"], np.array([0.5, 2.0], np.float32))


@pytest.mark.parametrize(
    ("op", "shapes"),
    [
        ("Add", [(3000, 1), (1, 3000)]),
        ("Equal", [(3000, 1), (1, 3000)]),
        ("Where", [(3000, 1), (1, 3000), ()]),
        ("Gather", [(3000, 3000), (2,)]),
        ("Range", [(), (), ()]),
        ("Expand", [(1,), (2,)]),
        ("ConstantOfShape", [(2,)]),
    ],
)
def test_results_over_the_size_limit_are_declined_before_they_are_computed(op, shapes):
    """Broadcasting, gathering or ranging into more than ``MAX_ELEMENTS`` (each of these would
    be 9 million or more) is left to onnxruntime (and to folding's own size budget)."""
    from repvgg_onnx.passes import exact_ops

    feeds = {f"in{i}": np.zeros(shape, np.int64) for i, shape in enumerate(shapes)}
    if op == "Where":
        feeds["in0"] = feeds["in0"].astype(bool)
    if op == "Gather":
        feeds["in0"] = np.zeros((2, 3000, 3000), np.int8)
        feeds["in1"] = np.zeros((1500, 1), np.int64)  # 1500 · 3000 · 3000 elements
    if op == "Range":
        feeds.update(in0=np.array(0), in1=np.array(1 << 30), in2=np.array(1))
    if op in ("Expand", "ConstantOfShape"):
        feeds[f"in{len(shapes) - 1}"] = np.array([3000, 3000], np.int64)
    node = helper.make_node(op, list(feeds), ["out"])
    assert evaluate_exact_ops([node], feeds, 17) == {}
    assert exact_ops.MAX_ELEMENTS < 9_000_000


@pytest.mark.parametrize(
    ("op", "values", "to"),
    [
        ("Mul", [np.int64(1 << 40), np.int64(1 << 40)], None),  # past int64
        ("Add", [np.int32(1 << 30), np.int32(1 << 30)], None),  # past int32
        ("Sub", [np.int64(-(1 << 62)), np.int64(1 << 62)], None),
        ("Cast", [np.array([300, -1], np.int64)], TensorProto.INT8),  # narrowing wraps
        ("Cast", [np.array([1, 2], np.int64)], TensorProto.UINT64),
        ("Range", [np.int64(0), np.int64(1 << 31), np.int64(1 << 20)], None),
        ("Range", [np.array([0]), np.array([4]), np.array([1])], None),  # not scalars
        ("Cast", [np.array([1.5, -2.5], np.float32)], TensorProto.INT64),  # from floats
    ],
)
def test_integers_out_of_range_are_left_to_onnxruntime(op, values, to):
    """Wrap-around, a float's conversion, a range of vectors are not what the specification
    promises: onnxruntime computes them."""
    names = [f"in{i}" for i in range(len(values))]
    node = helper.make_node(op, names, ["out"], **({"to": to} if to is not None else {}))
    feeds = {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
    assert evaluate_exact_ops([node], feeds, 17) == {}


def test_a_node_of_another_domain_or_signature_or_reading_an_unknown_value_is_not_computed():
    feeds = {"a": np.array([1, 2], np.int64)}
    nodes = [
        helper.make_node("Add", ["a", "a"], ["mine"], domain="custom"),
        helper.make_node("Add", ["a", "unknown"], ["partial"]),
        helper.make_node("Identity", ["a"], ["one", "two"]),  # not Identity's signature
        helper.make_node("Add", ["a", "a"], ["double"]),
    ]
    assert list(evaluate_exact_ops(nodes, feeds, 17)) == ["double"]


def test_a_constant_of_shape_filled_with_strings_is_not_computed():
    value = numpy_helper.from_array(np.array(["a"], dtype=object), "value")
    node = helper.make_node("ConstantOfShape", ["shape"], ["out"], value=value)
    assert evaluate_exact_ops([node], {"shape": np.array([2], np.int64)}, 17) == {}
