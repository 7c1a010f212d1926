"""Does a model compute what another computes, in onnxruntime?

``inputs`` chooses what both are run on; ``sessions`` and ``isolation`` run onnxruntime (in a
child process, so a crash is an error); ``compare`` runs a model into saved outputs and
compares two runs per output with tolerances; ``golden`` keeps a run in an ``.npz``;
``localize`` finds the first tensor on which two models disagree. Nothing here knows how a
model was changed.
"""
