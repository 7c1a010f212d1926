"""What a model is and what ``fuse`` would do to it, without writing anything."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import onnx

from repvgg_onnx.graph.local_functions import inline_all
from repvgg_onnx.passes.pass_result import FusedBlock, Skipped
from repvgg_onnx.pipeline.function_inlining import Inlining, inline_for_passes
from repvgg_onnx.pipeline.fuse_model import fuse_graph
from repvgg_onnx.reports.control_flow import SubgraphFinding, branch_sum_nodes, subgraph_findings
from repvgg_onnx.reports.render.formats import Rendered
from repvgg_onnx.reports.render.gate import gate_failure
from repvgg_onnx.reports.render.schema import SCHEMA_VERSION, error_report, verdict
from repvgg_onnx.reports.summary import ModelSummary


@dataclass(frozen=True)
class RemainingBatchNorm:
    """A BatchNormalization ``fuse`` would leave, and why (one sentence)."""

    node: str
    reason: str


@dataclass(frozen=True)
class RemainingSum:
    """A sum of linear branches of one tensor that ``fuse`` would leave, and why."""

    node: str
    reason: str


@dataclass(frozen=True)
class Inspection(Rendered):
    """``fusable``: the rewrites ``fuse`` would make; ``skipped``: candidates it would leave,
    with reasons; ``batchnorms``: every BatchNormalization left after fusing, with its reason;
    ``inlining``: the local functions ``fuse`` would inline first (the analysis looks inside
    them); ``in_subgraphs``: BatchNormalization and linear-branch sums inside ``If``/``Loop``/
    ``Scan`` bodies, which ``fuse`` does not rewrite; ``branch_sums``: sums of linear branches
    of one tensor left in the main graph after fusing (a merge ``fuse`` refused), with reasons.

    A model is in deploy form iff nothing is fusable, no BatchNormalization and no sum of linear
    branches of one tensor remains in the main graph or its functions, and no subgraph holds a
    BatchNormalization or a sum of linear branches.
    """

    summary: ModelSummary
    fusable: list[FusedBlock]
    skipped: list[Skipped]
    batchnorms: list[RemainingBatchNorm]
    inlining: Inlining = field(default_factory=Inlining)
    in_subgraphs: tuple[SubgraphFinding, ...] = ()
    branch_sums: tuple[RemainingSum, ...] = ()

    @property
    def path(self) -> str | None:
        return self.summary.path

    @property
    def deploy_form(self) -> bool:
        return not (self.fusable or self.batchnorms or self.in_subgraphs or self.branch_sums)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "inspect",
            "verdict": verdict("skipped", "inspect runs no model; fuse verifies what it writes"),
            "path": self.path,
            "deploy_form": self.deploy_form,
            "summary": self.summary.to_dict(),
            "fusable": [
                asdict(block) | {"branches": list(block.branches)} for block in self.fusable
            ],
            "skipped": [asdict(skip) for skip in self.skipped],
            "batchnorms": [asdict(bn) for bn in self.batchnorms],
            "inlining": self.inlining.to_dict(),
            "in_subgraphs": [finding.to_dict() for finding in self.in_subgraphs],
            "branch_sums": [asdict(remaining) for remaining in self.branch_sums],
        }


@dataclass(frozen=True)
class Unusable:
    """A model ``inspect`` could not read: its path, the error's one line and exit code."""

    path: str
    message: str
    exit_code: int

    def to_dict(self) -> dict:
        return error_report("inspect", self.message, self.exit_code) | {"path": self.path}


@dataclass(frozen=True)
class Inspections(Rendered):
    """``inspect`` of several models, in the order given: each an :class:`Inspection` or,
    when it could not be read, an :class:`Unusable`. ``gate_failed`` lists the paths of
    the models ``--fail-if-fusable`` refuses (exactly as it refuses one model alone) and
    ``unusable`` the paths that could not be inspected."""

    models: tuple[Inspection | Unusable, ...]

    def to_dict(self) -> dict:
        reports = [model.to_dict() for model in self.models]
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "inspect_many",
            "verdict": verdict("skipped", "inspect runs no model; fuse verifies what it writes"),
            "models": reports,
            "gate_failed": [
                r["path"] for r in reports if "error" not in r and gate_failure(r) is not None
            ],
            "unusable": [r["path"] for r in reports if "error" in r],
        }


def inspect_model(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> Inspection:
    """Summarize ``model`` and run the passes on a copy of its graph to list what would fuse,
    with the local functions inlined as ``fuse`` would; count what control-flow bodies hold
    (every function inlined there, so calls inside bodies are looked into too)."""
    prepared, inlining = inline_for_passes(model)
    fused, outcome = fuse_graph(prepared)
    remaining = remaining_batchnorms(fused, outcome.skipped)
    findings = tuple(subgraph_findings(inline_all(model).graph))
    sums = remaining_branch_sums(fused, outcome.skipped)
    summary = ModelSummary.of(model, path)
    return Inspection(summary, outcome.fused, outcome.skipped, remaining, inlining, findings, sums)


def remaining_branch_sums(
    fused: onnx.ModelProto, skipped: list[Skipped]
) -> tuple[RemainingSum, ...]:
    """Each sum of the fused main graph whose terms reach one tensor through linear ops (a
    RepVGG-like block ``fuse`` could not merge), with the reason: the skip that names the sum
    or a node on its branches."""
    remaining = []
    for node, source, on_the_way in branch_sum_nodes(fused.graph):
        reason = _reason_naming(skipped, {node.name, *on_the_way}) or (
            f"{node.op_type} '{node.name}' sums linear branches of '{source}' that fuse "
            "leaves apart"
        )
        remaining.append(RemainingSum(node.name, reason))
    return tuple(remaining)


def _reason_naming(skipped: list[Skipped], names: set[str]) -> str | None:
    """The reason of the first skip anchored at one of the nodes ``names`` or quoting one."""
    for skip in skipped:
        if skip.node in names or any(f"'{name}'" in skip.reason for name in names):
            return skip.reason
    return None


def remaining_batchnorms(
    fused: onnx.ModelProto, skipped: list[Skipped]
) -> list[RemainingBatchNorm]:
    """Each BatchNormalization of the fused model with the reason it stayed: the skip that
    names it, or else what it reads and what reads it (no linear op to fold into)."""
    graph = fused.graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    remaining = []
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        named = _reason_naming(skipped, {node.name})
        if named is not None:
            remaining.append(RemainingBatchNorm(node.name, named))
            continue
        source = producers.get(node.input[0])
        before = f"{source.op_type} '{source.name}'" if source else f"input '{node.input[0]}'"
        after = [f"{r.op_type} '{r.name}'" for r in readers.get(node.output[0], [])]
        if node.output[0] in outputs:
            after.append("the graph output")
        remaining.append(
            RemainingBatchNorm(
                node.name,
                f"BatchNormalization '{node.name}' reads {before} and is read by "
                f"{', '.join(after) or 'nothing'}; it has no linear neighbour it can fold into",
            )
        )
    return remaining
