"""The weight math of re-parameterization, as pure numpy (float64 inside); no ONNX, no graphs.

``affine_conv`` is the normal form every branch reduces to (an affine convolution: kernel,
bias, strides, dilations, pads, groups) with its BN folding, kernel placement and merge;
``linear_forms`` composes and sums the other forms a linear op can take (a per-channel affine
map, a transposed convolution, a matrix); ``evolve`` copies the frozen records planning makes
by the ten thousand.
"""
