"""onnx's reference evaluator, with ``ScatterND`` vectorized and ``Unsqueeze`` as specified.

The passes evaluate small constant subgraphs and probe data-movement chains with
:class:`onnx.reference.ReferenceEvaluator`. Its ``ScatterND`` loops in Python over every
index tuple, which made one TorchScript DBB-ResNet-18 spend 4.7 s of its fuse writing
borders. :func:`scatter_nd` computes the same output with one numpy assignment whenever that
is the same thing: no reduction and no index tuple written twice (numpy does not promise an
order for repeated indices; the reference's loop decides it).

Its ``Unsqueeze`` before opset 13 inserts the axes one at a time, so negative axes count from
the end of a partly expanded shape: ``axes=[-2, -1]`` on ``[C]`` gives ``[1, C, 1]``, where
the specification (axes count in the output's rank) and onnxruntime give ``[C, 1, 1]``.
:func:`unsqueeze` computes the specified result at every opset.

The ops whose results this module's evaluator is tested to share with onnxruntime, at every
opset where their signature changes, are :data:`CHECKED_OPS`: constant folding trusts the
reference alone (where onnxruntime cannot run a node) only on those.

``onnx.reference`` takes a tenth of a second to import, so it is imported on first use
(constant folding computes index ops with :mod:`.exact_ops` first, and often needs no more).
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import onnx

from .exact_ops import unsqueeze


def scatter_nd(
    data: np.ndarray, indices: np.ndarray, updates: np.ndarray, *, in_place: bool = False
) -> np.ndarray | None:
    """``ScatterND(data, indices, updates)`` without reduction, or ``None`` if an index tuple
    repeats (then the order of writes matters). Out-of-range indices raise ``ValueError``.
    ``in_place`` writes into ``data`` (C-contiguous; nothing else may read it) instead of a
    copy."""
    depth = indices.shape[-1]
    leading = data.shape[:depth]
    rows = indices.reshape(-1, depth).astype(np.int64)
    rows = np.where(rows < 0, rows + np.array(leading, dtype=np.int64), rows)
    flat = np.ravel_multi_index(tuple(rows.T), leading)
    ordered = np.sort(flat)  # not a bincount: that allocates one counter per element of data
    if np.any(ordered[1:] == ordered[:-1]):
        return None
    output = data if in_place else np.array(data, order="C")
    output.reshape((-1, *data.shape[depth:]))[flat] = updates.reshape(
        (len(flat), *data.shape[depth:])
    )  # a C-contiguous array reshapes into a view of itself, so this writes into it
    return output


@cache
def _unsqueeze_op() -> type:
    from onnx.reference.op_run import OpRun

    class SpecifiedUnsqueeze(OpRun):
        op_domain = ""

        def _run(self, data, axes=None):  # an input from opset 13 on, an attribute before
            if axes is None:
                raise ValueError("Unsqueeze needs axes")
            return (unsqueeze(data, [int(a) for a in np.asarray(axes).reshape(-1)]),)

    SpecifiedUnsqueeze.__name__ = "Unsqueeze"
    return SpecifiedUnsqueeze


@cache
def _scatter_nd_op() -> type:
    from onnx.reference.ops.op_scatternd import ScatterND

    class VectorizedScatterND(ScatterND):
        op_domain = ""
        #: The data inputs this op may write into: read by it alone, computed by the model.
        overwritable: frozenset[str] = frozenset()

        def _run(self, data, indices, updates, reduction=None):
            if reduction in (None, "none"):
                in_place = (
                    self.onnx_node.input[0] in self.overwritable
                    and data.flags.c_contiguous  # np.pad keeps a Fortran-ordered input's order
                )
                output = scatter_nd(data, indices, updates, in_place=in_place)
                if output is not None:
                    return (output,)
            return super()._run(data, indices, updates, reduction=reduction)

    VectorizedScatterND.__name__ = "ScatterND"
    return VectorizedScatterND


def reference_evaluator(model: onnx.ModelProto, *, overwrite_intermediates: bool = False):
    """An :class:`onnx.reference.ReferenceEvaluator` of ``model`` with the vectorized
    ``ScatterND`` and the specified ``Unsqueeze``. With ``overwrite_intermediates``, a
    ``ScatterND`` writes into its data when that is a fresh array only it reads (see
    :func:`_overwritable`): a chain of border writes then copies the map once, not once per
    write (the evaluator's intermediate results must then not be read back)."""
    from onnx.reference import ReferenceEvaluator

    scatter = _scatter_nd_op()
    if overwrite_intermediates:
        overwritable = _overwritable(model.graph)
        scatter = type("ScatterND", (scatter,), {"overwritable": overwritable})
    return ReferenceEvaluator(model, new_ops=[scatter, _unsqueeze_op()])


#: Ops whose output is always an array of its own (``np.pad``; a ``ScatterND``'s copy, or its
#: data written in place, which was one), never a view of or the same object as an input.
_FRESH_OUTPUTS = frozenset({"Pad", "ScatterND"})


def _overwritable(graph: onnx.GraphProto) -> frozenset[str]:
    """The outputs of ``graph``'s :data:`_FRESH_OUTPUTS` nodes that exactly one input of one
    node reads and that are not graph outputs: no other name holds their array, and no other
    reader sees it written."""
    reads = Counter(name for node in graph.node for name in node.input)
    outputs = {value.name for value in graph.output}
    return frozenset(
        name
        for node in graph.node
        if node.op_type in _FRESH_OUTPUTS  # another domain's op would not run at all
        for name in node.output
        if reads[name] == 1 and name not in outputs
    )


#: Ops whose results :func:`reference_evaluator` is tested to share with onnxruntime, at every
#: opset where their signature changes (``tests/test_constant_folding.py`` holds a case for
#: each and fails if one lacks it).
CHECKED_OPS = frozenset(
    {
        "Add", "Cast", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Flatten",
        "Gather", "Identity", "Mul", "Neg", "Pad", "Pow", "Range", "Reciprocal", "ReduceMean",
        "ReduceSum", "Reshape", "ScatterND", "Sigmoid", "Slice", "Split", "Sqrt", "Squeeze",
        "Sub", "Tile", "Transpose", "Unsqueeze", "Where", "Clip",
    }
)  # fmt: skip
