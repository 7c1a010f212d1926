"""``python -m repvgg_onnx`` runs the CLI."""

from repvgg_onnx.cli import main

main()
