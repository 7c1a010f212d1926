"""Training-time RepVGG-style PyTorch models, their ONNX export, and the committed fixtures.

Needs the ``export`` extra (torch, onnxscript); the ``repvgg_onnx`` package never imports it.
"""
