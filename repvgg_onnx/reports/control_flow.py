"""Training-form ops inside ``If``/``Loop``/``Scan`` bodies, which ``fuse`` does not rewrite.

The passes work on the main graph only, so a BatchNormalization or a sum of linear branches
inside a control-flow body survives ``fuse``. ``inspect`` must still see it: a model with one is
not in deploy form. :func:`subgraph_findings` counts, in every body (nested bodies included),
the BatchNormalization nodes and the sums whose terms reach one tensor through linear ops
(a Conv with a parallel branch or an identity, as RepVGG writes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import onnx

#: Single-input linear ops a branch may pass through between the sum and its source.
_BRANCH_OPS = frozenset({"Conv", "BatchNormalization", "Identity", "AveragePool", "Pad"})
#: Ops among those that make a term a trainable branch (a bare Identity is not one).
_WEIGHTED_OPS = frozenset({"Conv", "BatchNormalization"})
_SUM_OPS = frozenset({"Add", "Sum", "Sub"})


@dataclass(frozen=True)
class SubgraphFinding:
    """In the subgraph ``attribute`` of node ``owner`` (an ``op``; ``within`` names the bodies
    around it, outermost first): ``batchnorms`` BatchNormalization nodes and ``branch_sums``
    sums of linear branches of one tensor, none of which ``fuse`` rewrites."""

    owner: str
    op: str
    attribute: str
    within: tuple[str, ...]
    batchnorms: int
    branch_sums: int

    @property
    def place(self) -> str:
        """``"the body of Loop 'loop_0' (in the then_branch of If 'if_0')"``."""
        place = f"the {self.attribute} of {self.op} '{self.owner}'"
        return place + (f" (in {', in '.join(reversed(self.within))})" if self.within else "")

    @property
    def message(self) -> str:
        """``"2 BatchNormalization inside the body of Loop 'loop_0': not fused by this tool"``."""
        counts = []
        if self.batchnorms:
            counts.append(f"{self.batchnorms} BatchNormalization")
        if self.branch_sums:
            sums = "sum" if self.branch_sums == 1 else "sums"
            counts.append(f"{self.branch_sums} {sums} of linear branches")
        return f"{' and '.join(counts)} inside {self.place}: not fused by this tool"

    def to_dict(self) -> dict:
        return asdict(self) | {"within": list(self.within), "message": self.message}


def subgraph_findings(graph: onnx.GraphProto) -> list[SubgraphFinding]:
    """Every subgraph of ``graph`` (at any depth) holding a BatchNormalization or a sum of
    linear branches, in graph order, one finding per subgraph."""
    return list(_findings(graph, ()))


def _findings(graph: onnx.GraphProto, within: tuple[str, ...]) -> Iterator[SubgraphFinding]:
    for node in graph.node:
        for attribute in node.attribute:
            for body in (attribute.g, *attribute.graphs) if _has_graph(attribute) else ():
                batchnorms = sum(n.op_type == "BatchNormalization" for n in body.node)
                sums = branch_sums(body)
                if batchnorms or sums:
                    yield SubgraphFinding(
                        node.name, node.op_type, attribute.name, within, batchnorms, sums
                    )
                place = f"the {attribute.name} of {node.op_type} '{node.name}'"
                yield from _findings(body, (*within, place))


def _has_graph(attribute: onnx.AttributeProto) -> bool:
    return attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def branch_sums(graph: onnx.GraphProto) -> int:
    """How many Add/Sum/Sub nodes of ``graph`` have two terms that reach the same tensor
    through linear single-input ops, at least one of them through a Conv or BN."""
    return len(branch_sum_nodes(graph))


def branch_sum_nodes(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str, list[str]]]:
    """The Add/Sum/Sub nodes of :func:`branch_sums`, each with the tensor two of its terms
    reach and the names of the nodes on those terms' way to it."""
    producer = {out: node for node in graph.node for out in node.output if out}
    found = []
    for node in graph.node:
        if node.op_type not in _SUM_OPS:
            continue
        terms = [_branch_path(name, producer) for name in node.input if name]
        sources = [source for source, _ in terms]
        for source, path in terms:
            weighted = any(producer[name].op_type in _WEIGHTED_OPS for name in path)
            if weighted and sources.count(source) > 1:
                on_the_way = [name for s, names in terms if s == source for name in names]
                found.append((node, source, [producer[name].name for name in on_the_way]))
                break
    return found


def _branch_path(name: str, producer: dict[str, onnx.NodeProto]) -> tuple[str, list[str]]:
    """The tensor a term reads through linear single-input ops, and the outputs of the ops on
    the way (each names its producer in ``producer``)."""
    path = []
    node = producer.get(name)
    while node is not None and node.op_type in _BRANCH_OPS and node.input:
        path.append(name)
        name = node.input[0]
        node = producer.get(name)
    return name, path
