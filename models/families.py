"""Re-parameterizable block families beyond RepVGG, as committed ONNX fixtures for the tool.

Each family is a small net on a ``1x3x32x32`` input, written after the paper and official code of
its block; :func:`build` randomizes every parameter and BN statistic
(:func:`models.blocks.randomize_batchnorm_`, seed :data:`models.export.SEED`). Each block has a
``deploy()`` conversion (float64 math, float32 weights, :mod:`models.reparam`); the deploy model
exported like ``ts17`` is the ``reference`` form, whose op counts are what a correct fusion of
any training form must reach.

Families whose blocks are one conv after fusion (``stem conv → block → block``, the stem's output
feeding the first block directly):

- ``mobileone``: three depthwise 3x3 conv-BN branches, a depthwise 1x1 conv-BN scale branch and
  an identity BN, then ReLU (MobileOne, Vasu et al. 2023);
- ``repvit``: depthwise 3x3 conv-BN + depthwise 1x1 conv with bias + the raw input, BN after
  the sum (RepViT's ``RepVGGDW``);
- ``acnet``: 3x3, 1x3 and 3x1 conv-BN branches, then ReLU (ACNet);
- ``repconv_silu``: YOLO-style RepConv, 3x3 + 1x1 conv-BN + identity BN, then SiLU;
- ``replk``: depthwise 13x13 and 5x5 conv-BN branches (RepLKNet);
- ``dilated``: dilated 3x3 + 1x1 conv-BN + identity BN, then ReLU.

Families with a non-linearity before every block (see each module's docstring):
``fastvit_repmixer``, ``fastvit_repcpe`` (:mod:`models.fastvit`), ``efficientvim_gate``
(:mod:`models.efficientvim`), ``repghost`` (:mod:`models.repghost`), ``dbb`` (:mod:`models.dbb`),
``prebn``, ``prebn_padded``, ``bn_linear_head``, ``distill_head``, ``levit_linearnorm``
(:mod:`models.heads`). ``prebn_padded`` is the negative case: its BNs cannot be folded, so its
reference is its training form.

Every family is exported in every form of :data:`FORMS` (and some in :data:`FUNCTIONS_FORM`,
with each block an ONNX local function) and each file is checked with onnxruntime
against the eval-mode training model (relative error ≤ ``export.RELATIVE_TOLERANCE``); the
PyTorch deploy model is checked against it the same way. Run ``python -m models.families`` from
the repository root to regenerate ``models/fixtures/families/<name>/<form>.onnx`` and
``models/fixtures/families/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from models import blocks, dbb, efficientvim, export, fastvit, heads, reparam, repghost, yolo

CHANNELS = 16
"""Width of the six RepVGG-like families (the newer ones use 8 to keep their fixtures small)."""

INPUT_SHAPE = (1, 3, 32, 32)
FORMS = ("ts13", "ts17", "ts17_nofold", "dynamo18", "reference")
"""Forms of :data:`models.export.FORMS` written for every family."""

FUNCTIONS_FORM = "ts17_functions"
"""Like ``ts17``, with each block written as an ONNX local function; only for the families of
:data:`FUNCTION_MODULES`."""

REFERENCE_FORM = "reference"
"""The form exported from the PyTorch deploy model: what fusing a training form must reach."""

FIXTURES_DIR = export.MODELS_DIR / "fixtures" / "families"


def conv_bn(
    channels: int, kernel: int | tuple[int, int], *, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    """A bias-free conv with "same" padding followed by BatchNorm2d."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    conv = nn.Conv2d(channels, channels, (kh, kw), 1, padding, dilation, groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(channels))


def fused(branch: nn.Sequential) -> tuple[Tensor, Tensor]:
    """Float64 ``(kernel, bias)`` of a :func:`conv_bn` branch."""
    return reparam.fuse_bn(branch[0].weight, branch[1])


def merged_kernel_bias(
    branches: Sequence[tuple[Tensor, Tensor]], size: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """Float64 sum of ``branches``, each kernel centred in a ``size`` kernel."""
    kernels = torch.stack([reparam.pad_kernel(k.double(), size) for k, _ in branches])
    return kernels.sum(0), torch.stack([b.double() for _, b in branches]).sum(0)


def merged_conv(branches: Sequence[tuple[Tensor, Tensor]], like: nn.Conv2d) -> nn.Conv2d:
    """One conv with ``like``'s geometry computing the sum of ``branches``."""
    kernel, bias = merged_kernel_bias(branches, like.kernel_size)
    return reparam.conv2d_from(kernel, bias, like)


def identity_branch(bn: nn.BatchNorm2d, groups: int) -> tuple[Tensor, Tensor]:
    """Float64 ``(kernel, bias)`` of an identity BN branch as a 1x1 conv."""
    return reparam.fuse_bn(reparam.identity_kernel(bn.num_features, groups), bn)


class MobileOneBlock(nn.Module):
    """``relu(scale(x) + identity(x) + Σ kxk[i](x))``: depthwise conv-BN branches, identity BN."""

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

    def deploy(self) -> nn.Sequential:
        """One depthwise 3x3 conv (every branch summed), then ReLU."""
        channels = self.identity.num_features
        branches = [
            *map(fused, self.kxk),
            fused(self.scale),
            identity_branch(self.identity, channels),
        ]
        return nn.Sequential(merged_conv(branches, self.kxk[0][0]), nn.ReLU())


class RepViTBlock(nn.Module):
    """RepViT ``RepVGGDW``: ``bn(conv(x) + conv1(x) + x)``, depthwise 3x3 conv-BN + dw 1x1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(channels, 3, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)

    def deploy(self) -> nn.Conv2d:
        """One depthwise 3x3 conv: the terms summed (``K, B``), then BN: ``s·K``, ``s·B + t``."""
        channels = self.bn.num_features
        assert self.conv1.bias is not None
        terms = [
            fused(self.conv),
            (self.conv1.weight, self.conv1.bias),
            (reparam.identity_kernel(channels, channels), torch.zeros(channels)),
        ]
        kernel, bias = merged_kernel_bias(terms, (3, 3))
        scale, shift = reparam.bn_scale_shift(self.bn)
        return reparam.conv2d_from(
            scale.reshape(-1, 1, 1, 1) * kernel, scale * bias + shift, self.conv[0]
        )


class ACBlock(nn.Module):
    """ACNet: ``relu(square(x) + horizontal(x) + vertical(x))``, 3x3, 1x3, 3x1 conv-BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.square = conv_bn(channels, 3)
        self.horizontal = conv_bn(channels, (1, 3))
        self.vertical = conv_bn(channels, (3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.square(x) + self.horizontal(x) + self.vertical(x))

    def deploy(self) -> nn.Sequential:
        """One 3x3 conv (1x3 and 3x1 kernels centred in 3x3), then ReLU."""
        branches = [fused(self.square), fused(self.horizontal), fused(self.vertical)]
        return nn.Sequential(merged_conv(branches, self.square[0]), nn.ReLU())


class RepConvSiLU(nn.Module):
    """YOLO RepConv: ``act(dense(x) + pointwise(x) + identity(x))``; dilation 2 uses ReLU."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.dense = conv_bn(channels, 3, dilation=dilation)
        self.pointwise = conv_bn(channels, 1)
        self.identity = nn.BatchNorm2d(channels)
        self.act = nn.SiLU() if dilation == 1 else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x) + self.pointwise(x) + self.identity(x))

    def deploy(self) -> nn.Sequential:
        """One (dilated) 3x3 conv: the 1x1 and identity at the kernel centre; then the act."""
        branches = [fused(self.dense), fused(self.pointwise), identity_branch(self.identity, 1)]
        return nn.Sequential(merged_conv(branches, self.dense[0]), self.act)


class RepLKBlock(nn.Module):
    """RepLKNet: ``large(x) + small(x)``, depthwise 13x13 and 5x5 conv-BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.large = conv_bn(channels, 13, groups=channels)
        self.small = conv_bn(channels, 5, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(x) + self.small(x)

    def deploy(self) -> nn.Conv2d:
        """One depthwise 13x13 conv, the 5x5 kernel centred in it."""
        return merged_conv([fused(self.large), fused(self.small)], self.large[0])


def _two_block_net(block: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(INPUT_SHAPE[1], CHANNELS, 3, padding=1), block(CHANNELS), block(CHANNELS)
    )


def mobileone_net() -> nn.Sequential:
    """Stem conv → MobileOne block → MobileOne block (3 dw 3x3 + dw 1x1 + identity BN, ReLU)."""
    return _two_block_net(MobileOneBlock)


def repvit_net() -> nn.Sequential:
    """Stem conv → RepViT RepVGGDW → RepVGGDW (``BN(dw3x3-BN(x) + dw1x1(x) + x)``)."""
    return _two_block_net(RepViTBlock)


def acnet_net() -> nn.Sequential:
    """Stem conv → ACNet block → ACNet block (3x3 + 1x3 + 3x1 conv-BN, ReLU)."""
    return _two_block_net(ACBlock)


def repconv_silu_net() -> nn.Sequential:
    """Stem conv → RepConv → RepConv (3x3 + 1x1 conv-BN + identity BN, SiLU)."""
    return _two_block_net(RepConvSiLU)


def replk_net() -> nn.Sequential:
    """Stem conv → RepLK block → RepLK block (dw 13x13 + dw 5x5 conv-BN)."""
    return _two_block_net(RepLKBlock)


def dilated_net() -> nn.Sequential:
    """Stem conv → dilated RepConv → dilated RepConv (3x3 dilation 2 + 1x1 + identity BN, ReLU)."""
    return _two_block_net(lambda channels: RepConvSiLU(channels, dilation=2))


SMALL_CHANNELS = 8
"""Width of the ten newer families: 8 channels keep the family fixtures under 2 MB in total."""

NUM_CLASSES = 10
"""Classes of the classifier-head families."""


def stem(stride: int = 1) -> nn.Conv2d:
    """The newer families' stem: a 3x3 conv with bias, ``3 → SMALL_CHANNELS``."""
    return nn.Conv2d(INPUT_SHAPE[1], SMALL_CHANNELS, 3, stride=stride, padding=1)


def activated_blocks(act: Callable[[], nn.Module], *blocks: nn.Module) -> nn.Sequential:
    """``stem → act → block → act → block …``: every block reads a non-linear op's output."""
    layers: list[nn.Module] = [stem()]
    for block in blocks:
        layers += [act(), block]
    return nn.Sequential(*layers)


def fastvit_repmixer_net() -> nn.Sequential:
    """Stem conv ``3→C`` → GELU → RepMixerBlock → GELU → RepMixerBlock (FastViT, C=8)."""
    c = SMALL_CHANNELS
    return activated_blocks(nn.GELU, fastvit.RepMixerBlock(c), fastvit.RepMixerBlock(c))


def fastvit_repcpe_net() -> nn.Sequential:
    """Stem conv ``3→C`` → GELU → RepCPE (dw 7x7) → GELU → RepCPE (FastViT, C=8)."""
    c = SMALL_CHANNELS
    return activated_blocks(nn.GELU, fastvit.RepCPE(c), fastvit.RepCPE(c))


def efficientvim_gate_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → gated block → ReLU → gated block (EfficientViM, C=8)."""
    c = SMALL_CHANNELS
    gated = efficientvim.GatedDepthwiseBlock
    return activated_blocks(nn.ReLU, gated(c), gated(c))


def repghost_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → bottleneck(C→2C→C) → ReLU → bottleneck (RepGhost, C=8)."""
    c = SMALL_CHANNELS
    bottleneck = repghost.RepGhostBottleneck
    return activated_blocks(nn.ReLU, bottleneck(c, 2 * c, c), bottleneck(c, 2 * c, c))


def dbb_net() -> nn.Sequential:
    """Stem conv ``3→8`` → ReLU → DBB(8→16, k3, stride 1, ReLU): one block, all four branches.

    One block, not two: each block's two BNAndPad layers make ~840 nodes in a TorchScript export
    (~110 KB per file), so a second block would double the family to ~800 KB.
    """
    c = SMALL_CHANNELS
    return activated_blocks(nn.ReLU, dbb.DiverseBranchBlock(c, 2 * c))


def prebn_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → conv1x1(BN(x)) → ReLU → conv1x1(BN(x)) (C=8, no padding)."""
    c = SMALL_CHANNELS
    return activated_blocks(nn.ReLU, heads.PreBNConv(c, c, 1), heads.PreBNConv(c, c, 1))


def prebn_padded_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → conv3x3_pad1(BN(x)) → ReLU → conv3x3_pad1(BN(x)) (C=8).

    Not fusable: each BN's shift would be seen by the conv's zero padding.
    """
    c = SMALL_CHANNELS
    return activated_blocks(nn.ReLU, heads.PreBNConv(c, c, 3), heads.PreBNConv(c, c, 3))


def bn_linear_head_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → global average pool → flatten → BN1d → Linear(C, 10)."""
    head = heads.BNLinear(SMALL_CHANNELS, NUM_CLASSES)
    return nn.Sequential(stem(), nn.ReLU(), heads.GlobalPoolFlatten(), head)


def distill_head_net() -> nn.Sequential:
    """Stem conv ``3→C`` → ReLU → pool → flatten → ``(BN_Linear(x) + BN_Linear_dist(x)) / 2``."""
    head = heads.DistilledClassifier(SMALL_CHANNELS, NUM_CLASSES)
    return nn.Sequential(stem(), nn.ReLU(), heads.GlobalPoolFlatten(), head)


def levit_linearnorm_net() -> nn.Sequential:
    """Stem conv ``3→C`` (stride 2) → Hardswish → tokens ``[1, 256, C]`` → LinearNorm(C→2C) →
    Hardswish → LinearNorm(2C→C) (LeViT's MLP, C=8)."""
    c = SMALL_CHANNELS
    return nn.Sequential(
        stem(stride=2),
        nn.Hardswish(),
        heads.Tokens(),
        heads.LinearNorm(c, 2 * c),
        nn.Hardswish(),
        heads.LinearNorm(2 * c, c),
    )


def yolo_implicit_net() -> nn.Sequential:
    """Stem conv ``3→C`` → SiLU → YOLOv7 implicit head ``m ⊙ conv1x1(x + a)`` (C=8 → 16)."""
    c = SMALL_CHANNELS
    return nn.Sequential(stem(), nn.SiLU(), yolo.ImplicitHead(c, 2 * c))


NETS: dict[str, Callable[[], nn.Module]] = {
    "mobileone": mobileone_net,
    "repvit": repvit_net,
    "acnet": acnet_net,
    "repconv_silu": repconv_silu_net,
    "replk": replk_net,
    "dilated": dilated_net,
    "fastvit_repmixer": fastvit_repmixer_net,
    "fastvit_repcpe": fastvit_repcpe_net,
    "efficientvim_gate": efficientvim_gate_net,
    "repghost": repghost_net,
    "dbb": dbb_net,
    "prebn": prebn_net,
    "prebn_padded": prebn_padded_net,
    "bn_linear_head": bn_linear_head_net,
    "distill_head": distill_head_net,
    "levit_linearnorm": levit_linearnorm_net,
    "yolo_implicit": yolo_implicit_net,
}
"""Builders of every family's training net, by fixture directory name."""

FUNCTION_MODULES: dict[str, tuple[type[nn.Module], ...]] = {
    "mobileone": (MobileOneBlock,),
    "repvit": (RepViTBlock,),
    "acnet": (ACBlock,),
    "repconv_silu": (RepConvSiLU,),
    "fastvit_repmixer": (fastvit.RepMixerBlock, fastvit.RepMixer, fastvit.DepthwiseMobileOne),
}
"""The families also exported in :data:`FUNCTIONS_FORM`, and their block classes (the
functions; FastViT's are nested three deep, and TorchScript writes one function per distinct
body, e.g. ``DepthwiseMobileOne`` and ``DepthwiseMobileOne.1``); the others are left out for
size."""


def forms_of(name: str) -> tuple[str, ...]:
    """The forms written for family ``name``: :data:`FORMS`, and the functions form for the
    families of :data:`FUNCTION_MODULES`."""
    return FORMS + ((FUNCTIONS_FORM,) if name in FUNCTION_MODULES else ())


NOTES: dict[str, tuple[str, ...]] = {
    "fastvit_repmixer": (
        "RepMixer's norm is only its identity BN, as timm and apple/ml-fastvit build it "
        "(use_scale_branch=False, num_conv_branches=0): Sub(mixer_sum, BatchNormalization(x)).",
        "timm's `0 + identity_out` start of the MobileOne sum leaves no node in any form.",
        "GELU is Div, Erf, Add, Mul, Mul in every form (no Gelu op before opset 20).",
        "ts13/ts17/dynamo18 fold every conv-BN; the identity BNs (2 per block) stay.",
        "The reference also folds ConvMlp's layer scale (Mul by a (C,1,1) constant after fc2) "
        "into fc2, which timm's reparameterize leaves as a Mul.",
    ),
    "fastvit_repcpe": ("Each RepCPE is Add(Conv(x), x) in every form.",),
    "efficientvim_gate": (
        "alpha is (2, C); TorchScript writes Sigmoid(alpha) -> Reshape -> Gather (one Gather per "
        "gate) and does not fold it even with constant folding on (ts13, ts17); dynamo's "
        "optimizer folds it into the Mul's constant.",
        "The FFN residual x + s1*(ffn(x) - x) is not affine in x: Sub, Mul, Add stay in the "
        "reference.",
    ),
    "repghost": (
        "The empty shortcut exports nothing: the residual is Add(ghost2_out, x).",
        "ts13/ts17/dynamo18 fold the primary and cheap conv-BNs; fusion_bn stays as a "
        "BatchNormalization of the primary output.",
        "The reference keeps the 1x1 and depthwise 3x3 convs separate (composing them into a "
        "dense 3x3 would cost 9x the multiply-adds).",
    ),
    "dbb": (
        "BNAndPadLayer, TorchScript: BN, Pad (its pads computed at runtime by an unfolded "
        "Slice(step -1)/Transpose/Reshape/Cast chain) and four index_put -> ScatterND, each fed "
        "by ~65 index nodes (Shape, Range, Expand, Equal, Where, ...): ~280 nodes per layer.",
        "BNAndPadLayer, ts17_nofold: as ts17, plus the pad values computed at runtime from the "
        "BN parameters (Mul, Add, Sqrt, Div, Sub).",
        "BNAndPadLayer, dynamo18: Pad, then Transpose -> ScatterND -> Identity -> ScatterND -> "
        "Transpose -> ScatterND -> Identity -> ScatterND -> Transpose (the in-place slice "
        "assignments become slice_scatter); the optimizer folds the BN into the 1x1 conv before.",
        "IdentityBasedConv1x1's weight + id_tensor is an Add of two constants in ts17_nofold, "
        "folded elsewhere; ts13/ts17 leave BN(idconv1) unfolded (its weight is the Add's output).",
        "One block only; the stride-2 block (DiverseBranchBlock(8, 16, stride=2)) exports and "
        "deploys exactly too (tests/test_family_fixtures.py) but would double the fixture size.",
    ),
    "prebn": ("No exporter folds a BN into the conv that follows it: BatchNormalization stays.",),
    "prebn_padded": (
        "Not fusable: conv3x3 pads its input with zeros, which the folded conv would need to be "
        "the BN's shift. The reference is the training form; a tool must leave both BNs.",
    ),
    "bn_linear_head": (
        "BatchNorm1d on [N, C] is a BatchNormalization in every form.",
        "Pool + flatten: GlobalAveragePool + Flatten (TorchScript), ReduceMean + Reshape (dynamo).",
    ),
    "distill_head": (
        "(head + head_dist) / 2 is Add then Div by a constant 2 (a Constant node in "
        "TorchScript, an initializer in dynamo).",
    ),
    "yolo_implicit": (
        "ImplicitA is Add(SiLU output, a) with a of shape (1, C, 1, 1), ImplicitM a Mul after "
        "the 1x1 conv; the reference is YOLOv7's IDetect.fuse (both folded into the conv).",
    ),
    "levit_linearnorm": (
        "TorchScript: flatten(0, 1) is Flatten(axis=2), reshape_as(x) is Shape(x) -> Reshape; "
        "the tokens' flatten(2) is Shape -> Slice -> Concat -> Reshape; dynamo: every reshape "
        "is a Reshape by a constant shape.",
        "BatchNorm1d on [N*T, C] is a BatchNormalization; Linear(bias=False) on [N, T, C] is a "
        "MatMul (ts17_nofold: MatMul by Transpose(W)); the reference's Linear is MatMul + Add.",
        "ts13 writes Hardswish as HardSigmoid + Mul (HardSwish is opset 14).",
    ),
}
"""Per family: how the exporters wrote it, where that is not the obvious one op per layer."""


def build(name: str) -> nn.Module:
    """The training net of family ``name``, randomized with seed ``export.SEED``, in eval mode."""
    return blocks.randomize_batchnorm_(NETS[name](), export.SEED).eval()


def deploy(model: nn.Module) -> nn.Module:
    """The PyTorch deploy form of a training net (``model`` is left unchanged)."""
    return reparam.deploy_copy(model)


def check_deploy(model: nn.Module, deployed: nn.Module) -> float:
    """Relative error of ``deployed`` against ``model`` on the check input; raises above it."""
    x = export.random_input(INPUT_SHAPE)
    with torch.no_grad():
        expected = model(x).numpy()
        actual = deployed(x).numpy()
    return export.check_close(f"{type(model).__name__} deploy form", actual, expected)


def export_family(name: str, root: Path) -> dict[str, Any]:
    """Export and check every form of family ``name`` into ``root/name``; return its entry.

    Each training form's entry also gets ``deploy_op_counts``: the op counts of the deploy model
    exported with that form's settings (to a temporary file), the exporter-matched target of
    fusing that form. (The deploy model has no block left, so the functions form's deploy export
    has no function: its counts are the ``ts17`` deploy counts.)
    """
    model = build(name)
    deploy_model = deploy(model)
    deploy_error = check_deploy(model, deploy_model)
    modules = FUNCTION_MODULES.get(name, ())
    forms: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for form in forms_of(name):
            spec = export.FORMS[form]
            source = deploy_model if spec.reparameterize else model
            functions = modules if spec.functions else ()
            path = export.export_onnx(
                source, root / name / f"{form}.onnx", form, INPUT_SHAPE, function_modules=functions
            )
            error = export.check_export(path, model, INPUT_SHAPE, batch_sizes=(1,))
            print(f"  {name}/{form}: relative error {error:.2e}")
            forms[form] = {**spec.settings(functions), **export.file_summary(path, root)}
            if not spec.reparameterize:
                deployed = export.export_onnx(
                    deploy_model,
                    Path(scratch) / f"{form}.onnx",
                    form,
                    INPUT_SHAPE,
                    function_modules=functions,
                )
                export.check_export(deployed, model, INPUT_SHAPE, batch_sizes=(1,))
                forms[form]["deploy_op_counts"] = export.op_counts(deployed)
    print(f"  {name}: PyTorch deploy form relative error {deploy_error:.2e}")
    with torch.no_grad():
        output_shape = list(model(export.random_input(INPUT_SHAPE)).shape)
    return {
        "description": (NETS[name].__doc__ or "").strip(),
        "input": {"name": export.INPUT_NAME, "shape": list(INPUT_SHAPE)},
        "output": {"name": export.OUTPUT_NAME, "shape": output_shape},
        "training_forms": [
            form for form in forms_of(name) if not export.FORMS[form].reparameterize
        ],
        "reference_form": REFERENCE_FORM,
        "reference_op_counts": forms[REFERENCE_FORM]["op_counts"],
        "notes": list(NOTES.get(name, ())),
        "forms": forms,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Regenerate every family's fixtures and ``manifest.json`` under ``--root``."""
    parser = argparse.ArgumentParser(prog="python -m models.families", description=__doc__)
    parser.add_argument("--root", type=Path, default=FIXTURES_DIR, help="default: %(default)s")
    root: Path = parser.parse_args(argv).root
    manifest: dict[str, Any] = {
        "generated_by": "python -m models.families",
        "file_paths_relative_to": "models/fixtures/families/",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "seed": export.SEED,
        "check": {
            "input_seed": export.CHECK_INPUT_SEED,
            "relative_tolerance": export.RELATIVE_TOLERANCE,
        },
        "field_meanings": {
            "reference_op_counts": (
                "op counts of the reference form (the PyTorch deploy model exported like ts17): "
                "what a correct fusion of any training form must reach, up to how each exporter "
                "writes the ops no fusion touches (see each training form's deploy_op_counts)"
            ),
            "deploy_op_counts": (
                "per training form: op counts of the PyTorch deploy model exported with that "
                "form's settings (file not kept), the exporter-matched fusion target"
            ),
        },
        "families": {name: export_family(name, root) for name in NETS},
    }
    manifest_path = root / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    total = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    print(f"wrote {manifest_path}; families total {total} bytes")


if __name__ == "__main__":
    main()
