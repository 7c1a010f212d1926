"""What two models are run on: input shapes, seeded random inputs, and the user's own arrays.

Errors here name no command-line flag: each carries a ``hint`` naming the value to give, and
the CLI says which option takes it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from repvgg_onnx.errors import InputSpecError, UnsupportedModelError, first_line

DEFAULT_BATCH = 1
#: Random inputs larger than this (per input) are refused rather than allocated.
MAX_INPUT_ELEMENTS = 1 << 28

ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}

_DIM_LIST = r"\d+(?:\s*[x,]\s*\d+)*"
_DIMS = re.compile(rf"\[\s*({_DIM_LIST})\s*\]|({_DIM_LIST})")


def parse_input_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["x:1x3x224x224"]`` → ``{"x": [1, 3, 224, 224]}``. Dims may also be written
    ``1,3,224,224`` or ``[1,3,224,224]`` (as onnx-simplifier and onnxslim take them); the name
    may contain colons; each name may appear once."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        match = _DIMS.fullmatch(dims.strip())
        if not sep or not name or match is None:
            raise InputSpecError(
                f"cannot read input shape '{spec}'; write it as NAME:DIMS, e.g. "
                "input:1x3x224x224 (or input:1,3,224,224)."
            )
        if name in shapes:
            raise InputSpecError(f"input '{name}' has two shapes; give each input one shape.")
        listed = match.group(1) or match.group(2)
        shapes[name] = [int(d) for d in re.split(r"\s*[x,]\s*", listed)]
    return shapes


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller must feed (not initializers listed as inputs)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, Sequence[int]] | None = None
) -> dict[str, list[int]]:
    """Concrete shapes for every input: ``overrides`` first, then static dims, then a batch of
    ``DEFAULT_BATCH`` for a dynamic first dim. Any other dynamic dim must be given."""
    overrides = dict(overrides or {})
    inputs = model_inputs(model)
    unknown = set(overrides) - {value.name for value in inputs}
    if unknown:
        names = ", ".join(repr(value.name) for value in inputs)
        raise InputSpecError(
            f"the model has no input named {sorted(unknown)[0]!r}; its inputs are {names}."
        )
    return {value.name: _input_shape(value, overrides.get(value.name)) for value in inputs}


def _input_shape(value: onnx.ValueInfoProto, override: Sequence[int] | None) -> list[int]:
    dims = value.type.tensor_type.shape.dim
    if override is not None:
        override = [int(d) for d in override]
        static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        fits = len(override) == len(static) and all(
            s is None or s == o for s, o in zip(static, override, strict=True)
        )
        if dims and not fits:
            raise InputSpecError(
                f"shape {'x'.join(map(str, override))} does not fit input '{value.name}' "
                f"of shape {_show_dims(dims)}."
            )
        return override
    shape = []
    for index, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif index == 0:
            shape.append(DEFAULT_BATCH)
        else:
            example = f"{value.name}:{_example_dims(dims)}"
            raise InputSpecError(
                f"input '{value.name}' has a dynamic dimension {index} "
                f"({dim.dim_param or '?'}); give its size, e.g. {example}.",
                hint=f"--input-shape {example}",
            )
    return shape


def _show_dims(dims) -> str:
    return "x".join(
        str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
    )


def _example_dims(dims) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else "N" for d in dims)


def element_type_name(elem_type: int) -> str:
    """``FLOAT``, ``FLOAT16``…, or ``999 (not an ONNX type)`` for a number ONNX does not
    define (the checker does not look at every type: a damaged file can hold any)."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"{elem_type} (not an ONNX type)"


def synthesize_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model_inputs(model):
        elem_type = value.type.tensor_type.elem_type
        dtype = ONNX_TO_NUMPY.get(elem_type)
        if dtype is None:
            raise UnsupportedModelError(
                f"input '{value.name}' has type {element_type_name(elem_type)}, "
                "for which no random data can be made; give your own inputs.",
                hint="--inputs data.npz, or --no-verify",
            )
        shape = list(shapes[value.name])
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise InputSpecError(
                f"input '{value.name}' of shape {'x'.join(map(str, shape))} has more than "
                f"{MAX_INPUT_ELEMENTS:,} elements; give a smaller shape for it.",
                hint="--input-shape",
            )
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[value.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def load_feeds(
    path: str | os.PathLike, model: onnx.ModelProto | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, keyed by input name; or of an ``.npy`` file, the one
    array of a model with one input."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise InputSpecError(f"{path}: file not found; check the inputs path.") from error
    except (OSError, ValueError) as error:
        raise InputSpecError(
            f"{path}: not a readable .npz or .npy file ({first_line(error)}); save the inputs "
            "with numpy.savez(path, input_name=array)."
        ) from error
    if isinstance(data, np.ndarray):
        names = [value.name for value in model_inputs(model)] if model is not None else []
        if len(names) != 1:
            raise InputSpecError(
                f"{path}: an .npy file holds one array, and the model has "
                f"{len(names) or 'several'} inputs; save them with "
                "numpy.savez(path, input_name=array)."
            )
        return {names[0]: data}
    with data:
        return {name: data[name] for name in data.files}


def check_feeds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` if they name exactly the model's inputs with fitting dtypes and shapes."""
    inputs = {value.name: value for value in model_inputs(model)}
    missing = [name for name in inputs if name not in feeds]
    extra = [name for name in feeds if name not in inputs]
    if missing or extra:
        raise InputSpecError(
            f"the inputs file does not match the model: missing {missing}, unexpected {extra}; "
            f"the model's inputs are {list(inputs)}."
        )
    for name, value in inputs.items():
        array = np.asarray(feeds[name])
        expected = ONNX_TO_NUMPY.get(value.type.tensor_type.elem_type)
        if expected is not None and array.dtype != np.dtype(expected):
            raise InputSpecError(
                f"input '{name}' in the inputs file is {array.dtype}, the model wants "
                f"{np.dtype(expected)}; convert it with array.astype(numpy.{np.dtype(expected)})."
            )
        _input_shape(value, list(array.shape))
    return {name: np.asarray(feeds[name]) for name in inputs}
