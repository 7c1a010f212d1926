"""The weight math of re-parameterization, as pure numpy functions (float64 inside).

Every branch of a re-parameterizable block reduces to one normal form, an *affine convolution*
of the block's input ``x``::

    y = conv(x, kernel, strides, dilations, pads, groups) + bias[:, None, ...]

- a Conv is one already (a missing bias is zero);
- a Conv followed by inference BatchNormalization folds into one (RepVGG eq. 3):
  ``W' = W·γ/σ``, ``b' = β + (b − μ)·γ/σ``, ``σ = sqrt(var + ε)``;
- a BatchNormalization on ``x`` itself is a depthwise 1x1 kernel ``γ/σ`` with bias ``β − μγ/σ``;
- the bare identity is a depthwise 1x1 kernel of ones.

Merging parallel branches is then a single operation (:func:`merge_affine_convs`): express
every kernel in one grouping, place each one at its offset inside the merged kernel (centres
aligned), and sum kernels and biases. Nothing here knows about ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repvgg_onnx.algebra.evolve import evolve


class IncompatibleBranchesError(ValueError):
    """Raised by :func:`merge_affine_convs` when the branches do not compute one convolution.

    The message is one sentence a user understands, naming the branches at fault.
    """


@dataclass(frozen=True)
class AffineConv:
    """``y = scale ⊙ conv(x, kernel) + bias``, ONNX Conv semantics, any number of spatial dims.

    Invariants: ``kernel`` is ``[Cout, Cin/groups, *kernel_shape]``, ``bias`` and ``scale``
    (``None`` means ones) are ``[Cout]``. The kernel is kept as the model stores it (no copy)
    and the per-output-channel ``scale`` beside it, so folding a BatchNormalization or a
    scale costs O(Cout); the arithmetic on kernels happens in float64, once, chunk by chunk,
    when :func:`materialize` or :func:`merge_affine_convs` writes the final weights.
    ``strides``, ``dilations`` have one entry per spatial dim; ``pads`` is ONNX's
    ``(begin_0, begin_1, …, end_0, end_1, …)``. A kernel with no spatial dims
    (``[Cout, Cin/groups]``) is a linear map of the channel axis (Gemm, MatMul).

    ``pad_value`` (per input channel, ``None`` for zeros) is the value the padded border of the
    input holds: a ``Pad`` with a non-zero value reads this way; an ONNX Conv always pads with
    zeros. ``auto_pad`` is ``"SAME_UPPER"``/``"SAME_LOWER"`` when the padding depends on the
    input size (``SAME_*`` with strides > 1); ``pads`` is then all zeros and meaningless, so
    only per-output-channel folds apply.
    """

    kernel: np.ndarray
    bias: np.ndarray
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    groups: int
    scale: np.ndarray | None = None
    pad_value: np.ndarray | None = None
    auto_pad: str = "NOTSET"

    @property
    def spatial_rank(self) -> int:
        return self.kernel.ndim - 2

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return self.kernel.shape[2:]  # numpy shapes are tuples of Python ints

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.kernel.shape[1]) * self.groups

    @property
    def has_explicit_pads(self) -> bool:
        return self.auto_pad == "NOTSET"

    @property
    def is_padded(self) -> bool:
        """True if some output reads the padded border (explicit non-zero pads or auto_pad)."""
        return not self.has_explicit_pads or any(self.pads)

    @property
    def pads_begin(self) -> tuple[int, ...]:
        return self.pads[: self.spatial_rank]

    @property
    def pads_end(self) -> tuple[int, ...]:
        return self.pads[self.spatial_rank :]


def affine_conv(
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    groups: int = 1,
    auto_pad: str = "NOTSET",
) -> AffineConv:
    """An :class:`AffineConv` with ONNX's defaults: stride 1, dilation 1, no pads, no bias."""
    kernel = _as_floating(kernel)
    rank = kernel.ndim - 2
    if rank < 0:
        raise ValueError(f"a conv kernel needs at least 2 dims, got shape {kernel.shape}")
    out_channels = kernel.shape[0]
    bias = np.zeros(out_channels) if bias is None else _as_floating(bias)
    if bias.shape != (out_channels,):
        raise ValueError(f"bias shape {bias.shape} does not match {out_channels} output channels")
    if groups < 1 or out_channels % groups:
        raise ValueError(f"{out_channels} output channels cannot be split into {groups} groups")
    geometry = {"strides": strides, "dilations": dilations}
    for name, values in geometry.items():
        if values is not None and len(values) != rank:
            raise ValueError(f"{name} {list(values)} do not fit a {rank}-d kernel")
    if pads is not None and len(pads) != 2 * rank:
        raise ValueError(f"pads {list(pads)} do not fit a {rank}-d kernel")
    return AffineConv(
        kernel=kernel,
        bias=bias,
        strides=tuple(int(s) for s in strides) if strides is not None else (1,) * rank,
        dilations=tuple(int(d) for d in dilations) if dilations is not None else (1,) * rank,
        pads=tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * rank),
        groups=int(groups),
        auto_pad=auto_pad,
    )


def same_pads(
    sizes: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    auto_pad: str,
) -> tuple[int, ...]:
    """ONNX's explicit pads (begins, then ends) of ``auto_pad=SAME_UPPER/SAME_LOWER`` on an
    input of spatial ``sizes``: per dim, ``ceil(n / s)`` outputs and a total of
    ``max((out − 1)·s + d·(k − 1) + 1 − n, 0)``, the odd one at the end (``SAME_UPPER``, TF's
    ``SAME``) or at the beginning (``SAME_LOWER``). With stride 1 the total is ``d·(k − 1)``
    whatever ``n``."""
    begins, ends = [], []
    for size, kernel, stride, dilation in zip(sizes, kernel_shape, strides, dilations, strict=True):
        outputs = -(-size // stride)
        total = max((outputs - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return (*begins, *ends)


def _as_floating(values) -> np.ndarray:
    """``values`` as a floating-point array: floating input as is, anything else as float64."""
    array = np.asarray(values)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def batchnorm_scale_shift(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as ``y = scale·x + shift`` per channel.

    ``scale = γ / sqrt(var + ε)``, ``shift = β − μ·scale``.
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return scale, shift


def scale_and_shift(conv: AffineConv, scale: np.ndarray, shift: np.ndarray) -> AffineConv:
    """The affine conv equal to ``scale ⊙ conv(x) + shift`` (one value per output channel).

    ``W' = W·scale`` per output channel (kept as a factor, see :class:`AffineConv`),
    ``b' = b·scale + shift``.
    """
    scale = per_channel(scale, conv.out_channels, "channel scales")
    shift = per_channel(shift, conv.out_channels, "channel shifts")
    return evolve(
        conv,
        bias=np.multiply(conv.bias, scale, dtype=np.float64) + shift,
        scale=scale if conv.scale is None else conv.scale * scale,
    )


def per_channel(values: np.ndarray, channels: int, what: str = "values") -> np.ndarray:
    """``values`` as ``channels`` float64 numbers: one per channel, or one for all of them."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 1:
        return np.full(channels, values[0])
    if values.size != channels:
        raise ValueError(f"{values.size} {what} for {channels} channels")
    return values


def fold_batchnorm(
    conv: AffineConv,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> AffineConv:
    """The affine conv equal to ``BatchNormalization(conv(x))`` (RepVGG eq. 3).

    ``W' = W·γ/σ`` per output channel, ``b' = β + (b − μ)·γ/σ``, ``σ = sqrt(var + ε)``.
    """
    return scale_and_shift(conv, *batchnorm_scale_shift(gamma, beta, mean, var, eps))


def identity_conv(channels: int, spatial_rank: int) -> AffineConv:
    """The identity map ``y = x`` as a depthwise 1x1 conv of ones (``groups = channels``)."""
    kernel = np.ones((channels, 1) + (1,) * spatial_rank)
    return affine_conv(kernel, groups=channels)


def regroup_kernel(
    kernel: np.ndarray,
    groups: int,
    new_groups: int,
    first_row: int = 0,
    out_channels: int | None = None,
) -> np.ndarray:
    """Express a ``groups``-grouped kernel as an equivalent ``new_groups``-grouped one.

    ``new_groups`` must divide ``groups``; each new group holds ``groups/new_groups`` old groups
    on its block diagonal and zeros elsewhere. For the identity (``groups = C``) regrouped to
    ``g`` this gives timm's ``k[i, i % (C/g)] = 1``. ``kernel`` may be the output channels
    ``first_row …`` of a kernel of ``out_channels`` channels; the result is the same rows.
    """
    if groups == new_groups:
        return kernel
    if new_groups < 1 or groups % new_groups:
        raise ValueError(f"cannot regroup a {groups}-group kernel into {new_groups} groups")
    rows, in_per_group = kernel.shape[:2]
    out_per_group = (rows if out_channels is None else out_channels) // groups
    merged_per_new = groups // new_groups
    result = np.zeros((rows, in_per_group * merged_per_new, *kernel.shape[2:]))
    last_row = first_row + rows
    for group in range(first_row // out_per_group, (last_row - 1) // out_per_group + 1):
        start = max(group * out_per_group, first_row) - first_row
        stop = min((group + 1) * out_per_group, last_row) - first_row
        first_col = (group % merged_per_new) * in_per_group
        result[start:stop, first_col : first_col + in_per_group] = kernel[start:stop]
    return result


def materialize(conv: AffineConv, dtype: np.dtype = np.float64) -> AffineConv:
    """The same conv with ``scale`` multiplied into a kernel of ``dtype`` (float64 inside)."""
    if conv.scale is None and conv.kernel.dtype == dtype:
        return conv
    kernel = np.empty(conv.kernel.shape, dtype)
    for rows in _row_chunks(conv.kernel.shape):
        kernel[rows] = _scaled_rows(conv, rows)
    return evolve(conv, kernel=kernel, scale=None)


def _scaled_rows(conv: AffineConv, rows: slice) -> np.ndarray:
    """Output channels ``rows`` of the effective kernel ``kernel·scale``, in float64."""
    if conv.scale is None:
        return conv.kernel[rows].astype(np.float64)
    factor = conv.scale[rows].reshape((-1,) + (1,) * (conv.kernel.ndim - 1))
    return np.multiply(conv.kernel[rows], factor, dtype=np.float64)


#: Float64 elements per chunk of output channels: small enough to stay in cache, so a kernel
#: is read once and written once instead of passing through several full-size temporaries.
_CHUNK_ELEMENTS = 1 << 16


def _row_chunks(shape: Sequence[int]) -> list[slice]:
    """Slices of output channels of about ``_CHUNK_ELEMENTS`` elements each."""
    step = max(1, _CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    return [slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


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
    for rows in _row_chunks(shape):
        chunk = np.zeros((rows.stop - rows.start, *shape[1:]))
        for branch, branch_offsets in zip(branches, offsets, strict=True):
            regrouped = regroup_kernel(
                _scaled_rows(branch, rows), branch.groups, groups, rows.start, shape[0]
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
