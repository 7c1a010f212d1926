"""repvgg-onnx: re-parameterize training-time multi-branch CNNs on their ONNX graphs."""

__version__ = "0.1.0"
