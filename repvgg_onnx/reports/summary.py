"""What a model is, at a glance: inputs, outputs, opsets, op histogram, parameters, size."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import onnx

from repvgg_onnx.reports.fuse_report import ModelStats
from repvgg_onnx.verification.inputs import element_type_name, model_inputs


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass(frozen=True)
class ModelSummary:
    """The user-visible facts of a model; ``path`` is ``None`` for an in-memory model."""

    path: str | None
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_counts: dict[str, int]
    parameters: int
    size_bytes: int
    metadata: dict[str, str]

    @classmethod
    def of(cls, model: onnx.ModelProto, path: str | os.PathLike | None = None) -> ModelSummary:
        stats = ModelStats.of(model)
        return cls(
            path=None if path is None else os.fspath(path),
            ir_version=model.ir_version,
            producer=f"{model.producer_name} {model.producer_version}".strip(),
            opsets={opset.domain: opset.version for opset in model.opset_import},
            inputs=[tensor_info(value) for value in model_inputs(model)],
            outputs=[tensor_info(v) for v in model.graph.output],
            op_counts=stats.op_counts,
            parameters=stats.parameters,
            size_bytes=stats.size_bytes,
            metadata={prop.key: prop.value for prop in model.metadata_props},
        )

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor_type = value.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = element_type_name(tensor_type.elem_type).lower()
    shape: list[int | str | None] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in tensor_type.shape.dim
    ]
    return TensorInfo(value.name, dtype, shape)
