"""The installed distribution's version, for reports and ``--version``."""

from importlib import metadata

try:
    __version__ = metadata.version("repvgg-onnx")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
