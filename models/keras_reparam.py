"""The deploy form of a :mod:`models.keras_blocks` spec, in numpy (float64 math, float32 weights).

Written independently of the tool under test (no ``repvgg_onnx`` import): this is the reference
its fusion of a tf2onnx export is compared with.

Kernels are in Keras layout (``[kh, kw, C_in, C_out]``, depthwise ``[kh, kw, C, 1]``). A branch
becomes ``(kernel, bias)`` of an affine conv of the block input; the branches of a block are
placed on the main (largest) kernel's grid and summed.

Placement under TensorFlow ``SAME`` padding. Along one axis of size ``n`` with stride ``s`` and
kernel ``k``, the output has ``⌈n/s⌉`` elements and the conv pads ``p = ⌊t/2⌋`` before, with
``t = max((⌈n/s⌉ − 1)·s + k − n, 0)``; output ``o`` reads input ``s·o − p + j`` at tap ``j``. A
branch of kernel ``k'`` (pad ``p'``) reads ``s·o − p' + j'``, which is the main kernel's tap
``j = j' + p − p'``: the branch kernel goes at offset ``p − p'``. Every branch has the same
stride, hence the same output size, so the sum is exact iff ``0 ≤ p − p'`` and
``p − p' + k' ≤ k``. With ``k = 3``: stride 1 gives ``p = 1``, a 1x1 (``p' = 0``) at the centre;
stride 2 on an even ``n`` gives ``t = 1``, ``p = 0``, so the 1x1 goes on the top-left tap, not
the centre.
"""

from __future__ import annotations

import math

import numpy as np

from models.keras_blocks import BatchNorm, Block, Conv, Layer, Net

Branch = tuple[np.ndarray, np.ndarray]
"""Float64 ``(kernel, bias)`` of an affine conv of a block's input."""


class PlacementError(ValueError):
    """A branch does not lie on the main kernel's grid."""


def same_begin_pad(size: int, kernel: int, stride: int) -> int:
    """TensorFlow ``SAME``'s padding before the input along one axis of ``size``."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2


def bn_scale_shift(bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """``BN(x) = scale·x + shift``: ``scale = γ/√(var + eps)``, ``shift = β − μ·scale``."""
    scale = bn.gamma.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps)
    return scale, bn.beta.astype(np.float64) - bn.mean.astype(np.float64) * scale


def conv_branch(conv: Conv) -> Branch:
    """``BN(conv(x) + b)`` as ``(kernel·scale, (b − μ)·scale + β)``, scale on the output channel.

    The output channel is the last axis of a dense kernel and the input axis (2) of a
    depthwise kernel of multiplier 1.
    """
    kernel = conv.kernel.astype(np.float64)
    channels = kernel.shape[2] if conv.depthwise else kernel.shape[3]
    bias = np.zeros(channels) if conv.bias is None else conv.bias.astype(np.float64)
    if conv.bn is None:
        return kernel, bias
    scale, shift = bn_scale_shift(conv.bn)
    per_output = scale.reshape(1, 1, -1, 1) if conv.depthwise else scale
    return kernel * per_output, bias * scale + shift


def identity_branch(bn: BatchNorm, depthwise: bool) -> Branch:
    """``BN(x)`` as a 1x1 conv: ``diag(scale)`` (dense) or ``scale`` per channel (depthwise)."""
    scale, shift = bn_scale_shift(bn)
    kernel = scale.reshape(1, 1, -1, 1) if depthwise else np.diag(scale)[None, None]
    return kernel, shift


def place(kernel: np.ndarray, size: tuple[int, int], offsets: tuple[int, int]) -> np.ndarray:
    """``kernel`` in a zero kernel of spatial ``size``, its tap ``(0, 0)`` at ``offsets``."""
    (kh, kw), (oh, ow) = kernel.shape[:2], offsets
    if oh < 0 or ow < 0 or oh + kh > size[0] or ow + kw > size[1]:
        raise PlacementError(f"a {kh}x{kw} kernel at offset {offsets} leaves a {size} kernel")
    placed = np.zeros((*size, *kernel.shape[2:]))
    placed[oh : oh + kh, ow : ow + kw] = kernel
    return placed


def merge(branches: list[Branch], stride: int, input_hw: tuple[int, int]) -> Branch:
    """The sum of ``branches`` (all of stride ``stride`` on an ``input_hw`` input) as one conv
    of the largest kernel's size, each kernel placed by its ``SAME`` begin pads."""
    size = (max(k.shape[0] for k, _ in branches), max(k.shape[1] for k, _ in branches))
    main_pads = [same_begin_pad(n, k, stride) for n, k in zip(input_hw, size, strict=True)]
    kernel, bias = np.zeros((*size, *branches[0][0].shape[2:])), np.zeros_like(branches[0][1])
    for branch_kernel, branch_bias in branches:
        pads = [
            same_begin_pad(n, k, stride)
            for n, k in zip(input_hw, branch_kernel.shape[:2], strict=True)
        ]
        offsets = (main_pads[0] - pads[0], main_pads[1] - pads[1])
        kernel = kernel + place(branch_kernel, size, offsets)
        bias = bias + branch_bias
    return kernel, bias


def deploy_conv(branch: Branch, stride: int, depthwise: bool) -> Conv:
    """A float32 conv with bias holding ``branch``."""
    kernel, bias = branch
    return Conv(kernel.astype(np.float32), bias.astype(np.float32), stride, depthwise)


def deploy_block(block: Block, input_hw: tuple[int, int]) -> Layer:
    """One conv for a linear block; for ``relu_in_first_branch``, the first branch alone (BN
    folded) and every other term merged into one conv, still summed after the branch ReLU."""
    first = block.branches[0]
    stride, depthwise = first.stride, first.depthwise
    if any(b.stride != stride or b.depthwise != depthwise for b in block.branches):
        raise PlacementError("branches of one block differ in stride or depthwise-ness")
    terms = [conv_branch(branch) for branch in block.branches]
    if block.identity is not None:
        terms.append(identity_branch(block.identity, depthwise))
    if not block.relu_in_first_branch:
        return deploy_conv(merge(terms, stride, input_hw), stride, depthwise)
    rest = merge(terms[1:], stride, input_hw)
    return Block(
        (deploy_conv(terms[0], stride, depthwise), deploy_conv(rest, stride, depthwise)),
        relu_in_first_branch=True,
    )


def deploy(net: Net, input_hw: tuple[int, int]) -> Net:
    """The deploy form of ``net`` on a static ``input_hw`` input (SAME pads depend on it)."""
    layers: list[Layer] = []
    for layer in net:
        if isinstance(layer, Conv):
            branch = conv_branch(layer)
            layers.append(deploy_conv(branch, layer.stride, layer.depthwise))
            stride = layer.stride
        else:
            layers.append(deploy_block(layer, input_hw))
            stride = layer.branches[0].stride
        input_hw = (math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride))
    return tuple(layers)
