"""Training-time re-parameterizable blocks written for Keras, and their numpy deploy form.

A net is a tuple of layers, each followed by a ReLU; its weights are numpy arrays in Keras's
own layout (a ``Conv2D`` kernel is ``[kh, kw, C_in, C_out]``, a ``DepthwiseConv2D`` kernel
``[kh, kw, C, 1]``). The same spec builds a Keras 3 model (``keras``; tf2onnx writes its
``BatchNormalization`` as Mul/Add) or a Keras 2 model (``tf_keras`` with
``BatchNormalization(fused=True)``: ``FusedBatchNormV3``, an ONNX ``BatchNormalization``), and
:mod:`models.keras_reparam` turns it into the deploy spec (one conv per block) with numpy alone.
Every conv uses ``padding="same"``, as Keras users write it: TensorFlow's ``SAME`` pads
``⌊total/2⌋`` before and the rest after, so a stride-2 block on an even input pads only at the
end.

The four families (:data:`NETS`), on a ``1x16x16x3`` NHWC input:

- ``keras_repvgg``: stem → RepVGG (3x3 + 1x1 conv-BN + identity BN) → RepVGG stride 2 (3x3 +
  1x1 conv-BN, 8 → 16 channels) → RepVGG (16 channels, with identity);
- ``keras_acnet``: stem → ACNet (3x3 + 1x3 + 3x1 conv-BN) → ACNet;
- ``keras_mobileone``: stem → MobileOne depthwise (three dw 3x3 conv-BN + dw 1x1 conv-BN +
  identity BN) → MobileOne pointwise (two 1x1 conv-BN + identity BN);
- ``keras_relu_in_branch``: stem → ``relu(relu(BN(conv3x3(x))) + BN(conv1x1(x)))``, the negative
  case: the branch ReLU makes the sum non-linear, so the block must stay two convs.

Only :func:`build_keras` imports a Keras; the specs and their deploy form need numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

SEED = 0
"""Seed of every weight and BN statistic (:func:`build`)."""

INPUT_SHAPE = (1, 16, 16, 3)
"""NHWC input of every family (Keras's default layout)."""

CHANNELS = 8
EPSILONS = (1e-3, 1e-2, 1e-5)
"""BN epsilons, cycled in build order: Keras's default 1e-3 and two non-default ones."""


@dataclass(frozen=True)
class BatchNorm:
    """Eval-mode ``γ·(x − μ)/√(var + eps) + β`` per channel (float32 arrays)."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass(frozen=True)
class Conv:
    """A ``Conv2D`` (or ``DepthwiseConv2D``) with ``padding="same"``, then an optional BN.

    ``bias`` is ``None`` for a bias-free conv (the training-time branches).
    """

    kernel: np.ndarray
    bias: np.ndarray | None
    stride: int = 1
    depthwise: bool = False
    bn: BatchNorm | None = None


@dataclass(frozen=True)
class Block:
    """``relu(Σ branches(x) + identity(x))``; with ``relu_in_first_branch`` the first branch is
    ``relu(branch(x))`` (not linear: the block cannot become one conv)."""

    branches: tuple[Conv, ...]
    identity: BatchNorm | None = None
    relu_in_first_branch: bool = False


Layer = Conv | Block
Net = tuple[Layer, ...]
"""Layers in order, each followed by a ReLU."""


class WeightSource:
    """Seed-determined random weights and BN statistics (all float32)."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        self.batchnorms = 0

    def kernel(self, kh: int, kw: int, cin: int, cout: int) -> np.ndarray:
        """``N(0, 1/√fan_in)``, ``[kh, kw, cin, cout]``."""
        fan_in = kh * kw * (1 if cout == 1 else cin)
        return self.rng.normal(0, fan_in**-0.5, (kh, kw, cin, cout)).astype(np.float32)

    def batchnorm(self, channels: int) -> BatchNorm:
        """``μ ~ N(0.3, 0.5)``, ``var ~ U(0.2, 3)``, ``γ ~ U(0.5, 1.5)``, ``β ~ N(0, 0.5)``."""
        eps = EPSILONS[self.batchnorms % len(EPSILONS)]
        self.batchnorms += 1
        return BatchNorm(
            gamma=self.rng.uniform(0.5, 1.5, channels).astype(np.float32),
            beta=self.rng.normal(0, 0.5, channels).astype(np.float32),
            mean=self.rng.normal(0.3, 0.5, channels).astype(np.float32),
            var=self.rng.uniform(0.2, 3.0, channels).astype(np.float32),
            eps=eps,
        )

    def conv_bn(self, kernel: tuple[int, int], cin: int, cout: int, stride: int = 1) -> Conv:
        """A bias-free dense conv, then BN."""
        weights = self.kernel(*kernel, cin, cout)
        return Conv(weights, None, stride, bn=self.batchnorm(cout))

    def depthwise_bn(self, kernel: tuple[int, int], channels: int) -> Conv:
        """A bias-free depthwise conv (multiplier 1), then BN."""
        weights = self.kernel(*kernel, channels, 1)
        return Conv(weights, None, depthwise=True, bn=self.batchnorm(channels))

    def stem(self, cout: int = CHANNELS) -> Conv:
        """The stem: a 3x3 conv ``3 → cout`` with BN (tf2onnx folds the BN into it)."""
        return self.conv_bn((3, 3), INPUT_SHAPE[3], cout)


def repvgg_block(w: WeightSource, cin: int, cout: int, stride: int = 1) -> Block:
    """RepVGG: 3x3 + 1x1 conv-BN, plus an identity BN when ``stride == 1 and cin == cout``."""
    identity = w.batchnorm(cin) if stride == 1 and cin == cout else None
    branches = (w.conv_bn((3, 3), cin, cout, stride), w.conv_bn((1, 1), cin, cout, stride))
    return Block(branches, identity)


def keras_repvgg() -> Net:
    """Stem → RepVGG → RepVGG stride 2 (8 → 16, no identity) → RepVGG (3x3 + 1x1 + identity BN)."""
    w = WeightSource()
    c = CHANNELS
    return (
        w.stem(),
        repvgg_block(w, c, c),
        repvgg_block(w, c, 2 * c, stride=2),
        repvgg_block(w, 2 * c, 2 * c),
    )


def keras_acnet() -> Net:
    """Stem → ACNet block → ACNet block (3x3 + 1x3 + 3x1 conv-BN, ReLU)."""
    w = WeightSource()
    c = CHANNELS

    def acnet_block() -> Block:
        return Block(tuple(w.conv_bn(k, c, c) for k in ((3, 3), (1, 3), (3, 1))))

    return (w.stem(), acnet_block(), acnet_block())


def keras_mobileone() -> Net:
    """Stem → MobileOne depthwise (3 dw 3x3 + dw 1x1 conv-BN + identity BN) → MobileOne
    pointwise (2 1x1 conv-BN + identity BN), each then ReLU."""
    w = WeightSource()
    c = CHANNELS
    depthwise = Block(
        (*(w.depthwise_bn((3, 3), c) for _ in range(3)), w.depthwise_bn((1, 1), c)),
        w.batchnorm(c),
    )
    pointwise = Block(tuple(w.conv_bn((1, 1), c, c) for _ in range(2)), w.batchnorm(c))
    return (w.stem(), depthwise, pointwise)


def keras_relu_in_branch() -> Net:
    """Stem → ``relu(relu(BN(conv3x3(x))) + BN(conv1x1(x)))``: must not fuse (ReLU in a branch)."""
    w = WeightSource()
    c = CHANNELS
    block = Block((w.conv_bn((3, 3), c, c), w.conv_bn((1, 1), c, c)), relu_in_first_branch=True)
    return (w.stem(), block)


NETS: dict[str, Callable[[], Net]] = {
    "keras_repvgg": keras_repvgg,
    "keras_acnet": keras_acnet,
    "keras_mobileone": keras_mobileone,
    "keras_relu_in_branch": keras_relu_in_branch,
}
"""Builders of every family's training spec, by fixture directory name."""


def build(name: str) -> Net:
    """The training spec of family ``name`` (weights seeded with :data:`SEED`)."""
    return NETS[name]()


def iter_batchnorms(net: Net) -> Iterator[BatchNorm]:
    """Every BN of ``net``, in layer order."""
    for layer in net:
        convs = layer.branches if isinstance(layer, Block) else (layer,)
        yield from (conv.bn for conv in convs if conv.bn is not None)
        if isinstance(layer, Block) and layer.identity is not None:
            yield layer.identity


# ---- Keras models ------------------------------------------------------------------------------


def build_keras(net: Net, keras_major: int, batch: int | None = 1) -> Any:
    """``net`` as a functional Keras model, input ``input`` ``[batch, 16, 16, 3]`` (NHWC).

    ``keras_major`` 3 uses ``keras`` (BN written by tf2onnx as Mul/Add), 2 uses ``tf_keras``
    with ``BatchNormalization(fused=True)`` (``FusedBatchNormV3``). Layers get stable names
    (``l1_b0_conv``, ``l1_identity``, …) and the Keras session is cleared first, so the ONNX
    tensor names do not depend on what was built before in the process.
    """
    if keras_major == 3:
        import keras
    else:
        import tf_keras as keras
    keras.backend.clear_session()
    builder = _KerasBuilder(keras, fused_bn=keras_major == 2)
    x = inputs = keras.Input(INPUT_SHAPE[1:], batch_size=batch, name="input")
    for index, layer in enumerate(net):
        x = builder.layer(x, layer, f"l{index}")
    return keras.Model(inputs, x, name="net")


class _KerasBuilder:
    """Makes the Keras layers of one net and loads the spec's weights into them."""

    def __init__(self, keras: Any, fused_bn: bool) -> None:
        self.keras = keras
        self.fused_bn = fused_bn

    def layer(self, x: Any, layer: Layer, name: str) -> Any:
        layers = self.keras.layers
        if isinstance(layer, Conv):
            return layers.ReLU(name=f"{name}_relu")(self.conv(x, layer, name))
        terms = []
        for index, branch in enumerate(layer.branches):
            term = self.conv(x, branch, f"{name}_b{index}")
            if index == 0 and layer.relu_in_first_branch:
                term = layers.ReLU(name=f"{name}_b0_relu")(term)
            terms.append(term)
        if layer.identity is not None:
            terms.append(self.batchnorm(x, layer.identity, f"{name}_identity"))
        total = layers.Add(name=f"{name}_add")(terms)
        return layers.ReLU(name=f"{name}_relu")(total)

    def conv(self, x: Any, conv: Conv, name: str) -> Any:
        layers = self.keras.layers
        kh, kw = conv.kernel.shape[:2]
        common = {"strides": conv.stride, "padding": "same", "use_bias": conv.bias is not None}
        if conv.depthwise:
            keras_layer = layers.DepthwiseConv2D((kh, kw), name=f"{name}_conv", **common)
        else:
            filters = conv.kernel.shape[3]
            keras_layer = layers.Conv2D(filters, (kh, kw), name=f"{name}_conv", **common)
        y = keras_layer(x)
        weights = [conv.kernel] if conv.bias is None else [conv.kernel, conv.bias]
        keras_layer.set_weights(weights)
        return y if conv.bn is None else self.batchnorm(y, conv.bn, f"{name}_bn")

    def batchnorm(self, x: Any, bn: BatchNorm, name: str) -> Any:
        options = {"fused": True} if self.fused_bn else {}
        layer = self.keras.layers.BatchNormalization(epsilon=bn.eps, name=name, **options)
        y = layer(x)
        layer.set_weights([bn.gamma, bn.beta, bn.mean, bn.var])
        return y
