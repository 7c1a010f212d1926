"""repvgg-onnx: re-parameterize training-time multi-branch CNNs on their ONNX graphs.

>>> import repvgg_onnx
>>> result = repvgg_onnx.fuse("model.onnx")          # or an onnx.ModelProto
>>> result.report.to_text(), result.verification.passed
>>> result.save("model-deploy.onnx")
"""

from repvgg_onnx.api import FuseResult, FuseVerificationError, diff, fuse, inspect, verify
from repvgg_onnx.errors import (
    CheckFailedError,
    InputSpecError,
    ModelLoadError,
    ModelSaveError,
    ReparamError,
    UnsupportedModelError,
)
from repvgg_onnx.io import load_model, save_model
from repvgg_onnx.reports.diff import GraphDiff
from repvgg_onnx.reports.inspection import Inspection
from repvgg_onnx.reports.render.schema import report_schema
from repvgg_onnx.verification.compare import verify_models
from repvgg_onnx.verification.results import Localization, Verification

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
    "report_schema",
    "save_model",
    "verify",
    "verify_models",
]
from repvgg_onnx.version import __version__ as __version__
