"""PyTorch checks of ``models.blocks``: the reference re-parameterization keeps the output.

Needs torch (the ``export`` extra); the default test run skips this file.
"""

import importlib
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
blocks = importlib.import_module("models.blocks")

REPARAMETERIZABLE = ["tiny_block", "tiny_repvgg", "tiny_repvgg_g4", "tiny_repvgg_se"]
SEED = 0
RELATIVE_TOLERANCE = 1e-5


def randomized_eval_model(name: str, seed: int = SEED) -> "torch.nn.Module":
    return blocks.randomize_batchnorm_(blocks.TINY_MODELS[name](), seed).eval()


def tiny_input(batch: int = 2) -> "torch.Tensor":
    shape = (batch, *blocks.TINY_INPUT_SHAPE[1:])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1234))


def batchnorms(module: "torch.nn.Module") -> list:
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def assert_close_to_scale(actual: "torch.Tensor", expected: "torch.Tensor") -> None:
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= RELATIVE_TOLERANCE * scale, f"error {error:.3g} at output scale {scale:.3g}"


@pytest.mark.parametrize("name", REPARAMETERIZABLE)
def test_reparameterize_keeps_the_eval_output(name: str) -> None:
    model = randomized_eval_model(name)
    x = tiny_input()
    with torch.no_grad():
        expected = model(x)
        model.reparameterize()
        actual = model(x)
    assert_close_to_scale(actual, expected)


@pytest.mark.parametrize("name", REPARAMETERIZABLE)
def test_reparameterize_leaves_one_3x3_conv_with_bias_per_block(name: str) -> None:
    model = randomized_eval_model(name)
    model.reparameterize()
    repvgg_blocks = [m for m in model.modules() if isinstance(m, blocks.RepVGGBlock)]
    assert repvgg_blocks
    for block in repvgg_blocks:
        assert not hasattr(block, "rbr_dense")
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
        assert block.rbr_reparam.kernel_size == (3, 3)
        assert block.rbr_reparam.bias is not None


@pytest.mark.parametrize("name", list(blocks.TINY_MODELS))
def test_randomize_batchnorm_gives_non_default_statistics(name: str) -> None:
    bns = batchnorms(randomized_eval_model(name))
    assert not torch.all(torch.cat([bn.running_var for bn in bns]) == 1.0)
    assert not torch.all(torch.cat([bn.running_mean for bn in bns]) == 0.0)
    assert {bn.eps for bn in bns} == {1e-5, blocks.LARGE_EPS}


def test_randomize_batchnorm_is_determined_by_the_seed() -> None:
    first = randomized_eval_model("tiny_repvgg").state_dict()
    again = randomized_eval_model("tiny_repvgg").state_dict()
    other = randomized_eval_model("tiny_repvgg", seed=SEED + 1).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(
        first["stage0.rbr_dense.bn.running_var"], other["stage0.rbr_dense.bn.running_var"]
    )


def test_relu_in_branch_reparameterize_changes_nothing() -> None:
    model = randomized_eval_model("tiny_relu_in_branch")
    x = tiny_input()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
        model.reparameterize()
        actual = model(x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert torch.equal(actual, expected)


def test_relu_in_branch_differs_from_a_naive_fusion() -> None:
    ablation = randomized_eval_model("tiny_relu_in_branch").block
    linear_block = blocks.RepVGGBlock(8, 8).eval()
    branch_pairs = [
        (linear_block.rbr_dense, ablation.rbr_dense[0]),
        (linear_block.rbr_1x1, ablation.rbr_1x1),
        (linear_block.rbr_identity, ablation.rbr_identity),
    ]
    for target, source in branch_pairs:
        target.load_state_dict(source.state_dict())
        for target_bn, source_bn in zip(batchnorms(target), batchnorms(source), strict=True):
            target_bn.eps = source_bn.eps
    linear_block.reparameterize()
    x = torch.relu(torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(5)))
    with torch.no_grad():
        difference = (linear_block(x) - ablation(x)).abs().max().item()
    assert difference > 1e-2


def test_grouped_identity_kernel_is_the_identity() -> None:
    x = torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    kernel = blocks.identity_kernel_3x3(8, groups=4)
    assert torch.equal(torch.nn.functional.conv2d(x, kernel, padding=1, groups=4), x)


def test_tiny_g4_groups_blocks_with_an_identity_branch() -> None:
    model = blocks.TINY_MODELS["tiny_repvgg_g4"]()
    grouped = [m for m in model.modules() if isinstance(m, blocks.RepVGGBlock) and m.groups == 4]
    assert len(grouped) == 3
    assert sum(block.rbr_identity is not None for block in grouped) == 2


def test_official_architectures() -> None:
    with torch.device("meta"):
        a0 = blocks.repvgg_a0()
        b1g4 = blocks.repvgg_b1g4()
    a0_blocks = [m for m in a0.modules() if isinstance(m, blocks.RepVGGBlock)]
    assert len(a0_blocks) == 1 + 2 + 4 + 14 + 1
    assert [a0_blocks[i].out_ch for i in (0, 1, 3, 7, 21)] == [48, 48, 96, 192, 1280]
    b1g4_blocks = [m for m in b1g4.modules() if isinstance(m, blocks.RepVGGBlock)]
    grouped_layers = [i for i, block in enumerate(b1g4_blocks) if block.groups == 4]
    assert grouped_layers == list(range(2, 27, 2))
    assert b1g4.linear.in_features == 2048
