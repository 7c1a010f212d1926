"""Merging parallel branches: the one affine conv equal to a sum of affine convs of one input.

Every kernel is expressed in one grouping, placed at its offset inside the merged kernel (by
its begin pads: the usual RepVGG case puts a 1x1 at the centre of a 3x3, TF's ``SAME`` with
stride 2 at its top-left tap), and kernels and biases are summed; a branch that cannot be
placed raises :class:`~repvgg_onnx.algebra.form.IncompatibleBranchesError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from repvgg_onnx.algebra.affine_conv import (
    AffineConv,
    regroup_kernel,
    row_chunks,
    same_pads,
    scaled_rows,
)
from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.form import IncompatibleBranchesError


def _window(kernel_shape: Sequence[int], offsets: Sequence[int]) -> tuple[slice, ...]:
    """The index of a kernel placed at ``offsets`` inside a larger one (all channels)."""
    spatial = (slice(o, o + k) for o, k in zip(offsets, kernel_shape, strict=True))
    return (slice(None), slice(None), *spatial)


def describe_kernel(conv: AffineConv) -> str:
    """``"3x3"``, ``"1x1"``, ``"7"``: the kernel shape as people write it."""
    return "x".join(str(k) for k in conv.kernel_shape)


def merge_affine_convs(
    branches: Sequence[AffineConv],
    labels: Sequence[str] | None = None,
    dtype: np.dtype = np.float64,
    input_size: Sequence[int | None] | None = None,
) -> AffineConv:
    """The one affine conv equal to the sum of ``branches`` applied to the same input.

    Each branch is placed by its begin pads, not by its centre: along a dim, output ``o`` of a
    branch reads input ``o·s − p_begin + d·t`` for its taps ``t < k``, so a branch's taps are
    the input offsets ``−p_begin + d·t`` and the merged kernel holds every branch's taps at
    their offsets (zeros elsewhere). That sum is exact — equal to the sum of the branches at
    every output — iff all branches share strides, input and output channels and spatial rank;
    every kernel with more than one tap along a dim uses the same dilation there; every
    branch's first tap lies a whole number of dilations from the merged kernel's first tap
    (all taps on one grid); and every branch has the same number of outputs. The last holds
    for every input size when ``p_begin + p_end − d·(k − 1)`` is equal per dim; otherwise it
    is checked for the static ``input_size`` (one entry per spatial dim, ``None`` if unknown):
    ``⌊(n + p_begin + p_end − d·(k − 1) − 1) / s⌋ + 1`` equal — TF's ``SAME`` padding on an even
    input with stride 2 pads a 3x3 by ``(0, 1)`` and a 1x1 by ``(0, 0)``, so the 1x1 lands on
    the 3x3's first tap, and both give ``n/2`` outputs. Centred branches (the usual RepVGG
    case) put every smaller kernel at the centre of the largest. A branch with
    ``auto_pad=SAME_*`` is placed by the pads it has on the static ``input_size``
    (:func:`same_pads`), and refused when that size is unknown. Also, the grouping of the
    branch with the most taps (the fused conv's grouping) must divide every other branch's
    grouping, so no kernel is densified beyond the main branch. Otherwise raises
    :class:`IncompatibleBranchesError`.

    The merged kernel is summed in float64, a chunk of output channels at a time, and stored
    as ``dtype``.
    """
    if not branches:
        raise ValueError("nothing to merge")
    names = list(labels) if labels is not None else [f"branch {i}" for i in range(len(branches))]
    first = branches[0]
    sizes = tuple(input_size) if input_size is not None else (None,) * first.spatial_rank
    branches = [
        _with_explicit_pads(branch, sizes, name)
        for branch, name in zip(branches, names, strict=True)
    ]
    for branch, name in zip(branches, names, strict=True):
        if branch.pad_value is not None and any(branch.pads) and np.any(branch.pad_value):
            raise IncompatibleBranchesError(
                f"{name} pads with a non-zero value, which a merged conv cannot do"
            )
    _require_equal(branches, names, lambda b: b.spatial_rank, "spatial rank")
    _require_equal(branches, names, lambda b: b.out_channels, "output channels")
    _require_equal(branches, names, lambda b: b.in_channels, "input channels")
    _require_equal(branches, names, lambda b: b.strides, "strides")
    groups = _merged_groups(branches, names)
    dilations = _merged_dilations(branches, names)
    begin, spatial_shape, end, offsets = _merged_window(branches, names, dilations, sizes)
    shape = (first.out_channels, first.in_channels // groups, *spatial_shape)
    kernel = np.empty(shape, dtype)
    for rows in row_chunks(shape):
        chunk = np.zeros((rows.stop - rows.start, *shape[1:]))
        for branch, branch_offsets in zip(branches, offsets, strict=True):
            regrouped = regroup_kernel(
                scaled_rows(branch, rows), branch.groups, groups, rows.start, shape[0]
            )
            chunk[_window(regrouped.shape[2:], branch_offsets)] += regrouped
        kernel[rows] = chunk
    bias = np.sum([branch.bias for branch in branches], axis=0, dtype=np.float64)
    return AffineConv(kernel, bias, first.strides, dilations, begin + end, groups)


def _with_explicit_pads(
    branch: AffineConv, input_size: tuple[int | None, ...], name: str
) -> AffineConv:
    """``branch`` with its ``auto_pad=SAME_*`` written as the explicit pads it has on an input
    of the static ``input_size`` (:func:`same_pads`), or itself if its pads are explicit."""
    if branch.has_explicit_pads:
        return branch
    if None in input_size:
        raise IncompatibleBranchesError(
            f"{name} uses auto_pad={branch.auto_pad} with strides {_show(branch.strides)}, "
            "whose padding depends on the input size, which is not static here"
        )
    pads = same_pads(
        input_size, branch.kernel_shape, branch.strides, branch.dilations, branch.auto_pad
    )
    return evolve(branch, pads=pads, auto_pad="NOTSET")


def _require_equal(branches, names, key, what: str) -> None:
    reference = key(branches[0])
    for branch, name in zip(branches, names, strict=True):
        if key(branch) != reference:
            raise IncompatibleBranchesError(
                f"{what} differ: {names[0]} has {_show(reference)}, {name} has {_show(key(branch))}"
            )


def _show(value) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _merged_groups(branches: Sequence[AffineConv], names: Sequence[str]) -> int:
    """The grouping of the branch with the most taps (the densest of those, on a tie).

    Every other branch's grouping must be a multiple of it, so merging never densifies the
    main branch: a dense 1x1 beside a depthwise 3x3 is refused rather than made a dense 3x3.
    """
    main = max(
        range(len(branches)),
        key=lambda i: (math.prod(branches[i].kernel_shape), -branches[i].groups),
    )
    groups = branches[main].groups
    for branch, name in zip(branches, names, strict=True):
        if branch.groups % groups:
            raise IncompatibleBranchesError(
                f"groups differ: {names[main]} has groups {groups}, {name} has groups "
                f"{branch.groups}; merging would make the fused conv denser than its main branch"
            )
    return groups


def _merged_dilations(branches: Sequence[AffineConv], names: Sequence[str]) -> tuple[int, ...]:
    """Per dim, the dilation shared by every kernel with more than one tap there (else 1)."""
    dilations = []
    for dim in range(branches[0].spatial_rank):
        used = {
            (branch.dilations[dim], name)
            for branch, name in zip(branches, names, strict=True)
            if branch.kernel_shape[dim] > 1
        }
        values = sorted({d for d, _ in used})
        if len(values) > 1:
            listed = ", ".join(f"{name} {d}" for d, name in sorted(used))
            raise IncompatibleBranchesError(f"dilations differ along dim {dim}: {listed}")
        dilations.append(values[0] if values else 1)
    return tuple(dilations)


def _merged_window(
    branches: Sequence[AffineConv],
    names: Sequence[str],
    dilations: tuple[int, ...],
    input_size: tuple[int | None, ...],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[tuple[int, ...]]]:
    """Pads and kernel shape of the union of all taps, and each branch's offset inside it.

    Along one dim a branch reads input ``o·s − p_begin + d·t`` for taps ``t < k``. The merged
    kernel starts at the smallest first tap and ends at the largest last tap; a branch fits
    if its first tap is a whole number of dilations from the start. The merged end pad keeps
    the branches' output count: when ``p_begin + p_end − d·(k − 1)`` is the same for every
    branch, the same expression for every input size; else, for the static input size, the
    smallest end pad (at least 0) whose last output reads the largest last tap.
    """
    begin, shape, end = [], [], []
    offsets: list[list[int]] = [[] for _ in branches]
    for dim, (dilation, size_in) in enumerate(zip(dilations, input_size, strict=True)):
        firsts = [-b.pads_begin[dim] for b in branches]
        lasts = [
            f + dilation * (b.kernel_shape[dim] - 1) for f, b in zip(firsts, branches, strict=True)
        ]
        start = min(firsts)
        for index, (first, name) in enumerate(zip(firsts, names, strict=True)):
            if (first - start) % dilation:
                raise IncompatibleBranchesError(
                    f"pads do not align along dim {dim}: the taps of {name} fall between the "
                    f"dilation-{dilation} taps of the other branches"
                )
            offsets[index].append((first - start) // dilation)
        size = (max(lasts) - start) // dilation + 1
        begin.append(-start)
        shape.append(size)
        end.append(_merged_end_pad(branches, names, dim, lasts, size_in))
    return tuple(begin), tuple(shape), tuple(end), [tuple(o) for o in offsets]


def _merged_end_pad(
    branches: Sequence[AffineConv],
    names: Sequence[str],
    dim: int,
    lasts: Sequence[int],
    size_in: int | None,
) -> int:
    """The end pad along ``dim`` that gives the merged kernel (last tap ``max(lasts)``) the
    branches' output count, or :class:`IncompatibleBranchesError` if their counts differ.

    A branch with last tap offset ``l`` and end pad ``p_end`` has
    ``⌊(n − 1 + p_end − l) / s⌋ + 1`` outputs, so ``p_end − l`` equal for all branches means
    equal counts for every ``n``; otherwise only the static ``n`` can decide.
    """
    reaches = [b.pads_end[dim] - last for b, last in zip(branches, lasts, strict=True)]
    if len(set(reaches)) == 1:
        return reaches[0] + max(lasts)
    stride = branches[0].strides[dim]
    if size_in is None:
        raise IncompatibleBranchesError(
            f"pads do not align along dim {dim}: {_pads_text(branches, names)}; their output "
            "sizes agree only for some input sizes, and this input's size is not static"
        )
    counts = [(size_in - 1 + reach) // stride + 1 for reach in reaches]
    if len(set(counts)) > 1:
        raise IncompatibleBranchesError(
            f"pads do not align along dim {dim}: {_pads_text(branches, names)}, so on an input "
            f"of size {size_in} their outputs differ in size ("
            + ", ".join(f"{name} {count}" for name, count in zip(names, counts, strict=True))
            + ")"
        )
    return max(0, (counts[0] - 1) * stride + max(lasts) - (size_in - 1))


def _pads_text(branches: Sequence[AffineConv], names: Sequence[str]) -> str:
    return ", ".join(
        f"{name} has pads {_show(b.pads)} and kernel {describe_kernel(b)}"
        for b, name in zip(branches, names, strict=True)
    )
