"""Hostile inputs for ``tests/test_fuzz.py``, and a runner of the real CLI in child processes.

Three parts:

- **Cases.** :func:`fuzz_case` turns ``(seed, index)`` into one hostile model, always the same
  bytes for the same pair: a committed fixture with byte flips, truncations or structured
  protobuf mutations (dims, attributes, types, opsets, IR versions, names, NaN/Inf weights,
  dropped or duplicated nodes, sparse or external weights, ...). :data:`KNOWN_CASES` are the
  inputs an earlier fuzz run broke the tool with, built on purpose. :func:`chain_model` and
  :func:`nested_if_model` are the 10^5-node and deeply nested graphs.
- **Runner.** Every command runs as its own OS process, in its own folder, with ``TMPDIR``
  pointing at an empty folder of its own, an address-space limit and a timeout.
  ``REPVGG_FUZZ_EXEC=spawn`` runs ``python -m repvgg_onnx ...`` for each command;
  the default, ``fork``, has a zygote process that has imported ``repvgg_onnx.cli`` once fork
  a child per command which runs ``main()`` exactly as ``python -m repvgg_onnx`` does (same
  argv, uncaught exceptions print their traceback and exit 1, ``atexit`` and finalizers run),
  which saves the ~0.5 s of imports per command. A crash (a signal) kills only that child.
- **Properties.** :func:`check_run` lists what a run violated; :func:`compare_models` (run in a
  child too: onnxruntime may crash) checks a fused output against its input.

``python tests/fuzz_cases.py SEED INDEX OUT.onnx`` writes one fuzz case to a file, and
``python tests/fuzz_cases.py known NAME OUT.onnx`` one known-bug case.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "models" / "fixtures"

#: Fixtures the fuzzer mutates, with their weight in the draw. The 8 MB sample is left out:
#: the small ones reach the same code in a fraction of the time.
FUZZ_FIXTURES: dict[str, tuple[str, float]] = {
    "tiny_block": ("tiny_block/ts17_nofold.onnx", 5.0),
    "tiny_relu_in_branch": ("tiny_relu_in_branch/ts17_nofold.onnx", 1.0),
    "tiny_repvgg_g4": ("tiny_repvgg_g4/ts17_nofold.onnx", 2.0),
    **{
        family: (f"families/{family}/ts17.onnx", 1.0)
        for family in (
            "acnet",
            "bn_linear_head",
            "dilated",
            "distill_head",
            "efficientvim_gate",
            "fastvit_repcpe",
            "fastvit_repmixer",
            "levit_linearnorm",
            "mobileone",
            "prebn",
            "prebn_padded",
            "repconv_silu",
            "repghost",
            "replk",
            "repvit",
        )
    },
    "dbb": ("families/dbb/ts17.onnx", 0.5),
}

COMMANDS = ("fuse", "inspect", "verify", "diff")
IN_NAME = "in.onnx"
OUT_NAME = "out.onnx"
#: Files a command may leave in its folder: the input, and for ``fuse`` the output and its data.
ALLOWED_FILES = {
    "fuse": {IN_NAME, OUT_NAME, OUT_NAME + ".data"},
    "inspect": {IN_NAME},
    "verify": {IN_NAME},
    "diff": {IN_NAME},
}
#: How every line the tool itself writes on stderr begins ("internal error: " is exit 3, which
#: is reported as such).
TOOL_STDERR_PREFIXES = ("error: ", "warning: ", "internal error: ")
#: onnxruntime writes its telemetry session id to ``$TMPDIR/.ses`` in every process that makes a
#: session and keeps it there on purpose (``python -c "import onnxruntime as o;
#: o.InferenceSession(...)"`` does too): not a temporary file of the tool.
ONNXRUNTIME_TMP_FILES = {".ses"}
#: Agreement of a fused output with its input: |out − in| ≤ RTOL × max|in| (finite values).
RTOL = 1e-3
#: Random inputs larger than this are not built by the comparison (it skips instead).
MAX_COMPARE_ELEMENTS = 1 << 24


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


COMMAND_TIMEOUT = float(env_int("REPVGG_FUZZ_TIMEOUT", 60))
MEMORY_LIMIT_BYTES = env_int("REPVGG_FUZZ_MEMORY_MB", 6144) << 20


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input: its test id, where it came from and what was done to it."""

    id: str
    source: str
    data: bytes
    mutations: tuple[str, ...]


_fixture_cache: dict[str, bytes] = {}


def fixture_bytes(name: str) -> bytes:
    if name not in _fixture_cache:
        _fixture_cache[name] = (FIXTURES / FUZZ_FIXTURES[name][0]).read_bytes()
    return _fixture_cache[name]


def fixture_model(name: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(fixture_bytes(name))
    return model


def fuzz_case(seed: int, index: int) -> Case:
    """The ``index``-th hostile case of run ``seed``: the same bytes on every machine."""
    rng = random.Random(f"repvgg-onnx-fuzz:{seed}:{index}")
    names = sorted(FUZZ_FIXTURES)
    source = rng.choices(names, weights=[FUZZ_FIXTURES[n][1] for n in names])[0]
    if rng.random() < 0.25:
        weights = [w for _, w in BYTE_MUTATORS]
        mutate = rng.choices([m for m, _ in BYTE_MUTATORS], weights=weights)[0]
        data, description = mutate(fixture_bytes(source), rng)
        mutations = (description,)
    else:
        model = fixture_model(source)
        count = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
        descriptions: list[str] = []
        for _ in range(count):
            descriptions.append(_apply_one(model, rng))
        mutations = tuple(descriptions)
        data = _serialize(model)
    label = "+".join(_printable(m) for m in mutations)
    return Case(f"fz{seed}.{index:03d}-{source}-{label}", source, data, mutations)


def _apply_one(model: onnx.ModelProto, rng: random.Random) -> str:
    """Apply one structured mutation that fits the model (drawn again until one fits)."""
    for _ in range(50):
        name, mutate = rng.choices(
            [(n, m) for n, m, _ in MODEL_MUTATORS], weights=[w for _, _, w in MODEL_MUTATORS]
        )[0]
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        try:
            description = mutate(trial, rng)
        except Exception:  # a mutation that does not fit this model: draw another
            description = None
        if description:
            model.CopyFrom(trial)
            return f"{name}:{description}"
    raise RuntimeError("no mutation fits the model")


def _serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def _printable(text: str, limit: int = 90) -> str:
    text = text.encode("unicode_escape").decode("ascii").replace(" ", "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- byte-level mutations -------------------------------------------------------------------


def _flip_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    count = rng.choice([1, 1, 2, 3, 8, 32])
    buffer = bytearray(data)
    positions = sorted(rng.randrange(len(buffer)) for _ in range(count))
    for position in positions:
        buffer[position] ^= rng.randrange(1, 256)
    shown = ",".join(map(str, positions[:4])) + (",..." if count > 4 else "")
    return bytes(buffer), f"flip{count}@{shown}"


def _truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.choice(
        [0, 1, 2, len(data) // 2, len(data) - 1, len(data) - 4, rng.randrange(len(data))]
    )
    return data[:cut], f"truncate@{cut}/{len(data)}"


def _splice(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    position = rng.randrange(len(data))
    kind = rng.choice(["insert", "delete", "ff", "append"])
    if kind == "insert":
        extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 64])))
        return data[:position] + extra + data[position:], f"insert{len(extra)}@{position}"
    if kind == "delete":
        size = rng.choice([1, 2, 16, 256])
        return data[:position] + data[position + size :], f"delete{size}@{position}"
    if kind == "ff":  # a varint that never ends: ten bytes with the continuation bit set
        return data[:position] + b"\xff" * 10 + data[position + 10 :], f"varint_ff10@{position}"
    extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100])))
    return data + extra, f"append{len(extra)}"


def _corrupt_string(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Make one ASCII string of the model (an op type or a name) invalid UTF-8, in place."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    candidates = sorted(
        {n.op_type for n in model.graph.node} | {n.name for n in model.graph.node if n.name}
    )
    word = rng.choice(candidates).encode()
    starts = [i for i in range(len(data)) if data.startswith(word, i)]
    start = rng.choice(starts)
    offset = rng.randrange(len(word))
    bad = rng.choice([b"\xff", b"\xc3", b"\x80", b"\xed"])
    corrupted = data[: start + offset] + bad + data[start + offset + 1 :]
    return corrupted, f"utf8[{word.decode()}]@{start + offset}={bad.hex()}"


BYTE_MUTATORS: list[tuple[Callable[[bytes, random.Random], tuple[bytes, str]], float]] = [
    (_flip_bytes, 4.0),
    (_truncate, 2.0),
    (_splice, 2.0),
    (_corrupt_string, 2.0),
]


# ---- structured mutations: helpers ----------------------------------------------------------


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _float_initializers(model: onnx.ModelProto) -> list[TensorProto]:
    return [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]


def _set_array(tensor: TensorProto, array: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), tensor.name))


def _set_dims(tensor: TensorProto, dims: Iterable[int]) -> None:
    del tensor.dims[:]
    tensor.dims.extend(dims)


def _attribute(name: str, value, kind: int | None = None) -> AttributeProto:
    """An AttributeProto of any value, empty lists included (``kind`` says their type)."""
    attribute = AttributeProto(name=name)
    if isinstance(value, list):
        attribute.type = kind or (
            AttributeProto.FLOATS
            if any(isinstance(v, float) for v in value)
            else AttributeProto.STRINGS
            if any(isinstance(v, str) for v in value)
            else AttributeProto.INTS
        )
        target = {
            AttributeProto.INTS: attribute.ints,
            AttributeProto.FLOATS: attribute.floats,
            AttributeProto.STRINGS: attribute.strings,
        }[attribute.type]
        target.extend(v.encode() if isinstance(v, str) else v for v in value)
    elif isinstance(value, float):
        attribute.type, attribute.f = AttributeProto.FLOAT, value
    elif isinstance(value, int):
        attribute.type, attribute.i = AttributeProto.INT, value
    elif isinstance(value, str):
        attribute.type, attribute.s = AttributeProto.STRING, value.encode()
    elif isinstance(value, TensorProto):
        attribute.type = AttributeProto.TENSOR
        attribute.t.CopyFrom(value)
    else:
        raise TypeError(type(value))
    return attribute


def _set_attribute(node: onnx.NodeProto, attribute: AttributeProto) -> None:
    kept = [a for a in node.attribute if a.name != attribute.name]
    del node.attribute[:]
    node.attribute.extend([*kept, attribute])


def _all_tensor_names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    names = {v.name for v in [*graph.input, *graph.output]}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
    names.discard("")
    return sorted(names)


def _rename_tensor(model: onnx.ModelProto, old: str, new: str) -> None:
    graph = model.graph
    for node in graph.node:
        for items in (node.input, node.output):
            for i, name in enumerate(items):
                if name == old:
                    items[i] = new
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type}[{node.name or node.output[0] if node.output else '?'}]"


def _default_opset(model: onnx.ModelProto) -> onnx.OperatorSetIdProto:
    return next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ---- structured mutations -------------------------------------------------------------------

_DIM_VALUES = [0, 1, 2, 3, 7, 1000, 2**31 - 1, 2**40, -1, -7]


def _m_initializer_dims(model: onnx.ModelProto, rng: random.Random) -> str | None:
    tensor = rng.choice(list(model.graph.initializer))
    old = list(tensor.dims)
    kind = rng.choice(["set", "drop", "add", "flatten", "rank2", "scalar", "channels"])
    consistent = kind in ("flatten", "rank2", "scalar", "channels")
    if consistent:
        array = numpy_helper.to_array(tensor)
        if array.size == 0:
            return None
        if kind == "flatten":
            if array.ndim < 2:
                return None
            array = array.reshape(-1)
        elif kind == "rank2":
            array = array.reshape(old[0] if old else 1, -1)
        elif kind == "scalar":
            array = np.array(array.reshape(-1)[0])
        else:
            if not old:
                return None
            count = rng.choice(sorted({1, max(1, old[0] - 1), old[0] + 1, old[0] * 2} - {old[0]}))
            array = np.take(array, np.arange(count) % old[0], axis=0)
        _set_array(tensor, array)
        return f"{tensor.name}.dims{old}->{list(tensor.dims)}(data_resized)"
    dims = list(old)
    if kind == "set" and dims:
        dims[rng.randrange(len(dims))] = rng.choice(_DIM_VALUES)
    elif kind == "drop" and dims:
        del dims[rng.randrange(len(dims))]
    else:
        dims.insert(rng.randrange(len(dims) + 1), rng.choice([1, 2, 0]))
    _set_dims(tensor, dims)
    return f"{tensor.name}.dims{old}->{dims}"


def _m_value_dims(model: onnx.ModelProto, rng: random.Random) -> str | None:
    which = rng.choice(["input", "input", "output"])
    values = _graph_inputs(model) if which == "input" else list(model.graph.output)
    value = rng.choice(values)
    shape = value.type.tensor_type.shape
    old = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in shape.dim]
    kind = rng.choice(["value", "value", "param", "clear_shape", "drop", "add", "huge"])
    if kind == "clear_shape":
        value.type.tensor_type.ClearField("shape")
        return f"{which}[{value.name}].shape_removed"
    dims = list(shape.dim)
    if kind == "huge":
        new = [1, 3, 2**20, 2**20][: max(len(dims), 1)] if dims else [2**40]
        shape.ClearField("dim")
        for size in new:
            shape.dim.add().dim_value = size
    elif kind == "value" and dims:
        dims[rng.randrange(len(dims))].dim_value = rng.choice(_DIM_VALUES)
    elif kind == "param" and dims:
        dims[rng.randrange(len(dims))].dim_param = rng.choice(["N", "", "batch size", "\n"])
    elif kind == "drop" and dims:
        del shape.dim[rng.randrange(len(dims))]
    else:
        shape.dim.add().dim_value = rng.choice([1, 2])
    new = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in shape.dim]
    return f"{which}[{value.name}].dims{old}->{new}"


_ATTRIBUTE_VALUES: dict[str, list] = {
    "group": [0, -1, 2, 3, 4, 8, 2**31 - 1, -(2**31), 2**63 - 1],
    "pads": [[], [1, 1], [1, 1, 1], [0] * 4, [-1] * 4, [1] * 6, [100] * 4, [2**31 - 1] * 4],
    "strides": [[], [0, 0], [-1, -1], [2, 2], [1], [1, 1, 1], [2**31 - 1] * 2, [3, 1]],
    "dilations": [[], [0, 0], [-1, -1], [2, 2], [1], [1, 1, 1], [2**31 - 1] * 2, [3, 1]],
    "kernel_shape": [[], [1, 1], [5, 5], [3], [3, 3, 3], [0, 0], [-3, -3], [2**31 - 1] * 2],
    "auto_pad": ["", "SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "bogus"],
    "epsilon": [0.0, -1.0, math.nan, math.inf, -math.inf, 1e30, 1e-45, 1.0],
    "momentum": [math.nan, -1.0, 2.0],
    "training_mode": [1, 2, -1],
    "spatial": [0, 1],
    "perm": [[], [0], [1, 0, 2, 3], [0, 0, 1, 1], [3, 2, 1, 0], [0, 1, 2, 7], [-1, 0, 1, 2]],
    "axis": [-100, -1, 0, 1, 2, 3, 99, 2**31 - 1],
    "axes": [[], [-100], [0, 0], [99]],
    "transA": [0, 1, 2, -1],
    "transB": [0, 1, 2, -1],
    "alpha": [0.0, math.nan, math.inf, -1.0, 1e30],
    "beta": [0.0, math.nan, math.inf, -1.0, 1e30],
    "mode": ["constant", "reflect", "edge", "wrap", "bogus"],
    "count_include_pad": [0, 1, 7],
    "ceil_mode": [0, 1],
    "to": [0, 1, 7, 8, 10, 999],
    "allowzero": [0, 1],
}
_ADDABLE_ATTRIBUTES = {
    "Conv": ["group", "pads", "strides", "dilations", "kernel_shape", "auto_pad"],
    "BatchNormalization": ["epsilon", "momentum", "training_mode", "spatial"],
    "Gemm": ["transA", "transB", "alpha", "beta"],
    "Transpose": ["perm"],
    "Flatten": ["axis"],
    "AveragePool": ["pads", "strides", "kernel_shape", "count_include_pad", "ceil_mode"],
    "Pad": ["mode"],
}
_GENERIC_VALUES = {
    AttributeProto.INT: [0, -1, 1, 2, 2**31 - 1, -(2**63)],
    AttributeProto.INTS: [[], [0], [-1, -1], [2**31 - 1]],
    AttributeProto.FLOAT: [math.nan, math.inf, 0.0, -1.0],
    AttributeProto.FLOATS: [[], [math.nan]],
    AttributeProto.STRING: ["", "bogus"],
}


def _m_attribute(model: onnx.ModelProto, rng: random.Random) -> str | None:
    nodes = [n for n in model.graph.node if n.attribute or n.op_type in _ADDABLE_ATTRIBUTES]
    # Favour the ops the tool reads.
    weights = [5 if n.op_type in _ADDABLE_ATTRIBUTES else 1 for n in nodes]
    node = rng.choices(nodes, weights=weights)[0]
    names = sorted(
        {a.name for a in node.attribute} | set(_ADDABLE_ATTRIBUTES.get(node.op_type, []))
    )
    name = rng.choice(names)
    existing = next((a for a in node.attribute if a.name == name), None)
    kind = rng.choices(["value", "delete", "retype"], weights=[8, 1, 1])[0]
    if kind == "delete" and existing is not None:
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept)
        return f"{_node_label(node)}.{name}_deleted"
    if kind == "retype" and existing is not None and existing.type == AttributeProto.INT:
        _set_attribute(node, _attribute(name, float(existing.i) + 0.5))
        return f"{_node_label(node)}.{name}_as_FLOAT"
    if kind == "retype" and existing is not None and existing.type == AttributeProto.INTS:
        _set_attribute(node, _attribute(name, int(existing.ints[0]) if existing.ints else 1))
        return f"{_node_label(node)}.{name}_as_INT"
    if name == "value" and existing is not None and existing.type == AttributeProto.TENSOR:
        tensor = TensorProto()
        tensor.CopyFrom(existing.t)
        choice = rng.choice(["nan", "empty", "int64", "dims"])
        if choice == "nan":
            tensor = numpy_helper.from_array(np.array(math.nan, np.float32))
        elif choice == "empty":
            tensor = numpy_helper.from_array(np.zeros((0,), np.float32))
        elif choice == "int64":
            tensor = numpy_helper.from_array(np.array([2**62, -1], np.int64))
        else:
            _set_dims(tensor, [*tensor.dims, 2])
        _set_attribute(node, _attribute(name, tensor))
        return f"{_node_label(node)}.value={choice}"
    if name in _ATTRIBUTE_VALUES:
        value = rng.choice(_ATTRIBUTE_VALUES[name])
    elif existing is not None and existing.type in _GENERIC_VALUES:
        value = rng.choice(_GENERIC_VALUES[existing.type])
    else:
        return None
    empty_list = AttributeProto.INTS if value == [] else None
    _set_attribute(node, _attribute(name, value, empty_list))
    return f"{_node_label(node)}.{name}={value}"


_RETAG_TYPES = [
    TensorProto.UNDEFINED,
    TensorProto.STRING,
    TensorProto.FLOAT16,
    TensorProto.DOUBLE,
    TensorProto.INT64,
    TensorProto.INT8,
    TensorProto.BOOL,
    TensorProto.BFLOAT16,
    TensorProto.COMPLEX64,
    TensorProto.FLOAT8E4M3FN,
    TensorProto.INT4,
    TensorProto.UINT4,
    999,
]
_CAST_TYPES = [np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


def _m_dtype(model: onnx.ModelProto, rng: random.Random) -> str | None:
    kind = rng.choice(["retag", "cast", "cast", "string", "input", "output"])
    if kind in ("input", "output"):
        value = rng.choice(_graph_inputs(model) if kind == "input" else list(model.graph.output))
        new = rng.choice(_RETAG_TYPES)
        value.type.tensor_type.elem_type = new
        return f"{kind}[{value.name}].elem_type={_type_name(new)}"
    tensor = rng.choice(_float_initializers(model))
    if kind == "retag":
        new = rng.choice(_RETAG_TYPES)
        tensor.data_type = new
        return f"{tensor.name}.data_type={_type_name(new)}(raw_data_kept)"
    array = numpy_helper.to_array(tensor)
    if kind == "string":
        strings = [str(v).encode() for v in array.reshape(-1)]
        tensor.ClearField("raw_data")
        tensor.data_type = TensorProto.STRING
        tensor.string_data.extend(strings)
        return f"{tensor.name}.as_STRING"
    dtype = rng.choice(_CAST_TYPES)
    _set_array(tensor, array.astype(dtype))
    return f"{tensor.name}.cast_to_{np.dtype(dtype).name}"


_OPSET_VERSIONS = [*range(5, 17), *range(18, 27), 1, 99, 0, -1]


def _m_opset(model: onnx.ModelProto, rng: random.Random) -> str | None:
    kind = rng.choice(["version", "version", "version", "duplicate", "custom", "remove_default"])
    default = _default_opset(model)
    if kind == "version":
        version = rng.choice(_OPSET_VERSIONS)
        default.version = version
        return f"opset={version}"
    if kind == "duplicate":
        version = rng.choice([9, 13, 18])
        model.opset_import.add(domain="", version=version)
        return f"opset_listed_twice(17,{version})"
    if kind == "custom":
        domain = rng.choice(["com.microsoft", "ai.onnx.ml", "com.example", ""])
        model.opset_import.add(domain=domain or "ai.onnx", version=rng.choice([1, 17, 0]))
        return f"extra_opset_domain={domain or 'ai.onnx'}"
    kept = [o for o in model.opset_import if o is not default]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.opset_import.add(domain="com.example", version=1)
    return "default_opset_removed"


def _m_ir_version(model: onnx.ModelProto, rng: random.Random) -> str | None:
    version = rng.choice([0, 1, 2, 3, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 99, 2**62])
    model.ir_version = version
    return f"ir_version={version}"


_HOSTILE_NAMES = [
    "",
    "a\nb",
    "line\r\nbreak",
    "x" * 5000,
    "ünï→∑ 名前",
    "input",
    "output",
    "nul\x00byte",
    "{0}{name}%s%n",
    "[bold]*md*|pipe|",
    "<script>alert(1)</script>",
    "../../etc/passwd",
]


def _m_names(model: onnx.ModelProto, rng: random.Random) -> str | None:
    graph = model.graph
    kind = rng.choice(["tensor", "tensor", "tensor", "node_name", "dangling", "duplicate_output"])
    if kind == "tensor":
        old = rng.choice(_all_tensor_names(model))
        new = rng.choice(_HOSTILE_NAMES)
        _rename_tensor(model, old, new)
        return f"rename_tensor[{old}]->{new!r}"
    if kind == "node_name":
        node = rng.choice(list(graph.node))
        new = rng.choice([*_HOSTILE_NAMES, graph.node[0].name])
        old, node.name = node.name, new
        return f"rename_node[{old}]->{new!r}"
    node = rng.choice([n for n in graph.node if n.input])
    if kind == "dangling":
        index = rng.randrange(len(node.input))
        old, node.input[index] = node.input[index], rng.choice(["ghost", ""])
        return f"{_node_label(node)}.input{index}[{old}]->{node.input[index]!r}"
    other = rng.choice([n for n in graph.node if n is not node and n.output])
    old, node.output[0] = node.output[0], other.output[0]
    return f"{_node_label(node)}.output[{old}]->{other.output[0]}(two_producers)"


_SPECIAL_VALUES = [math.nan, math.inf, -math.inf, 1e38, -1e38, 1e-45, 0.0]


def _m_special_values(model: onnx.ModelProto, rng: random.Random) -> str | None:
    kind = rng.choice(["weights", "weights", "bn_var", "bn_var_zero_eps0"])
    if kind != "weights":
        bns = [
            n for n in model.graph.node if n.op_type == "BatchNormalization" and len(n.input) == 5
        ]
        node = rng.choice(bns)
        tensor = next(t for t in model.graph.initializer if t.name == node.input[4])
        array = numpy_helper.to_array(tensor).copy()
        if kind == "bn_var":
            array[rng.randrange(array.size)] = rng.choice([-1.0, -1e-3, -1e30])
        else:
            array[:] = 0
            _set_attribute(node, _attribute("epsilon", 0.0))
        _set_array(tensor, array)
        return f"{_node_label(node)}.{kind}"
    tensors = [t for t in _float_initializers(model) if math.prod(t.dims) > 0]
    tensor = rng.choice(tensors)
    array = numpy_helper.to_array(tensor).copy()
    value = rng.choice(_SPECIAL_VALUES)
    if rng.random() < 0.3:
        array[...] = value
        where = "all"
    else:
        flat = array.reshape(-1)
        where = rng.randrange(flat.size)
        flat[where] = value
    _set_array(tensor, array)
    return f"{tensor.name}[{where}]={value}"


def _m_nodes(model: onnx.ModelProto, rng: random.Random) -> str | None:
    graph = model.graph
    nodes = list(graph.node)
    kind = rng.choice(["drop", "drop", "duplicate", "reverse", "swap", "cycle", "self_loop"])
    index = rng.randrange(len(nodes))
    node = nodes[index]
    if kind == "drop":
        del graph.node[index]
        return f"drop_{_node_label(node)}"
    if kind == "duplicate":
        graph.node.insert(index + 1, node)
        return f"duplicate_{_node_label(node)}"
    if kind == "reverse":
        graph.ClearField("node")
        graph.node.extend(reversed(nodes))
        return "nodes_reversed"
    if kind == "swap":
        other = rng.randrange(len(nodes))
        nodes[index], nodes[other] = nodes[other], nodes[index]
        graph.ClearField("node")
        graph.node.extend(nodes)
        return f"swap_nodes_{index}_{other}"
    if not node.input:
        return None
    if kind == "self_loop":
        graph.node[index].input[0] = node.output[0]
        return f"{_node_label(node)}_reads_its_own_output"
    later = [n for n in nodes[index + 1 :] if n.output]
    if not later:
        return None
    target = rng.choice(later)
    graph.node[index].input[0] = target.output[0]
    return f"{_node_label(node)}_reads_later_{target.output[0]}(cycle)"


def _m_outputs(model: onnx.ModelProto, rng: random.Random) -> str | None:
    graph = model.graph
    kind = rng.choice(["clear", "clear", "tap", "tap_untyped", "twice", "input_as_output"])
    if kind == "clear":
        graph.ClearField("output")
        return "graph_outputs_removed"
    if kind == "twice":
        graph.output.append(graph.output[0])
        return f"output[{graph.output[0].name}]_listed_twice"
    if kind == "input_as_output":
        graph.output.append(_graph_inputs(model)[0])
        return f"input[{graph.output[-1].name}]_is_also_an_output"
    interior = [n.output[0] for n in graph.node[:-1] if n.output and n.op_type != "Constant"]
    name = rng.choice(interior)
    if kind == "tap_untyped":
        graph.output.append(onnx.ValueInfoProto(name=name))
    else:
        graph.output.append(_inferred(model, name))
    return f"{kind}[{name}]"


def _inferred(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    """The type and shape onnx infers for tensor ``name`` of ``model``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return next(v for v in inferred.graph.value_info if v.name == name)


def _sparse_of(tensor: TensorProto, rng: random.Random, variant: str) -> onnx.SparseTensorProto:
    array = numpy_helper.to_array(tensor)
    flat = array.reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)
    values = flat[indices]
    if variant == "out_of_range" and indices.size:
        indices[-1] = flat.size + 5
    elif variant == "unsorted" and indices.size > 1:
        indices = indices[::-1].copy()
        values = values[::-1].copy()
    elif variant == "values_short" and values.size:
        values = values[:-1]
    sparse = onnx.SparseTensorProto()
    sparse.values.CopyFrom(numpy_helper.from_array(values, tensor.name))
    sparse.indices.CopyFrom(numpy_helper.from_array(indices, tensor.name + "_indices"))
    sparse.dims.extend(tensor.dims)
    return sparse


def _m_sparse(model: onnx.ModelProto, rng: random.Random) -> str | None:
    graph = model.graph
    tensors = [t for t in _float_initializers(model) if math.prod(t.dims) > 0]
    tensor = rng.choice(tensors)
    variant = rng.choice(["valid", "valid", "out_of_range", "unsorted", "values_short"])
    sparse = _sparse_of(tensor, rng, variant)
    kept = [t for t in graph.initializer if t.name != tensor.name]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    if rng.random() < 0.5:
        graph.sparse_initializer.append(sparse)
        return f"{tensor.name}->sparse_initializer({variant})"
    constant = helper.make_node("Constant", [], [tensor.name], name=f"sparse_{tensor.name}")
    attribute = AttributeProto(name="sparse_value", type=AttributeProto.SPARSE_TENSOR)
    attribute.sparse_tensor.CopyFrom(sparse)
    constant.attribute.append(attribute)
    graph.node.insert(0, constant)
    return f"{tensor.name}->Constant(sparse_value,{variant})"


def _m_constant_node(model: onnx.ModelProto, rng: random.Random) -> str | None:
    graph = model.graph
    tensor = rng.choice(list(graph.initializer))
    kept = [t for t in graph.initializer if t.name != tensor.name]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    graph.node.insert(0, helper.make_node("Constant", [], [tensor.name], value=tensor))
    return f"{tensor.name}->Constant_node"


def _m_bn_opset9(model: onnx.ModelProto, rng: random.Random) -> str | None:
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return None
    _default_opset(model).version = 9
    for node in bns:
        kept = [a for a in node.attribute if a.name != "training_mode"]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.output.extend([""] * 4)
    return f"opset9_BN_empty_optional_outputs(x{len(bns)})"


def _m_op_type(model: onnx.ModelProto, rng: random.Random) -> str | None:
    replacements = {
        "Conv": ["ConvTranspose", "ConvInteger", "Bogus"],
        "BatchNormalization": ["InstanceNormalization", "LayerNormalization", "Dropout"],
        "Add": ["Sub", "Mul", "Sum", "Max", "Div", "Concat"],
        "Relu": ["Identity", "Sigmoid", "LeakyRelu", "Softmax"],
    }
    node = rng.choice(list(model.graph.node))
    old = node.op_type
    node.op_type = rng.choice(replacements.get(old, ["Identity", "Bogus", ""]))
    return f"{_node_label(node)}:{old}->{node.op_type or repr('')}"


def _m_domain(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = rng.choice(list(model.graph.node))
    domain = rng.choice(["com.example", "ai.onnx.ml", "com.microsoft", "ai.onnx"])
    node.domain = domain
    if rng.random() < 0.5:
        model.opset_import.add(domain=domain, version=1)
        return f"{_node_label(node)}.domain={domain}(imported)"
    return f"{_node_label(node)}.domain={domain}"


def _m_node_inputs(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = rng.choice([n for n in model.graph.node if n.input])
    kind = rng.choice(["extra", "extra_empty", "drop_last", "drop_all", "repeat_first"])
    if kind == "extra":
        node.input.append(rng.choice(_all_tensor_names(model)))
    elif kind == "extra_empty":
        node.input.append("")
    elif kind == "drop_last":
        del node.input[-1]
    elif kind == "drop_all":
        del node.input[:]
    else:
        node.input[-1] = node.input[0]
    return f"{_node_label(node)}.inputs_{kind}"


def _m_initializer_as_input(model: onnx.ModelProto, rng: random.Random) -> str | None:
    tensor = rng.choice(_float_initializers(model))
    model.graph.input.append(
        helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
    )
    return f"{tensor.name}_listed_as_graph_input"


def _m_float16(model: onnx.ModelProto, rng: random.Random) -> str | None:
    keep_bn = rng.random() < 0.5
    bn_params = {
        name for n in model.graph.node if n.op_type == "BatchNormalization" for name in n.input[1:]
    }
    for tensor in _float_initializers(model):
        if not (keep_bn and tensor.name in bn_params):
            _set_array(tensor, numpy_helper.to_array(tensor).astype(np.float16))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR and attribute.t.data_type == 1:
                name = attribute.t.name
                attribute.t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float16))
                )
                attribute.t.name = name
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == 1:
                attribute.i = TensorProto.FLOAT16
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return "float16" + ("(BN_params_float32)" if keep_bn else "")


def _m_external(model: onnx.ModelProto, rng: random.Random) -> str | None:
    tensor = rng.choice(list(model.graph.initializer))
    location = rng.choice(
        ["/etc/passwd", "../escape.bin", "missing.bin", IN_NAME, "", "sub/../in.onnx", "."]
    )
    offset = rng.choice(["0", "0", "-1", "abc", str(2**70), "16"])
    length = rng.choice([None, str(len(tensor.raw_data)), "0", str(2**40)])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    entries = {"location": location, "offset": offset}
    if length is not None:
        entries["length"] = length
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    return f"{tensor.name}.external(location={location!r},offset={offset},length={length})"


def _m_value_info(model: onnx.ModelProto, rng: random.Random) -> str | None:
    interior = [n.output[0] for n in model.graph.node[:-1] if n.output]
    name = rng.choice(interior)
    elem, shape = rng.choice(
        [(TensorProto.FLOAT, [2, 2]), (TensorProto.INT64, None), (TensorProto.FLOAT, [1, 0, 5])]
    )
    model.graph.value_info.append(helper.make_tensor_value_info(name, elem, shape))
    return f"value_info[{name}]={_type_name(elem)}{shape}"


def _m_training(model: onnx.ModelProto, rng: random.Random) -> str | None:
    node = rng.choice([n for n in model.graph.node if n.op_type == "BatchNormalization"])
    _set_attribute(node, _attribute("training_mode", 1))
    if rng.random() < 0.5:
        node.output.extend([node.output[0] + "_mean", node.output[0] + "_var"])
    return f"{_node_label(node)}.training_mode=1"


def _m_duplicate_initializer(model: onnx.ModelProto, rng: random.Random) -> str | None:
    tensor = rng.choice(_float_initializers(model))
    twin = TensorProto()
    twin.CopyFrom(tensor)
    _set_array(twin, numpy_helper.to_array(tensor) * 2 + 1)
    model.graph.initializer.append(twin)
    return f"{tensor.name}_defined_twice"


def _m_metadata(model: onnx.ModelProto, rng: random.Random) -> str | None:
    kind = rng.choice(["props", "doc", "producer", "graph_name"])
    if kind == "props":
        model.metadata_props.add(key="k\ney", value="v\nalue\x00")
    elif kind == "doc":
        model.doc_string = "d" * (1 << 20)
    elif kind == "producer":
        model.producer_name, model.producer_version = "\n", "\r\n" * 10
    else:
        model.graph.name = rng.choice(_HOSTILE_NAMES)
    return kind


def _m_subgraph_tap(model: onnx.ModelProto, rng: random.Random) -> str | None:
    """An If (always true) whose branch reads an interior tensor; its result is an output."""
    graph = model.graph
    interior = [
        n.output[0]
        for n in graph.node[:-1]
        if n.output and n.op_type in ("BatchNormalization", "Conv", "Add")
    ]
    name = rng.choice(interior)
    typed = _inferred(model, name)
    branch_out = onnx.ValueInfoProto(name="fuzz_branch_out", type=typed.type)
    branch = helper.make_graph(
        [helper.make_node("Identity", [name], ["fuzz_branch_out"])], "fuzz_branch", [], [branch_out]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Constant",
                [],
                ["fuzz_cond"],
                value=helper.make_tensor("c", TensorProto.BOOL, [], [True]),
            ),
            helper.make_node(
                "If", ["fuzz_cond"], ["fuzz_tap"], then_branch=branch, else_branch=branch
            ),
        ]
    )
    graph.output.append(onnx.ValueInfoProto(name="fuzz_tap", type=typed.type))
    return f"If_branch_reads[{name}]"


#: (name, mutation, weight in the draw)
MODEL_MUTATORS: list[tuple[str, Callable[[onnx.ModelProto, random.Random], str | None], float]] = [
    ("dims", _m_initializer_dims, 4.0),
    ("io_dims", _m_value_dims, 2.0),
    ("attr", _m_attribute, 6.0),
    ("dtype", _m_dtype, 3.0),
    ("opset", _m_opset, 2.0),
    ("ir", _m_ir_version, 1.5),
    ("names", _m_names, 2.5),
    ("values", _m_special_values, 3.0),
    ("nodes", _m_nodes, 2.0),
    ("outputs", _m_outputs, 1.5),
    ("sparse", _m_sparse, 1.5),
    ("constant", _m_constant_node, 0.7),
    ("bn_opset9", _m_bn_opset9, 0.7),
    ("op_type", _m_op_type, 1.0),
    ("domain", _m_domain, 0.7),
    ("inputs", _m_node_inputs, 1.0),
    ("init_as_input", _m_initializer_as_input, 0.7),
    ("fp16", _m_float16, 1.0),
    ("external", _m_external, 1.0),
    ("value_info", _m_value_info, 0.7),
    ("training", _m_training, 0.5),
    ("dup_init", _m_duplicate_initializer, 0.5),
    ("metadata", _m_metadata, 0.5),
    ("if_tap", _m_subgraph_tap, 0.7),
]


# ---- the known bugs of an earlier fuzz run, built on purpose ---------------------------------


def _tiny(name: str = "tiny_block") -> onnx.ModelProto:
    return fixture_model(name)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _init(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


DENSE_CONV = "/block/rbr_dense/conv/Conv"
DENSE_WEIGHT = "block.rbr_dense.conv.weight"
DENSE_BN = "/block/rbr_dense/bn/BatchNormalization"


def _reshaped_weight(shape: Sequence[int] | None) -> bytes:
    model = _tiny()
    tensor = _init(model, DENSE_WEIGHT)
    array = numpy_helper.to_array(tensor)
    _set_array(tensor, array.reshape(-1)[0] if shape is None else array.reshape(shape))
    return model.SerializeToString()


def _weight_channels(count: int) -> bytes:
    model = _tiny()
    tensor = _init(model, DENSE_WEIGHT)
    _set_array(tensor, numpy_helper.to_array(tensor)[:count])
    return model.SerializeToString()


def _bn_params_length(count: int) -> bytes:
    model = _tiny()
    for name in _node(model, DENSE_BN).input[1:]:
        tensor = _init(model, name)
        _set_array(tensor, np.resize(numpy_helper.to_array(tensor), count))
    return model.SerializeToString()


def _scale_length(count: int) -> bytes:
    """Conv → Mul by a per-channel scale of the wrong length → Add with the 1x1 branch."""
    model = _tiny()
    graph = model.graph
    bn = _node(model, DENSE_BN)
    index = list(graph.node).index(bn)
    graph.node.remove(bn)
    graph.initializer.append(
        numpy_helper.from_array(np.full((count, 1, 1), 0.5, np.float32), "fuzz_scale")
    )
    graph.node.insert(
        index, helper.make_node("Mul", [bn.input[0], "fuzz_scale"], [bn.output[0]], name="Mul")
    )
    return model.SerializeToString()


def _conv_attribute(name: str, value, kind: int | None = None) -> bytes:
    model = _tiny()
    _set_attribute(_node(model, DENSE_CONV), _attribute(name, value, kind))
    return model.SerializeToString()


def _string_weight() -> bytes:
    model = _tiny()
    tensor = _init(model, DENSE_WEIGHT)
    values = [str(v).encode() for v in numpy_helper.to_array(tensor).reshape(-1)]
    tensor.ClearField("raw_data")
    tensor.data_type = TensorProto.STRING
    tensor.string_data.extend(values)
    return model.SerializeToString()


def _invalid_utf8_op_type() -> bytes:
    """A corrupt byte inside an op type: onnx.checker's message then holds invalid UTF-8."""
    data = fixture_bytes("tiny_block")
    start = data.rfind(b"Relu")
    return data[: start + 3] + b"\xff" + data[start + 4 :]


def _invalid_utf8_name() -> bytes:
    data = fixture_bytes("tiny_block")
    start = data.find(b"/block/rbr_dense/conv/Conv\x22\x04Conv")  # the name, then op_type
    return data[:start] + b"\xff" + data[start + 1 :]


def _corrupt_varint() -> bytes:
    """The length varint of the last node's op type made 2 bytes too long: the string swallows
    the next field's bytes, which are not UTF-8."""
    data = bytearray(fixture_bytes("tiny_block"))
    start = bytes(data).rfind(b"\x22\x04Relu")  # field 4 (op_type), length 4
    data[start + 1] = 0x07
    return bytes(data)


def _huge_input(dims: Sequence[int]) -> bytes:
    model = _tiny()
    shape = model.graph.input[0].type.tensor_type.shape
    shape.ClearField("dim")
    for size in dims:
        shape.dim.add().dim_value = size
    return model.SerializeToString()


def _opset9_bn_empty_outputs() -> bytes:
    model = _tiny()
    assert _m_bn_opset9(model, random.Random(0))
    return model.SerializeToString()


def _ir_version(version: int, list_initializers: bool) -> bytes:
    model = _tiny()
    model.ir_version = version
    if list_initializers:
        for tensor in model.graph.initializer:
            model.graph.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return model.SerializeToString()


def _sparse_weight(as_constant: bool, name: str = DENSE_WEIGHT) -> bytes:
    model = _tiny()
    tensor = _init(model, name)
    sparse = _sparse_of(tensor, random.Random(0), "valid")
    graph = model.graph
    graph.initializer.remove(tensor)
    if as_constant:
        node = helper.make_node("Constant", [], [name], name="sparse_constant")
        attribute = AttributeProto(name="sparse_value", type=AttributeProto.SPARSE_TENSOR)
        attribute.sparse_tensor.CopyFrom(sparse)
        node.attribute.append(attribute)
        graph.node.insert(0, node)
    else:
        graph.sparse_initializer.append(sparse)
    return model.SerializeToString()


def _float16_model(keep_bn_float32: bool) -> bytes:
    model = _tiny()
    rng = random.Random(0 if keep_bn_float32 else 1)
    while True:  # the mutation draws whether BN parameters stay float32
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        if _m_float16(trial, rng) == "float16" + ("(BN_params_float32)" if keep_bn_float32 else ""):
            return trial.SerializeToString()


def _no_outputs() -> bytes:
    model = _tiny()
    model.graph.ClearField("output")
    return model.SerializeToString()


def _runtime_error_in_onnxruntime() -> bytes:
    """A Reshape to a size that does not fit the data: onnxruntime only fails when it runs,
    after logging an ``[E:onnxruntime:...]`` line of its own."""
    model = _tiny()
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([7, -1], np.int64), "fuzz_shape"))
    last = graph.node[-1]
    last.output[0] = "relu_out"
    graph.node.append(helper.make_node("Reshape", ["relu_out", "fuzz_shape"], ["output"]))
    shape = graph.output[0].type.tensor_type
    shape.ClearField("shape")
    return model.SerializeToString()


def _bn_variance(value: float, epsilon: float | None = None) -> bytes:
    model = _tiny()
    node = _node(model, DENSE_BN)
    tensor = _init(model, node.input[4])
    array = numpy_helper.to_array(tensor).copy()
    array[0] = value
    _set_array(tensor, array)
    if epsilon is not None:
        _set_attribute(node, _attribute("epsilon", epsilon))
    return model.SerializeToString()


def _grouped_conv_attribute(name: str, value, kind: int | None = None) -> bytes:
    model = _tiny("tiny_repvgg_g4")
    node = _node(model, "/stage2/stage2.1/rbr_dense/conv/Conv")
    _set_attribute(node, _attribute(name, value, kind))
    return model.SerializeToString()


def _retagged_bn_scale(data_type: int) -> bytes:
    """A float32 BN scale whose type says FLOAT8: 32 bytes for 8 one-byte values."""
    model = _tiny()
    _init(model, "block.rbr_dense.bn.weight").data_type = data_type
    return model.SerializeToString()


def _dim_param(text: str) -> bytes:
    model = _tiny()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = text
    return model.SerializeToString()


def _identity_bn_zero_variance() -> bytes:
    """Variance 0 and epsilon 0 on every channel: the BN divides by zero, outputs are inf."""
    model = _tiny()
    node = _node(model, "/block/rbr_identity/BatchNormalization")
    tensor = _init(model, node.input[4])
    _set_array(tensor, np.zeros_like(numpy_helper.to_array(tensor)))
    _set_attribute(node, _attribute("epsilon", 0.0))
    return model.SerializeToString()


def _weight_values(value: float) -> bytes:
    model = _tiny()
    tensor = _init(model, DENSE_WEIGHT)
    array = numpy_helper.to_array(tensor).copy()
    array[0, 0, 1, 1] = value
    _set_array(tensor, array)
    return model.SerializeToString()


#: id → builder of the model bytes, one per bug an earlier fuzz run found (and a few kin).
KNOWN_CASES: dict[str, Callable[[], bytes]] = {
    "conv_weight_rank1": lambda: _reshaped_weight([576]),
    "conv_weight_rank2": lambda: _reshaped_weight([8, 72]),
    "conv_weight_scalar": lambda: _reshaped_weight(None),
    "conv_weight_6_out_channels_bn_8": lambda: _weight_channels(6),
    "bn_params_7_channels_conv_8": lambda: _bn_params_length(7),
    "mul_scale_5_channels_conv_8": lambda: _scale_length(5),
    "group_0": lambda: _conv_attribute("group", 0),
    "group_-1": lambda: _conv_attribute("group", -1),
    "group_3": lambda: _conv_attribute("group", 3),
    "group_8": lambda: _conv_attribute("group", 8),
    "group_2^31-1": lambda: _conv_attribute("group", 2**31 - 1),
    "pads_length_2": lambda: _conv_attribute("pads", [1, 1]),
    "pads_length_3": lambda: _conv_attribute("pads", [1, 1, 1]),
    "strides_empty": lambda: _conv_attribute("strides", [], AttributeProto.INTS),
    "weight_STRING": _string_weight,
    "checker_utf8_op_type": _invalid_utf8_op_type,
    "checker_utf8_node_name": _invalid_utf8_name,
    "checker_corrupt_varint": _corrupt_varint,
    "input_2^40_elements": lambda: _huge_input([1, 1, 2**20, 2**20]),
    "input_3x2^40_elements": lambda: _huge_input([1, 3, 2**20, 2**20]),
    "opset9_bn_empty_optional_outputs": _opset9_bn_empty_outputs,
    "ir_version_3": lambda: _ir_version(3, False),
    "ir_version_3_initializers_listed": lambda: _ir_version(3, True),
    "ir_version_2": lambda: _ir_version(2, True),
    "sparse_initializer_weight": lambda: _sparse_weight(False),
    "sparse_initializer_bn_scale": lambda: _sparse_weight(False, "block.rbr_dense.bn.weight"),
    "sparse_constant_weight": lambda: _sparse_weight(True),
    "float16_model_float32_bn": lambda: _float16_model(True),
    "float16_model": lambda: _float16_model(False),
    "no_graph_outputs": _no_outputs,
    "onnxruntime_runtime_error_log": _runtime_error_in_onnxruntime,
    "bn_variance_negative": lambda: _bn_variance(-1.0),
    "bn_variance_0_epsilon_0": lambda: _bn_variance(0.0, 0.0),
    "weight_1e38_overflow": lambda: _weight_values(3e38),
    "weight_nan": lambda: _weight_values(math.nan),
    "weight_inf": lambda: _weight_values(math.inf),
    # Kin found by the seeded cases (fz0.108, fz0.322, fz0.154; and a dim name with a newline).
    "grouped_conv_dilations_empty": lambda: _grouped_conv_attribute(
        "dilations", [], AttributeProto.INTS
    ),
    "bn_scale_retagged_FLOAT8E4M3FN": lambda: _retagged_bn_scale(TensorProto.FLOAT8E4M3FN),
    "identity_bn_variance_0_epsilon_0": _identity_bn_zero_variance,
    "input_dim_param_with_newline": lambda: _dim_param("h\nw"),
}


# ---- big and deep graphs ---------------------------------------------------------------------


def chain_model(length: int) -> onnx.ModelProto:
    """``length`` nodes in one chain: Relu, Identity, Add(previous, x), repeated."""
    nodes = []
    previous = "x"
    for i in range(length):
        out = f"t{i}"
        kind = i % 3
        if kind == 0:
            nodes.append(helper.make_node("Relu", [previous], [out], name=f"relu{i}"))
        elif kind == 1:
            nodes.append(helper.make_node("Identity", [previous], [out], name=f"id{i}"))
        else:
            nodes.append(helper.make_node("Add", [previous, "x"], [out], name=f"add{i}"))
        previous = out
    nodes.append(helper.make_node("Identity", [previous], ["y"], name="last"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: appending it to a serialized message adds it (a
    repeated field) or merges it (a message field)."""
    key, size, out = (number << 3) | 2, len(payload), bytearray()
    for value in (key, size):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def nested_if_model(depth: int) -> bytes:
    """A fusable Conv+BN in the main graph, then ``depth`` Ifs nested in their then-branches;
    the innermost branch holds a Conv+BN of its own (which fuse must leave alone).

    Written as bytes: the Python protobuf copies a message by parsing it again, which refuses
    to nest past its depth limit (100 messages, about 30 Ifs) - as ``onnx.load`` does."""
    rng = np.random.default_rng(0)

    def conv_bn(x: str, out: str, prefix: str) -> tuple[list, list]:
        inits = [
            numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"{prefix}w"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), f"{prefix}g"),
            numpy_helper.from_array(rng.normal(size=4).astype(np.float32), f"{prefix}b"),
            numpy_helper.from_array(rng.normal(size=4).astype(np.float32), f"{prefix}m"),
            numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), f"{prefix}v"),
        ]
        nodes = [
            helper.make_node("Conv", [x, f"{prefix}w"], [f"{prefix}c"], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization",
                [f"{prefix}c", f"{prefix}g", f"{prefix}b", f"{prefix}m", f"{prefix}v"],
                [out],
            ),
        ]
        return nodes, inits

    def branch_output(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 8, 8])

    def if_node(d: int, out: str) -> bytes:
        """``If(cond)`` whose then-branch is level ``d``; its else-branch negates ``h``."""
        head = helper.make_node("If", ["cond"], [out], name=f"if{d}").SerializeToString()
        else_branch = helper.make_graph(
            [helper.make_node("Neg", ["h"], [f"e{d}"])], f"else{d}", [], [branch_output(f"e{d}")]
        )
        else_attribute = helper.make_attribute("else_branch", else_branch).SerializeToString()
        then_attribute = AttributeProto(name="then_branch", type=AttributeProto.GRAPH)
        then_bytes = then_attribute.SerializeToString() + _field(6, level(d))
        return head + _field(5, then_bytes) + _field(5, else_attribute)

    def level(d: int) -> bytes:
        out = f"y{d}"
        if d == depth:
            nodes, inits = conv_bn("h", out, f"inner{d}_")
            return helper.make_graph(
                nodes, f"level{d}", [], [branch_output(out)], inits
            ).SerializeToString()
        graph = helper.make_graph([], f"level{d}", [], [branch_output(out)])
        return graph.SerializeToString() + _field(1, if_node(d + 1, out))

    main_nodes, main_inits = conv_bn("x", "h", "main_")
    main_nodes.append(
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", 9, [], [True]))
    )
    graph = helper.make_graph(
        main_nodes,
        "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        main_inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # The main graph's If, appended to the graph field: protobuf merges the two.
    return model.SerializeToString() + _field(7, _field(1, if_node(1, "y")))


def subgraph_depth(model: onnx.ModelProto) -> int:
    """How many graphs deep the deepest subgraph of ``model`` is (0: none)."""

    def depth(graph: onnx.GraphProto) -> int:
        inner = [
            depth(a.g) for n in graph.node for a in n.attribute if a.type == AttributeProto.GRAPH
        ]
        return 1 + max(inner, default=0)

    return depth(model.graph) - 1


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one child process did."""

    command: str
    argv: list[str]
    code: int | None  # negative: killed by that signal; None: timed out
    seconds: float
    stdout: bytes
    stderr: bytes
    folder: Path
    timed_out: bool = False
    cpu: float | None = None  # CPU seconds of the child (fork runner only)

    @property
    def stderr_text(self) -> str:
        """stderr as text, without terminal colour codes (onnxruntime colours its log)."""
        text = self.stderr.decode("utf-8", errors="backslashreplace")
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    def describe(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.code is not None and self.code < 0:
            return f"killed by {_signal_name(-self.code)}"
        return f"exit {self.code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _limit_memory() -> None:
    import resource

    if MEMORY_LIMIT_BYTES > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TMPDIR", "TEMP", "TMP"):
        env[name] = str(tmp)
    return env


@dataclass(frozen=True)
class Outcome:
    """How a child process ended."""

    code: int | None  # negative: killed by that signal; None: timed out
    seconds: float
    timed_out: bool
    cpu: float | None = None


class Runner:
    """Runs CLI commands and comparisons in child processes (see the module docstring)."""

    mode = "spawn"

    def request(self, request: dict, folder: Path, timeout: float) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def cli(self, command: str, argv: list[str], folder: Path, timeout: float) -> Run:
        """``python -m repvgg_onnx *argv`` in ``folder/work`` with ``TMPDIR=folder/tmp``."""
        outcome = self.request({"kind": "cli", "argv": argv}, folder, timeout)
        return Run(
            command,
            argv,
            outcome.code,
            outcome.seconds,
            (folder / "stdout").read_bytes(),
            (folder / "stderr").read_bytes(),
            folder,
            outcome.timed_out,
            outcome.cpu,
        )

    def compare(self, in_path: Path, out_path: Path, folder: Path, timeout: float) -> dict:
        """:func:`compare_models` in a child; a crash says whether IN had run by then."""
        result_path = folder / "result.json"
        request = {
            "kind": "compare",
            "in": str(in_path),
            "out": str(out_path),
            "result": str(result_path),
            "marker": str(folder / "in_ran"),
        }
        outcome = self.request(request, folder, timeout)
        code, seconds, timed_out = outcome.code, outcome.seconds, outcome.timed_out
        if result_path.exists():
            return {**json.loads(result_path.read_text()), "cpu": outcome.cpu}
        in_ran = (folder / "in_ran").exists()
        stderr = (folder / "stderr").read_bytes().decode("utf-8", "backslashreplace").strip()
        how = (
            f"timed out after {seconds:.0f} s"
            if timed_out
            else f"killed by {_signal_name(-code)}"
            if code is not None and code < 0
            else f"exit {code} ({_last_line(stderr)})"
        )
        if not in_ran:
            return {"status": "skipped", "reason": f"onnxruntime on IN: {how}"}
        return {"status": "violation", "reason": f"onnxruntime on OUT: {how}"}


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


def _prepare_folder(folder: Path) -> None:
    for sub in ("work", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)


class SpawnRunner(Runner):
    """A fresh ``python -m repvgg_onnx`` (or ``python fuzz_cases.py --compare``) per request."""

    mode = "spawn"

    def request(self, request: dict, folder: Path, timeout: float) -> Outcome:
        _prepare_folder(folder)
        if request["kind"] == "cli":
            argv = [sys.executable, "-m", "repvgg_onnx", *request["argv"]]
        else:
            argv = [sys.executable, __file__, "--compare", json.dumps(request)]
        start = time.perf_counter()
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            process = subprocess.Popen(
                argv,
                cwd=folder / "work",
                env=_child_env(folder / "tmp"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=_limit_memory,
            )
            try:
                code = process.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code, timed_out = None, True
        return Outcome(code, time.perf_counter() - start, timed_out)


class ForkRunner(Runner):
    """Requests go to a zygote (``fuzz_cases.py --zygote``) that forks one child per request."""

    mode = "fork"

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
        )
        self._lock = threading.Lock()
        self._pending: dict[int, dict] = {}
        self._next = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self._submit({"kind": "ping"})
        if not ready["done"].wait(120) or ready["code"] != 0:
            self.close()
            raise ForkUnsafeError("importing repvgg_onnx.cli imports onnxruntime")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            with self._lock:
                entry = self._pending[message["id"]]
            if "pid" in message:
                entry["pid"] = message["pid"]
                entry["started"].set()
            if "code" in message:
                entry["code"] = message["code"]
                entry["cpu"] = message.get("cpu")
                entry["end"] = time.perf_counter()
                entry["done"].set()
        with self._lock:  # the zygote is gone: nobody will answer
            for entry in self._pending.values():
                entry.setdefault("code", -999)
                entry["started"].set()
                entry["done"].set()

    def _submit(self, request: dict) -> dict:
        entry = {"started": threading.Event(), "done": threading.Event()}
        with self._lock:
            self._next += 1
            request = {**request, "id": self._next}
            self._pending[self._next] = entry
            entry["start"] = time.perf_counter()
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
        return entry

    def request(self, request: dict, folder: Path, timeout: float) -> Outcome:
        _prepare_folder(folder)
        request = {
            **request,
            "cwd": str(folder / "work"),
            "tmp": str(folder / "tmp"),
            "stdout": str(folder / "stdout"),
            "stderr": str(folder / "stderr"),
        }
        entry = self._submit(request)
        timed_out = not entry["done"].wait(timeout)
        if timed_out:
            entry["started"].wait(10)
            with contextlib.suppress(KeyError, ProcessLookupError):
                os.kill(entry["pid"], signal.SIGKILL)
            entry["done"].wait(30)
        code = None if timed_out else entry["code"]
        if code == -999:
            raise RuntimeError("the fuzz zygote died")
        seconds = entry.get("end", time.perf_counter()) - entry["start"]
        return Outcome(code, seconds, timed_out, None if timed_out else entry.get("cpu"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class ForkUnsafeError(RuntimeError):
    """The zygote cannot fork safely (onnxruntime is loaded in it)."""


def make_runner() -> Runner:
    """``$REPVGG_FUZZ_EXEC``: ``fork`` (the default where there is fork) or ``spawn``. A zygote
    that cannot fork safely falls back to ``spawn``."""
    mode = os.environ.get("REPVGG_FUZZ_EXEC", "fork" if hasattr(os, "fork") else "spawn")
    if mode not in ("fork", "spawn"):
        raise ValueError(f"REPVGG_FUZZ_EXEC={mode!r}: use fork or spawn")
    if mode == "fork":
        with contextlib.suppress(ForkUnsafeError):
            return ForkRunner()
    return SpawnRunner()


# ---- the zygote and its children --------------------------------------------------------------


def _send(message: dict) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")  # one write: no lock, no buffer


def _zygote() -> dict | None:
    """Serve requests until stdin closes; return the request in each forked child."""
    import repvgg_onnx.cli  # noqa: F401  (imported once: numpy, onnx, the passes, click)

    # onnxruntime starts a thread when imported, and a forked copy of it aborts or hangs; the
    # CLI imports it only when it makes a session, so each child imports its own.
    fork_safe = "onnxruntime" not in sys.modules
    gc.collect()
    gc.freeze()  # the children's collections skip (and do not copy) the zygote's objects
    children: dict[int, int] = {}
    pending = b""
    open_input = True
    while open_input or children:
        readable = []
        if open_input:
            readable, _, _ = select.select([0], [], [], 0.005 if children else 1.0)
        else:
            time.sleep(0.005)
        if readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                open_input = False
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                if request["kind"] == "ping":
                    _send({"id": request["id"], "code": 0 if fork_safe else 1})
                    continue
                pid = os.fork()
                if pid == 0:
                    return request
                children[pid] = request["id"]
                _send({"id": request["id"], "pid": pid})
        while children:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            request_id = children.pop(pid, None)
            if request_id is not None:
                code = os.waitstatus_to_exitcode(status)
                _send({"id": request_id, "code": code, "cpu": usage.ru_utime + usage.ru_stime})
    return None


def _enter_child(request: dict) -> None:
    """Become the process ``python -m repvgg_onnx`` would be: files, folder, TMPDIR, limits."""
    _limit_memory()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = request["tmp"]
    tempfile.tempdir = None  # re-read TMPDIR
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_cli_child(request: dict) -> None:
    """``python -m repvgg_onnx``: the same argv; exceptions and SystemExit propagate to the
    interpreter, which prints a traceback (exit 1) or exits with the code, running atexit."""
    import repvgg_onnx

    main_module = sys.modules["__main__"]
    main_module.__package__ = "repvgg_onnx"  # click names the program "python -m repvgg_onnx"
    sys.path[0] = os.getcwd()  # python -m puts the working folder first, not tests/
    sys.argv = [str(Path(repvgg_onnx.__file__).with_name("__main__.py")), *request["argv"]]
    from repvgg_onnx.cli import main

    main()


# ---- the comparison oracle ------------------------------------------------------------------

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def compare_models(in_path: str, out_path: str, marker: str | None = None, seed: int = 0) -> dict:
    """Does OUT compute what IN computes, in onnxruntime (optimizations off) on seeded random
    inputs? ``{"status": "passed" | "skipped" | "violation", "reason": ...}``; ``skipped`` when
    onnxruntime cannot run IN at all."""
    import onnxruntime as ort

    try:
        onnx.load(out_path)
    except Exception as error:
        return {"status": "violation", "reason": f"OUT does not load: {_first_line(error)}"}

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    providers = ["CPUExecutionProvider"]
    rng = np.random.default_rng(seed)
    try:
        reference = ort.InferenceSession(in_path, options, providers=providers)
        feeds = {}
        for value in reference.get_inputs():
            dims = [d if isinstance(d, int) and d > 0 else 1 for d in value.shape]
            if value.type not in _ORT_TYPES:
                return {"status": "skipped", "reason": f"IN input of type {value.type}"}
            if math.prod(dims) > MAX_COMPARE_ELEMENTS:
                return {"status": "skipped", "reason": f"IN input of shape {dims} is too large"}
            dtype = _ORT_TYPES[value.type]
            if np.issubdtype(dtype, np.floating):
                feeds[value.name] = rng.standard_normal(dims).astype(dtype)
            elif dtype is np.bool_:
                feeds[value.name] = rng.random(dims) < 0.5
            else:
                feeds[value.name] = rng.integers(0, 4, dims).astype(dtype)
        names = [o.name for o in reference.get_outputs()]
        expected = dict(zip(names, reference.run(names, feeds), strict=True))
    except Exception as error:
        return {"status": "skipped", "reason": f"onnxruntime cannot run IN: {_first_line(error)}"}
    if marker:
        Path(marker).touch()
    try:
        fused = ort.InferenceSession(out_path, options, providers=providers)
        fused_inputs = [value.name for value in fused.get_inputs()]
        missing = [name for name in fused_inputs if name not in feeds]
        if missing:
            return {"status": "violation", "reason": f"OUT needs inputs IN lacks: {missing}"}
        fused_names = [o.name for o in fused.get_outputs()]
        if fused_names != names:
            return {
                "status": "violation",
                "reason": f"OUT's outputs {fused_names} are not IN's {names}",
            }
        actual = dict(
            zip(names, fused.run(names, {n: feeds[n] for n in fused_inputs}), strict=True)
        )
    except Exception as error:
        return {
            "status": "violation",
            "reason": f"onnxruntime cannot run OUT: {_first_line(error)}",
        }
    for name in names:
        problem = _disagreement(np.asarray(expected[name]), np.asarray(actual[name]))
        if problem:
            return {"status": "violation", "reason": f"output {name!r}: {problem}"}
    return {"status": "passed", "reason": ""}


def _disagreement(expected: np.ndarray, actual: np.ndarray) -> str | None:
    if expected.shape != actual.shape:
        return f"shape {list(actual.shape)} instead of {list(expected.shape)}"
    if expected.dtype != actual.dtype:
        return f"type {actual.dtype} instead of {expected.dtype}"
    if not np.issubdtype(expected.dtype, np.floating):
        return None if np.array_equal(expected, actual) else "values differ"
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    if not np.array_equal(np.isnan(e), np.isnan(a)):
        return f"NaN in {int(np.isnan(a).sum())} places instead of {int(np.isnan(e).sum())}"
    infinite = np.isinf(e) | np.isinf(a)
    if not np.array_equal(e[infinite], a[infinite]):
        return "infinities differ"
    finite = np.isfinite(e) & np.isfinite(a)
    if not finite.any():
        return None
    scale = float(np.abs(e[finite]).max()) or 1.0
    error = float(np.abs(e[finite] - a[finite]).max())
    if error > RTOL * scale:
        return f"differs by {error:.3g} (allowed {RTOL:g} x max|IN| = {RTOL * scale:.3g})"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _run_compare_child(request: dict) -> None:
    result = compare_models(request["in"], request["out"], request.get("marker"))
    Path(request["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """Every run of one case, what each violated, and the comparison of a fused output."""

    runs: dict[str, Run] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (command, what)
    comparison: dict | None = None
    folder: Path | None = None

    def report(self, case_id: str) -> str:
        lines = [f"{case_id}: {len(self.violations)} violated propert(y/ies)"]
        for command, what in self.violations:
            lines.append(f"  {command}: {what}")
        lines.append("  runs:")
        for command, run in self.runs.items():
            shown = " | ".join(run.stderr_text.strip().splitlines()[:3])[:400]
            lines.append(f"    {command}: {run.describe()} in {run.seconds:.2f} s; stderr: {shown}")
        if self.comparison is not None:
            lines.append(f"  comparison: {self.comparison}")
        if self.folder is not None:
            lines.append(f"  files: {self.folder}/<command>/work/{IN_NAME}")
        return "\n".join(lines)

    def summary(self) -> dict:
        return {
            "runs": {
                c: {
                    "result": r.describe(),
                    "code": r.code,
                    "seconds": round(r.seconds, 3),
                    "cpu": None if r.cpu is None else round(r.cpu, 3),
                    "stderr": r.stderr_text[:2000],
                    "stdout_bytes": len(r.stdout),
                }
                for c, r in self.runs.items()
            },
            "violations": self.violations,
            "comparison": self.comparison,
        }


def check_run(run: Run, in_bytes: bytes, allowed_codes: Sequence[int] = (0, 1, 2)) -> list[str]:
    """What ``run`` violated: exit code, stderr, files written, input changed."""
    problems = []
    if run.timed_out:
        problems.append(f"timed out after {run.seconds:.0f} s")
    elif run.code not in allowed_codes:
        problems.append(f"{run.describe()} (allowed: {', '.join(map(str, allowed_codes))})")
    text = run.stderr_text
    lines = text.strip("\n").splitlines()
    if "Traceback" in text:
        problems.append("traceback on stderr")
    if len(lines) > 1:
        problems.append(f"{len(lines)} lines on stderr")
    foreign = [line for line in lines if not line.startswith(TOOL_STDERR_PREFIXES)]
    if foreign:
        problems.append(f"stderr line not from the tool: {foreign[0][:160]!r}")
    work = run.folder / "work"
    if (work / IN_NAME).read_bytes() != in_bytes:
        problems.append("IN was modified")
    if run.command == "fuse" and run.code != 0:
        written = [n for n in (OUT_NAME, OUT_NAME + ".data") if (work / n).exists()]
        if written:
            problems.append(f"wrote {', '.join(written)} on {run.describe()}")
    left = sorted(p.name for p in work.iterdir() if p.name not in ALLOWED_FILES[run.command])
    if left:
        problems.append(f"left files next to IN: {left}")
    temp = sorted(
        p.name for p in (run.folder / "tmp").iterdir() if p.name not in ONNXRUNTIME_TMP_FILES
    )
    if temp:
        problems.append(f"left files in TMPDIR: {temp}")
    return problems


def argv_of(command: str) -> list[str]:
    return {
        "fuse": ["fuse", IN_NAME, OUT_NAME],
        "inspect": ["inspect", IN_NAME],
        "verify": ["verify", IN_NAME, IN_NAME],
        "diff": ["diff", IN_NAME, IN_NAME],
    }[command]


def run_case(
    runner: Runner,
    data: bytes,
    base: Path,
    commands: Sequence[str] = COMMANDS,
    timeout: float = COMMAND_TIMEOUT,
    fuse_codes: Sequence[int] = (0, 1, 2),
) -> CaseResult:
    """Every command on ``data``, at once, each in ``base/<command>``; then the properties,
    and for a fuse that exits 0, the comparison of OUT with IN."""
    result = CaseResult(folder=base)
    for command in commands:
        _prepare_folder(base / command)
        (base / command / "work" / IN_NAME).write_bytes(data)
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        futures = {
            command: pool.submit(runner.cli, command, argv_of(command), base / command, timeout)
            for command in commands
        }
        result.runs = {command: future.result() for command, future in futures.items()}
    for command, run in result.runs.items():
        allowed = fuse_codes if command == "fuse" else (0, 1, 2)
        result.violations.extend((command, p) for p in check_run(run, data, allowed))
    fuse = result.runs.get("fuse")
    if fuse is not None and fuse.code == 0 and not fuse.timed_out:
        work = base / "fuse" / "work"
        if not (work / OUT_NAME).exists():
            result.violations.append(("fuse", "exit 0 but OUT was not written"))
        else:
            result.comparison = runner.compare(
                work / IN_NAME, work / OUT_NAME, base / "compare", timeout
            )
            if result.comparison["status"] == "violation":
                result.violations.append(
                    ("fuse", f"OUT disagrees with IN: {result.comparison['reason']}")
                )
    return result


def log_result(case_id: str, mutations: Sequence[str], result: CaseResult) -> None:
    """Append one JSON line per case to ``$REPVGG_FUZZ_LOG`` (when set)."""
    path = os.environ.get("REPVGG_FUZZ_LOG")
    if not path:
        return
    entry = {"id": case_id, "mutations": list(mutations), **result.summary()}
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        _request = _zygote()
        if _request is None:
            sys.exit(0)
        _enter_child(_request)
        if _request["kind"] == "cli":
            _run_cli_child(_request)  # SystemExit and exceptions reach the interpreter
        else:
            _run_compare_child(_request)
    elif sys.argv[1:2] == ["--compare"]:
        _run_compare_child(json.loads(sys.argv[2]))
    elif sys.argv[1:2] == ["known"]:  # python tests/fuzz_cases.py known NAME OUT.onnx
        Path(sys.argv[3]).write_bytes(KNOWN_CASES[sys.argv[2]]())
    else:  # python tests/fuzz_cases.py SEED INDEX OUT.onnx
        _case = fuzz_case(int(sys.argv[1]), int(sys.argv[2]))
        Path(sys.argv[3]).write_bytes(_case.data)
        print(_case.id)
