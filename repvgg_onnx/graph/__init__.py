"""The crossing between ``onnx.ModelProto`` and onnx-graphsurgeon, and what rides along it.

Import and export (fast paths with graphsurgeon's own calls as the fallback), weights detached
from protobuf while a graph is edited, the shapes the tool infers, model-local functions, the
``metadata_props`` keys written on fused nodes, and memory given back between phases.
``gs_versions`` is the only module that touches graphsurgeon's private attributes, each behind
a probe with a public-API fallback.
"""
