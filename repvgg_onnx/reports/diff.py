"""What changed between two models, block by block.

Nodes are matched by what they compute: the same op writing the same tensors from the same
non-constant inputs. Each node of B without a match in A, together with the subgraph of A
that computed the same output tensor from the same surviving tensors, is a *block*: e.g.
``Conv3x3+BN, Conv1x1+BN, BN → Conv3x3`` for a fused RepVGG block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from repvgg_onnx.algebra.affine_conv import conv_label
from repvgg_onnx.graph.local_functions import FunctionId, function_id, inline_functions
from repvgg_onnx.graph.node_metadata import BRANCHES_KEY, RULE_KEY
from repvgg_onnx.graph.upstream import upstream_nodes
from repvgg_onnx.passes.readers import READERS
from repvgg_onnx.reports.render.formats import Rendered
from repvgg_onnx.reports.render.schema import SCHEMA_VERSION, verdict
from repvgg_onnx.reports.summary import ModelSummary

DIFF_VERDICT = "diff compares the graphs only; repvgg-onnx verify A B compares what they compute"


@dataclass(frozen=True)
class BlockNode:
    name: str
    op: str
    label: str
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class Block:
    """``a_nodes`` of A became ``b_nodes`` of B; both compute ``output`` from ``inputs``."""

    output: str
    inputs: list[str]
    summary: str
    a_nodes: list[BlockNode]
    b_nodes: list[BlockNode]


@dataclass
class GraphDiff(Rendered):
    a: ModelSummary
    b: ModelSummary
    changes: dict[str, list[str]]
    nodes_added: list[dict[str, str]] = field(default_factory=list)
    nodes_removed: list[dict[str, str]] = field(default_factory=list)
    initializers_added: list[str] = field(default_factory=list)
    initializers_removed: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    @property
    def op_changes(self) -> list[dict]:
        """Every op type with its count in A and B, changed ones first."""
        ops = set(self.a.op_counts) | set(self.b.op_counts)
        rows = [
            {"op": op, "a": self.a.op_counts.get(op, 0), "b": self.b.op_counts.get(op, 0)}
            for op in ops
        ]
        return sorted(rows, key=lambda r: (r["a"] == r["b"], -max(r["a"], r["b"]), r["op"]))

    @property
    def identical(self) -> bool:
        return not (self.blocks or self.nodes_added or self.nodes_removed) and not any(
            self.changes.values()
        )

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "diff",
            "verdict": verdict("skipped", DIFF_VERDICT),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "op_changes": self.op_changes,
            "changes": self.changes,
            "nodes_added": self.nodes_added,
            "nodes_removed": self.nodes_removed,
            "initializers_added": self.initializers_added,
            "initializers_removed": self.initializers_removed,
            "blocks": [asdict(block) for block in self.blocks],
        }


def diff_models(
    a: onnx.ModelProto, b: onnx.ModelProto, a_path: str | None = None, b_path: str | None = None
) -> GraphDiff:
    """Compare two models: summaries, interface changes, nodes and weights, fused blocks.

    A local function one model has and the other has not (``fuse`` inlined it) is inlined
    for the comparison, as ``fuse`` inlines it, so the blocks inside it are compared too."""
    summary_a, summary_b = ModelSummary.of(a, a_path), ModelSummary.of(b, b_path)
    function_changes = _function_changes(a, b)
    a, b = _inline_functions_gone(a, b), _inline_functions_gone(b, a)
    a_keys, b_keys = _node_keys(a), _node_keys(b)
    a_known, b_known = set(a_keys), set(b_keys)
    added = [node for node, key in zip(b.graph.node, b_keys, strict=True) if key not in a_known]
    removed = [node for node, key in zip(a.graph.node, a_keys, strict=True) if key not in b_known]
    a_inits = {t.name for t in a.graph.initializer}
    b_inits = {t.name for t in b.graph.initializer}
    return GraphDiff(
        a=summary_a,
        b=summary_b,
        changes=_interface_changes(summary_a, summary_b) | {"functions": function_changes},
        nodes_added=[{"name": n.name, "op": n.op_type} for n in added],
        nodes_removed=[{"name": n.name, "op": n.op_type} for n in removed],
        initializers_added=sorted(b_inits - a_inits),
        initializers_removed=sorted(a_inits - b_inits),
        blocks=_blocks(a, b, added),
    )


def _only_in(model: onnx.ModelProto, other: onnx.ModelProto) -> list[FunctionId]:
    theirs = {function_id(f) for f in other.functions}
    return [function_id(f) for f in model.functions if function_id(f) not in theirs]


def _inline_functions_gone(model: onnx.ModelProto, other: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the local functions ``other`` lacks inlined."""
    return inline_functions(model, _only_in(model, other))


def _function_changes(a: onnx.ModelProto, b: onnx.ModelProto) -> list[str]:
    lines = [f"inlined function '{name}' (only A has it)" for _, name in _only_in(a, b)]
    return lines + [f"added function '{name}' (only B has it)" for _, name in _only_in(b, a)]


def _constants(model: onnx.ModelProto) -> set[str]:
    names = {tensor.name for tensor in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names


def _node_keys(model: onnx.ModelProto) -> list[tuple]:
    """What each node computes: op, non-constant inputs, outputs (names and weights aside)."""
    constants = _constants(model)
    return [
        (node.op_type, tuple(i for i in node.input if i not in constants), tuple(node.output))
        for node in model.graph.node
    ]


def _interface_changes(a: ModelSummary, b: ModelSummary) -> dict[str, list[str]]:
    return {
        "inputs": _list_changes("input", a.inputs, b.inputs),
        "outputs": _list_changes("output", a.outputs, b.outputs),
        "opsets": _dict_changes("opset", a.opsets, b.opsets),
        "metadata": _dict_changes("metadata", a.metadata, b.metadata),
    }


def _list_changes(kind: str, a: list, b: list) -> list[str]:
    a_by_name, b_by_name = {t.name: t for t in a}, {t.name: t for t in b}
    lines = [f"removed {kind} '{n}'" for n in a_by_name if n not in b_by_name]
    lines += [f"added {kind} '{n}'" for n in b_by_name if n not in a_by_name]
    for name in a_by_name.keys() & b_by_name.keys():
        before, after = a_by_name[name], b_by_name[name]
        if (before.dtype, before.shape) != (after.dtype, after.shape):
            lines.append(
                f"{kind} '{name}': {before.dtype}{before.shape} → {after.dtype}{after.shape}"
            )
    return lines


def _dict_changes(kind: str, a: dict, b: dict) -> list[str]:
    lines = [f"removed {kind} '{k}'" for k in a if k not in b]
    lines += [f"added {kind} '{k}' = {b[k]!r}" for k in b if k not in a]
    lines += [f"{kind} '{k}': {a[k]!r} → {b[k]!r}" for k in a if k in b and a[k] != b[k]]
    return lines


def _blocks(a: onnx.ModelProto, b: onnx.ModelProto, added: list[onnx.NodeProto]) -> list[Block]:
    """For each new node of B, the subgraph of A that computed its output."""
    a_producer = {out: node for node in a.graph.node for out in node.output if out}
    surviving = _tensor_names(a) & _tensor_names(b)
    a_constants, b_constants = _constants(a), _constants(b)
    same_nodes = {(n.name, n.op_type, tuple(n.output)) for n in a.graph.node if n.name}
    order = {id(node): index for index, node in enumerate(a.graph.node)}
    blocks = []
    for node in added:
        outputs = [out for out in node.output if out in a_producer]
        if not outputs or (node.name, node.op_type, tuple(node.output)) in same_nodes:
            continue  # a node of A whose inputs were renamed (a no-op before it removed)
        a_nodes = _subgraph(a_producer, outputs, surviving, order)
        if not _is_fused_block(node, a_nodes):
            continue
        inputs = [i for i in node.input if i and i not in b_constants]
        a_block = [_block_node(n, a, a_constants) for n in a_nodes]
        b_block = [_block_node(node, b, b_constants)]
        blocks.append(
            Block(
                outputs[0],
                inputs,
                _summary(node, a_block, b_block),
                a_block,
                b_block,
            )
        )
    return blocks


def _is_fused_block(node: onnx.NodeProto, a_nodes: list[onnx.NodeProto]) -> bool:
    """A node of B is a fused block when repvgg-onnx tagged it, or when the A subgraph it
    replaces holds a linear op besides a same-op node writing the same output (a node whose
    constant inputs were merely folded, such as a Reshape's shape, is not a block)."""
    if any(p.key == RULE_KEY for p in node.metadata_props):
        return True
    others = [
        n
        for n in a_nodes
        if not (n.op_type == node.op_type and list(n.output) == list(node.output))
    ]
    return any(n.op_type in READERS for n in others)


def _tensor_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    names = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    return names | {out for node in graph.node for out in node.output if out}


def _subgraph(
    producer: dict[str, onnx.NodeProto],
    outputs: list[str],
    boundary: set[str],
    order: dict[int, int],
) -> list[onnx.NodeProto]:
    """The nodes computing ``outputs`` back to ``boundary`` tensors (``outputs`` excepted),
    in graph order (``order``: node id → position)."""
    found = upstream_nodes(outputs, producer, lambda name: name in boundary and name not in outputs)
    return sorted(found, key=lambda n: order.get(id(n), 0))


def _block_node(node: onnx.NodeProto, model: onnx.ModelProto, constants: set[str]) -> BlockNode:
    return BlockNode(
        name=node.name,
        op=node.op_type,
        label=node_label(node, model),
        inputs=[i for i in node.input if i and i not in constants],
        outputs=[o for o in node.output if o],
    )


def node_label(node: onnx.NodeProto, model: onnx.ModelProto) -> str:
    """``"Conv3x3/g4/s2x2"`` for a Conv (kernel from the attribute or the weight; the label
    ``fuse`` and ``inspect`` give it), else the op."""
    if node.op_type != "Conv":
        return node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kernel = attrs.get("kernel_shape") or _weight_kernel(node, model)
    if not kernel:
        return "Conv"
    return conv_label(kernel, attrs.get("group", 1), attrs.get("strides", ()))


def _weight_kernel(node: onnx.NodeProto, model: onnx.ModelProto) -> list[int]:
    if len(node.input) < 2:
        return []
    dims = _initializer_dims(model).get(node.input[1])
    return list(dims[2:]) if dims is not None else []


_DIMS_CACHE: dict[int, tuple[onnx.ModelProto, dict[str, list[int]]]] = {}


def _initializer_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Initializer dims by name, built once per model (labels ask for every Conv)."""
    cached = _DIMS_CACHE.get(id(model))
    if cached is None or cached[0] is not model:
        cached = (model, {t.name: list(t.dims) for t in model.graph.initializer})
        _DIMS_CACHE.clear()
        _DIMS_CACHE[id(model)] = cached
    return cached[1]


def _summary(node: onnx.NodeProto, a_block: list[BlockNode], b_block: list[BlockNode]) -> str:
    """``"Conv3x3+BN, Conv1x1+BN, BN → Conv3x3"``: the fused node's own record if it has one
    (repvgg-onnx tags fused nodes), else read from A's subgraph."""
    recorded = {p.key: p.value for p in node.metadata_props}.get(BRANCHES_KEY)
    before = recorded or ", ".join(_branch_terms(a_block)) or "(nothing)"
    return f"{before} → {', '.join(_short(n) for n in b_block)}"


def _branch_terms(a_block: list[BlockNode]) -> list[str]:
    """The terms of A's Add tree, each as its chain of ops (``Conv3x3+BN``), or the chain."""
    by_output = {out: n for n in a_block for out in n.outputs}
    adds = [n for n in a_block if n.op in ("Add", "Sum")]
    if not adds:
        return ["+".join(_short(n) for n in a_block)]
    terms = []
    for add in adds:
        for tensor in add.inputs:
            producer = by_output.get(tensor)
            if producer is not None and producer.op in ("Add", "Sum"):
                continue
            terms.append(_chain(tensor, by_output) if producer else "Identity")
    return terms


def _chain(tensor: str, by_output: dict[str, BlockNode]) -> str:
    ops = []
    node = by_output.get(tensor)
    while node is not None and node.op not in ("Add", "Sum"):
        ops.append(_short(node))
        node = by_output.get(node.inputs[0]) if node.inputs else None
    return "+".join(reversed(ops))


def _short(node: BlockNode) -> str:
    return "BN" if node.op == "BatchNormalization" else node.label
