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


def _shape(rng, rank_low=0, rank_high=4, size_high=4):
    return [int(s) for s in rng.integers(1, size_high, rng.integers(rank_low, rank_high))]


def _int_vector(rng, values, dtype=np.int64):
    return np.asarray(values, dtype=dtype if rng.random() < 0.9 else np.int32)


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
            inputs["axes"] = axes.astype(np.int64)
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
        inputs["shape"] = np.asarray(
            target if target else [size] * int(rng.integers(0, 2)), np.int64
        )
        if opset >= 14 and rng.random() < 0.3:
            attributes["allowzero"] = int(rng.integers(0, 2))
    elif op == "Expand":
        shape = [
            int(rng.choice([1, 1, 2, 3, 0 if rng.random() < 0.1 else 1]))
            for _ in range(int(rng.integers(0, 5)))
        ]
        inputs["shape"] = np.asarray(shape, np.int64)
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
            inputs["ends"] = np.asarray(clip(ends), index)
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
            "shape": np.asarray(
                rng.integers(-1 if rng.random() < 0.1 else 0, 4, size=rng.integers(0, 4)), np.int64
            )
        }
        if rng.random() < 0.7:
            attributes["value"] = numpy_helper.from_array(_tensor(rng, [1], dtype), "value")
    elif op == "Cast":
        source = [np.int64, np.int32, np.int8, np.uint8, np.bool_, np.float32][int(rng.integers(6))]
        inputs = {
            "data": (
                rng.integers(-300, 300, _shape(rng))
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
        values = rng.integers(-20, 20, size=3)
        if rng.random() < 0.1:
            values[2] = 0
        names = ("start", "limit", "delta")
        inputs = {n: np.asarray(v, kind) for n, v in zip(names, values, strict=True)}
    elif op in ("Add", "Sub", "Mul", "Equal"):
        other = [int(s) for s in data.shape[int(rng.integers(0, rank + 1)) :]]
        other = [1 if rng.random() < 0.3 else s for s in other]
        other_type = dtype if rng.random() < 0.9 else np.int32
        if rng.random() < 0.2 and dtype != np.bool_:
            inputs["data"] = (data.astype(np.int64) * (1 << 40)).astype(dtype)
        inputs["other"] = _tensor(rng, other, other_type)
    elif op == "Where":
        inputs = {
            "condition": rng.random(data.shape) < 0.5,
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
            np.testing.assert_array_equal(got, want)
    assert computed or op in _NOT_AT.get(opset, ()), f"no case of {op} was computed at {opset}"


#: Ops that do not exist (or are declined) at an opset of the test.
_NOT_AT = {9: ("Range",)}
