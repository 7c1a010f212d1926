"""Synthetic RepVGG chains built with onnx alone (no torch): the scaling benchmark's models
(``benchmarks/bench.py``) and the external-data tests' (``tests/test_external_data.py``).

:func:`repvgg_chain` has the structure of ``tests/helpers.repvgg_chain`` (each block
``Relu(BN(Conv3x3(x)) + BN(Conv1x1(x)) + BN(x))``) with values drawn so that the activations
stay O(1)-O(10) through 16,000 blocks: conv weights ``N(0, 0.2 / sqrt(fan_in))``, and an
identity BN whose scale ``gamma / sqrt(var + eps)`` is about 0.97. The helper's
``N(0, 0.5)`` weights grow the activations by a constant factor per block, past float32 after
a few hundred blocks, and the fused model could then not be verified.

``store`` writes a tensor where it belongs: in the model (default), or appended to a data file
(:class:`DataFileStore`), so a model larger than the 2 GiB a protobuf can hold is built one
tensor at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
EPSILON = 1e-3
CONV_GAIN = 0.2
BUILDER_VERSION = 1
"""Bump when the values or the structure of a chain change: cached files are rebuilt."""

Store = Callable[[np.ndarray, str], TensorProto]


def in_memory(array: np.ndarray, name: str) -> TensorProto:
    return numpy_helper.from_array(array, name)


class DataFileStore:
    """Appends each array to one data file and returns an initializer pointing at it."""

    def __init__(self, file: BinaryIO, location: str) -> None:
        self.file = file
        self.location = location

    def __call__(self, array: np.ndarray, name: str) -> TensorProto:
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
        offset = self.file.tell()
        self.file.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.location),
            ("offset", offset),
            ("length", array.nbytes),
        ):
            tensor.external_data.add(key=key, value=str(value))
        return tensor


def weight_bytes(blocks: int, channels: int) -> int:
    """Bytes of float32 weights of :func:`repvgg_chain`: per block a 3x3 and a 1x1 conv
    (no bias) and three BNs of four vectors."""
    return 4 * blocks * (10 * channels * channels + 12 * channels)


def repvgg_chain(
    blocks: int, channels: int = 8, size: int = 8, seed: int = 0, store: Store = in_memory
) -> onnx.ModelProto:
    """``blocks`` RepVGG training blocks of ``channels`` channels on a ``1 x channels x size x
    size`` input (see the module docstring); ``3 * blocks + 2 * blocks + blocks + blocks``
    nodes: two Conv, three BatchNormalization, two Add and one Relu per block."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []

    def param(name: str, array: np.ndarray) -> str:
        initializers.append(store(np.asarray(array, np.float32), name))
        return name

    def batchnorm(x: str, name: str, scale: tuple[float, float]) -> str:
        var = rng.uniform(0.5, 2.0, channels)
        gamma = rng.uniform(*scale, channels) * np.sqrt(var + EPSILON)
        inputs = [
            param(f"{name}.gamma", gamma),
            param(f"{name}.beta", rng.normal(0, 0.1, channels)),
            param(f"{name}.mean", rng.normal(0, 0.1, channels)),
            param(f"{name}.var", var),
        ]
        nodes.append(helper.make_node("BatchNormalization", [x, *inputs], [name], epsilon=EPSILON))
        return name

    def conv(x: str, name: str, kernel: int) -> str:
        weight = rng.standard_normal((channels, channels, kernel, kernel), dtype=np.float32)
        weight *= np.float32(CONV_GAIN / np.sqrt(channels * kernel * kernel))
        pads = [kernel // 2] * 4
        nodes.append(helper.make_node("Conv", [x, param(f"{name}.w", weight)], [name], pads=pads))
        return name

    x = "x"
    for block in range(blocks):
        b = f"block{block}"
        dense = batchnorm(conv(x, f"{b}.conv3", 3), f"{b}.bn3", (0.5, 1.5))
        pointwise = batchnorm(conv(x, f"{b}.conv1", 1), f"{b}.bn1", (0.5, 1.5))
        identity = batchnorm(x, f"{b}.bn_id", (0.94, 1.0))
        nodes.append(helper.make_node("Add", [dense, pointwise], [f"{b}.sum"]))
        nodes.append(helper.make_node("Add", [f"{b}.sum", identity], [f"{b}.sum2"]))
        nodes.append(helper.make_node("Relu", [f"{b}.sum2"], [f"{b}.out"]))
        x = f"{b}.out"
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes,
        "repvgg_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def write_chain(path: Path, blocks: int, channels: int, size: int = 8, external: bool = False):
    """Build a chain and write it to ``path`` whole (via a partial file); with ``external``, its
    weights go to ``<path name>.data`` next to it, written one tensor at a time."""
    partial = path.with_name(path.name + ".partial")
    if external:
        data_path = path.with_name(path.name + ".data")
        with data_path.open("wb") as data:
            model = repvgg_chain(blocks, channels, size, store=DataFileStore(data, data_path.name))
    else:
        model = repvgg_chain(blocks, channels, size)
    partial.write_bytes(model.SerializeToString())
    partial.replace(path)
