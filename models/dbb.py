"""Diverse Branch Block (Ding et al., CVPR 2021; github.com/DingXiaoH/DiverseBranchBlock).

A training-time DBB sums four branches of its input, then applies ``nonlinear``:

- ``dbb_origin``: kxk conv-BN (padding k//2, the block's stride);
- ``dbb_1x1``: 1x1 conv-BN (the block's stride; present because ``groups < out_channels``);
- ``dbb_avg``: 1x1 conv → :class:`BNAndPadLayer` (BN, then pad k//2 with the BN's shift) →
  ``AvgPool2d(k, stride, padding=0)`` → BN;
- ``dbb_1x1_kxk``: :class:`IdentityBasedConv1x1` (``W + I``) → :class:`BNAndPadLayer` →
  kxk conv (padding 0, the block's stride) → BN.

Padding with the BN's shift ``β − μ·γ/σ`` instead of zeros is what makes the 1x1 → kxk and
1x1 → avg chains exactly one kxk conv. :meth:`DiverseBranchBlock.deploy` follows the official
``get_equivalent_kernel_bias`` (``transI_fusebn``, ``transIII_1x1_kxk``, ``transV_avg``,
``transVI_multiscale``, ``transII_addbranch``) in float64.

:class:`BNAndPadLayer` keeps the official forward: ``F.pad`` with zeros, then four in-place
slice assignments of the pad values. That is what both exporters have to translate (TorchScript
into ``index_put`` → ScatterND subgraphs, dynamo into ScatterND after functionalization).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import reparam


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int
) -> nn.Sequential:
    """``Sequential(conv=bias-free Conv2d, bn=BatchNorm2d)`` (official ``conv_bn``)."""
    branch = nn.Sequential()
    branch.add_module(
        "conv",
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
        ),
    )
    branch.add_module("bn", nn.BatchNorm2d(out_channels))
    return branch


class IdentityBasedConv1x1(nn.Conv2d):
    """A bias-free 1x1 conv whose effective kernel is ``weight + I``, built in every forward."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__(channels, channels, 1, stride=1, padding=0, groups=groups, bias=False)
        per_group = channels // groups
        id_value = torch.zeros(channels, per_group, 1, 1)
        index = torch.arange(channels)
        id_value[index, index % per_group] = 1.0
        self.id_tensor = id_value
        nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        kernel = self.weight + self.id_tensor.to(self.weight.device)
        return F.conv2d(
            x, kernel, None, stride=1, padding=0, dilation=self.dilation, groups=self.groups
        )

    def actual_kernel(self) -> Tensor:
        """Float64 ``weight + I``."""
        return self.weight.double() + self.id_tensor.double()


class BNAndPadLayer(nn.Module):
    """``BN(x)`` padded by ``pad_pixels`` on each side with the BN's per-channel shift.

    ``shift = β − μ·γ/√(var + eps)`` is what BN maps a zero to: the padded output equals BN
    applied to the zero-padded input, so a following conv sees a constant-padded affine input.
    """

    def __init__(self, pad_pixels: int, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad_pixels = pad_pixels

    def forward(self, x: Tensor) -> Tensor:
        output = self.bn(x)
        if self.pad_pixels > 0:
            bn = self.bn
            pad_values = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(
                bn.running_var + bn.eps
            )
            output = F.pad(output, [self.pad_pixels] * 4)
            pad_values = pad_values.view(1, -1, 1, 1)
            output[:, :, 0 : self.pad_pixels, :] = pad_values
            output[:, :, -self.pad_pixels :, :] = pad_values
            output[:, :, :, 0 : self.pad_pixels] = pad_values
            output[:, :, :, -self.pad_pixels :] = pad_values
        return output


class DiverseBranchBlock(nn.Module):
    """``nonlinear(dbb_origin(x) + dbb_1x1(x) + dbb_avg(x) + dbb_1x1_kxk(x))``; see the module doc.

    Only the ``groups < out_channels`` layout (all four branches, internal width of the 1x1→kxk
    branch = ``in_channels``, so its first conv is :class:`IdentityBasedConv1x1`) is built.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        assert groups < out_channels, "only the four-branch layout is built"
        padding = kernel_size // 2
        self.kernel_size = kernel_size
        self.groups = groups
        self.nonlinear = nn.ReLU()
        self.dbb_origin = conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.dbb_avg = nn.Sequential()
        self.dbb_avg.add_module(
            "conv", nn.Conv2d(in_channels, out_channels, 1, 1, 0, groups=groups, bias=False)
        )
        self.dbb_avg.add_module("bn", BNAndPadLayer(padding, out_channels))
        self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, padding=0))
        self.dbb_1x1 = conv_bn(in_channels, out_channels, 1, stride, 0, groups)
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(out_channels))
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module("idconv1", IdentityBasedConv1x1(in_channels, groups))
        self.dbb_1x1_kxk.add_module("bn1", BNAndPadLayer(padding, in_channels))
        self.dbb_1x1_kxk.add_module(
            "conv2",
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=False),
        )
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(out_channels))

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.dbb_origin(inputs)
        out += self.dbb_1x1(inputs)
        out += self.dbb_avg(inputs)
        out += self.dbb_1x1_kxk(inputs)
        return self.nonlinear(out)

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 ``(W, b)`` of the one kxk conv: the sum of the four branches' normal forms.

        ``origin = transI(W_o, BN_o)``; ``1x1 = transVI(transI(W_1, BN_1), k)``;
        ``1x1_kxk = transIII(transI(W_id + I, BN₁), transI(W₂, BN₂))``;
        ``avg = transIII(transI(W_a, BN_pad), transI(transV_avg, BN_avg))``.
        """
        size = (self.kernel_size, self.kernel_size)
        origin = reparam.fuse_bn(self.dbb_origin.conv.weight, self.dbb_origin.bn)
        k_1x1, b_1x1 = reparam.fuse_bn(self.dbb_1x1.conv.weight, self.dbb_1x1.bn)
        one_by_one = (reparam.pad_kernel(k_1x1, size), b_1x1)
        chain = self.dbb_1x1_kxk
        kxk_first = reparam.fuse_bn(chain.idconv1.actual_kernel(), chain.bn1.bn)
        kxk_second = reparam.fuse_bn(chain.conv2.weight, chain.bn2)
        one_by_one_kxk = reparam.compose_1x1_kxk(kxk_first, kxk_second, self.groups)
        out_channels = self.dbb_avg.avgbn.num_features
        avg = reparam.avg_kernel(out_channels, self.kernel_size, self.groups)
        avg_second = reparam.fuse_bn(avg, self.dbb_avg.avgbn)
        avg_first = reparam.fuse_bn(self.dbb_avg.conv.weight, self.dbb_avg.bn.bn)
        one_by_one_avg = reparam.compose_1x1_kxk(avg_first, avg_second, self.groups)
        branches = (origin, one_by_one, one_by_one_kxk, one_by_one_avg)
        kernels, biases = zip(*branches, strict=True)
        return torch.stack(kernels).sum(0), torch.stack(biases).sum(0)

    def deploy(self) -> nn.Sequential:
        """``Sequential(conv=dbb_reparam, nonlinear)``: one kxk conv with bias, then the ReLU."""
        kernel, bias = self.equivalent_kernel_bias()
        conv = reparam.conv2d_from(kernel, bias, self.dbb_origin.conv)
        return nn.Sequential(conv, self.nonlinear)
