"""The weight math of re-parameterization, as pure numpy (float64 inside); no ONNX, no graphs.

``form`` states the questions every normal form answers (channels, compose, sum, cost, the
nodes that compute it as plain data, describe); each form answers them in its own module:
``affine_conv`` (the normal form every branch reduces to: kernel, bias, strides, dilations,
pads, groups — a matrix when it has no spatial dims — with its BN folding and composition),
``channel_affine`` (a per-channel map) and ``transposed_conv``. ``conv_merge`` sums affine
convs of one input; ``linear_forms`` composes and sums any forms by asking them; ``evolve``
copies the frozen records planning makes by the ten thousand.
"""
