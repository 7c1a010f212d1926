"""EfficientViM's gated residuals (Lee et al., CVPR 2025; github.com/mlvlab/EfficientViM).

An EfficientViM block keeps one learned gate logit per branch and channel, ``alpha`` of shape
``(branches, C)``, and computes every residual as ``x + s_i·(branch_i(x) − x)`` with
``s = sigmoid(alpha).view(branches, -1, 1, 1)``. :class:`GatedDepthwiseBlock` keeps two of the
real block's four branches: the depthwise 3x3 conv-BN (gate 0) and the FFN (gate 1,
``fc2(relu(fc1(x)))``, 1x1 conv-BNs); the HSM-SSD mixer and the second depthwise branch are left
out.

Deploy (timm ``EfficientViMBlock.fuse``): the depthwise branch becomes one depthwise conv,
``W = s₀·W_dw`` with ``1 − s₀`` added at each kernel centre, ``b = s₀·b_dw``. The FFN residual is
not affine in ``x`` and stays ``x + s₁·(ffn(x) − x)`` (Sub, Mul, Add), with ``s₁`` a constant.

The training export carries ``Sigmoid(alpha)`` → Reshape → Gather on constants (TorchScript does
not fold Sigmoid even with constant folding on); dynamo's optimizer folds it to a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models import reparam

FFN_RATIO = 4
"""FFN hidden width per channel (EfficientViM's ``mlp_ratio``)."""


class ConvLayer2d(nn.Module):
    """``act(norm(conv(x)))``: bias-free conv, BatchNorm2d, optional ReLU (EfficientViM)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int,
        padding: int = 0,
        groups: int = 1,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_dim, out_dim, kernel_size, padding=padding, groups=groups, bias=False
        )
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU() if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return x if self.act is None else self.act(x)

    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 conv-BN fold ``(W·s, β − μ·s)``."""
        return reparam.fuse_bn(self.conv.weight, self.norm)


class FFN(nn.Module):
    """``fc2(fc1(x))`` with ``fc1`` a 1x1 conv-BN-ReLU and ``fc2`` a 1x1 conv-BN."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.fc1 = ConvLayer2d(in_dim, dim, 1, relu=True)
        self.fc2 = ConvLayer2d(dim, in_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class GatedDepthwiseBlock(nn.Module):
    """``x = x + s₀·(dwconv(x) − x); x + s₁·(ffn(x) − x)``, ``s = sigmoid(alpha)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv1 = ConvLayer2d(dim, dim, 3, padding=1, groups=dim)
        self.ffn = FFN(dim, FFN_RATIO * dim)
        self.alpha = nn.Parameter(1e-4 * torch.ones(2, dim))

    def forward(self, x: Tensor) -> Tensor:
        alpha = torch.sigmoid(self.alpha).view(2, -1, 1, 1)
        x = x + alpha[0] * (self.dwconv1(x) - x)
        return x + alpha[1] * (self.ffn(x) - x)

    def deploy(self) -> DeployedGatedBlock:
        """Depthwise branch: ``W = s₀·W_dw + (1 − s₀)·I``, ``b = s₀·b_dw``; convs' BNs folded."""
        gates = torch.sigmoid(self.alpha.double())
        kernel, bias = self.dwconv1.kernel_bias()
        channels, _, size, _ = kernel.shape
        identity = reparam.identity_kernel(channels, channels, size)
        scale = gates[0].reshape(-1, 1, 1, 1)
        dw_kernel = scale * kernel + (1 - scale) * identity
        dwconv = reparam.conv2d_from(dw_kernel, gates[0] * bias, self.dwconv1.conv)
        fc1 = reparam.conv2d_from(*self.ffn.fc1.kernel_bias(), self.ffn.fc1.conv)
        fc2 = reparam.conv2d_from(*self.ffn.fc2.kernel_bias(), self.ffn.fc2.conv)
        return DeployedGatedBlock(dwconv, fc1, fc2, gates[1].float().reshape(-1, 1, 1))


class DeployedGatedBlock(nn.Module):
    """Deployed :class:`GatedDepthwiseBlock`: ``x = dwconv(x); x + g·(fc2(relu(fc1(x))) − x)``."""

    def __init__(self, dwconv: nn.Conv2d, fc1: nn.Conv2d, fc2: nn.Conv2d, gate: Tensor) -> None:
        super().__init__()
        self.dwconv = dwconv
        self.fc1 = fc1
        self.act = nn.ReLU()
        self.fc2 = fc2
        self.register_buffer("gate", gate)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dwconv(x)
        return x + self.gate * (self.fc2(self.act(self.fc1(x))) - x)
