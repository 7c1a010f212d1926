"""Training-time blocks written with ``paddle.nn`` in PaddleClas's style, each with its own
``re_parameterize()`` producing the deploy form (as PaddleClas names the method).

- :class:`RepVGGBlock`: 3x3 conv-BN + 1x1 conv-BN (+ identity BN when the shapes allow), ReLU
  (PaddleClas ``ppcls/arch/backbone/model_zoo/repvgg.py``).
- :class:`RepDepthwiseSeparable`: PP-LCNetV2's block, depthwise conv-BN branches of kernel
  sizes 5, 3, 1 (the 1x1 only at stride 1) plus, here, an identity BN at stride 1, summed,
  ReLU, then a pointwise conv-BN-ReLU (PaddleClas ``pp_lcnet_v2.py``).
- :class:`DiverseBranchBlock`: kxk conv-BN, 1x1 conv-BN, 1x1 → :class:`BNAndPadLayer` →
  average pool → BN, and ``W + I`` 1x1 → :class:`BNAndPadLayer` → kxk conv → BN. The border
  of the BN-then-pad is written as Paddle users write it without in-place assignment: the BN's
  shift ``β − μ·γ/σ`` expanded to the border strips and concatenated around the BN output,
  so paddle2onnx emits ``Concat`` (with ``Expand`` of the per-channel shift), not ``Pad``.

Every re-parameterization is computed in float64 with numpy and written with ``set_value``; a
re-parameterized layer runs only its deploy conv. Only :mod:`models.paddle_export` imports this
module (the tool never imports paddle).
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

LARGE_EPS = 1e-3
"""The BatchNorm epsilon :func:`randomize_` gives every other BN (the rest keep 1e-5)."""


def batchnorm_scale_shift(bn: nn.BatchNorm2D) -> tuple[np.ndarray, np.ndarray]:
    """``(γ/σ, β − μ·γ/σ)`` of an inference BN in float64, ``σ = sqrt(var + ε)``."""
    gamma, beta, mean, var = (
        t.numpy().astype(np.float64) for t in (bn.weight, bn.bias, bn._mean, bn._variance)
    )
    scale = gamma / np.sqrt(var + bn._epsilon)
    return scale, beta - mean * scale


def fuse_conv_bn(kernel: np.ndarray, bn: nn.BatchNorm2D) -> tuple[np.ndarray, np.ndarray]:
    """``BN(conv(x, K)) = conv(x, K·γ/σ) + (β − μ·γ/σ)``."""
    scale, shift = batchnorm_scale_shift(bn)
    return kernel * scale.reshape(-1, 1, 1, 1), shift


def identity_kernel(channels: int, groups: int, size: int) -> np.ndarray:
    """The ``size``x``size`` kernel of ``x ↦ x``: ``K[i, i % (C/groups), c, c] = 1``."""
    per_group = channels // groups
    kernel = np.zeros((channels, per_group, size, size))
    for i in range(channels):
        kernel[i, i % per_group, size // 2, size // 2] = 1.0
    return kernel


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """A centred kernel zero-padded to ``size``x``size``."""
    pad = (size - kernel.shape[-1]) // 2
    return np.pad(kernel, [(0, 0), (0, 0), (pad, pad), (pad, pad)])


def deploy_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int
) -> nn.Conv2D:
    """The deploy conv of a block: biased, centred padding."""
    return nn.Conv2D(
        in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups
    )


def set_conv(conv: nn.Conv2D, kernel: np.ndarray, bias: np.ndarray) -> None:
    conv.weight.set_value(kernel.astype(np.float32))
    conv.bias.set_value(bias.astype(np.float32))


class ConvBN(nn.Layer):
    """``BN(Conv(x))`` with a bias-free conv (PaddleClas ``ConvBN``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups,
            bias_attr=False,
        )  # fmt: skip
        self.bn = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.conv(x))

    def equivalent_kernel_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return fuse_conv_bn(self.conv.weight.numpy().astype(np.float64), self.bn)


class RepVGGBlock(nn.Layer):
    """``ReLU(conv3x3-BN(x) + conv1x1-BN(x) + BN(x))`` (the identity BN only when
    ``in == out`` and stride 1); after :meth:`re_parameterize`, ``ReLU(conv3x3(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.nonlinearity = nn.ReLU()
        same = in_channels == out_channels and stride == 1
        self.rbr_identity = nn.BatchNorm2D(in_channels) if same else None
        self.rbr_dense = ConvBN(in_channels, out_channels, 3, stride, 1)
        self.rbr_1x1 = ConvBN(in_channels, out_channels, 1, stride, 0)
        self.rbr_reparam: nn.Conv2D | None = None

    def forward(self, inputs: paddle.Tensor) -> paddle.Tensor:
        if self.rbr_reparam is not None:
            return self.nonlinearity(self.rbr_reparam(inputs))
        id_out = 0 if self.rbr_identity is None else self.rbr_identity(inputs)
        return self.nonlinearity(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + id_out)

    def re_parameterize(self) -> None:
        kernel, bias = self.rbr_dense.equivalent_kernel_bias()
        kernel_1x1, bias_1x1 = self.rbr_1x1.equivalent_kernel_bias()
        kernel, bias = kernel + pad_kernel(kernel_1x1, 3), bias + bias_1x1
        if self.rbr_identity is not None:
            kernel_id, bias_id = fuse_conv_bn(
                identity_kernel(self.in_channels, 1, 3), self.rbr_identity
            )
            kernel, bias = kernel + kernel_id, bias + bias_id
        self.rbr_reparam = deploy_conv(self.in_channels, self.out_channels, 3, self.stride, 1)
        set_conv(self.rbr_reparam, kernel, bias)


class ConvBNLayer(ConvBN):
    """``act(BN(Conv(x)))``, padding ``(k − 1)/2`` (PaddleClas PP-LCNetV2 ``ConvBNLayer``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int = 1,
        use_act: bool = True,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.act = nn.ReLU() if use_act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = super().forward(x)
        return x if self.act is None else self.act(x)


class RepDepthwiseSeparable(nn.Layer):
    """``pw(ReLU(Σ_k dw_k-BN(x) [+ BN(x)]))``, ``k = dw_size, dw_size − 2, …, 1`` (the 1x1
    and the identity BN only at stride 1); after :meth:`re_parameterize` the depthwise
    branches are one biased ``dw_size`` depthwise conv. The pointwise conv-BN is not
    re-parameterized by PaddleClas either: :meth:`re_parameterize` folds its BN like the
    inference export does (``paddle.static`` fuses conv-BN at deployment)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dw_size: int = 5) -> None:
        super().__init__()
        self.in_channels, self.stride, self.dw_size = in_channels, stride, dw_size
        self.dw_conv_list = nn.LayerList(
            [
                ConvBNLayer(in_channels, in_channels, k, stride, in_channels, use_act=False)
                for k in range(dw_size, 0, -2)
                if k != 1 or stride == 1
            ]
        )
        self.dw_identity = nn.BatchNorm2D(in_channels) if stride == 1 else None
        self.act = nn.ReLU()
        self.pw_conv = ConvBNLayer(in_channels, out_channels, 1, 1)
        self.dw_conv: nn.Conv2D | None = None
        self.pw_deploy: nn.Conv2D | None = None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.dw_conv is not None:
            return self.act(self.pw_deploy(self.act(self.dw_conv(x))))
        y = self.dw_conv_list[0](x)
        for dw_conv in self.dw_conv_list[1:]:
            y = y + dw_conv(x)
        if self.dw_identity is not None:
            y = y + self.dw_identity(x)
        return self.pw_conv(self.act(y))

    def re_parameterize(self) -> None:
        kernel, bias = 0.0, 0.0
        for branch in self.dw_conv_list:
            branch_kernel, branch_bias = branch.equivalent_kernel_bias()
            kernel, bias = kernel + pad_kernel(branch_kernel, self.dw_size), bias + branch_bias
        if self.dw_identity is not None:
            identity = identity_kernel(self.in_channels, self.in_channels, self.dw_size)
            kernel_id, bias_id = fuse_conv_bn(identity, self.dw_identity)
            kernel, bias = kernel + kernel_id, bias + bias_id
        channels = self.in_channels
        self.dw_conv = deploy_conv(channels, channels, self.dw_size, self.stride, channels)
        set_conv(self.dw_conv, kernel, bias)
        pw_kernel, pw_bias = self.pw_conv.equivalent_kernel_bias()
        self.pw_deploy = deploy_conv(channels, pw_kernel.shape[0], 1, 1, 1)
        set_conv(self.pw_deploy, pw_kernel, pw_bias)


class BNAndPadLayer(nn.Layer):
    """``BN(x)`` padded by ``pad_pixels`` with the BN's shift ``β − μ·γ/σ`` (what BN gives a
    zero input), so a conv after it sees a zero-padded ``x`` through the BN.

    ``border="concat"``: strips of the shift concatenated around the BN output (width first);
    ``border="assign"``: ``F.pad`` with zeros, then four slice assignments of the shift (the
    official DBB code, which paddle2onnx writes as Pad and ScatterElements)."""

    def __init__(self, pad_pixels: int, num_features: int, border: str = "concat") -> None:
        super().__init__()
        self.bn = nn.BatchNorm2D(num_features)
        self.pad_pixels, self.border = pad_pixels, border

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        output = self.bn(x)
        if self.pad_pixels == 0:
            return output
        bn = self.bn
        pad_values = bn.bias - bn._mean * bn.weight / paddle.sqrt(bn._variance + bn._epsilon)
        pad_values = pad_values.reshape([1, -1, 1, 1])
        p = self.pad_pixels
        if self.border == "assign":
            output = F.pad(output, [p, p, p, p])
            output[:, :, 0:p, :] = pad_values
            output[:, :, -p:, :] = pad_values
            output[:, :, :, 0:p] = pad_values
            output[:, :, :, -p:] = pad_values
            return output
        n, c, h, w = output.shape
        side = paddle.expand(pad_values, [n, c, h, p])
        output = paddle.concat([side, output, side], axis=3)
        strip = paddle.expand(pad_values, [n, c, p, w + 2 * p])
        return paddle.concat([strip, output, strip], axis=2)


class IdentityBasedConv1x1(nn.Conv2D):
    """A bias-free 1x1 conv whose effective kernel is ``weight + I``, built in every forward."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 1, bias_attr=False)
        self.id_tensor = paddle.to_tensor(identity_kernel(channels, 1, 1).astype(np.float32))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.conv2d(x, self.weight + self.id_tensor)

    def actual_kernel(self) -> np.ndarray:
        return self.weight.numpy().astype(np.float64) + self.id_tensor.numpy()


class DiverseBranchBlock(nn.Layer):
    """``ReLU(origin(x) + avg(x) + 1x1(x) + 1x1_kxk(x))`` (Ding et al., CVPR 2021), groups 1;
    after :meth:`re_parameterize`, ``ReLU(conv_kxk(x))`` (the official ``transI``–``transVI``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        border: str = "concat",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        padding = kernel_size // 2
        self.nonlinear = nn.ReLU()
        self.dbb_origin = ConvBN(in_channels, out_channels, kernel_size, stride, padding)
        self.dbb_avg = nn.Sequential(
            ("conv", nn.Conv2D(in_channels, out_channels, 1, bias_attr=False)),
            ("bn", BNAndPadLayer(padding, out_channels, border)),
            ("avg", nn.AvgPool2D(kernel_size, stride, padding=0)),
        )
        self.dbb_avg_bn = nn.BatchNorm2D(out_channels)
        self.dbb_1x1 = ConvBN(in_channels, out_channels, 1, stride, 0)
        self.dbb_1x1_kxk = nn.Sequential(
            ("idconv1", IdentityBasedConv1x1(in_channels)),
            ("bn1", BNAndPadLayer(padding, in_channels, border)),
            ("conv2", nn.Conv2D(in_channels, out_channels, kernel_size, stride, bias_attr=False)),
            ("bn2", nn.BatchNorm2D(out_channels)),
        )
        self.dbb_reparam: nn.Conv2D | None = None

    def forward(self, inputs: paddle.Tensor) -> paddle.Tensor:
        if self.dbb_reparam is not None:
            return self.nonlinear(self.dbb_reparam(inputs))
        out = self.dbb_origin(inputs)
        out = out + self.dbb_avg_bn(self.dbb_avg(inputs))
        out = out + self.dbb_1x1(inputs)
        out = out + self.dbb_1x1_kxk(inputs)
        return self.nonlinear(out)

    def _avg_kernel_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """1x1 → BN-and-pad → avg → BN: ``transI`` then ``transIII`` with the avg kernel."""
        k = self.kernel_size
        first = self.dbb_avg["conv"].weight.numpy().astype(np.float64)
        first, first_bias = fuse_conv_bn(first, self.dbb_avg["bn"].bn)
        channels = self.out_channels
        avg = np.zeros((channels, channels, k, k))
        avg[np.arange(channels), np.arange(channels)] = 1.0 / (k * k)
        second, second_bias = fuse_conv_bn(avg, self.dbb_avg_bn)
        return _compose_1x1_kxk(first, first_bias, second, second_bias)

    def _1x1_kxk_kernel_bias(self) -> tuple[np.ndarray, np.ndarray]:
        first = self.dbb_1x1_kxk["idconv1"].actual_kernel()
        first, first_bias = fuse_conv_bn(first, self.dbb_1x1_kxk["bn1"].bn)
        second = self.dbb_1x1_kxk["conv2"].weight.numpy().astype(np.float64)
        second, second_bias = fuse_conv_bn(second, self.dbb_1x1_kxk["bn2"])
        return _compose_1x1_kxk(first, first_bias, second, second_bias)

    def re_parameterize(self) -> None:
        kernel, bias = self.dbb_origin.equivalent_kernel_bias()
        kernel_1x1, bias_1x1 = self.dbb_1x1.equivalent_kernel_bias()
        kernel = kernel + pad_kernel(kernel_1x1, self.kernel_size)
        bias = bias + bias_1x1
        for branch_kernel, branch_bias in (self._avg_kernel_bias(), self._1x1_kxk_kernel_bias()):
            kernel, bias = kernel + branch_kernel, bias + branch_bias
        self.dbb_reparam = deploy_conv(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, 1
        )
        set_conv(self.dbb_reparam, kernel, bias)


def _compose_1x1_kxk(
    first: np.ndarray, first_bias: np.ndarray, second: np.ndarray, second_bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``conv_kxk(pad_b(conv_1x1(x) + b1)) + b2`` as one kxk conv of ``x`` (``transIII``):
    ``K = Σ_m K2[:, m] · K1[m, :]``, ``b = Σ K2 · b1 + b2`` (the pad holds ``b1``)."""
    kernel = np.einsum("omhw,mi->oihw", second, first[:, :, 0, 0])
    bias = np.einsum("omhw,m->o", second, first_bias) + second_bias
    return kernel, bias


class Net(nn.Layer):
    """A sequence of blocks; :meth:`re_parameterize` re-parameterizes each of them."""

    def __init__(self, *blocks: nn.Layer) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.blocks(x)

    def re_parameterize(self) -> None:
        for block in self.blocks:
            block.re_parameterize()


def paddle_repvgg() -> Net:
    """RepVGG stage: ``8 → 8`` (stride 1, identity BN), ``8 → 16`` (stride 2)."""
    return Net(RepVGGBlock(8, 8), RepVGGBlock(8, 16, stride=2))


def paddle_lcnetv2() -> Net:
    """PP-LCNetV2 blocks: ``8 → 16`` (stride 1: dw 5, 3, 1 and identity BN), ``16 → 16``
    (stride 2: dw 5, 3)."""
    return Net(RepDepthwiseSeparable(8, 16, 1), RepDepthwiseSeparable(16, 16, 2))


def paddle_dbb() -> Net:
    """One DBB ``8 → 16``, k3, stride 1 (both BN-then-pad layers built with Concat)."""
    return Net(DiverseBranchBlock(8, 16))


def paddle_dbb_assign() -> Net:
    """The same DBB with the official BN-then-pad: ``F.pad``, then slice assignments."""
    return Net(DiverseBranchBlock(8, 16, border="assign"))


BUILDERS = {
    "paddle_repvgg": paddle_repvgg,
    "paddle_lcnetv2": paddle_lcnetv2,
    "paddle_dbb": paddle_dbb,
    "paddle_dbb_assign": paddle_dbb_assign,
}


def randomize_(model: nn.Layer, seed: int) -> nn.Layer:
    """Every weight and bias drawn from a seeded normal; every BN's statistics random
    (``mean ∈ ±[0.2, 1]``, ``var ∈ [0.3, 3]``), every other BN with ``ε = LARGE_EPS``;
    returns ``model`` in eval mode."""
    rng = np.random.default_rng(seed)
    batchnorms = [layer for layer in model.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    for parameter in model.parameters():
        fan_in = max(1, int(np.prod(parameter.shape[1:]))) if len(parameter.shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(parameter.shape) > 1 else 0.5
        parameter.set_value(rng.normal(0.0, scale, parameter.shape).astype(np.float32))
    for index, bn in enumerate(batchnorms):
        channels = bn._mean.shape[0]
        sign = rng.choice([-1.0, 1.0], channels)
        bn._mean.set_value((sign * rng.uniform(0.2, 1.0, channels)).astype(np.float32))
        bn._variance.set_value(rng.uniform(0.3, 3.0, channels).astype(np.float32))
        bn.weight.set_value(rng.uniform(0.5, 1.5, channels).astype(np.float32))
        bn._epsilon = LARGE_EPS if index % 2 else 1e-5
    model.eval()
    return model


def build(name: str, seed: int) -> Net:
    """The named net with random weights and statistics (seeded), in eval mode."""
    paddle.seed(seed)
    return randomize_(BUILDERS[name](), seed)
