"""Merge parallel linear branches of one input into a single Conv (RepVGG's structural re-param).

A block computes ``sum_i branch_i(x)``, an Add tree whose leaves are affine convolutions of the
same tensor ``x``: a Conv, a Conv followed by inference BatchNormalization, a BatchNormalization
of ``x`` (the identity branch), or ``x`` itself. Each leaf is read as the algebra's normal form
and :func:`repvgg_onnx.algebra.merge_affine_convs` sums them into one kernel and bias.

Invariant: the rewritten graph computes the same function (to float rounding); the new Conv
writes the tensor the Add tree's root wrote, under the same name, so whatever followed
(ReLU, SE, the next block) is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from repvgg_onnx.algebra import (
    AffineConv,
    IncompatibleBranchesError,
    batchnorm_as_conv,
    fold_batchnorm,
    identity_conv,
    merge_affine_convs,
)

from .graph_utils import UniqueNames, describe_uses, has_single_use, producer
from .normal_form import (
    BatchNormParameters,
    batchnorm_parameters,
    conv_as_affine,
    conv_dtype,
    describe_conv,
)
from .result import FusedBlock, PassResult, Skipped
from .rewrite import replace_with_conv

RULE = "merge_parallel_branches"


@dataclass
class Branch:
    """One leaf of an Add tree, read as a function of ``source``.

    ``form`` is the branch's affine conv once known; a BatchNormalization-only or bare
    identity branch gets it from the block's channel count and rank (``batchnorm`` / neither).
    ``problem`` says why the leaf is not an affine conv of ``source``.
    """

    leaf: gs.Tensor
    source: gs.Tensor
    label: str
    form: AffineConv | None = None
    batchnorm: BatchNormParameters | None = None
    dtype: np.dtype | None = None
    problem: str | None = None
    interior: list[gs.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class MergePlan:
    root: gs.Node
    source: gs.Tensor
    merged: AffineConv
    dtype: np.dtype
    labels: tuple[str, ...]


def merge_parallel_branches(graph: gs.Graph) -> PassResult:
    """Replace each Add tree whose leaves are affine convs of one input by one Conv."""
    plans: list[MergePlan] = []
    skipped: list[Skipped] = []
    for root in _add_tree_roots(graph):
        leaves = _sum_leaves(graph, root)
        if not _looks_like_block(leaves):
            continue
        outcome = _plan_merge(graph, root, leaves)
        if outcome is None:
            continue
        if isinstance(outcome, MergePlan):
            plans.append(outcome)
        else:
            skipped.append(Skipped(RULE, root.name, outcome))
    names = UniqueNames(graph)
    fused = []
    for plan in plans:
        output = plan.root.outputs[0]
        node = replace_with_conv(graph, plan.root, plan.source, plan.merged, plan.dtype, names)
        fused.append(
            FusedBlock(RULE, output.name, node.name, plan.labels, describe_conv(plan.merged))
        )
    if fused:
        graph.cleanup().toposort()
    return PassResult(fused=fused, skipped=skipped)


def _add_tree_roots(graph: gs.Graph) -> list[gs.Node]:
    """Add nodes whose output is not just one more term of a larger Add tree."""
    roots = []
    for node in graph.nodes:
        if node.op != "Add" or len(node.inputs) != 2:
            continue
        output = node.outputs[0]
        feeds_add = has_single_use(graph, output) and output.outputs[0].op == "Add"
        if not feeds_add:
            roots.append(node)
    return roots


def _sum_leaves(graph: gs.Graph, root: gs.Node) -> list[gs.Tensor]:
    """The terms of the Add tree under ``root``, in any order and association."""
    leaves: list[gs.Tensor] = []
    pending = list(reversed(root.inputs))
    while pending:
        tensor = pending.pop()
        node = producer(tensor)
        if node is not None and node.op == "Add" and has_single_use(graph, tensor):
            pending.extend(reversed(node.inputs))
        else:
            leaves.append(tensor)
    return leaves


def _looks_like_block(leaves: list[gs.Tensor]) -> bool:
    """A sum of non-constant terms, at least one computed by a Conv or BatchNormalization."""
    if any(isinstance(leaf, gs.Constant) for leaf in leaves):
        return False
    return any(
        (node := producer(leaf)) is not None and node.op in ("Conv", "BatchNormalization")
        for leaf in leaves
    )


def _interpretations(graph: gs.Graph, leaf: gs.Tensor) -> list[Branch]:
    """Every way to read ``leaf`` as an affine conv of some tensor, deepest first.

    ``BN(conv(x))`` is a Conv+BN branch of ``x``, a BN branch of ``conv(x)`` and the identity
    of itself; which one holds depends on the tensor the other terms read, so all are kept.
    """
    node = producer(leaf)
    readings = []
    if node is not None and node.op == "Conv":
        readings.append(_read_conv_branch(leaf, node, None))
    elif node is not None and node.op == "BatchNormalization":
        params = batchnorm_parameters(node)
        inner = node.inputs[0]
        conv = producer(inner)
        if conv is not None and conv.op == "Conv":
            readings.append(_read_conv_bn_branch(graph, leaf, conv, node, params))
        shallow = Branch(leaf, inner, "BN", interior=[leaf])
        if isinstance(params, str):
            shallow.problem = params
        else:
            shallow.batchnorm, shallow.dtype = params, params.dtype
        readings.append(shallow)
    readings.append(Branch(leaf, leaf, "Identity"))
    return readings


def _read_conv_bn_branch(
    graph: gs.Graph,
    leaf: gs.Tensor,
    conv: gs.Node,
    batchnorm: gs.Node,
    params: BatchNormParameters | str,
) -> Branch:
    inner = batchnorm.inputs[0]
    if not has_single_use(graph, inner):
        return Branch(
            leaf,
            conv.inputs[0],
            "Conv+BN",
            problem=f"the output of Conv '{conv.name}' ('{inner.name}') is also read by "
            f"{describe_uses(graph, inner, batchnorm)}, so it must keep its value",
        )
    return _read_conv_branch(leaf, conv, params, interior=[leaf, inner])


def _read_conv_branch(
    leaf: gs.Tensor,
    conv: gs.Node,
    batchnorm: BatchNormParameters | str | None,
    interior: list[gs.Tensor] | None = None,
) -> Branch:
    suffix = "" if batchnorm is None else "+BN"
    branch = Branch(leaf, conv.inputs[0], "Conv" + suffix, interior=interior or [leaf])
    form = conv_as_affine(conv)
    if isinstance(form, str) or isinstance(batchnorm, str):
        branch.problem = form if isinstance(form, str) else batchnorm
        return branch
    branch.label = describe_conv(form) + suffix
    branch.dtype = conv_dtype(conv)
    branch.form = form if batchnorm is None else _fold(form, batchnorm)
    return branch


def _fold(conv: AffineConv, bn: BatchNormParameters) -> AffineConv:
    return fold_batchnorm(conv, bn.gamma, bn.beta, bn.mean, bn.var, bn.eps)


def _plan_merge(graph: gs.Graph, root: gs.Node, leaves: list[gs.Tensor]) -> MergePlan | str | None:
    """Decide, without touching the graph, whether the tree merges: a plan, a reason why not,
    or ``None`` when the sum is not a block at all (no Conv or BN term of a shared input)."""
    readings = [_interpretations(graph, leaf) for leaf in leaves]
    source = _block_input(readings)
    branches = [_reading_of(options, source) for options in readings]
    if all(branch is None or branch.label == "Identity" for branch in branches):
        return None
    for options, branch in zip(readings, branches, strict=True):
        if branch is None:
            return _different_source_reason(options[0], source)
    for branch in branches:
        if branch.problem:
            return branch.problem
        for tensor in branch.interior:
            if not has_single_use(graph, tensor):
                return (
                    f"{branch.label} branch output '{tensor.name}' is also read by "
                    f"{describe_uses(graph, tensor, root)}, so it must keep its value"
                )
    forms = _complete_forms(branches, source)
    if isinstance(forms, str):
        return forms
    dtypes = {np.dtype(b.dtype) for b in branches if b.dtype is not None}
    if len(dtypes) != 1:
        return f"the branches have different weight types: {sorted(map(str, dtypes))}"
    labels = tuple(b.label for b in branches)
    dtype = dtypes.pop()
    try:
        merged = merge_affine_convs(forms, labels, dtype)
    except (IncompatibleBranchesError, ValueError) as error:
        return str(error)
    return MergePlan(root, source, merged, dtype, labels)


def _block_input(readings: list[list[Branch]]) -> gs.Tensor:
    """The tensor the most terms can be read as functions of (then the most non-identity
    readings): the input of the block."""
    candidates = {id(b.source): b.source for options in readings for b in options}

    def support(tensor: gs.Tensor) -> tuple[int, int]:
        chosen = [_reading_of(options, tensor) for options in readings]
        found = [b for b in chosen if b is not None]
        return len(found), sum(b.label != "Identity" for b in found)

    return max(candidates.values(), key=support)


def _reading_of(options: list[Branch], source: gs.Tensor) -> Branch | None:
    return next((b for b in options if b.source is source), None)


def _different_source_reason(branch: Branch, source: gs.Tensor) -> str:
    node = producer(branch.leaf)
    if branch.label == "Identity" and node is not None:
        return (
            f"term '{branch.leaf.name}' comes from {node.op} '{node.name}', which is not a "
            f"Conv, BatchNormalization or identity of '{source.name}'"
        )
    return (
        f"the terms read different tensors: {branch.label} '{branch.leaf.name}' reads "
        f"'{branch.source.name}', the other terms read '{source.name}'"
    )


def _complete_forms(branches: list[Branch], source: gs.Tensor) -> list[AffineConv] | str:
    """Give BatchNormalization-only and bare identity branches their normal form."""
    known = [b.form for b in branches if b.form is not None]
    rank = known[0].spatial_rank if known else _spatial_rank(source)
    channels = known[0].in_channels if known else _channels(branches, source)
    if rank is None or channels is None:
        return f"the rank or channel count of '{source.name}' is unknown"
    forms = []
    for branch in branches:
        if branch.form is not None:
            forms.append(branch.form)
        elif branch.batchnorm is not None:
            bn = branch.batchnorm
            forms.append(batchnorm_as_conv(bn.gamma, bn.beta, bn.mean, bn.var, bn.eps, rank))
        else:
            forms.append(identity_conv(channels, rank))
    return forms


def _spatial_rank(tensor: gs.Tensor) -> int | None:
    shape = tensor.shape
    return len(shape) - 2 if shape is not None and len(shape) >= 3 else None


def _channels(branches: list[Branch], source: gs.Tensor) -> int | None:
    for branch in branches:
        if branch.batchnorm is not None:
            return int(branch.batchnorm.gamma.size)
    shape = source.shape
    if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
        return shape[1]
    return None
