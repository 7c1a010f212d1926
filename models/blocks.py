"""Training-time RepVGG blocks and networks, with the PyTorch reference re-parameterization.

Follows the RepVGG paper (Ding et al., CVPR 2021) and the official code
(github.com/DingXiaoH/RepVGG, ``repvgg.py``). In eval mode a training-time block computes

    y = relu(se(BN_3(conv3x3(x)) + BN_1(conv1x1(x)) + BN_id(x)))

and, because every branch is linear, the same ``y`` is computed by one 3x3 convolution with bias
(the "deploy" form). :meth:`RepVGGBlock.reparameterize` builds that convolution in float64 and
stores it in float32, so it is the reference the ONNX tool is compared against.

The tiny networks at the bottom all take a ``1x3x32x32`` input (any ``N x 3 x H x W`` with
``H, W`` divisible by 32 works too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import reparam

OPTIONAL_GROUPWISE_LAYERS = tuple(range(2, 27, 2))
"""Layer indices the official B*g2/B*g4 variants make group-wise (stage0 is layer 0)."""

G4_MAP = {layer: 4 for layer in OPTIONAL_GROUPWISE_LAYERS}
"""The official ``g4_map``: groups=4 on layers 2, 4, ..., 26."""

TINY_INPUT_SHAPE = (1, 3, 32, 32)
"""Input shape of every tiny test network."""

LARGE_EPS = 1e-3
"""The non-default BatchNorm epsilon :func:`randomize_batchnorm_` gives about a third of the BNs."""

RANDOMIZED_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
"""The BatchNorm kinds :func:`randomize_batchnorm_` gives random statistics."""


class ConvBN(nn.Sequential):
    """``bn(conv(x))`` with a bias-free ``nn.Conv2d``; children ``conv`` and ``bn`` as official."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int,
        padding: int,
        groups: int,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(up(relu(down(global_avg_pool(x)))))``.

    ``down`` and ``up`` are 1x1 convolutions with bias; the hidden width is ``max(1, channels//4)``
    (the official code uses ``channels // 16``; tiny networks need the wider ratio). The pooling is
    a true global average (official: ``avg_pool2d`` with kernel ``W``, the same for square inputs).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 4)
        self.down = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.up = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.up(F.relu(self.down(squeezed))))


def identity_kernel_3x3(channels: int, groups: int) -> Tensor:
    """The 3x3 kernel of ``x -> x`` as a grouped conv: ``k[i, i % (channels//groups), 1, 1]=1``."""
    return reparam.identity_kernel(channels, groups, 3)


class RepVGGBlock(nn.Module):
    """A RepVGG block: ``relu(se(rbr_dense(x) + rbr_1x1(x) + rbr_identity(x)))``.

    ``rbr_dense`` is 3x3 conv-BN (padding 1), ``rbr_1x1`` is 1x1 conv-BN (padding 0), both with the
    block's stride and groups; ``rbr_identity`` is a lone BN, present only when
    ``in_ch == out_ch and stride == 1``. ``se`` is :class:`SEBlock` or ``nn.Identity``.
    After :meth:`reparameterize` the block is ``relu(se(rbr_reparam(x)))``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, use_se: bool = False
    ) -> None:
        super().__init__()
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.stride = stride
        self.groups = groups
        self.rbr_dense = ConvBN(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups)
        self.rbr_1x1 = ConvBN(in_ch, out_ch, 1, stride=stride, padding=0, groups=groups)
        self.rbr_identity = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.se: nn.Module = SEBlock(out_ch) if use_se else nn.Identity()
        self.nonlinearity = nn.ReLU()
        self.rbr_reparam: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.rbr_reparam is not None:
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        branch_sum = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            branch_sum = branch_sum + self.rbr_identity(x)
        return self.nonlinearity(self.se(branch_sum))

    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The float64 ``(kernel, bias)`` of the one 3x3 conv equal to the three eval-mode branches.

        ``kernel = K3 + pad(K1, 1) + K_id`` and ``bias = b3 + b1 + b_id``, each ``(K, b)`` being
        :func:`models.reparam.fuse_bn` of its branch (the identity branch uses
        :func:`identity_kernel_3x3`).
        """
        kernel, bias = reparam.fuse_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        kernel_1x1, bias_1x1 = reparam.fuse_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel = kernel + F.pad(kernel_1x1, [1, 1, 1, 1])
        bias = bias + bias_1x1
        if self.rbr_identity is not None:
            id_kernel = identity_kernel_3x3(self.in_ch, self.groups)
            kernel_id, bias_id = reparam.fuse_bn(id_kernel, self.rbr_identity)
            kernel = kernel + kernel_id
            bias = bias + bias_id
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches, in place, by ``rbr_reparam``: one 3x3 ``nn.Conv2d`` with bias."""
        if self.rbr_reparam is not None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        weight = self.rbr_dense.conv.weight
        conv = nn.Conv2d(
            self.in_ch, self.out_ch, 3, stride=self.stride, padding=1, groups=self.groups, bias=True
        ).to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = conv


class ReluInBranchBlock(nn.Module):
    """The paper's must-not-fuse ablation: ``relu(relu(BN(conv3x3(x))) + BN(conv1x1(x)) + BN(x))``.

    The ReLU inside the 3x3 branch makes the sum non-linear in ``x``, so no single conv equals it:
    the block is NOT re-parameterizable and has no ``reparameterize`` method.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rbr_dense = nn.Sequential(
            ConvBN(channels, channels, 3, stride=1, padding=1, groups=1), nn.ReLU()
        )
        self.rbr_1x1 = ConvBN(channels, channels, 1, stride=1, padding=0, groups=1)
        self.rbr_identity = nn.BatchNorm2d(channels)
        self.nonlinearity = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinearity(self.rbr_dense(x) + self.rbr_1x1(x) + self.rbr_identity(x))


def reparameterize_blocks_(model: nn.Module) -> nn.Module:
    """Call :meth:`RepVGGBlock.reparameterize` on every RepVGG block of ``model``; return it."""
    blocks = [module for module in model.modules() if isinstance(module, RepVGGBlock)]
    for block in blocks:
        block.reparameterize()
    return model


class RepVGG(nn.Module):
    """The RepVGG network of the official code, with an extra ``base_width`` (official: 64).

    ``stage0`` is a stride-2 block ``3 -> min(base, base*w0)``; stages 1-4 have
    ``num_blocks[i]`` blocks of width ``base * (1, 2, 4, 8)[i] * w[i]``, the first one with
    stride 2. Blocks are numbered from 0 (``stage0``); block ``i`` has
    ``override_groups_map.get(i, 1)`` groups. Then global average pool, flatten, linear.
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        width_multiplier: Sequence[float],
        override_groups_map: Mapping[int, int] | None = None,
        use_se: bool = False,
        num_classes: int = 1000,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        groups_map = dict(override_groups_map or {})
        in_planes = min(base_width, int(base_width * width_multiplier[0]))
        self.stage0 = RepVGGBlock(3, in_planes, stride=2, use_se=use_se)
        stages: list[nn.Sequential] = []
        layer_idx = 1
        for stage_idx, (count, multiplier) in enumerate(
            zip(num_blocks, width_multiplier, strict=True)
        ):
            planes = int(base_width * 2**stage_idx * multiplier)
            blocks = []
            for stride in [2] + [1] * (count - 1):
                groups = groups_map.get(layer_idx, 1)
                blocks.append(RepVGGBlock(in_planes, planes, stride, groups, use_se))
                in_planes = planes
                layer_idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stage0(x)
        out = self.stage4(self.stage3(self.stage2(self.stage1(out))))
        out = self.gap(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)

    def reparameterize(self) -> None:
        """Re-parameterize every block in place (see :meth:`RepVGGBlock.reparameterize`)."""
        reparameterize_blocks_(self)


def repvgg_a0(**kwargs: Any) -> RepVGG:
    """RepVGG-A0: ``num_blocks=[2, 4, 14, 1]``, ``width_multiplier=[0.75, 0.75, 0.75, 2.5]``."""
    kwargs.setdefault("width_multiplier", [0.75, 0.75, 0.75, 2.5])
    return RepVGG(num_blocks=[2, 4, 14, 1], **kwargs)


def repvgg_b1g4(**kwargs: Any) -> RepVGG:
    """RepVGG-B1g4: ``num_blocks=[4, 6, 16, 1]``, widths ``[2, 2, 2, 4]``, groups per ``G4_MAP``."""
    kwargs.setdefault("width_multiplier", [2.0, 2.0, 2.0, 4.0])
    kwargs.setdefault("override_groups_map", G4_MAP)
    return RepVGG(num_blocks=[4, 6, 16, 1], **kwargs)


@torch.no_grad()
def randomize_batchnorm_(model: nn.Module, seed: int, weight_gain: float = 1.0) -> nn.Module:
    """Give ``model`` non-trivial, seed-determined BN statistics and conv/linear weights; return it.

    Per BN (``BatchNorm1d`` and ``BatchNorm2d``, in module order): ``running_mean ~ N(0, 0.5)``,
    ``running_var ~ U(0.2, 3.0)``, ``weight ~ U(0.5, 1.5)``, ``bias ~ N(0, 0.5)`` (N(mean, std));
    ``max(1, round(n/3))`` of the ``n`` BNs, chosen by the seed, get ``eps = LARGE_EPS``, the
    others ``1e-5``. Conv and linear weights are ``N(0, weight_gain / sqrt(fan_in))`` and their
    biases ``N(0, 0.1)``. Any other parameter (a layer scale, a gate logit) is ``N(0, 0.5)``,
    drawn last in ``parameters()`` order. Every parameter and running statistic is overwritten,
    all drawn from one ``torch.Generator`` seeded with ``seed`` (the global RNG is untouched): the
    same architecture and seed always give the same tensors.

    Default statistics (mean 0, var 1, gamma 1, beta 0) would hide a wrong BN fold. As the
    statistics do not match the data, a deep net needs ``weight_gain < 1`` to keep its
    activations O(1) (each three-branch block otherwise grows them by about 1.5x).
    """
    generator = torch.Generator().manual_seed(seed)
    batchnorms = [module for module in model.modules() if isinstance(module, RANDOMIZED_BATCHNORMS)]
    order = torch.randperm(len(batchnorms), generator=generator).tolist()
    large_eps = set(order[: max(1, round(len(batchnorms) / 3))])
    for index, bn in enumerate(batchnorms):
        _randomize_one_batchnorm_(bn, generator)
        bn.eps = LARGE_EPS if index in large_eps else 1e-5
    layers = [module for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    for module in layers:
        _randomize_weight_and_bias_(module, weight_gain, generator)
    owned = {id(p) for module in [*batchnorms, *layers] for p in module.parameters(recurse=False)}
    for parameter in model.parameters():
        if id(parameter) not in owned:
            parameter.normal_(0.0, 0.5, generator=generator)
    return model


def _randomize_one_batchnorm_(
    bn: nn.BatchNorm1d | nn.BatchNorm2d, generator: torch.Generator
) -> None:
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.normal_(0.0, 0.5, generator=generator)
    bn.running_var.uniform_(0.2, 3.0, generator=generator)
    bn.weight.uniform_(0.5, 1.5, generator=generator)
    bn.bias.normal_(0.0, 0.5, generator=generator)


def _randomize_weight_and_bias_(
    module: nn.Conv2d | nn.Linear, gain: float, generator: torch.Generator
) -> None:
    fan_in = module.weight[0].numel()
    module.weight.normal_(0.0, gain * fan_in**-0.5, generator=generator)
    if module.bias is not None:
        module.bias.normal_(0.0, 0.1, generator=generator)


class StemThenBlock(nn.Module):
    """``block(relu(BN(conv3x3(x))))``: a plain, single-branch stem ``3 -> channels``, then a block.

    The stem (stride 1, padding 1) is not re-parameterizable and must be left alone; only a
    :class:`RepVGGBlock` ``block`` is changed by :meth:`reparameterize`.
    """

    def __init__(self, block: nn.Module, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBN(3, channels, 3, stride=1, padding=1, groups=1), nn.ReLU())
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.stem(x))

    def reparameterize(self) -> None:
        """Re-parameterize the block if it is a :class:`RepVGGBlock`; otherwise change nothing."""
        reparameterize_blocks_(self)


TINY_NUM_BLOCKS = (1, 2, 2, 1)
TINY_BASE_WIDTH = 8
TINY_WIDTH_MULTIPLIER = (1.0, 1.0, 1.0, 0.5)
"""Stage widths 8, 16, 32, 32: stage 4 is halved to keep the committed fixtures small."""
TINY_NUM_CLASSES = 10
TINY_G4_MAP = {1: 4, 3: 4, 5: 4}
"""groups=4 on the odd layers 1, 3, 5 of the tiny net: layers 3 and 5 have an identity branch.

(The official even layers 2, 4, 6 are all stride-2 stage openers here, which have no identity
branch, so they would never exercise the grouped identity kernel.)
"""


def tiny_block() -> StemThenBlock:
    """Stem ``3 -> 8`` then one three-branch ``RepVGGBlock(8, 8)``; ``1x3x32x32 -> 1x8x32x32``."""
    return StemThenBlock(RepVGGBlock(8, 8))


def tiny_repvgg(**kwargs: Any) -> RepVGG:
    """RepVGG, blocks ``[1, 2, 2, 1]``, channels 8, 8, 16, 32, 32, 10 classes; ``1x3x32x32->1x10``.

    Keyword arguments (e.g. ``use_se``, ``override_groups_map``) are passed to :class:`RepVGG`.
    """
    return RepVGG(
        num_blocks=TINY_NUM_BLOCKS,
        width_multiplier=TINY_WIDTH_MULTIPLIER,
        base_width=TINY_BASE_WIDTH,
        num_classes=TINY_NUM_CLASSES,
        **kwargs,
    )


def tiny_repvgg_g4() -> RepVGG:
    """:func:`tiny_repvgg` with groups 4 on layers 1, 3, 5 (``TINY_G4_MAP``)."""
    return tiny_repvgg(override_groups_map=TINY_G4_MAP)


def tiny_repvgg_se() -> RepVGG:
    """:func:`tiny_repvgg` with an SE block after every block's branch sum."""
    return tiny_repvgg(use_se=True)


def tiny_relu_in_branch() -> StemThenBlock:
    """Stem ``3 -> 8`` then a :class:`ReluInBranchBlock`; its ``reparameterize()`` is a no-op."""
    return StemThenBlock(ReluInBranchBlock(8))


TINY_MODELS = {
    "tiny_block": tiny_block,
    "tiny_repvgg": tiny_repvgg,
    "tiny_repvgg_g4": tiny_repvgg_g4,
    "tiny_repvgg_se": tiny_repvgg_se,
    "tiny_relu_in_branch": tiny_relu_in_branch,
}
"""Builders of the tiny test networks, by fixture directory name."""
