"""The peer tools' own linear-fold test cases, re-created as small ONNX graphs.

Each :class:`PeerCase` is one graph from the test suite of onnxoptimizer
(``onnxoptimizer/test/optimizer_test.py``), onnxscript's rewriter
(``onnxscript/rewriter/rules/common/*_test.py``), onnxslim (``tests/test_fusion_patterns.py``),
onnx-simplifier (``tests/test_python_api.py``) or onnxruntime
(``onnxruntime/test/optimizer/graph_transform_test.cc``), plus a few ``target-`` cases for
behaviour the affine-region pass is meant to have that no peer tests. Shapes are shrunk; the
structure (op types, attributes, which operands are constants, initializers or graph inputs)
is the peer's, adapted where noted so that the graph is valid, runs in onnxruntime and its
expected outcome is unambiguous. Where a comment says a peer gets a case wrong, that was seen
by running the peer's released version on the graph here (onnxoptimizer 0.4.2, onnxslim 0.1.98,
onnxscript 0.7.2, onnxruntime 1.32 at ORT_ENABLE_BASIC). BatchNormalization statistics are
randomized far from the identity (var in U(0.2, 3), mean away from 0) so an eps or mean slip
cannot hide.

``expect`` is the op histogram after fusion: a dict, a tuple of acceptable dicts, ``None``
(= must not change) or :data:`RAISES` (the tool must refuse the whole model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL

RAISES = "raises"
UNCHANGED = None

Shape = Sequence[int | str | None] | None
Histogram = dict[str, int]


@dataclass(frozen=True)
class PeerCase:
    """One re-created peer test case and the outcome the tool must have on it.

    ``feeds``: values for graph inputs that random normal data cannot stand for (int64 pads,
    bool flags, a shapeless input). ``overrides``: initializers that are also graph inputs,
    fed a different value in a second run; a tool that folded them as constants fails it.
    ``blame``: node or tensor names; a skip reported for one of these nodes must name one.
    ``check``: an extra assertion on the fused model (e.g. ``auto_pad`` kept).
    """

    id: str
    build: Callable[[], onnx.ModelProto]
    expect: Histogram | tuple[Histogram, ...] | str | None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    blame: tuple[str, ...] = ()
    check: Callable[[onnx.ModelProto], None] | None = None
    rtol: float = 1e-4


class Graph:
    """Accumulates one graph: inputs, outputs, initializers, nodes, random constants."""

    def __init__(self, opset: int = 17, seed: int = 0, ir_version: int = 8) -> None:
        self.opset = opset
        self.ir_version = ir_version
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.functions: list[onnx.FunctionProto] = []
        self.domains: dict[str, int] = {}
        self._count = 0

    # -- names and values --------------------------------------------------------------------

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def input(self, name: str, shape: Shape, dtype: int = FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, shape: Shape = None, dtype: int = FLOAT, rank: int = 4) -> str:
        if shape is None:
            shape = [None] * rank
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def init(self, name: str, value, dtype=np.float32, as_input: bool = False) -> str:
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        if as_input:
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            self.inputs.append(helper.make_tensor_value_info(name, elem, array.shape))
        return name

    def weight(self, stem: str, shape: Sequence[int], scale: float = 0.5, **kw) -> str:
        return self.init(self.fresh(stem), self.rng.normal(0, scale, shape), **kw)

    def constant(self, stem: str, value, dtype=np.float32) -> str:
        """A ``Constant`` node (not an initializer) holding ``value``."""
        name = self.fresh(stem)
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        self.nodes.append(
            helper.make_node("Constant", [], [name], name=f"Constant_{name}", value=tensor)
        )
        return name

    def ints(self, stem: str, values: Sequence[int]) -> str:
        return self.init(self.fresh(stem), values, dtype=np.int64)

    # -- nodes -------------------------------------------------------------------------------

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | str | None = None,
        *,
        name: str | None = None,
        domain: str = "",
        **attrs,
    ) -> str:
        """Append a node; return its first output's name."""
        if outputs is None:
            outputs = [self.fresh(op_type.lower())]
        elif isinstance(outputs, str):
            outputs = [outputs]
        node_name = name if name is not None else self.fresh(op_type)
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), list(outputs), name=node_name, domain=domain, **attrs
            )
        )
        return outputs[0]

    def bn_params(self, channels: int, *, as_input: bool = False, dtype=np.float32) -> list[str]:
        """Random inference statistics, far from the identity."""
        rng = self.rng
        sign = rng.choice([-1.0, 1.0], channels)
        values = {
            "gamma": rng.uniform(0.5, 1.5, channels),
            "beta": rng.normal(0, 0.5, channels),
            "mean": sign * rng.uniform(0.3, 1.5, channels),
            "var": rng.uniform(0.2, 3.0, channels),
        }
        return [
            self.init(self.fresh(key), value, dtype=dtype, as_input=as_input)
            for key, value in values.items()
        ]

    def bn(
        self,
        x: str,
        channels: int,
        out: str | None = None,
        *,
        eps: float = 1e-5,
        params: Sequence[str] | None = None,
        name: str | None = None,
        extra_outputs: Sequence[str] = (),
        **attrs,
    ) -> str:
        params = list(params) if params is not None else self.bn_params(channels)
        outputs = [out or self.fresh("bn_out"), *extra_outputs]
        return self.op("BatchNormalization", [x, *params], outputs, name=name, epsilon=eps, **attrs)

    def function(
        self, domain: str, fname: str, inputs: Sequence[str], outputs: Sequence[str], nodes
    ) -> None:
        """A model-local function, so a custom-domain op still runs in onnxruntime."""
        self.domains[domain] = 1
        self.functions.append(
            helper.make_function(
                domain,
                fname,
                list(inputs),
                list(outputs),
                list(nodes),
                opset_imports=[helper.make_opsetid("", self.opset)],
            )
        )

    def build(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "peer_case", self.inputs, self.outputs, self.initializers
        )
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(domain, v) for domain, v in self.domains.items()]
        model = helper.make_model(
            graph, opset_imports=opsets, functions=self.functions, producer_name="peer-cases"
        )
        model.ir_version = self.ir_version
        onnx.checker.check_model(model, full_check=True)
        return model


# ----------------------------------------------------------------------------------------------
# Small recurring shapes.
# ----------------------------------------------------------------------------------------------


def conv_bn_model(
    *,
    opset: int = 17,
    seed: int = 0,
    x_shape=(1, 4, 8, 8),
    cout: int = 6,
    kernel=(3, 3),
    group: int = 1,
    bias: bool = False,
    eps: float = 1e-5,
    **conv_attrs,
) -> onnx.ModelProto:
    g = Graph(opset, seed)
    x = g.input("X", list(x_shape))
    w = g.weight("W", [cout, x_shape[1] // group, *kernel])
    inputs = [x, w] + ([g.weight("B", [cout])] if bias else [])
    h = g.op("Conv", inputs, "conv_out", name="Conv", group=group, **conv_attrs)
    g.bn(h, cout, "Y", eps=eps, name="BN")
    g.output("Y", rank=len(x_shape))
    return g.build()


def conv_then(
    op_type: str,
    const_shape: Sequence[int],
    *,
    x_shape=(1, 5, 3, 3),
    cout: int = 16,
    kernel=(3, 3),
    bias: bool = False,
    constant_node: bool = False,
    opset: int = 17,
    seed: int = 0,
    const_first: bool = False,
    conv_attrs: dict | None = None,
    values: np.ndarray | None = None,
) -> onnx.ModelProto:
    """``Conv`` followed by ``op_type`` with a constant of ``const_shape``."""
    g = Graph(opset, seed)
    x = g.input("X", list(x_shape))
    w = g.weight("W", [cout, x_shape[1], *kernel])
    inputs = [x, w] + ([g.weight("B", [cout])] if bias else [])
    h = g.op("Conv", inputs, "Z", name="Conv", **(conv_attrs or {}))
    if values is None:
        values = g.rng.uniform(0.5, 1.5, const_shape) * g.rng.choice([-1, 1], const_shape)
    c = g.constant("A", values) if constant_node else g.init("A", values)
    g.op(op_type, [c, h] if const_first else [h, c], "Y", name=op_type)
    g.output("Y", rank=len(x_shape))
    return g.build()


def pad_then(
    child: str,
    pads: Sequence[int],
    *,
    opset: int = 13,
    x_shape=(1, 5, 2, 2),
    w_shape=(16, 5, 3, 3),
    mode: str | None = None,
    value: float | None = None,
    value_attr: float | None = None,
    child_attrs: dict | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """``Pad`` (attribute form before opset 11, input form after) into ``child``."""
    g = Graph(opset, seed)
    x = g.input("X", list(x_shape))
    attrs = {} if mode is None else {"mode": mode}
    if opset < 11:
        attrs["pads"] = list(pads)
        if value_attr is not None:
            attrs["value"] = value_attr
        p = g.op("Pad", [x], "P", name="Pad", **attrs)
    else:
        pad_inputs = [x, g.init("Pads", pads, dtype=np.int64)]
        if value is not None:
            pad_inputs.append(g.init("Constant_value", value))
        p = g.op("Pad", pad_inputs, "P", name="Pad", **attrs)
    if child == "Conv":
        g.op("Conv", [p, g.weight("W", w_shape)], "Z", name="Conv", **(child_attrs or {}))
    else:
        g.op(child, [p], "Z", name=child, **(child_attrs or {}))
    g.output("Z", rank=len(x_shape))
    return g.build()


def matmul_add(
    x_shape,
    w_shape,
    b_shape,
    *,
    w_input: bool = False,
    b_input: bool = False,
    opset: int = 17,
    seed: int = 0,
    out_rank: int | None = None,
) -> onnx.ModelProto:
    g = Graph(opset, seed)
    x = g.input("X", x_shape)
    w = g.input("Y", list(w_shape)) if w_input else g.init("Y", g.rng.normal(0, 0.5, w_shape))
    b = g.input("B", list(b_shape)) if b_input else g.init("B", g.rng.normal(0, 0.5, b_shape))
    z = g.op("MatMul", [x, w], "Z", name="MatMul")
    g.op("Add", [z, b], "A", name="Add")
    rank = out_rank if out_rank is not None else max(len(x_shape or [0, 0]), len(b_shape))
    g.output("A", rank=rank)
    return g.build()


def attribute_check(node_type: str, attr: str, expected) -> Callable[[onnx.ModelProto], None]:
    """Assert every ``node_type`` node of the fused model has ``attr == expected``."""

    def check(model: onnx.ModelProto) -> None:
        nodes = [n for n in model.graph.node if n.op_type == node_type]
        assert nodes, f"no {node_type} left"
        for node in nodes:
            values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            value = values.get(attr)
            if isinstance(value, bytes):
                value = value.decode()
            assert value == expected, f"{node_type} {node.name}: {attr}={value!r}"

    return check


# ----------------------------------------------------------------------------------------------
# onnxoptimizer — onnxoptimizer/test/optimizer_test.py
# ----------------------------------------------------------------------------------------------


def _opt_fuse_bn_simple():
    return conv_bn_model(x_shape=(2, 2, 10, 10), cout=3, kernel=(5, 5), bias=True)


def _opt_fuse_bn_group():
    return conv_bn_model(x_shape=(1, 4, 8, 8), cout=6, group=2, pads=[1, 1, 1, 1])


def _opt_fuse_bn_conv_output_is_graph_output():
    """fuse_bn_into_conv.h: 'Output of initial conv has no other uses'."""
    g = Graph()
    x = g.input("X", [1, 4, 6, 6])
    h = g.op("Conv", [x, g.weight("W", [6, 4, 3, 3])], "conv_out", name="Conv")
    g.bn(h, 6, "Y", name="BN")
    g.output("Y")
    g.output("conv_out")
    return g.build()


def _opt_add_bias_conv_dynamic_weight():
    """Their 'use_conv_shape': the weight is Sub(M, N) of graph inputs."""
    g = Graph()
    x = g.input("X", [1, 5, 3, 3])
    w = g.op("Sub", [g.input("M", [16, 5, 3, 3]), g.input("N", [16, 5, 3, 3])], "Wd")
    h = g.op("Conv", [x, w], "Z", name="Conv")
    g.op("Add", [h, g.init("A", g.rng.normal(0, 1, [1, 16, 1, 1]))], "Y", name="Add")
    g.output("Y")
    return g.build()


def _opt_matmul_add_topological():
    """The bias is MatMul(M, N) of graph inputs; the weight a graph input."""
    g = Graph()
    z = g.op("MatMul", [g.input("X", [8, 10]), g.input("Y", [10, 16])], "Z", name="matmul")
    b = g.op("MatMul", [g.input("M", [8, 10]), g.input("N", [10, 16])], "Bm", name="bias")
    g.op("Add", [z, b], "A", name="add")
    g.output("A", rank=2)
    return g.build()


def _opt_matmul_add_multiple_use():
    g = Graph()
    z = g.op("MatMul", [g.input("X", [8, 10]), g.init("Y", g.rng.normal(0, 1, [10, 16]))], "Z")
    g.op("Identity", [z], "A1", name="Identity")
    g.op("Add", [z, g.init("B", g.rng.normal(0, 1, [1, 16]))], "A2", name="Add")
    g.output("A1", rank=2)
    g.output("A2", rank=2)
    return g.build()


def _opt_eliminate_identity_graph_output():
    g = Graph()
    a = g.op("Add", [g.input("X", [5]), g.input("Y", [5])], "A", name="Add")
    g.op("Identity", [a], "B", name="Identity")
    g.output("B", rank=1)
    return g.build()


def _opt_eliminate_identity_multiple_uses():
    g = Graph()
    y = g.op("Identity", [g.input("X", [5])], "Y", name="Identity")
    a = g.op("Add", [g.input("Z", [5]), y], "A", name="Add")
    g.op("Mul", [a, y], "B", name="Mul")
    g.output("B", rank=1)
    return g.build()


def _opt_eliminate_identity_in_and_out():
    g = Graph()
    g.op("Identity", [g.input("A", [5])], "B", name="Identity")
    g.output("B", rank=1)
    return g.build()


def _opt_nop_transpose_graph_output():
    g = Graph()
    a = g.op("Add", [g.input("X", [2, 3]), g.input("Y", [2, 3])], "A", name="Add")
    g.op("Transpose", [a], "B", name="Transpose", perm=[0, 1])
    g.output("B", rank=2)
    return g.build()


def _opt_nop_transpose_after_identity():
    """Their 'nop_transpose' (Identity then Transpose<perm=[0,1]>), behind a Relu so the graph
    input and output do not meet."""
    g = Graph()
    r = g.op("Relu", [g.input("A", [2, 3])], "R", name="Relu")
    x = g.op("Identity", [r], "X", name="Identity")
    g.op("Transpose", [x], "Y", name="Transpose", perm=[0, 1])
    g.output("Y", rank=2)
    return g.build()


def _opt_nop_transpose_default():
    g = Graph()
    x = g.op("Identity", [g.input("A", [2, 3])], "X", name="Identity")
    g.op("Transpose", [x], "Y", name="Transpose")
    g.output("Y", rank=2)
    return g.build()


def _opt_nop_pad_before_conv():
    """A Pad of all zeros (their 'nop_pad') feeding a Conv."""
    g = Graph(13)
    p = g.op("Pad", [g.input("X", [1, 3, 5, 5]), g.ints("pads", [0] * 8)], "P", name="Pad")
    g.op("Conv", [p, g.weight("W", [4, 3, 3, 3])], "Y", name="Conv", pads=[1, 1, 1, 1])
    g.output("Y")
    return g.build()


def _dropout_log(opset: int, graph_output: bool = False, **attrs):
    g = Graph(opset)
    x = g.input("X", [5, 7])
    if graph_output:
        y = g.op("Log", [x], "Y", name="Log")
        g.op("Dropout", [y], "Z", name="Dropout", **attrs)
    else:
        y = g.op("Dropout", [x], "Y", name="Dropout", **attrs)
        g.op("Log", [y], "Z", name="Log")
    g.output("Z", rank=2)
    return g.build()


def _opt_nop_with_unit():
    """eliminate_nop_with_unit: x*1, 1*x, x+0, 0+x, x-0, x/1, then 0-x (not a no-op)."""
    g = Graph()
    one = g.init("one", np.ones([1]))
    zero = g.init("zero", np.zeros([1]))
    x = g.input("X", [3, 2])
    x = g.op("Mul", [x, one], "X1", name="Mul_x_one")
    x = g.op("Mul", [one, x], "X2", name="Mul_one_x")
    x = g.op("Add", [x, zero], "X3", name="Add_x_zero")
    x = g.op("Add", [zero, x], "X4", name="Add_zero_x")
    x = g.op("Sub", [x, zero], "X5", name="Sub_x_zero")
    x = g.op("Div", [x, one], "X6", name="Div_x_one")
    g.op("Sub", [zero, x], "Y", name="Sub_zero_x")
    g.output("Y", rank=2)
    return g.build()


#: Pad(0) before an AveragePool may merge into its pads, or the pair may become one depthwise
#: Conv; it need not change at all. Any of these, as long as the outputs stay equal.
PAD_AVGPOOL_OUTCOMES = ({"AveragePool": 1}, {"Conv": 1}, {"Pad": 1, "AveragePool": 1})

ONNXOPTIMIZER = [
    PeerCase("onnxoptimizer-fuse_bn_into_conv-simple", _opt_fuse_bn_simple, {"Conv": 1}),
    PeerCase("onnxoptimizer-fuse_bn_into_conv-group", _opt_fuse_bn_group, {"Conv": 1}),
    PeerCase(
        "onnxoptimizer-fuse_bn_into_conv-conv_output_is_graph_output",
        _opt_fuse_bn_conv_output_is_graph_output,
        UNCHANGED,
        blame=("BN", "Conv", "conv_out"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-scalar_bias",
        lambda: conv_then("Add", []),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-use_weight_shape",
        lambda: conv_then("Add", [16, 1, 1]),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-use_weight_shape_with_tile",
        lambda: conv_then("Add", [1]),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-use_conv_shape",
        lambda: conv_then("Add", [1, 16, 1, 1], bias=True),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-use_conv_shape-dynamic_weight",
        _opt_add_bias_conv_dynamic_weight,
        UNCHANGED,
        blame=("Conv", "Add", "Wd"),
    ),
    PeerCase(
        # onnxoptimizer 0.4.2 turns this into Unsqueeze+Tile+Conv that onnxruntime rejects
        # (Tile 'repeats' of the wrong rank) when the bias has no value_info.
        "onnxoptimizer-fuse_add_bias_into_conv-use_move_constant",
        lambda: conv_then("Add", [16, 1, 1], constant_node=True),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-squeeze_1d_bias_no_fuse",
        lambda: conv_then("Add", [3]),
        UNCHANGED,
        blame=("Add", "A"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-squeeze_3d_bias_no_fuse",
        lambda: conv_then("Add", [16, 3, 3]),
        UNCHANGED,
        blame=("Add", "A"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_add_bias_into_conv-squeeze_4d_bias_no_fuse",
        lambda: conv_then("Add", [1, 16, 3, 3]),
        UNCHANGED,
        blame=("Add", "A"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm",
        lambda: matmul_add([8, 10], [10, 16], [16]),
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-2d_bias",
        lambda: matmul_add([8, 10], [10, 16], [1, 16]),
        {"Gemm": 1},
    ),
    PeerCase(
        # A bias of the full [M, N] shape is one value per position, not per channel: outside
        # the normal form, but a Gemm's C (passes/matmul_add_to_gemm.py).
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-2d_bias_same_shape",
        lambda: matmul_add([8, 10], [10, 16], [8, 16]),
        {"Gemm": 1},
    ),
    PeerCase(
        # The Gemm stands where the Add stood, after the MatMul computing its bias.
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-must_keep_topological_order",
        _opt_matmul_add_topological,
        {"MatMul": 1, "Gemm": 1},
    ),
    PeerCase(
        # onnxscript 0.7.2 (_matmul_add_to_gemm) makes a Gemm whose C does not broadcast to
        # (M, N): onnxruntime fails at run time. Same for 3d_bias and ort NotBroadcastable.
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-2d_bias_bcast_no_fuse",
        lambda: matmul_add([1, 10], [10, 16], [16, 16]),
        UNCHANGED,
        blame=("Add", "B"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-3d_matmul_no_fuse",
        lambda: matmul_add([2, 3, 4], [2, 4, 3], [3, 3]),
        UNCHANGED,
    ),
    PeerCase(
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-3d_bias_no_fuse",
        lambda: matmul_add([8, 10], [10, 16], [4, 1, 16]),
        UNCHANGED,
        blame=("Add", "B"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_matmul_add_bias_into_gemm-multiple_use_no_fuse",
        _opt_matmul_add_multiple_use,
        {"MatMul": 1, "Add": 1},
    ),
    PeerCase(
        # onnxscript 0.7.2's fuse_pad_into_conv raises IndexError on every attribute-form Pad.
        "onnxoptimizer-fuse_pad_into_conv-no_optional_value-opset10",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], opset=10, mode="constant"),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-no_optional_value",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], opset=11, mode="constant"),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-with_optional_value",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], mode="constant", value=0.0),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-with_nonzero_optional_value",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], mode="constant", value=25.0),
        UNCHANGED,
        blame=("Pad", "Constant_value"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-1d-opset10",
        lambda: pad_then(
            "Conv", [0, 0, 1, 0, 0, 1], opset=10, x_shape=(1, 5, 30), w_shape=(16, 5, 32)
        ),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-1d",
        lambda: pad_then("Conv", [0, 0, 1, 0, 0, 1], x_shape=(1, 5, 30), w_shape=(16, 5, 32)),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-existing_conv_pad-opset10",
        lambda: pad_then(
            "Conv",
            [0, 0, 0, 0, 0, 0, 1, 1],
            opset=10,
            w_shape=(16, 5, 4, 4),
            child_attrs={"pads": [1, 1, 0, 0]},
        ),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-existing_conv_pad",
        lambda: pad_then(
            "Conv",
            [0, 0, 0, 0, 0, 0, 1, 1],
            w_shape=(16, 5, 4, 4),
            child_attrs={"pads": [1, 1, 0, 0]},
        ),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-pad_feature_no_fuse-opset10",
        lambda: pad_then("Conv", [0, 1, 0, 0, 0, 0, 0, 0], opset=10, x_shape=(1, 4, 3, 3)),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-pad_feature_no_fuse",
        lambda: pad_then("Conv", [0, 1, 0, 0, 0, 0, 0, 0], x_shape=(1, 4, 3, 3)),
        UNCHANGED,
        blame=("Pad", "Pads"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-negative_pad_no_fuse-opset10",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, -1, -1], opset=10, x_shape=(1, 5, 4, 4)),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-negative_pad_no_fuse",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, -1, -1], x_shape=(1, 5, 4, 4)),
        UNCHANGED,
        blame=("Pad", "Pads"),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-reflection_pad_no_fuse-opset10",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], opset=10, mode="reflect"),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-reflection_pad_no_fuse",
        lambda: pad_then("Conv", [0, 0, 0, 0, 0, 0, 1, 1], mode="reflect"),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-edge_pad_no_fuse",
        lambda: pad_then("Conv", [0, 0, 1, 1, 0, 0, 1, 1], mode="edge", x_shape=(1, 5, 3, 3)),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_conv-with_notset_autopad-opset10",
        lambda: pad_then(
            "Conv",
            [0, 0, 0, 0, 0, 0, 1, 1],
            opset=10,
            mode="constant",
            child_attrs={"auto_pad": "NOTSET"},
        ),
        {"Conv": 1},
    ),
    PeerCase(
        # onnxoptimizer 0.4.2 merges this (wrong at the border): fuse_pad_into_conv.h reads the
        # opset-10 'value' attribute, sees 1.5 != 0, finds no third input and falls out of its
        # do/while into the fusion anyway.
        "onnxoptimizer-fuse_pad_into_conv-nonzero_value_attr-opset10",
        lambda: pad_then("Conv", [0, 0, 1, 1, 0, 0, 1, 1], opset=10, value_attr=1.5),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_avgpool-no_optional_value",
        lambda: pad_then(
            "AveragePool",
            [0, 0, 1, 1, 0, 0, 1, 1],
            x_shape=(1, 5, 4, 4),
            child_attrs={"kernel_shape": [2, 2]},
        ),
        PAD_AVGPOOL_OUTCOMES,
    ),
    PeerCase(
        # onnxoptimizer 0.4.2 gets this wrong: fuse_pad_into_pool.h sets count_include_pad=1
        # although the pool's own pads were not counted.
        "onnxoptimizer-fuse_pad_into_avgpool-existing_avgpool_pad",
        lambda: pad_then(
            "AveragePool",
            [0, 0, 1, 1, 0, 0, 1, 1],
            x_shape=(1, 5, 4, 4),
            child_attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
        ),
        PAD_AVGPOOL_OUTCOMES,
    ),
    PeerCase(
        # MaxPool pads with -inf, not 0: a window of negatives next to a zero Pad differs.
        # onnxoptimizer 0.4.2 (fuse_pad_into_pool.h) merges it anyway.
        "onnxoptimizer-fuse_pad_into_maxpool-no_optional_value",
        lambda: pad_then(
            "MaxPool",
            [0, 0, 1, 1, 0, 0, 1, 1],
            x_shape=(1, 5, 4, 4),
            child_attrs={"kernel_shape": [2, 2]},
        ),
        UNCHANGED,
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_maxpool-no_optional_value-opset10",
        lambda: pad_then(
            "MaxPool",
            [0, 0, 1, 1, 0, 0, 1, 1],
            opset=10,
            x_shape=(1, 5, 4, 4),
            child_attrs={"kernel_shape": [2, 2]},
        ),
        UNCHANGED,
    ),
    PeerCase(
        "onnxoptimizer-fuse_pad_into_avgpool-reflection_pad_no_fuse",
        lambda: pad_then(
            "AveragePool",
            [0, 0, 1, 1, 0, 0, 1, 1],
            mode="reflect",
            x_shape=(1, 5, 4, 4),
            child_attrs={"kernel_shape": [2, 2], "count_include_pad": 1},
        ),
        UNCHANGED,
    ),
    PeerCase(
        "onnxoptimizer-eliminate_identity-graph_output",
        _opt_eliminate_identity_graph_output,
        {"Add": 1},
    ),
    PeerCase(
        "onnxoptimizer-eliminate_identity-multiple_uses",
        _opt_eliminate_identity_multiple_uses,
        {"Add": 1, "Mul": 1},
    ),
    PeerCase(
        "onnxoptimizer-eliminate_identity-both_graph_input_and_output",
        _opt_eliminate_identity_in_and_out,
        UNCHANGED,
    ),
    PeerCase(
        "onnxoptimizer-eliminate_nop_transpose-graph_output",
        _opt_nop_transpose_graph_output,
        {"Add": 1},
    ),
    PeerCase(
        "onnxoptimizer-eliminate_nop_transpose-after_identity",
        _opt_nop_transpose_after_identity,
        {"Relu": 1},
    ),
    PeerCase(
        "onnxoptimizer-eliminate_nop_transpose-default_perm_is_not_nop",
        _opt_nop_transpose_default,
        {"Transpose": 1},
    ),
    PeerCase("onnxoptimizer-eliminate_nop_pad-before_conv", _opt_nop_pad_before_conv, {"Conv": 1}),
    PeerCase("onnxoptimizer-eliminate_nop_dropout-opset12", lambda: _dropout_log(12), {"Log": 1}),
    PeerCase(
        "onnxoptimizer-eliminate_nop_dropout-opset11_graph_output",
        lambda: _dropout_log(11, graph_output=True, ratio=0.0),
        {"Log": 1},
    ),
    PeerCase(
        "onnxoptimizer-eliminate_nop_dropout-opset11_ratio0.5",
        lambda: _dropout_log(11, ratio=0.5),
        {"Log": 1},
    ),
    PeerCase("onnxoptimizer-eliminate_nop_with_unit", _opt_nop_with_unit, {"Sub": 1}),
]


# ----------------------------------------------------------------------------------------------
# onnxscript rewriter — onnxscript/rewriter/rules/common/*_test.py
# ----------------------------------------------------------------------------------------------


def _os_bn_convtranspose(bias: bool, group: int):
    g = Graph()
    cin, per_group = 8, 4
    cout = per_group * group
    x = g.input("X", ["N", cin, 6, 7])
    inputs = [x, g.weight("W", [cin, per_group, 3, 3])]
    if bias:
        inputs.append(g.weight("B", [cout]))
    h = g.op("ConvTranspose", inputs, "X1", name="ConvTranspose", group=group)
    g.bn(h, cout, "Y", name="BN")
    g.output("Y")
    return g.build()


def _os_bn_conv(bias: bool, group: int):
    return conv_bn_model(
        x_shape=("N", 8, 7, 8), cout=6 * (2 if group == 2 else 1), group=group, bias=bias
    )


def _os_bn_gemm(bias: bool, trans_b: int, alpha: float | None = None, beta: float | None = None):
    g = Graph()
    x = g.input("X", ["N", 6])
    w = g.weight("W", [5, 6] if trans_b else [6, 5])
    inputs = [x, w] + ([g.weight("B", [5])] if bias else [])
    attrs = {"transB": trans_b}
    if alpha is not None:
        attrs.update(alpha=alpha, beta=beta)
    h = g.op("Gemm", inputs, "X1", name="Gemm", **attrs)
    g.bn(h, 5, "Y", name="BN")
    g.output("Y", rank=2)
    return g.build()


def _os_bn_non_initializers():
    g = Graph()
    x = g.input("X", ["N", 4, 7, 8])
    w, b = g.input("W", [6, 4, 3, 3]), g.input("B", [6])
    params = [g.input(n, [6]) for n in ("gamma", "beta", "input_mean", "input_var")]
    h = g.op("Conv", [x, w, b], "X1", name="Conv")
    g.bn(h, 6, "Y", name="BN", params=params)
    g.output("Y")
    return g.build()


def _os_bn_graph_inputs():
    """W is an initializer that is also listed in graph.input: it can be overridden."""
    g = Graph()
    x = g.input("X", ["N", 4, 7, 8])
    w = g.init("W", g.rng.normal(0, 0.5, [6, 4, 3, 3]), as_input=True)
    h = g.op("Conv", [x, w], "X1", name="Conv")
    g.bn(h, 6, "Y", name="BN")
    g.output("Y")
    return g.build()


def _os_bn_names_collide():
    g = Graph()
    x1 = g.op("MaxPool", [g.input("X", ["N", 4, 9, 10])], "X1", kernel_shape=[3, 3])
    g.bn(g.op("Conv", [x1, g.weight("W1", [6, 4, 3, 3])], "X2"), 6, "Y1")
    g.bn(g.op("Conv", [x1, g.weight("W2", [10, 4, 3, 3])], "X3"), 10, "Y2")
    g.output("Y1")
    g.output("Y2")
    return g.build()


def _os_bn_shared_weights():
    g = Graph()
    w, b = g.weight("W", [5, 4, 3, 3]), g.weight("B", [5])
    params = g.bn_params(5)
    c1 = g.op("Conv", [g.input("X1", ["N", 4, 7, 8]), w, b], "C1", name="Conv1")
    c2 = g.op("Conv", [g.input("X2", ["N", 4, 7, 8]), w, b], "C2", name="Conv2")
    b1 = g.bn(c1, 5, "BN1", params=params, name="BatchNorm1")
    b2 = g.bn(c2, 5, "BN2", params=params, name="BatchNorm2")
    g.op("Add", [b1, b2], "Y", name="Add")
    g.output("Y")
    return g.build()


def _os_pad_conv(
    pads, axes, conv_pads, auto_pad, value, *, x_shape=("N", 4, 7, 8), w_shape=(3, 4, 3, 3)
):
    """_fuse_pad_into_conv_test.build_model: Pad(X, pads[, value][, axes]) then Conv.
    ``value`` 0.0 comes from a Constant<value_float> node, as in theirs."""
    g = Graph(18)
    x = g.input("X", list(x_shape))
    inputs = [x, g.ints("pads", pads)]
    if value is not None or axes is not None:
        inputs.append(
            ""
            if value is None
            else g.op("Constant", [], g.fresh("cval"), value_float=value, name="Constant")
        )
    if axes is not None:
        inputs.append(g.ints("axes", axes))
    p = g.op("Pad", inputs, "P", name="Pad")
    attrs = {}
    if conv_pads is not None:
        attrs["pads"] = conv_pads
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    g.op("Conv", [p, g.weight("W", w_shape)], "Y", name="Conv", **attrs)
    g.output("Y", rank=len(x_shape))
    return g.build()


def _os_pad_unsupported(
    pads,
    value,
    axes,
    *,
    mode: str = "constant",
    pads_input: bool = False,
    value_input: bool = False,
    axes_input: bool = False,
    cin: int = 2,
):
    """_fuse_pad_into_conv_test.test_unsupported_fuse_pad_into_conv: a 5-D Conv."""
    g = Graph(18)
    x = g.input("X", ["N", 2, 5, 6, 7])
    inputs = [x, g.input("pads", [len(pads)], INT64) if pads_input else g.ints("pads", pads)]
    if value_input:
        inputs.append(g.input("cval", [], FLOAT))
    elif value is not None:
        inputs.append(g.init("cval", value))
    else:
        inputs.append("")
    if axes_input:
        inputs.append(g.input("axes", [len(axes)], INT64))
    elif axes is not None:
        inputs.append(g.ints("axes", axes))
    p = g.op("Pad", inputs, "P", name="Pad", mode=mode)
    g.op("Conv", [p, g.weight("W", [3, cin, 3, 4, 5])], "Y", name="Conv")
    g.output("Y", rank=5)
    return g.build()


def _os_same_pad_bn(auto_pad, strides, kernel):
    model = conv_bn_model(
        x_shape=(1, 4, 11, 13), cout=4, kernel=kernel, auto_pad=auto_pad, strides=list(strides)
    )
    return model


def _os_no_op(op_type, value, *, constant_node, const_first, shape=None):
    """_no_op_test: ``output = op(input, c)`` with c = 1 or 0, behind a Relu so that removing
    the no-op does not join the graph input to the graph output."""
    g = Graph()
    t = g.op("Relu", [g.input("input", ["M"])], "t", name="Relu")
    if constant_node and shape is None:
        c = g.op("Constant", [], "c", name="Constant", value_float=value)
    elif constant_node:
        c = g.constant("c", np.full(shape, value))
    else:
        c = g.init("c", np.full(shape or [], value))
    g.op(op_type, [c, t] if const_first else [t, c], "output", name=op_type)
    g.output("output", rank=1)
    return g.build()


def _os_broadcast_not_eliminated():
    g = Graph()
    g.op("Add", [g.init("zero", np.zeros([1, 1, 1])), g.input("input", ["M"])], "output")
    g.output("output", rank=3)
    return g.build()


def _os_no_op_transpose():
    g = Graph(18)
    t = g.op("Relu", [g.input("X", [2, 3, 4])], "t", name="Relu")
    g.op("Transpose", [t], "Y", name="Transpose", perm=[0, 1, 2])
    g.output("Y", rank=3)
    return g.build()


def _os_conv_affine(
    *,
    weight_input: bool = False,
    bias_input: bool = False,
    scale_shape=(1,),
    width: int = 8,
    constant_nodes: bool = False,
):
    """_fuse_conv_affine_test: (Conv(x, w, b, pads=1) * scale) + offset."""
    g = Graph()
    c = 3
    x = g.input("x", [1, c, 8, width])
    if weight_input:
        w = g.input("w", [c, c, 3, 3])
    elif constant_nodes:
        w = g.constant("w", g.rng.normal(0, 0.5, [c, c, 3, 3]))
    else:
        w = g.weight("w", [c, c, 3, 3])
    if bias_input:
        b = g.input("b", [c])
    elif constant_nodes:
        b = g.constant("b", g.rng.normal(0, 0.5, [c]))
    else:
        b = g.weight("b", [c])
    h = g.op("Conv", [x, w, b], "conv_out", name="Conv", pads=[1, 1, 1, 1])
    if constant_nodes:
        scale = g.op("Constant", [], "scale", name="Constant_scale", value_float=2.0)
        offset = g.op("Constant", [], "offset", name="Constant_offset", value_float=3.0)
    else:
        scale = g.init("scale", g.rng.uniform(1.5, 2.5, scale_shape))
        offset = g.init("offset", [3.0])
    m = g.op("Mul", [h, scale], "mul_out", name="Mul")
    g.op("Add", [m, offset], "z", name="Add")
    g.output("z")
    return g.build()


def _os_affine_conv(pads):
    """Mul(x, 2) + 3 before a Conv."""
    g = Graph()
    x = g.input("x", [1, 3, 8, 8])
    m = g.op("Mul", [x, g.init("scale", [2.0])], "mul_out", name="Mul")
    z = g.op("Add", [m, g.init("offset", [3.0])], "z", name="Add")
    w, b = g.weight("w", [3, 3, 3, 3]), g.weight("b", [3])
    g.op("Conv", [z, w, b], "Y", name="Conv", pads=pads)
    g.output("Y")
    return g.build()


def _os_matmul_add_transposed(trans_a: bool, trans_b: bool):
    g = Graph(20, ir_version=10)
    x = g.input("X", [6, 8] if trans_a else [8, 6])
    w = g.init("W", g.rng.normal(0, 0.5, [4, 6] if trans_b else [6, 4]))
    if trans_a:
        x = g.op("Transpose", [x], "Xt", name="TransposeA", perm=[1, 0])
    if trans_b:
        w = g.op("Transpose", [w], "Wt", name="TransposeB", perm=[1, 0])
    y = g.op("MatMul", [x, w], "mm", name="MatMul")
    g.op("Add", [y, g.init("B", g.rng.normal(0, 0.5, [4]))], "Y", name="Add")
    g.output("Y", rank=2)
    return g.build()


def _os_matmul_add_inputs():
    return matmul_add([8, 6], [6, 4], [4], w_input=True, b_input=True, opset=20)


_PAD_CONFIGS = [
    ("2d", [0, 0, 2, 2, 0, 0, 2, 2], None, None, None),
    ("axes_1_-2_-1", [0, 2, 2, 0, 2, 2], [1, -2, -1], [2, 0, 2, 0], None),
    ("axes_-2_3", [1, 1, 1, 1], [-2, 3], [0, 1, 0, 1], None),
    ("axes_3_2-valid", [1, 3, 1, 3], [3, 2], None, "VALID"),
]

ONNXSCRIPT = [
    *[
        PeerCase(
            f"onnxscript-fuse_batchnorm-convtranspose-bias_{str(bias).lower()}_group{group}",
            lambda bias=bias, group=group: _os_bn_convtranspose(bias, group),
            {"ConvTranspose": 1},
        )
        for bias in (False, True)
        for group in (1, 4)
    ],
    *[
        PeerCase(
            f"onnxscript-fuse_batchnorm-conv-bias_{str(bias).lower()}_group{group}",
            lambda bias=bias, group=group: _os_bn_conv(bias, group),
            {"Conv": 1},
        )
        for bias in (False, True)
        for group in (1, 2)
    ],
    *[
        PeerCase(
            f"onnxscript-fuse_batchnorm-gemm-bias_{str(bias).lower()}_transB_{trans_b}",
            lambda bias=bias, trans_b=trans_b: _os_bn_gemm(bias, trans_b),
            {"Gemm": 1},
        )
        for bias in (False, True)
        for trans_b in (0, 1)
    ],
    PeerCase(
        "onnxscript-fuse_batchnorm-gemm-alpha0.5_beta2",
        lambda: _os_bn_gemm(True, 1, alpha=0.5, beta=2.0),
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxscript-fuse_batchnorm-non_initializers",
        _os_bn_non_initializers,
        UNCHANGED,
        blame=("BN", "Conv", "W", "B", "gamma", "beta", "input_mean", "input_var"),
    ),
    PeerCase(
        # onnxslim 0.1.98 folds W and drops it from graph.input (so in
        # ort-NegativeFuseConvAddNoBias and target-bn_param_initializer_in_graph_input too).
        "onnxscript-fuse_batchnorm-graph_inputs",
        _os_bn_graph_inputs,
        UNCHANGED,
        overrides=("W",),
        blame=("BN", "Conv", "W"),
    ),
    PeerCase(
        "onnxscript-fuse_batchnorm-does_not_collide_names",
        _os_bn_names_collide,
        {"MaxPool": 1, "Conv": 2},
    ),
    PeerCase(
        "onnxscript-fuse_batchnorm-skips_shared_weight_initializers",
        _os_bn_shared_weights,
        {"Conv": 2, "Add": 1},
    ),
    *[
        PeerCase(
            # onnxslim 0.1.98 breaks the value0 variants: the Constant<value_float> pad value comes
            # back with another type, and onnxruntime rejects the Pad.
            f"onnxscript-fuse_pad_into_conv-{label}-{'no_value' if value is None else 'value0'}",
            lambda p=pads, a=axes, cp=conv_pads, ap=auto_pad, v=value: _os_pad_conv(
                p, a, cp, ap, v
            ),
            {"Conv": 1},
        )
        for label, pads, axes, conv_pads, auto_pad in _PAD_CONFIGS
        for value in (None, 0.0)
    ],
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-non_spatial_pads",
        lambda: _os_pad_unsupported([1] * 10, 0.0, None, cin=4),
        UNCHANGED,
        blame=("Pad", "pads"),
    ),
    PeerCase(
        # Theirs pads nothing (all-zero pads, which would be exact to merge); padding the
        # last axis makes the non-zero constant value matter.
        "onnxscript-fuse_pad_into_conv-unsupported-nonzero_constant_value",
        lambda: _os_pad_unsupported([0, 1, 0, 1], 1.0, [0, -1]),
        UNCHANGED,
        blame=("Pad", "cval"),
    ),
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-edge_mode",
        lambda: _os_pad_unsupported([0, 1, 0, 1], 0.0, [0, -1], mode="edge"),
        UNCHANGED,
        blame=("Pad",),
    ),
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-pads_not_constant",
        lambda: _os_pad_unsupported([0, 1, 0, 1], None, [0, -1], pads_input=True),
        UNCHANGED,
        feeds={"pads": np.array([0, 1, 0, 1], np.int64)},
        blame=("Pad", "pads"),
    ),
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-cval_not_constant",
        lambda: _os_pad_unsupported([0, 0, 1, 1, 1, 0, 0, 1, 1, 1], None, None, value_input=True),
        UNCHANGED,
        feeds={"cval": np.array(0.0, np.float32)},
        blame=("Pad", "cval"),
    ),
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-axes_not_constant",
        lambda: _os_pad_unsupported([1, 1, 1, 1], None, [3, 4], axes_input=True),
        UNCHANGED,
        feeds={"axes": np.array([3, 4], np.int64)},
        blame=("Pad", "axes"),
    ),
    PeerCase(
        "onnxscript-fuse_pad_into_conv-unsupported-negative_pads",
        lambda: _os_pad_unsupported([0, 0, -1, -1, -1, 0, 0, 0, 0, 0], None, None),
        UNCHANGED,
        blame=("Pad", "pads"),
    ),
    *[
        PeerCase(
            f"onnxscript-normalize_pad_format-{auto_pad}-s{s[0]}x{s[1]}-k{k[0]}x{k[1]}-then_bn",
            lambda a=auto_pad, s=s, k=k: _os_same_pad_bn(a, s, k),
            {"Conv": 1},
            check=attribute_check("Conv", "auto_pad", auto_pad),
        )
        for s, k in (((2, 3), (1, 4)), ((2, 1), (5, 2)))
        for auto_pad in ("SAME_UPPER", "SAME_LOWER")
    ],
    PeerCase(
        "onnxscript-no_op-mul_one-constant-one_first",
        lambda: _os_no_op("Mul", 1.0, constant_node=True, const_first=True),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-mul_one-initializer-input_first",
        lambda: _os_no_op("Mul", 1.0, constant_node=False, const_first=False),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-add_zero-constant-zero_first",
        lambda: _os_no_op("Add", 0.0, constant_node=True, const_first=True),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-add_zero-initializer-shape1",
        lambda: _os_no_op("Add", 0.0, constant_node=False, const_first=False, shape=[1]),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-sub_zero-constant",
        lambda: _os_no_op("Sub", 0.0, constant_node=True, const_first=False),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-div_one-initializer",
        lambda: _os_no_op("Div", 1.0, constant_node=False, const_first=False),
        {"Relu": 1},
    ),
    PeerCase(
        "onnxscript-no_op-broadcast_is_not_eliminated",
        _os_broadcast_not_eliminated,
        UNCHANGED,
    ),
    PeerCase("onnxscript-basic_rules-no_op_transpose", _os_no_op_transpose, {"Relu": 1}),
    PeerCase("onnxscript-fuse_conv_affine-conv_affine", _os_conv_affine, {"Conv": 1}),
    PeerCase(
        "onnxscript-fuse_conv_affine-affine_conv_without_pad",
        lambda: _os_affine_conv([0, 0, 0, 0]),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxscript-fuse_conv_affine-non_constant_weight",
        lambda: _os_conv_affine(weight_input=True),
        UNCHANGED,
        blame=("Conv", "Mul", "w"),
    ),
    PeerCase(
        # Theirs ([3] on a width-32 map) does not even broadcast; with width == C it does,
        # along W, so it is not a per-channel scale.
        "onnxscript-fuse_conv_affine-non_scalar_scale",
        lambda: _os_conv_affine(scale_shape=(3,), width=3),
        UNCHANGED,
        blame=("Mul", "scale"),
    ),
    PeerCase(
        "onnxscript-fuse_conv_affine-non_constant_bias",
        lambda: _os_conv_affine(bias_input=True),
        UNCHANGED,
        blame=("Conv", "Mul", "b"),
    ),
    PeerCase(
        "onnxscript-fuse_conv_affine-affine_conv_with_padding",
        lambda: _os_affine_conv([1, 1, 1, 1]),
        UNCHANGED,
        blame=("Conv", "Add", "offset"),
    ),
    PeerCase(
        "onnxscript-fuse_conv_affine-positive_fuses-constant_nodes",
        lambda: _os_conv_affine(constant_nodes=True),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxscript-matmul_add_to_gemm-initializers",
        lambda: matmul_add([8, 6], [6, 4], [4], opset=20),
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxscript-matmul_add_to_gemm-inputs",
        _os_matmul_add_inputs,
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxscript-matmul_add_to_gemm-transB-initializers",
        lambda: _os_matmul_add_transposed(False, True),
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxscript-matmul_add_to_gemm-transA-initializers",
        lambda: _os_matmul_add_transposed(True, False),
        ({"Transpose": 1, "Gemm": 1}, {"Gemm": 1}),
    ),
    PeerCase(
        "onnxscript-matmul_add_to_gemm-incompatible_shapes",
        lambda: matmul_add([1, 6, 8], [1, 8, 4], [4], opset=20),
        UNCHANGED,
    ),
]


# ----------------------------------------------------------------------------------------------
# onnxslim — tests/test_fusion_patterns.py
# ----------------------------------------------------------------------------------------------


def _slim_conv_affine(op_type, const_shape, *, bias, width=12, seed=0):
    """test_convmul/convadd_pattern: Conv(k3, s2, p1) then Mul/Add of a constant."""
    return conv_then(
        op_type,
        const_shape,
        x_shape=(1, 3, 12, width),
        cout=3,
        bias=bias,
        seed=seed,
        conv_attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    )


def _slim_convbn():
    return conv_bn_model(
        x_shape=(1, 3, 12, 12), cout=16, strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3]
    )


def _slim_convbn_unnamed():
    g = Graph(11)
    x = g.input("input", [1, 2, 4, 4])
    for suffix in ("a", "b"):
        h = g.op("Conv", [x, g.weight(f"weights_{suffix}", [2, 2, 1, 1])], name="")
        g.bn(h, 2, f"output_{suffix}", name="")
        g.output(f"output_{suffix}")
    return g.build()


def _slim_convtranspose(kind: str, *, group: int = 1):
    g = Graph(11)
    x = g.input("input", [1, 4, 6, 6])
    cout = 4 if kind != "bn" else 8
    w = g.weight("weights", [4, cout // group, 3, 3])
    inputs = [x, w] + ([g.weight("bias", [cout])] if kind == "mul" else [])
    h = g.op(
        "ConvTranspose",
        inputs,
        "convt_output",
        name="ConvTranspose",
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
        group=group,
    )
    if kind == "bn":
        g.bn(h, cout, "output", name="BN")
    else:
        c = g.init("c", g.rng.uniform(0.5, 1.5, [1, cout, 1, 1]))
        g.op("Mul" if kind == "mul" else "Add", [h, c], "output", name=kind)
    g.output("output")
    return g.build()


def _slim_padconv(pads, *, axes=None, opset: int = 11):
    g = Graph(opset)
    x = g.input("input", [1, 3, 10, 10])
    inputs = [x, g.ints("pads", pads), g.init("constant_value", 0.0)]
    if axes is not None:
        inputs.append(g.ints("axes", axes))
    p = g.op("Pad", inputs, "pad_output", name="Pad", mode="constant")
    g.op(
        "Conv",
        [p, g.weight("weights", [16, 3, 3, 3])],
        "output",
        name="Conv",
        kernel_shape=[3, 3],
        strides=[1, 1],
        pads=[0, 0, 0, 0],
    )
    g.output("output")
    return g.build()


def _slim_gemm_mul_default_attrs():
    """test_gemm_mul_uses_schema_default_attributes, without the no-op Reshape."""
    g = Graph(13)
    h = g.op(
        "Gemm",
        [g.input("input", [1, 3]), g.weight("weight", [3, 3]), g.weight("bias", [3])],
        "gemm_output",
        name="gemm_without_explicit_default_attrs",
    )
    g.op("Mul", [h, g.init("scale", g.rng.uniform(0.5, 1.5, [3]))], "output", name="Mul")
    g.output("output", rank=2)
    return g.build()


def _slim_linear_add_3d(extra_shape):
    """test_gemm_reshape_add_pattern_fusable: Linear on [B, T, C] then + bias of shape
    ``extra_shape`` (the Reshape to the same shape is left out)."""
    g = Graph(14)
    y = g.op("MatMul", [g.input("input", [2, 3, 8]), g.weight("W", [8, 4])], "mm", name="MatMul")
    y = g.op("Add", [g.weight("b", [4]), y], "lin", name="Add_bias")
    g.op("Add", [y, g.weight("extra_bias", extra_shape)], "output", name="Add_extra")
    g.output("output", rank=3)
    return g.build()


def _slim_convbn_training():
    g = Graph(15)
    x = g.input("input", [2, 3, 6, 6])
    h = g.op("Conv", [x, g.weight("weights", [4, 3, 3, 3])], "conv_output", name="Conv")
    g.bn(h, 4, "output", name="BN", training_mode=1, extra_outputs=["running_mean", "running_var"])
    g.output("output")
    return g.build()


def _slim_convbn_params_inputs():
    g = Graph(11)
    x = g.input("input", [1, 3, 6, 6])
    h = g.op("Conv", [x, g.weight("weights", [4, 3, 3, 3])], "conv_output", name="Conv")
    params = [g.input(n, [4]) for n in ("scale", "bias", "mean", "var")]
    g.bn(h, 4, "output", name="BN", params=params)
    g.output("output")
    return g.build()


ONNXSLIM = [
    PeerCase(
        "onnxslim-convmul_pattern",
        lambda: _slim_conv_affine("Mul", [1, 3, 1, 1], bias=True),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxslim-convadd_pattern",
        lambda: _slim_conv_affine("Add", [1, 3, 1, 1], bias=False),
        {"Conv": 1},
    ),
    PeerCase(
        # onnxslim 0.1.98 folds this (wrong): convmul.py accepts any constant whose squeeze()
        # is 1-D of length C, but a [C] constant on NCHW broadcasts along W, not C.
        "onnxslim-convmul_pattern-vector_scale_over_width",
        lambda: _slim_conv_affine("Mul", [3], bias=True, width=6),
        UNCHANGED,
        blame=("Mul", "A"),
    ),
    PeerCase(
        "onnxslim-convadd_pattern-vector_bias_over_width",
        lambda: _slim_conv_affine("Add", [3], bias=False, width=6),
        UNCHANGED,
        blame=("Add", "A"),
    ),
    PeerCase("onnxslim-convbn_pattern", _slim_convbn, {"Conv": 1}),
    PeerCase(
        "onnxslim-convbn_pattern_with_multiple_unnamed_convs",
        _slim_convbn_unnamed,
        {"Conv": 2},
    ),
    PeerCase(
        # onnxscript 0.7.2 (_fuse_batchnorm) folds this training-mode BN with its running stats.
        "onnxslim-convbn_pattern-training_mode",
        _slim_convbn_training,
        RAISES,
    ),
    PeerCase(
        "onnxslim-convbn_pattern-bn_params_graph_inputs",
        _slim_convbn_params_inputs,
        UNCHANGED,
        blame=("BN", "scale", "bias", "mean", "var"),
    ),
    PeerCase(
        "onnxslim-convtransposemul_pattern",
        lambda: _slim_convtranspose("mul"),
        {"ConvTranspose": 1},
    ),
    PeerCase(
        "onnxslim-convtransposeadd_pattern",
        lambda: _slim_convtranspose("add"),
        {"ConvTranspose": 1},
    ),
    PeerCase(
        "onnxslim-convtransposebn_pattern",
        lambda: _slim_convtranspose("bn"),
        {"ConvTranspose": 1},
    ),
    PeerCase(
        # ConvTranspose weights are [Cin, Cout/group, k, k]: the BN scale must be regrouped.
        "onnxslim-convtransposebn_pattern-group2",
        lambda: _slim_convtranspose("bn", group=2),
        {"ConvTranspose": 1},
    ),
    PeerCase(
        "onnxslim-gemm_pattern",
        lambda: matmul_add([1, 16], [16, 8], [8], opset=11),
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxslim-gemm_3d_pattern",
        lambda: matmul_add([2, 10, 16], [16, 8], [8], opset=14),
        UNCHANGED,
    ),
    PeerCase(
        "onnxslim-gemm_reshape_add_pattern_fusable",
        lambda: _slim_linear_add_3d([1, 1, 4]),
        {"MatMul": 1, "Add": 1},
    ),
    PeerCase(
        "onnxslim-gemm_mul_uses_schema_default_attributes",
        _slim_gemm_mul_default_attrs,
        {"Gemm": 1},
    ),
    PeerCase(
        "onnxslim-padconv_pattern",
        lambda: _slim_padconv([0, 0, 1, 1, 0, 0, 1, 1]),
        {"Conv": 1},
    ),
    PeerCase(
        "onnxslim-padconv_pattern-negative_pads",
        lambda: _slim_padconv([0, 0, -1, 0, 0, 0, 0, -1]),
        UNCHANGED,
        blame=("Pad", "pads"),
    ),
    PeerCase(
        # onnxslim 0.1.98 ignores the opset-18 'axes' input, reads pads as if full-rank and
        # writes a Conv 'pads' of the wrong length (an invalid model).
        "onnxslim-padconv_pattern-axes_input",
        lambda: _slim_padconv([0, 0, 1, 1], axes=[2, 3], opset=18),
        {"Conv": 1},
    ),
]


# ----------------------------------------------------------------------------------------------
# onnx-simplifier — tests/test_python_api.py
# ----------------------------------------------------------------------------------------------


def _sim_add_const(shape, value):
    g = Graph(13)
    g.op("Add", [g.input("x", shape), g.init("c", [value])], "y", name="Add")
    g.output("y", rank=len(shape))
    return g.build()


def _sim_mnasnet_block():
    """One inverted-residual block of torchvision's mnasnet (test_torchvision_mnasnet)."""
    g = Graph(13)
    x = g.input("x", [1, 8, 6, 6])
    h = g.bn(g.op("Conv", [x, g.weight("w1", [16, 8, 1, 1])]), 16)
    h = g.op("Relu", [h])
    h = g.op("Conv", [h, g.weight("w2", [16, 1, 3, 3])], group=16, pads=[1, 1, 1, 1])
    h = g.op("Relu", [g.bn(h, 16)])
    h = g.bn(g.op("Conv", [h, g.weight("w3", [8, 16, 1, 1])]), 8)
    g.op("Add", [h, x], "y", name="Add_residual")
    g.output("y")
    return g.build()


ONNXSIM = [
    PeerCase(
        "onnxsim-a_model_not_need_simplification",
        lambda: _sim_add_const([2, 3, 4, 5], 1.0),
        UNCHANGED,
    ),
    PeerCase(
        "onnxsim-dynamic_batch_size",
        lambda: _sim_add_const(["batch_size", 3, 4, 5], 2.0),
        UNCHANGED,
    ),
    PeerCase(
        "onnxsim-torchvision_mnasnet-block",
        _sim_mnasnet_block,
        {"Conv": 3, "Relu": 2, "Add": 1},
    ),
]


# ----------------------------------------------------------------------------------------------
# onnxruntime — onnxruntime/test/optimizer/graph_transform_test.cc
# ----------------------------------------------------------------------------------------------


def _ort_conv_bn_optional_outputs():
    """DontFuseConvWithBNWithOptionalOutputs: the BN's running-mean output is used."""
    g = Graph(9)
    x = g.input("X", [1, 3, 6, 6])
    h = g.op("Conv", [x, g.weight("W", [4, 3, 3, 3])], "conv_out", name="Conv")
    g.bn(h, 4, "Y", name="BN", extra_outputs=["mean_out", "var_out", "saved_mean", "saved_var"])
    g.output("Y")
    g.output("mean_out", rank=1)
    return g.build()


def _ort_conv_bn_mul_add_unsqueeze(opset: int, axes, *, bias: bool = True):
    """fuse-conv-bn-mul-add-unsqueeze[.negative_axes|-no-bias].onnx: Conv, BN, then Mul and
    Add by Unsqueeze(initializer [C])."""
    g = Graph(opset)
    c = 6
    x = g.input("X", [1, 3, 8, 8])
    inputs = [x, g.weight("W", [c, 3, 3, 3])] + ([g.weight("B", [c])] if bias else [])
    h = g.bn(g.op("Conv", inputs, "conv_out", name="Conv"), c, "bn_out", name="BN")

    def unsqueezed(stem, values):
        init = g.init(stem, values)
        if opset >= 13:
            return g.op("Unsqueeze", [init, g.ints("axes", axes)], name=f"Unsqueeze_{stem}")
        return g.op("Unsqueeze", [init], name=f"Unsqueeze_{stem}", axes=axes)

    m = g.op("Mul", [h, unsqueezed("scale", g.rng.uniform(0.5, 1.5, c))], "mul_out", name="Mul")
    g.op("Add", [m, unsqueezed("shift", g.rng.normal(0, 1, c))], "Y", name="Add")
    g.output("Y")
    return g.build()


def _ort_conv_unsqueeze(op_type: str, *, also_input: bool = False):
    """fuse-conv-{mul,add}-no-bias.onnx: Conv without bias, then op by Unsqueeze(init)."""
    g = Graph(11)
    c = 5
    x = g.input("X", [1, 3, 7, 7])
    w = g.init("W", g.rng.normal(0, 0.5, [c, 3, 3, 3]), as_input=also_input)
    h = g.op("Conv", [x, w], "conv_out", name="Conv")
    values = g.rng.uniform(0.5, 1.5, c)
    k = g.op("Unsqueeze", [g.init("k", values, as_input=also_input)], "k_u", axes=[1, 2])
    g.op(op_type, [h, k], "Y", name=op_type)
    g.output("Y")
    return g.build()


def _ort_conv_add_mul(spatial: int, *, mul_first: bool = False):
    """fuse-conv-add-mul-{1d,3d}[-2].onnx."""
    g = Graph(13)
    c = 4
    x = g.input("X", [1, 3, *([6] * spatial)])
    h = g.op("Conv", [x, g.weight("W", [c, 3, *([3] * spatial)])], "conv_out", name="Conv")
    shape = [c] + [1] * spatial
    steps = [("Add", g.rng.normal(0, 1, shape)), ("Mul", g.rng.uniform(0.5, 1.5, shape))]
    if mul_first:
        steps.reverse()
    for k, (op_type, values) in enumerate(steps):
        out = "Y" if k == len(steps) - 1 else f"{op_type.lower()}_out"
        h = g.op(op_type, [h, g.init(f"{op_type.lower()}_c", values)], out, name=op_type)
    g.output("Y", rank=2 + spatial)
    return g.build()


def _ort_matmul_add_missing_shape():
    """matmul_add_missing_shape.onnx: the MatMul's input has no known rank (a Reshape to a
    runtime shape), so neither a 2-D Gemm nor the bias broadcast can be proven."""
    g = Graph(13)
    x = g.op("Reshape", [g.input("X", [4, 6]), g.input("shape", ["k"], INT64)], "Xr")
    z = g.op("MatMul", [x, g.weight("W", [6, 3])], "Z", name="MatMul")
    g.op("Add", [z, g.weight("B", [3])], "A", name="Add")
    g.output("A", rank=2)
    return g.build()


def _ort_matmul_bn_directly():
    g = Graph(13)
    h = g.op("MatMul", [g.input("X", ["N", 6]), g.weight("W", [6, 5])], "mm", name="MatMul")
    g.bn(h, 5, "Y", name="BN")
    g.output("Y", rank=2)
    return g.build()


def _ort_matmul_bn_optional_output():
    g = Graph(9)
    h = g.op("MatMul", [g.input("X", [4, 6]), g.weight("W", [6, 5])], "mm", name="MatMul")
    g.bn(h, 5, "Y", name="BN", extra_outputs=["bn_optional_output", "rv", "sm", "sv"])
    g.output("Y", rank=2)
    g.output("bn_optional_output", rank=1)
    return g.build()


def _ort_noop(op_type, value, shape, *, const_first=False, graph_output=False):
    """NoopElimination: MatMul(input1, input2) then ``op_type`` with an initializer, then an
    Identity to the graph output (or the op's output is the graph output)."""
    g = Graph(13)
    mm = g.op("MatMul", [g.input("input1", [2, 3, 3, 3]), g.input("input2", [3, 3])], "mm")
    c = g.init("init", np.full(shape, value))
    out = "Y" if graph_output else "op_out"
    g.op(op_type, [c, mm] if const_first else [mm, c], out, name=op_type)
    if not graph_output:
        g.op("Identity", [out], "Y", name="Identity")
    g.output("Y", rank=max(4, len(shape)))
    return g.build()


def _ort_dropout(kind: str):
    g = Graph(13 if kind != "opset7" else 7)
    x = g.input("X", [5, 7])
    if kind == "opset7":
        y = g.op("Dropout", [x], "Y", name="Dropout", ratio=0.3)
    elif kind == "no_mask":
        y = g.op("Dropout", [x], "Y", name="Dropout")
    elif kind == "unused_mask":
        y = g.op("Dropout", [x], ["Y", "mask"], name="Dropout")
    elif kind == "training_mode_false":
        t = g.init("training_mode", False, dtype=np.bool_)
        y = g.op("Dropout", [x, g.init("ratio", 0.4), t], "Y", name="Dropout")
    elif kind == "training_mode_input":
        t = g.input("training_mode", [], BOOL)
        y = g.op("Dropout", [x, "", t], "Y", name="Dropout")
    elif kind in ("mask_consumed", "mask_graph_output"):
        y = g.op("Dropout", [x], ["Y", "mask"], name="Dropout")
        if kind == "mask_consumed":
            g.op("Not", ["mask"], "not_mask", name="Not")
            g.output("not_mask", dtype=BOOL, rank=2)
        else:
            g.output("mask", dtype=BOOL, rank=2)
    else:
        raise ValueError(kind)
    g.op("Log", [y], "Z", name="Log")
    g.output("Z", rank=2)
    return g.build()


def _ort_identity(graph_output: bool):
    """abs-id-max.onnx / abs-id.onnx."""
    g = Graph(13)
    a = g.op("Abs", [g.input("X", [3, 4])], "abs_out", name="Abs")
    if graph_output:
        g.op("Identity", [a], "Y", name="Identity")
    else:
        i = g.op("Identity", [a], "id_out", name="Identity")
        g.op("Max", [i, g.input("X2", [3, 4])], "Y", name="Max")
    g.output("Y", rank=2)
    return g.build()


def _ort_matmul_scale(before: bool):
    """MatMulScaleFusion: a scalar Mul after (or before) MatMul by a constant weight."""
    g = Graph(13)
    x = g.input("X", [4, 6])
    s = g.init("scale", [0.37])
    if before:
        x = g.op("Mul", [s, x], "scaled", name="Mul")
    h = g.op("MatMul", [x, g.weight("W", [6, 5])], "mm" if not before else "Y", name="MatMul")
    if not before:
        g.op("Mul", [h, s], "Y", name="Mul")
    g.output("Y", rank=2)
    return g.build()


def _ort_float16_overflow(op_type: str):
    """ConvBNFusion/ConvMulFusion: the folded float16 weight (3e4 x 40) overflows."""
    g = Graph(17)
    x = g.input("X", [1, 2, 4, 4], FLOAT16)
    w = g.init("W", np.array([3e4, 2e4, -2.5e4, 3e4]).reshape(2, 2, 1, 1), dtype=np.float16)
    h = g.op("Conv", [x, w], "conv_out", name="Conv")
    if op_type == "BatchNormalization":
        params = [
            g.init(n, v, dtype=np.float16)
            for n, v in (("g", [4, 4]), ("b", [0.5, -0.5]), ("m", [1, -1]), ("v", [0.01, 0.01]))
        ]
        g.bn(h, 2, "Y", name="BN", params=params)
    else:
        g.op("Mul", [h, g.init("s", np.full([1, 2, 1, 1], 40.0), dtype=np.float16)], "Y")
    g.output("Y", dtype=FLOAT16)
    return g.build()


_SMALL_X = {"X": (np.random.default_rng(3).normal(0, 1e-3, [1, 2, 4, 4])).astype(np.float16)}

_NOOPS = [
    ("x+0", "Add", 0.0, [], False, {"MatMul": 1}),
    ("0+x", "Add", 0.0, [1], True, {"MatMul": 1}),
    ("x-0", "Sub", 0.0, [1, 1], False, {"MatMul": 1}),
    ("x*1", "Mul", 1.0, [1, 1], False, {"MatMul": 1}),
    ("1*x", "Mul", 1.0, [1], True, {"MatMul": 1}),
    ("x/1", "Div", 1.0, [], False, {"MatMul": 1}),
    ("invalid-x+1", "Add", 1.0, [], False, {"MatMul": 1, "Add": 1}),
    ("invalid-rank_is_larger", "Add", 0.0, [1, 1, 1, 1, 1], True, {"MatMul": 1, "Add": 1}),
    ("invalid-0-x", "Sub", 0.0, [1, 1], True, {"MatMul": 1, "Sub": 1}),
    ("invalid-x-1", "Sub", 1.0, [1, 1], False, {"MatMul": 1, "Sub": 1}),
    ("invalid-0*x", "Mul", 0.0, [1], True, {"MatMul": 1, "Mul": 1}),
    ("invalid-1/x", "Div", 1.0, [], True, {"MatMul": 1, "Div": 1}),
]

ONNXRUNTIME = [
    PeerCase(
        "ort-FuseConvBNNoBias", lambda: conv_bn_model(x_shape=(1, 3, 8, 8), cout=5), {"Conv": 1}
    ),
    PeerCase("ort-DontFuseConvWithBNWithOptionalOutputs", _ort_conv_bn_optional_outputs, RAISES),
    PeerCase(
        "ort-FuseConvBNMulAddUnsqueeze",
        lambda: _ort_conv_bn_mul_add_unsqueeze(11, [1, 2]),
        {"Conv": 1},
    ),
    PeerCase(
        "ort-FuseConvBNMulAddUnsqueeze-negative_axes",
        lambda: _ort_conv_bn_mul_add_unsqueeze(13, [-2, -1]),
        {"Conv": 1},
    ),
    PeerCase(
        "ort-FuseConvBNMulAddUnsqueeze-no_bias",
        lambda: _ort_conv_bn_mul_add_unsqueeze(13, [1, 2], bias=False),
        {"Conv": 1},
    ),
    PeerCase("ort-FuseConvMulNoBias", lambda: _ort_conv_unsqueeze("Mul"), {"Conv": 1}),
    PeerCase("ort-FuseConvAddNoBias", lambda: _ort_conv_unsqueeze("Add"), {"Conv": 1}),
    PeerCase(
        # "if IR version is 4 or higher the weights can be overridden if there's a matching
        # graph input": W and the Unsqueeze'd initializer are both in graph.input.
        "ort-NegativeFuseConvAddNoBias",
        lambda: _ort_conv_unsqueeze("Add", also_input=True),
        UNCHANGED,
        overrides=("W", "k"),
        blame=("Add", "Conv", "W", "k", "k_u"),
    ),
    PeerCase("ort-FuseConvAddMul3D", lambda: _ort_conv_add_mul(3), {"Conv": 1}),
    PeerCase("ort-FuseConvAddMul1D", lambda: _ort_conv_add_mul(1), {"Conv": 1}),
    PeerCase("ort-FuseConvAddMul3D_2", lambda: _ort_conv_add_mul(3, mul_first=True), {"Conv": 1}),
    PeerCase("ort-FuseConvAddMul1D_2", lambda: _ort_conv_add_mul(1, mul_first=True), {"Conv": 1}),
    PeerCase(
        # onnxruntime 1.32 at ORT_ENABLE_BASIC (ConvBNFusion, ConvMulFusion) folds both
        # float16 overflow cases into inf/NaN weights; onnxscript 0.7.2 and onnxslim 0.1.98 too.
        "ort-FuseConvBN-float16_overflow",
        lambda: _ort_float16_overflow("BatchNormalization"),
        UNCHANGED,
        feeds=_SMALL_X,
        rtol=1e-2,
        blame=("BN", "Conv", "W"),
    ),
    PeerCase(
        "ort-FuseConvMul-float16_overflow",
        lambda: _ort_float16_overflow("Mul"),
        UNCHANGED,
        feeds=_SMALL_X,
        rtol=1e-2,
        blame=("Mul", "Conv", "W"),
    ),
    PeerCase(
        "ort-MatMulAddFusion_two_input",
        lambda: matmul_add([4, 6], [6, 3], [3], opset=13),
        {"Gemm": 1},
    ),
    PeerCase(
        "ort-MatMulAddFusion_three_input",
        lambda: matmul_add([4, 6], [6, 3], [3], w_input=True, b_input=True, opset=13),
        {"Gemm": 1},
    ),
    PeerCase(
        # "Matmul+Add with shape [k]*[k,N]+[N], won't do the fusion"
        "ort-MatMulAddFusion_negitive_case",
        lambda: matmul_add([6], [6, 3], [3], opset=13, out_rank=1),
        UNCHANGED,
    ),
    PeerCase(
        # "[M,k]*[k,N]+[1,4] ... 1,4 is not uni-directionally broadcast"
        "ort-MatMulAddFusion_NotBroadcastable",
        lambda: matmul_add([4, 6], [6, 1], [1, 4], opset=13),
        UNCHANGED,
        blame=("Add", "B"),
    ),
    PeerCase(
        "ort-MatMulAddFusion_MissingShape",
        _ort_matmul_add_missing_shape,
        UNCHANGED,
        feeds={"shape": np.array([4, 6], np.int64)},
    ),
    PeerCase("ort-FuseMatmulBNDirectly", _ort_matmul_bn_directly, {"Gemm": 1}),
    PeerCase(
        "ort-FuseMatmulBNWithOptionalOutputWithInBetweenNodes",
        _ort_matmul_bn_optional_output,
        RAISES,
    ),
    *[
        PeerCase(
            f"ort-NoopElimination-{label}",
            lambda op=op, v=v, s=s, first=first: _ort_noop(op, v, s, const_first=first),
            expect,
        )
        for label, op, v, s, first, expect in _NOOPS
    ],
    PeerCase(
        "ort-NoopElimination-output_is_graph_output",
        lambda: _ort_noop("Mul", 1.0, [1, 1], const_first=True, graph_output=True),
        {"MatMul": 1},
    ),
    PeerCase("ort-DropoutElimination-no_mask", lambda: _ort_dropout("no_mask"), {"Log": 1}),
    PeerCase("ort-DropoutElimination-unused_mask", lambda: _ort_dropout("unused_mask"), {"Log": 1}),
    PeerCase(
        # onnxslim 0.1.98 removes this Dropout although its mask is read: an invalid model.
        "ort-DropoutElimination-mask_consumed",
        lambda: _ort_dropout("mask_consumed"),
        UNCHANGED,
    ),
    PeerCase(
        "ort-DropoutElimination-mask_graph_output",
        lambda: _ort_dropout("mask_graph_output"),
        UNCHANGED,
    ),
    PeerCase(
        "ort-DropoutElimination-training_mode_false",
        lambda: _ort_dropout("training_mode_false"),
        {"Log": 1},
    ),
    PeerCase(
        # onnxslim 0.1.98 removes this Dropout and drops the 'training_mode' graph input.
        "ort-DropoutElimination-training_mode_input",
        lambda: _ort_dropout("training_mode_input"),
        UNCHANGED,
        feeds={"training_mode": np.array(False)},
    ),
    PeerCase("ort-DropoutElimination-opset7", lambda: _ort_dropout("opset7"), {"Log": 1}),
    PeerCase("ort-IdentityElimination", lambda: _ort_identity(False), {"Abs": 1, "Max": 1}),
    PeerCase("ort-IdentityEliminationWithGraphOutput", lambda: _ort_identity(True), {"Abs": 1}),
    PeerCase(
        "ort-MatMulScaleFusion-scale_after",
        lambda: _ort_matmul_scale(False),
        ({"MatMul": 1}, {"Gemm": 1}),
    ),
    PeerCase(
        "ort-MatMulScaleFusion-scale_before",
        lambda: _ort_matmul_scale(True),
        ({"MatMul": 1}, {"Gemm": 1}),
    ),
]


# ----------------------------------------------------------------------------------------------
# target- : the pass's own contract where no peer has a test.
# ----------------------------------------------------------------------------------------------


def _t_repvgg_block():
    g = Graph()
    x = g.input("x", [1, 4, 8, 8])
    a = g.bn(g.op("Conv", [x, g.weight("w3", [4, 4, 3, 3])], pads=[1, 1, 1, 1]), 4)
    b = g.bn(g.op("Conv", [x, g.weight("w1", [4, 4, 1, 1])]), 4)
    c = g.bn(x, 4)
    s = g.op("Add", [g.op("Add", [a, b]), c])
    g.op("Relu", [s], "y")
    g.output("y")
    return g.build()


def _t_bn_before(consumer: str):
    g = Graph()
    x = g.bn(g.input("x", ["N", 6]), 6, "bn_out", name="BN")
    if consumer == "Gemm":
        g.op("Gemm", [x, g.weight("W", [5, 6]), g.weight("B", [5])], "y", transB=1)
    else:
        g.op("MatMul", [x, g.weight("W", [6, 5])], "y", name="MatMul")
    g.output("y", rank=2)
    return g.build()


def _t_bn_before_conv(pads):
    g = Graph()
    x = g.bn(g.input("x", [1, 4, 7, 7]), 4, "bn_out", name="BN")
    g.op("Conv", [x, g.weight("W", [5, 4, 3, 3]), g.weight("B", [5])], "y", pads=pads)
    g.output("y")
    return g.build()


def _t_conv_read_twice():
    g = Graph()
    h = g.op("Conv", [g.input("x", [1, 4, 6, 6]), g.weight("W", [4, 4, 3, 3])], "conv_out")
    b = g.bn(h, 4, "bn_out", name="BN")
    g.op("Add", [b, g.op("Relu", [h], "relu_out")], "y", name="Add")
    g.output("y")
    return g.build()


def _t_custom_domain(kind: str):
    g = Graph()
    h = g.op("Conv", [g.input("x", [1, 3, 6, 6]), g.weight("W", [4, 3, 3, 3])], "conv_out")
    if kind == "bn":
        g.function(
            "local",
            "BatchNormalization",
            ["a", "s", "b", "m", "v"],
            ["z"],
            [helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["z"])],
        )
        g.op("BatchNormalization", [h, *g.bn_params(4)], "y", name="local_BN", domain="local")
    else:
        g.function(
            "com.example", "Add", ["a", "c"], ["z"], [helper.make_node("Add", ["a", "c"], ["z"])]
        )
        c = g.init("bias", g.rng.normal(0, 1, [1, 4, 1, 1]))
        g.op("Add", [h, c], "y", name="example_Add", domain="com.example")
    g.output("y")
    return g.build()


def _t_bad_constant(kind: str):
    g = Graph()
    h = g.op("Conv", [g.input("x", [1, 3, 6, 6]), g.weight("W", [4, 3, 3, 3])], "conv_out")
    if kind == "inf_scale":
        g.op("Mul", [h, g.init("s", np.array([1, np.inf, 2, 1]).reshape(1, 4, 1, 1))], "y")
    elif kind == "nan_bias":
        g.op("Add", [h, g.init("b", np.array([0, np.nan, 1, 2]).reshape(4, 1, 1))], "y")
    elif kind == "var_eps_zero":
        gamma, beta, mean, _ = g.bn_params(4)
        var = g.init("var_zero", [1.0, 0.0, 2.0, 0.5])
        g.bn(h, 4, "y", eps=0.0, name="BN", params=[gamma, beta, mean, var])
    elif kind == "mul_non_constant":
        g.op("Mul", [h, g.input("s", [1, 4, 1, 1])], "y", name="Mul")
    g.output("y")
    return g.build()


def _t_bn_training():
    g = Graph(15)
    h = g.op("Conv", [g.input("x", [2, 3, 6, 6]), g.weight("W", [4, 3, 3, 3])], "conv_out")
    g.bn(h, 4, "y", name="BN", training_mode=1, extra_outputs=["rm", "rv"])
    g.output("y")
    g.output("rm", rank=1)
    return g.build()


def _t_bn_param_in_graph_input():
    """The BN variance is an initializer that is also a graph input."""
    g = Graph()
    h = g.op("Conv", [g.input("x", [1, 3, 6, 6]), g.weight("W", [4, 3, 3, 3])], "conv_out")
    gamma, beta, mean, _ = g.bn_params(4)
    var = g.init("bn_var", g.rng.uniform(0.2, 3.0, 4), as_input=True)
    g.bn(h, 4, "y", name="BN", params=[gamma, beta, mean, var])
    g.output("y")
    return g.build()


def _t_const_subexpression(kind: str):
    g = Graph(13)
    c = 4
    h = g.op("Conv", [g.input("x", [1, 3, 6, 6]), g.weight("W", [c, 3, 3, 3])], "conv_out")
    values = g.rng.uniform(0.5, 1.5, c)
    if kind == "reshape":
        k = g.op("Reshape", [g.init("k", values), g.ints("shape", [1, c, 1, 1])], "k_r")
        g.op("Mul", [h, k], "y", name="Mul")
    elif kind == "identity":
        k = g.op("Identity", [g.init("k", values.reshape(c, 1, 1))], "k_i")
        g.op("Add", [h, k], "y", name="Add")
    elif kind == "div":
        g.op("Div", [h, g.init("k", values.reshape(c, 1, 1))], "y", name="Div")
    elif kind == "sub":
        g.op("Sub", [h, g.init("k", values.reshape(1, c, 1, 1))], "y", name="Sub")
    g.output("y")
    return g.build()


def _t_channel_last():
    g = Graph(13)
    h = g.op("MatMul", [g.input("x", [2, 3, 6]), g.weight("W", [6, 5])], "mm")
    h = g.op("Mul", [h, g.init("s", g.rng.uniform(0.5, 1.5, [5]))], "scaled")
    g.op("Add", [h, g.init("b", g.rng.normal(0, 1, [1, 5]))], "y")
    g.output("y", rank=3)
    return g.build()


TARGET = [
    PeerCase("target-repvgg_block", _t_repvgg_block, {"Conv": 1, "Relu": 1}),
    PeerCase("target-bn_before_gemm", lambda: _t_bn_before("Gemm"), {"Gemm": 1}),
    PeerCase("target-bn_before_matmul", lambda: _t_bn_before("MatMul"), {"Gemm": 1}),
    PeerCase(
        "target-bn_before_unpadded_conv", lambda: _t_bn_before_conv([0, 0, 0, 0]), {"Conv": 1}
    ),
    PeerCase(
        "target-bn_before_padded_conv",
        lambda: _t_bn_before_conv([1, 1, 1, 1]),
        UNCHANGED,
        blame=("BN", "bn_out"),
    ),
    PeerCase(
        "target-conv_output_read_twice", _t_conv_read_twice, UNCHANGED, blame=("BN", "conv_out")
    ),
    PeerCase("target-custom_domain-local_bn", lambda: _t_custom_domain("bn"), UNCHANGED),
    PeerCase("target-custom_domain-com.example_add", lambda: _t_custom_domain("add"), UNCHANGED),
    # onnxruntime 1.32 (ConvMulFusion) and onnxslim fold the inf, and onnxruntime, onnxscript,
    # onnxoptimizer and onnxslim all fold var + eps == 0: the outputs change in each case.
    PeerCase("target-inf_scale", lambda: _t_bad_constant("inf_scale"), UNCHANGED, blame=("s",)),
    PeerCase("target-nan_bias", lambda: _t_bad_constant("nan_bias"), UNCHANGED, blame=("b",)),
    PeerCase(
        "target-bn_var_plus_eps_zero",
        lambda: _t_bad_constant("var_eps_zero"),
        UNCHANGED,
        blame=("BN", "var_zero"),
    ),
    PeerCase(
        "target-mul_non_constant",
        lambda: _t_bad_constant("mul_non_constant"),
        UNCHANGED,
        blame=("Mul", "s"),
    ),
    PeerCase("target-bn_training_mode", _t_bn_training, RAISES),
    PeerCase(
        "target-bn_param_initializer_in_graph_input",
        _t_bn_param_in_graph_input,
        UNCHANGED,
        overrides=("bn_var",),
        blame=("BN", "bn_var"),
    ),
    PeerCase(
        "target-constant_subexpression-reshape",
        lambda: _t_const_subexpression("reshape"),
        {"Conv": 1},
    ),
    PeerCase(
        "target-constant_subexpression-identity",
        lambda: _t_const_subexpression("identity"),
        {"Conv": 1},
    ),
    PeerCase("target-per_channel_div", lambda: _t_const_subexpression("div"), {"Conv": 1}),
    PeerCase("target-per_channel_sub", lambda: _t_const_subexpression("sub"), {"Conv": 1}),
    PeerCase("target-channel_last_matmul_mul_add", _t_channel_last, {"MatMul": 1, "Add": 1}),
]

ALL_CASES: list[PeerCase] = [
    *ONNXOPTIMIZER,
    *ONNXSCRIPT,
    *ONNXSLIM,
    *ONNXSIM,
    *ONNXRUNTIME,
    *TARGET,
]
