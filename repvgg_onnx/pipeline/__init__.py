"""The passes applied to a model: ModelProto in, ModelProto and a report out.

``pass_fixpoint`` orders the passes and runs them to a fixpoint on a graphsurgeon graph;
``fuse_model`` crosses a model into a graph, runs them and crosses back; ``function_inlining``
inlines the local functions whose bodies hold something to fuse; ``constant_folding`` gives
the constant-folding pass onnxruntime as its evaluator.
"""
