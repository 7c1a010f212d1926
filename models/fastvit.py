"""FastViT's re-parameterizable layers (Vasu et al., ICCV 2023; timm ``fastvit.py``).

- :class:`RepMixer` (token mixer): ``x + layer_scale(mixer(x) − norm(x))`` where ``mixer`` is a
  depthwise MobileOne block (kxk conv-BN + 1x1 conv-BN scale branch + identity BN, no
  activation) and ``norm`` the same block with neither conv branch (only the identity BN, as
  timm and apple/ml-fastvit build it: ``use_scale_branch=False, num_conv_branches=0``);
  ``layer_scale`` multiplies by ``gamma`` of shape ``(C, 1, 1)``. Deploy: one depthwise kxk conv,
  ``W = I + γ·(W_mixer − W_norm)``, ``b = γ·(b_mixer − b_norm)`` (timm ``RepMixer.reparameterize``).
- :class:`RepMixerBlock`: ``x = RepMixer(x); x + γ₂·ConvMlp(x)`` with ``ConvMlp = fc2(gelu(fc1(
  BN(dwconv7x7(x)))))``. Deploy: the mixer conv, the 7x7 conv with its BN folded, and fc2 with
  ``γ₂`` folded in (``W₂' = γ₂·W₂``: a per-channel Mul of a Conv output is part of the Conv's
  affine region; timm leaves it as a Mul).
- :class:`RepCPE` (conditional positional encoding): ``pe(x) + x`` with ``pe`` a depthwise 7x7 conv
  with bias. Deploy: the same conv with ``+1`` at each kernel centre.

The forward passes keep timm's arithmetic (the MobileOne sum starts from ``0 + identity``, then
``out += branch(x)``), so the exporters see what they see on the real model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models import reparam

MLP_RATIO = 3
"""Hidden width of ConvMlp per channel (FastViT-T8/T12/SA12 use 3)."""


class ConvNorm(nn.Module):
    """``bn(conv(x))``, bias-free conv with "same" padding (timm ``ConvNormAct``, no act)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 ``(W·s, β − μ·s)`` with ``s = γ/√(var + eps)``."""
        return reparam.fuse_bn(self.conv.weight, self.bn)


class DepthwiseMobileOne(nn.Module):
    """timm ``MobileOneBlock(C, C, k, group_size=1, use_act=False)``: sum of linear branches.

    ``Σ conv_kxk[i](x) + conv_scale(x) + identity(x)``, every conv depthwise with BN.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        num_conv_branches: int = 1,
        use_scale_branch: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.identity = nn.BatchNorm2d(channels)
        self.conv_kxk = (
            nn.ModuleList(
                ConvNorm(channels, kernel_size, channels) for _ in range(num_conv_branches)
            )
            if num_conv_branches > 0
            else None
        )
        self.conv_scale = ConvNorm(channels, 1, channels) if use_scale_branch else None

    def forward(self, x: Tensor) -> Tensor:
        identity_out = self.identity(x)
        scale_out: Tensor | int = 0
        if self.conv_scale is not None:
            scale_out = self.conv_scale(x)
        out = scale_out + identity_out
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out += branch(x)
        return out

    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 depthwise kxk ``(W, b)``: sum of the branches, 1x1 and identity centred."""
        size = (self.kernel_size, self.kernel_size)
        identity = reparam.identity_kernel(self.channels, self.channels, self.kernel_size)
        kernel, bias = reparam.fuse_bn(identity, self.identity)
        branches = [*(self.conv_kxk or []), *([self.conv_scale] if self.conv_scale else [])]
        for branch in branches:
            branch_kernel, branch_bias = branch.kernel_bias()
            kernel = kernel + reparam.pad_kernel(branch_kernel, size)
            bias = bias + branch_bias
        return kernel, bias


class LayerScale2d(nn.Module):
    """``x * gamma`` with a learned ``gamma`` of shape ``(C, 1, 1)`` (timm ``LayerScale2d``)."""

    def __init__(self, channels: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """``x + layer_scale(mixer(x) − norm(x))``; see the module docstring."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.norm = DepthwiseMobileOne(
            channels, kernel_size, num_conv_branches=0, use_scale_branch=False
        )
        self.mixer = DepthwiseMobileOne(channels, kernel_size)
        self.layer_scale = LayerScale2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def deploy(self) -> nn.Conv2d:
        """One depthwise conv: ``W = I + γ·(W_mixer − W_norm)``, ``b = γ·(b_mixer − b_norm)``."""
        mixer_kernel, mixer_bias = self.mixer.kernel_bias()
        norm_kernel, norm_bias = self.norm.kernel_bias()
        gamma = self.layer_scale.gamma.double().reshape(-1)
        identity = reparam.identity_kernel(self.channels, self.channels, self.kernel_size)
        kernel = identity + gamma.reshape(-1, 1, 1, 1) * (mixer_kernel - norm_kernel)
        bias = gamma * (mixer_bias - norm_bias)
        assert self.mixer.conv_kxk is not None
        return reparam.conv2d_from(kernel, bias, self.mixer.conv_kxk[0].conv)


class ConvMlp(nn.Module):
    """FastViT's convolutional FFN: ``fc2(act(fc1(BN(dwconv7x7(x)))))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvNorm(channels, 7, channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """``x = token_mixer(x); x + layer_scale(mlp(x))`` (timm ``RepMixerBlock``, no drop path)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.token_mixer = RepMixer(channels, kernel_size)
        self.mlp = ConvMlp(channels, MLP_RATIO * channels)
        self.layer_scale = LayerScale2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))

    def deploy(self) -> DeployedRepMixerBlock:
        """Mixer conv, 7x7 conv with BN folded, fc1, fc2 scaled: ``W₂' = γ₂·W₂, b₂' = γ₂·b₂``."""
        gamma = self.layer_scale.gamma.double().reshape(-1)
        fc2 = self.mlp.fc2
        assert fc2.bias is not None
        fc2_kernel = gamma.reshape(-1, 1, 1, 1) * fc2.weight.double()
        return DeployedRepMixerBlock(
            token_mixer=self.token_mixer.deploy(),
            conv=reparam.conv2d_from(*self.mlp.conv.kernel_bias(), self.mlp.conv.conv),
            fc1=self.mlp.fc1,
            fc2=reparam.conv2d_from(fc2_kernel, gamma * fc2.bias.double(), fc2),
        )


class DeployedRepMixerBlock(nn.Module):
    """:class:`RepMixerBlock` deployed: ``x = token_mixer(x); x + fc2(gelu(fc1(conv(x))))``."""

    def __init__(self, token_mixer: nn.Conv2d, conv: nn.Conv2d, fc1: nn.Conv2d, fc2: nn.Conv2d):
        super().__init__()
        self.token_mixer = token_mixer
        self.conv = conv
        self.fc1 = fc1
        self.act = nn.GELU()
        self.fc2 = fc2

    def forward(self, x: Tensor) -> Tensor:
        x = self.token_mixer(x)
        return x + self.fc2(self.act(self.fc1(self.conv(x))))


class RepCPE(nn.Module):
    """``pe(x) + x``, ``pe`` a depthwise 7x7 conv with bias (apple/ml-fastvit ``RepCPE``)."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.pe = nn.Conv2d(
            channels, channels, kernel_size, 1, kernel_size // 2, bias=True, groups=channels
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pe(x) + x

    def deploy(self) -> nn.Conv2d:
        """The same conv with the identity added: ``W' = W + I`` (1 at each kernel centre)."""
        channels, _, size, _ = self.pe.weight.shape
        identity = reparam.identity_kernel(channels, self.pe.groups, size)
        assert self.pe.bias is not None
        return reparam.conv2d_from(self.pe.weight.double() + identity, self.pe.bias, self.pe)
