"""Other re-parameterizable block families, as generality fixtures for the RepVGG core.

Each is a small training-time block whose branches are all affine convolutions of the block's
input, so ``repvgg-onnx fuse`` must turn every block into one Conv:

- ``mobileone``: k=3 depthwise 3x3 conv-BN branches, a depthwise 1x1 conv-BN scale branch and
  an identity BN (MobileOne, Vasu et al. 2023);
- ``repvit``: depthwise 3x3 conv-BN + depthwise 1x1 conv with bias + the raw input, BN after
  the sum (RepViT's ``RepVGGDW``);
- ``acnet``: 3x3, 1x3 and 3x1 conv-BN branches (ACNet);
- ``repconv_silu``: YOLO-style RepConv, 3x3 + 1x1 conv-BN + identity BN, then SiLU;
- ``replk``: depthwise 13x13 and 5x5 conv-BN branches (RepLKNet);
- ``dilated``: dilated 3x3 + 1x1 conv-BN + identity BN.

Each net is ``stem conv → block → block`` on a ``1x3x32x32`` input; the stem makes the first
block's input a Conv output, as in real networks. Run ``python -m models.families`` from the
repository root to regenerate ``models/fixtures/families/<name>/<form>.onnx``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models import blocks, export

CHANNELS = 16
INPUT_SHAPE = (1, 3, 32, 32)
FORMS = ("ts17", "ts17_nofold", "dynamo18")


def conv_bn(
    channels: int, kernel: int | tuple[int, int], *, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    """A bias-free conv with "same" padding followed by BatchNorm2d."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    conv = nn.Conv2d(channels, channels, (kh, kw), 1, padding, dilation, groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(channels))


class MobileOneBlock(nn.Module):
    def __init__(self, channels: int, branches: int = 3) -> None:
        super().__init__()
        self.kxk = nn.ModuleList(conv_bn(channels, 3, groups=channels) for _ in range(branches))
        self.scale = conv_bn(channels, 1, groups=channels)
        self.identity = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scale(x) + self.identity(x)
        for branch in self.kxk:
            out = out + branch(x)
        return torch.relu(out)


class RepViTBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(channels, 3, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)


class ACBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.square = conv_bn(channels, 3)
        self.horizontal = conv_bn(channels, (1, 3))
        self.vertical = conv_bn(channels, (3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.square(x) + self.horizontal(x) + self.vertical(x))


class RepConvSiLU(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.dense = conv_bn(channels, 3, dilation=dilation)
        self.pointwise = conv_bn(channels, 1)
        self.identity = nn.BatchNorm2d(channels)
        self.act = nn.SiLU() if dilation == 1 else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x) + self.pointwise(x) + self.identity(x))


class RepLKBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.large = conv_bn(channels, 13, groups=channels)
        self.small = conv_bn(channels, 5, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(x) + self.small(x)


FAMILIES: dict[str, Callable[[int], nn.Module]] = {
    "mobileone": MobileOneBlock,
    "repvit": RepViTBlock,
    "acnet": ACBlock,
    "repconv_silu": RepConvSiLU,
    "replk": RepLKBlock,
    "dilated": lambda channels: RepConvSiLU(channels, dilation=2),
}


def build(name: str) -> nn.Module:
    """``stem conv → block → block`` of family ``name``, randomized, in eval mode."""
    block = FAMILIES[name]
    net = nn.Sequential(
        nn.Conv2d(INPUT_SHAPE[1], CHANNELS, 3, padding=1), block(CHANNELS), block(CHANNELS)
    )
    return blocks.randomize_batchnorm_(net, export.SEED).eval()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m models.families", description=__doc__)
    parser.add_argument("--root", type=Path, default=export.MODELS_DIR / "fixtures" / "families")
    root: Path = parser.parse_args().root
    for name in FAMILIES:
        model = build(name)
        for form in FORMS:
            path = export.export_onnx(model, root / name / f"{form}.onnx", form, INPUT_SHAPE)
            export.check_export(path, model, INPUT_SHAPE, batch_sizes=(1,))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
