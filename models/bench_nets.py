"""Full-size re-parameterizable networks for ``benchmarks/bench.py``, with PyTorch deploy forms.

- :func:`fastvit_t8`: a FastViT-T8 (Vasu et al., ICCV 2023; timm ``fastvit_t8``) with a RepCPE
  before stage 4: a MobileOne stem, RepMixer stages of widths (48, 96, 192, 384) and depths
  (2, 2, 4, 2) joined by MobileOne-style patch embeddings, a MobileOne final conv and a global
  pool + Linear head; GELU throughout; ``1x3x224x224 -> 1x1000``.
- :func:`mobileone_s0`: MobileOne-S0 (Vasu et al., CVPR 2023; timm ``mobileone_s0``): a
  stride-2 3x3 MobileOne stem, stages of widths (48, 128, 256, 1024) and depths (2, 8, 10, 1),
  each block a depthwise 3x3 then a pointwise 1x1 MobileOne conv, ``k = 4`` over-parameterized
  conv branches throughout, ReLU, global pool + Linear; ``1x3x224x224 -> 1x1000``.
- :func:`dbb_resnet18`: ResNet-18 with every 3x3 conv and the 7x7 stem conv a
  :class:`models.dbb.DiverseBranchBlock` (DBB paper, "DBB-ResNet-18"); ``1x3x224x224 -> 1x1000``.

Every block has a ``deploy()`` conversion built on :mod:`models.reparam` (float64 algebra,
float32 weights), so :func:`models.reparam.deploy_copy` gives the reference network. The blocks
new here are the general (any width, stride and groups) MobileOne conv and FastViT's
large-kernel patch-embedding conv, which :mod:`models.fastvit` and :mod:`models.families` only
have in their depthwise, stride-1 forms, and the 1x1 conv-BN of a ResNet shortcut.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from models import dbb, fastvit, reparam

INPUT_SHAPE = (1, 3, 224, 224)
NUM_CLASSES = 1000

FASTVIT_T8_WIDTHS = (48, 96, 192, 384)
FASTVIT_T8_LAYERS = (2, 2, 4, 2)
FASTVIT_FINAL_RATIO = 2
"""The final MobileOne conv doubles the last stage's width (timm ``cls_ratio=2.0``)."""

MOBILEONE_S0_STEM = 48
MOBILEONE_S0_WIDTHS = (48, 128, 256, 1024)
MOBILEONE_S0_LAYERS = (2, 8, 10, 1)
MOBILEONE_S0_BRANCHES = 4
"""timm ``mobileone_s0``: widths 64·(0.75, 1, 1, 2) and 64·0.75 for the stem, k = 4."""

RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_LAYERS = (2, 2, 2, 2)


class ConvBN(nn.Sequential):
    """``bn(conv(x))``, a bias-free conv with padding ``k // 2``; deploys to one conv with bias."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)

    def kernel_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 ``(W·s, β − μ·s)``."""
        return reparam.fuse_bn(self.conv.weight, self.bn)

    def deploy(self) -> nn.Conv2d:
        return reparam.conv2d_from(*self.kernel_bias(), self.conv)


def summed_conv(branches: list[tuple[Tensor, Tensor]], like: nn.Conv2d) -> nn.Conv2d:
    """One conv with ``like``'s geometry computing the sum of float64 ``(kernel, bias)`` terms,
    each kernel centred in ``like``'s kernel size."""
    size = like.kernel_size
    kernel = torch.stack([reparam.pad_kernel(k, size) for k, _ in branches]).sum(0)
    bias = torch.stack([b for _, b in branches]).sum(0)
    return reparam.conv2d_from(kernel, bias, like)


class MobileOneConv(nn.Module):
    """timm ``MobileOneBlock`` (no SE): ``act(Σ conv_kxk[i](x) + conv_scale(x) + identity(x))``.

    ``conv_kxk``: ``num_conv_branches`` kxk conv-BN; ``conv_scale``: a 1x1 conv-BN when
    ``kernel_size > 1``; ``identity``: a BN when ``in_ch == out_ch`` and ``stride == 1``. All
    share the block's stride and groups. Deploy: one kxk conv with bias, then ``act``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        num_conv_branches: int = 1,
        act: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.in_ch = in_ch
        self.groups = groups
        self.kernel_size = kernel_size
        self.conv_kxk = nn.ModuleList(
            ConvBN(in_ch, out_ch, kernel_size, stride, groups) for _ in range(num_conv_branches)
        )
        self.conv_scale = ConvBN(in_ch, out_ch, 1, stride, groups) if kernel_size > 1 else None
        self.identity = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_kxk[0](x)
        for branch in self.conv_kxk[1:]:
            out = out + branch(x)
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    def deploy(self) -> nn.Sequential:
        """``Sequential(conv, act)``: the branches summed into one kxk conv."""
        branches = [branch.kernel_bias() for branch in self.conv_kxk]
        if self.conv_scale is not None:
            branches.append(self.conv_scale.kernel_bias())
        if self.identity is not None:
            identity = reparam.identity_kernel(self.in_ch, self.groups, self.kernel_size)
            branches.append(reparam.fuse_bn(identity, self.identity))
        return nn.Sequential(summed_conv(branches, self.conv_kxk[0].conv), self.act)


class LargeKernelConv(nn.Module):
    """timm ``ReparamLargeKernelConv`` without activation: ``large(x) + small(x)``, a kxk and a
    3x3 conv-BN with the same stride and groups. Deploy: one kxk conv with bias."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int, groups: int, small: int = 3
    ) -> None:
        super().__init__()
        self.large_conv = ConvBN(in_ch, out_ch, kernel_size, stride, groups)
        self.small_conv = ConvBN(in_ch, out_ch, small, stride, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.large_conv(x) + self.small_conv(x)

    def deploy(self) -> nn.Conv2d:
        branches = [self.large_conv.kernel_bias(), self.small_conv.kernel_bias()]
        return summed_conv(branches, self.large_conv.conv)


class ClassifierHead(nn.Module):
    """Global average pool, flatten, Linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def patch_embed(in_ch: int, out_ch: int) -> nn.Sequential:
    """timm FastViT ``PatchEmbed``: 7x7 (+3x3) stride-2 conv, groups ``in_ch``, then a 1x1
    MobileOne conv with identity BN and GELU."""
    return nn.Sequential(
        LargeKernelConv(in_ch, out_ch, 7, stride=2, groups=in_ch),
        MobileOneConv(out_ch, out_ch, 1),
    )


def fastvit_t8(
    widths: tuple[int, ...] = FASTVIT_T8_WIDTHS,
    layers: tuple[int, ...] = FASTVIT_T8_LAYERS,
    cpe_stage: int | None = 3,
    num_classes: int = NUM_CLASSES,
) -> nn.Sequential:
    """FastViT-T8 (see the module docstring); ``cpe_stage``: the stage opened by a RepCPE."""
    first = widths[0]
    modules: dict[str, nn.Module] = {
        "stem": nn.Sequential(
            MobileOneConv(3, first, 3, stride=2),
            MobileOneConv(first, first, 3, stride=2, groups=first),
            MobileOneConv(first, first, 1),
        )
    }
    previous = first
    for index, (width, depth) in enumerate(zip(widths, layers, strict=True)):
        stage: list[nn.Module] = []
        if index > 0:
            stage.append(patch_embed(previous, width))
        if index == cpe_stage:
            stage.append(fastvit.RepCPE(width))
        stage += [fastvit.RepMixerBlock(width) for _ in range(depth)]
        modules[f"stage{index + 1}"] = nn.Sequential(*stage)
        previous = width
    final = FASTVIT_FINAL_RATIO * previous
    modules["final_conv"] = MobileOneConv(previous, final, 3, groups=previous)
    modules["head"] = ClassifierHead(final, num_classes)
    return nn.Sequential(OrderedDict(modules))


def mobileone_s0(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """MobileOne-S0 (see the module docstring): 5.3 M parameters in training form, 2.1 M
    deployed. Each stage opens with stride 2; a block is a depthwise kxk :class:`MobileOneConv`
    (scale branch, identity BN at stride 1) then a pointwise 1x1 one (identity BN when the
    width does not change)."""
    branches = MOBILEONE_S0_BRANCHES

    def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
        return MobileOneConv(in_ch, out_ch, kernel, stride, groups, branches, act=nn.ReLU)

    modules: dict[str, nn.Module] = {"stem": conv(3, MOBILEONE_S0_STEM, 3, stride=2)}
    previous = MOBILEONE_S0_STEM
    for index, (width, depth) in enumerate(
        zip(MOBILEONE_S0_WIDTHS, MOBILEONE_S0_LAYERS, strict=True)
    ):
        stage: list[nn.Module] = []
        for block in range(depth):
            stride = 2 if block == 0 else 1
            stage += [
                conv(previous, previous, 3, stride, groups=previous),
                conv(previous, width, 1),
            ]
            previous = width
        modules[f"stage{index + 1}"] = nn.Sequential(*stage)
    modules["head"] = ClassifierHead(previous, num_classes)
    return nn.Sequential(OrderedDict(modules))


def dbb_conv(in_ch: int, out_ch: int, kernel_size: int, stride: int, relu: bool) -> nn.Module:
    """A :class:`models.dbb.DiverseBranchBlock`, its ReLU replaced by identity if not ``relu``."""
    block = dbb.DiverseBranchBlock(in_ch, out_ch, kernel_size, stride)
    if not relu:
        block.nonlinear = nn.Identity()
    return block


class DBBBasicBlock(nn.Module):
    """ResNet ``BasicBlock``: ``relu(conv2(conv1(x)) + shortcut(x))``, both convs DBB 3x3
    (``conv1`` with the block's stride and a ReLU, ``conv2`` without); the shortcut is a 1x1
    conv-BN when the shape changes, else the identity."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = dbb_conv(in_ch, out_ch, 3, stride, relu=True)
        self.conv2 = dbb_conv(out_ch, out_ch, 3, 1, relu=False)
        self.shortcut: nn.Module = (
            ConvBN(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def dbb_resnet18(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """DBB-ResNet-18: a 7x7 stride-2 DBB stem (3 → 64, ReLU), 3x3 max pool, four stages of two
    :class:`DBBBasicBlock` (widths 64, 128, 256, 512, the first block of stages 2-4 with
    stride 2), global pool + Linear."""
    modules: dict[str, nn.Module] = {
        "stem": dbb_conv(3, RESNET18_WIDTHS[0], 7, 2, relu=True),
        "maxpool": nn.MaxPool2d(3, 2, 1),
    }
    previous = RESNET18_WIDTHS[0]
    for index, (width, depth) in enumerate(zip(RESNET18_WIDTHS, RESNET18_LAYERS, strict=True)):
        strides = [1 if index == 0 else 2] + [1] * (depth - 1)
        stage = []
        for stride in strides:
            stage.append(DBBBasicBlock(previous, width, stride))
            previous = width
        modules[f"stage{index + 1}"] = nn.Sequential(*stage)
    modules["head"] = ClassifierHead(previous, num_classes)
    return nn.Sequential(OrderedDict(modules))
