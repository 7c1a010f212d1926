"""YOLOv7's implicit-knowledge head: ``ImplicitM · conv1x1(ImplicitA + x)``.

YOLOv7's ``IDetect`` adds a learned ``[1, C, 1, 1]`` vector to each head input
(``ImplicitA``, after the neck's conv-BN-SiLU) and multiplies each head output by another
(``ImplicitM``). Its ``fuse()`` folds both into the head's 1x1 conv: ``b' = b + W·a`` (the
1x1 has no padding, so the shift is seen everywhere), then ``W' = m·W``, ``b' = m·b'``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models import reparam


class ImplicitHead(nn.Module):
    """``m ⊙ conv1x1(x + a)``, ``a``: ``[1, C_in, 1, 1]``, ``m``: ``[1, C_out, 1, 1]``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.implicit_a = nn.Parameter(torch.randn(1, in_ch, 1, 1) * 0.5)
        self.conv = nn.Conv2d(in_ch, out_ch, 1)
        self.implicit_m = nn.Parameter(1.0 + torch.randn(1, out_ch, 1, 1) * 0.3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x + self.implicit_a) * self.implicit_m

    def deploy(self) -> nn.Conv2d:
        """One 1x1 conv (YOLOv7's ``IDetect.fuse``), in float64 then float32."""
        kernel = self.conv.weight.double()
        bias = self.conv.bias.double() + kernel.sum((2, 3)) @ self.implicit_a.double().reshape(-1)
        scale = self.implicit_m.double().reshape(-1)
        return reparam.conv2d_from(kernel * scale.reshape(-1, 1, 1, 1), bias * scale, self.conv)
