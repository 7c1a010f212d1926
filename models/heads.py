"""BatchNorm next to a linear layer: pre-BN convs, BN-Linear heads and LeViT's LinearNorm.

- :class:`PreBNConv`: ``conv(BN(x))``. With an unpadded 1x1 conv the BN folds forward exactly,
  ``W' = W·diag(s)`` (on input channels), ``b' = b + W·t`` (``s = γ/σ``, ``t = β − μ·s``). With a
  padded conv it does not: the padding reads ``0`` where the folded conv would need ``t``, so the
  deploy form keeps the BN.
- :class:`BNLinear`: ``l(bn(x))`` on a pooled ``[N, C]`` feature (RepViT / EfficientViT-MSRA
  ``BN_Linear``, LeViT ``NormLinear``). Deploy: one Linear, the same fold on input features.
- :class:`DistilledClassifier`: ``(head(x) + head_dist(x)) / 2`` in eval (RepViT ``Classfier``,
  LeViT distilled). Deploy: one Linear, ``W = (W₁' + W₂')/2``, ``b = (b₁' + b₂')/2``.
- :class:`LinearNorm`: LeViT's ``bn(linear(x).flatten(0, 1)).reshape_as(·)`` on tokens
  ``[N, T, C]`` (timm ``levit.py``). Deploy: one Linear with bias, ``W' = s·W`` (output rows),
  ``b' = t`` (timm ``LinearNorm.fuse``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models import reparam


class PreBNConv(nn.Module):
    """``conv(bn(x))``: BatchNorm2d on the input, then a conv with bias and "same" padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.bn(x))

    def deploy(self) -> nn.Module:
        """The conv with the BN folded in, or ``self`` unchanged when the conv pads its input."""
        if any(self.conv.padding):
            return self
        kernel, bias = reparam.fold_input_bn(self.bn, self.conv.weight, self.conv.bias)
        return reparam.conv2d_from(kernel, bias, self.conv)


class BNLinear(nn.Sequential):
    """``l(bn(x))``, ``bn`` a BatchNorm1d over features (RepViT / EfficientViT ``BN_Linear``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))

    def weight_bias(self) -> tuple[Tensor, Tensor]:
        """Float64 ``(W·diag(s), b + W·t)`` of the folded Linear."""
        return reparam.fold_input_bn(self.bn, self.l.weight, self.l.bias)

    def deploy(self) -> nn.Linear:
        """One Linear with the BN folded into its input features."""
        return reparam.linear_from(*self.weight_bias())


class DistilledClassifier(nn.Module):
    """RepViT's ``Classfier``: ``(classifier(x) + classifier_dist(x)) / 2`` in eval mode."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = BNLinear(dim, num_classes)
        self.classifier_dist = BNLinear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        outputs = self.classifier(x), self.classifier_dist(x)
        if self.training:
            return outputs
        return (outputs[0] + outputs[1]) / 2

    def deploy(self) -> nn.Linear:
        """One Linear: the mean of the two folded heads' weights and biases."""
        weight, bias = self.classifier.weight_bias()
        weight_dist, bias_dist = self.classifier_dist.weight_bias()
        return reparam.linear_from((weight + weight_dist) / 2, (bias + bias_dist) / 2)


class LinearNorm(nn.Module):
    """LeViT's ``LinearNorm``: bias-free Linear, then BatchNorm1d over the flattened tokens."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)

    def deploy(self) -> nn.Linear:
        """One Linear with bias: ``W' = diag(s)·W``, ``b' = β − μ·s``."""
        return reparam.linear_from(*reparam.fuse_bn(self.linear.weight, self.bn))


class GlobalPoolFlatten(nn.Module):
    """``adaptive_avg_pool2d(x, 1).flatten(1)``: ``[N, C, H, W] → [N, C]`` (RepViT's head input)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class Tokens(nn.Module):
    """``x.flatten(2).transpose(1, 2)``: ``[N, C, H, W] → [N, HW, C]`` (LeViT after its stem)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)
