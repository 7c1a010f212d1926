"""Float64 re-parameterization algebra shared by the family blocks' ``deploy()`` conversions.

Every function takes float32 module tensors and returns float64 tensors; only
:func:`conv2d_from` and :func:`linear_from` round to float32, once, when they build the deploy
module. A kernel is ``[C_out, C_in / groups, kh, kw]``; a "branch" is a ``(kernel, bias)`` pair
of an affine convolution of the block input.

:func:`deploy_copy` turns a training model into its deploy form: every submodule with a
``deploy()`` method is replaced by what that method returns.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Batchnorm = nn.BatchNorm1d | nn.BatchNorm2d


def bn_scale_shift(bn: Batchnorm) -> tuple[Tensor, Tensor]:
    """Eval ``BN(x) = scale·x + shift``: ``scale = γ/√(var + eps)``, ``shift = β − μ·scale``."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def fuse_bn(kernel: Tensor, bn: Batchnorm) -> tuple[Tensor, Tensor]:
    """``BN(conv(x, kernel))`` as one ``(kernel·scale[o], shift)`` (official ``transI_fusebn``)."""
    scale, shift = bn_scale_shift(bn)
    return kernel.double() * scale.reshape(-1, *[1] * (kernel.dim() - 1)), shift


def identity_kernel(channels: int, groups: int, size: int = 1) -> Tensor:
    """The ``size x size`` kernel of ``x -> x``: ``k[i, i % (channels/groups), c, c] = 1``."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, dtype=torch.float64)
    index = torch.arange(channels)
    kernel[index, index % per_group, size // 2, size // 2] = 1.0
    return kernel


def avg_kernel(channels: int, size: int, groups: int) -> Tensor:
    """``AvgPool2d(size)`` as a kernel: ``1/size²`` on the channel diagonal (``transV_avg``)."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, dtype=torch.float64)
    index = torch.arange(channels)
    kernel[index, index % per_group] = 1.0 / size**2
    return kernel


def pad_kernel(kernel: Tensor, size: tuple[int, ...]) -> Tensor:
    """Centre ``kernel`` in a zero ``size`` (odd sizes, ``transVI_multiscale``)."""
    pad_h = (size[0] - kernel.shape[2]) // 2
    pad_w = (size[1] - kernel.shape[3]) // 2
    return F.pad(kernel, [pad_w, pad_w, pad_h, pad_h])


def compose_1x1_kxk(
    first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor], groups: int
) -> tuple[Tensor, Tensor]:
    """``conv_k2(conv_1x1(x, k1) + b1) + b2`` as one kxk branch (official ``transIII_1x1_kxk``).

    Per group ``g``: ``k = conv2d(k2_g, k1_gᵀ)`` and ``b = Σ k2_g · b1_g + b2``. Exact only when the
    kxk conv sees ``b1`` (not zero) wherever it reads padding, as DBB's ``BNAndPadLayer`` ensures.
    """
    k1, b1 = first
    k2, b2 = second
    k1_width, k2_width = k1.shape[0] // groups, k2.shape[0] // groups
    kernels, biases = [], []
    for g in range(groups):
        k1_g = k1[g * k1_width : (g + 1) * k1_width]
        k2_g = k2[g * k2_width : (g + 1) * k2_width]
        b1_g = b1[g * k1_width : (g + 1) * k1_width]
        kernels.append(F.conv2d(k2_g, k1_g.permute(1, 0, 2, 3)))
        biases.append((k2_g * b1_g.reshape(1, -1, 1, 1)).sum((1, 2, 3)))
    return torch.cat(kernels), torch.cat(biases) + b2


def fold_input_bn(bn: Batchnorm, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``layer(BN(x))`` as one layer: ``W' = W·diag(scale)`` on inputs, ``b' = b + W·shift``.

    ``weight`` is ``[C_out, C_in, *k]`` (a dense conv) or ``[C_out, C_in]`` (a linear). Exact only
    if the layer never reads padding (a linear, or a 1x1 conv with padding 0): padding would see
    ``0`` where the folded layer assumes ``shift``.
    """
    scale, shift = bn_scale_shift(bn)
    w = weight.double()
    per_input = (1, -1, *[1] * (w.dim() - 2))
    base = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.double()
    return w * scale.reshape(per_input), base + (w * shift.reshape(per_input)).flatten(1).sum(1)


def conv2d_from(kernel: Tensor, bias: Tensor, like: nn.Conv2d) -> nn.Conv2d:
    """A float32 ``nn.Conv2d`` with bias holding ``(kernel, bias)``, with ``like``'s geometry."""
    out_ch, in_per_group, kh, kw = kernel.shape
    conv = nn.Conv2d(
        in_per_group * like.groups,
        out_ch,
        (kh, kw),
        stride=like.stride,
        padding=like.padding,
        dilation=like.dilation,
        groups=like.groups,
        bias=True,
    )
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv.eval()


def linear_from(weight: Tensor, bias: Tensor) -> nn.Linear:
    """A float32 ``nn.Linear`` with bias holding ``(weight, bias)``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear.eval()


def deploy_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` where each module with ``deploy()`` is replaced by its result.

    The search is top-down: a module that deploys is replaced whole, its children are not
    visited. ``model`` itself is left unchanged.
    """
    return _deploy(copy.deepcopy(model)).eval()


def _deploy(module: nn.Module) -> nn.Module:
    deploy = getattr(module, "deploy", None)
    if callable(deploy):
        with torch.no_grad():
            return deploy()
    for name, child in module.named_children():
        setattr(module, name, _deploy(child))
    return module
