"""Models in and out of files: loading with the checker, external data (memory-mapped),
path safety, atomic fsynced writes, size limits; and a model's skeleton (its graph without
the bytes of its large constants), which checks and shape inference read instead of the whole.

The layers above use what this package exports (``from repvgg_onnx import io``;
``io.load_model``, ``io.save_model``); its modules know nothing about graphs or passes.
"""

from repvgg_onnx.io.atomic_files import check_output_path, save_file, save_text
from repvgg_onnx.io.load import (
    load_model,
    model_file_size,
    point_at,
    read_mapped_data,
    self_contained,
)
from repvgg_onnx.io.model_tensors import needs_external_data
from repvgg_onnx.io.save import StagedModel, copy_without_initializers, save_model
from repvgg_onnx.io.text_fields import text_errors

__all__ = [
    "StagedModel",
    "check_output_path",
    "copy_without_initializers",
    "load_model",
    "model_file_size",
    "needs_external_data",
    "point_at",
    "read_mapped_data",
    "save_file",
    "save_model",
    "save_text",
    "self_contained",
    "text_errors",
]
