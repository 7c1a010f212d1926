"""repvgg-onnx: re-parameterize training-time multi-branch CNNs on their ONNX graphs.

>>> import repvgg_onnx
>>> result = repvgg_onnx.fuse("model.onnx")          # or an onnx.ModelProto
>>> result.report.to_text(), result.verification.passed
>>> result.save("model-deploy.onnx")
"""

from importlib import metadata

try:
    __version__ = metadata.version("repvgg-onnx")
except metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

from repvgg_onnx.api import FuseResult, FuseVerificationError, diff, fuse, inspect, verify
from repvgg_onnx.diff import GraphDiff
from repvgg_onnx.errors import (
    CheckFailedError,
    InputSpecError,
    ModelLoadError,
    ModelSaveError,
    ReparamError,
    UnsupportedModelError,
)
from repvgg_onnx.inspection import Inspection
from repvgg_onnx.io import load_model, save_model
from repvgg_onnx.report import Localization, Verification
from repvgg_onnx.verify import verify_models

__all__ = [
    "CheckFailedError",
    "FuseResult",
    "FuseVerificationError",
    "GraphDiff",
    "InputSpecError",
    "Inspection",
    "Localization",
    "ModelLoadError",
    "ModelSaveError",
    "ReparamError",
    "UnsupportedModelError",
    "Verification",
    "diff",
    "fuse",
    "inspect",
    "load_model",
    "save_model",
    "verify",
    "verify_models",
]
