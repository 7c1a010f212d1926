"""RepGhost bottleneck (Chen et al., arXiv 2211.06088; github.com/ChengpengChen/RepGhost).

:class:`RepGhostModule` computes ``x1 = primary_conv(x)`` (1x1 conv-BN, then ReLU if ``relu``),
``x2 = cheap_operation(x1) + fusion_bn(x1)`` (depthwise 3x3 conv-BN plus a BN of ``x1``: the
re-parameterizable identity that replaces GhostNet's concat), then ReLU if ``relu``.
:class:`RepGhostBottleneck` (stride 1, no SE, identity shortcut) is
``ghost2(ghost1(x)) + x`` with ``ghost1`` the ReLU module and ``ghost2`` the linear one.

Deploy (official ``switch_to_deploy``): ``cheap_operation + fusion_bn`` become one depthwise 3x3
conv, ``W = W_cheap·s + I·s_f``, ``b = b_cheap + b_f``. Here the primary conv's BN is folded too
(one 1x1 conv with bias). The 1x1 and depthwise 3x3 convs are NOT composed into one dense 3x3
(9x the multiply-adds), and the residual Add stays.
"""

from __future__ import annotations

from torch import Tensor, nn

from models import reparam


class RepGhostModule(nn.Module):
    """``act(cheap_operation(x1) + fusion_bn(fusion_conv(x1)))``, ``x1 = primary_conv(x)``."""

    def __init__(self, inp: int, oup: int, relu: bool = True, dw_size: int = 3) -> None:
        super().__init__()
        self.use_relu = relu
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU(inplace=True) if relu else nn.Sequential(),
        )
        self.fusion_conv = nn.Sequential(nn.Identity())
        self.fusion_bn = nn.Sequential(nn.BatchNorm2d(oup))
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(oup, oup, dw_size, 1, dw_size // 2, groups=oup, bias=False),
            nn.BatchNorm2d(oup),
        )
        self.relu = nn.ReLU(inplace=False) if relu else nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        for conv, bn in zip(self.fusion_conv, self.fusion_bn, strict=True):
            x2 = x2 + bn(conv(x1))
        return self.relu(x2)

    def deploy(self) -> nn.Sequential:
        """``primary (1x1, BN folded) → [ReLU] → cheap (dw kxk, fusion BN merged) → [ReLU]``.

        ``cheap``: ``W = W_c·s_c + pad(I₁ₓ₁·s_f)``, ``b = (β_c − μ_c·s_c) + (β_f − μ_f·s_f)``.
        """
        primary, bn = self.primary_conv[0], self.primary_conv[1]
        cheap_conv, cheap_bn = self.cheap_operation[0], self.cheap_operation[1]
        kernel, bias = reparam.fuse_bn(cheap_conv.weight, cheap_bn)
        size = (kernel.shape[2], kernel.shape[3])
        channels = kernel.shape[0]
        for bn_f in self.fusion_bn:
            id_kernel, id_bias = reparam.fuse_bn(reparam.identity_kernel(channels, channels), bn_f)
            kernel = kernel + reparam.pad_kernel(id_kernel, size)
            bias = bias + id_bias
        primary_conv = reparam.conv2d_from(*reparam.fuse_bn(primary.weight, bn), primary)
        cheap = reparam.conv2d_from(kernel, bias, cheap_conv)
        if self.use_relu:
            return nn.Sequential(primary_conv, nn.ReLU(), cheap, nn.ReLU())
        return nn.Sequential(primary_conv, cheap)


class RepGhostBottleneck(nn.Module):
    """``ghost2(ghost1(x)) + shortcut(x)``: stride 1, no SE, ``in == out`` (identity shortcut)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int) -> None:
        super().__init__()
        assert in_chs == out_chs, "only the identity-shortcut bottleneck is built"
        self.ghost1 = RepGhostModule(in_chs, mid_chs, relu=True)
        self.ghost2 = RepGhostModule(mid_chs, out_chs, relu=False)
        self.shortcut = nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        x = self.ghost1(x)
        x = self.ghost2(x)
        return x + self.shortcut(residual)
