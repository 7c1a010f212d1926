"""The region pass: every affine region worth it becomes one node per source it reads.

Invariant: the graph computes the same function (to float rounding); each rewritten region's
output tensor keeps its name (it is written by the new node or by the last new Add), so
whatever read it is untouched.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from .contracts import KEEPS_INTERFACE_AND_NAMES, WELL_FORMED, contract
from .graph_utils import UniqueNames, splice_nodes
from .pass_result import FusedBlock, PassResult
from .region_memory import current_memory, nodes_to_replan
from .regions import RULE, RegionFinder, RegionPlan
from .rewrite import chain_nodes


@contract(requires=WELL_FORMED, ensures=KEEPS_INTERFACE_AND_NAMES)
def fuse_affine_regions(graph: gs.Graph) -> PassResult:
    """Plan every region (no edits), then rewrite the ones that gain; report both.

    Within a fixpoint that remembers (:func:`.region_memory.remembering`), a run after one in
    which only this pass edited the graph plans again only what those edits could change."""
    finder = RegionFinder(graph)
    memory = current_memory()
    if memory is not None and memory.usable:
        replan = nodes_to_replan(memory, finder.is_linear)
        plans, skipped, known = finder.plan_all(replan, memory.known)
    else:
        plans, skipped, known = finder.plan_all()
    names = UniqueNames(graph)
    placements, fused, created, rewritten = [], [], [], []
    for plan in plans:
        rewritten.append((plan.root, plan.root_node.op))
        nodes, block = _rewrite(plan, names)
        placements.append((plan.root_node, nodes))
        fused.append(block)
        created.append(nodes)
    if fused:
        splice_nodes(graph, placements)
    if memory is not None:
        memory.remember(known, created, rewritten)
    return PassResult(fused=fused, skipped=skipped)


def _rewrite(plan: RegionPlan, names: UniqueNames) -> tuple[list[gs.Node], FusedBlock]:
    """Disconnect the region's root node from its output and compute it anew by new nodes,
    in topological order (to stand where the root node stood); the region's nodes become
    dead."""
    stem = plan.root_node.name or plan.root.name
    plan.root_node.outputs.clear()
    root = plan.root
    if plan.final is not None:
        root = gs.Variable(names(f"{plan.root.name}_unshaped"), plan.root.dtype)
    created: list[gs.Node] = []
    parts: list[gs.Tensor] = []
    single = len(plan.emissions) == 1
    for index, emission in enumerate(plan.emissions):
        if not emission.specs:
            parts.append(emission.source)
            continue
        output = root if single else gs.Variable(names(f"{root.name}_part{index}"), root.dtype)
        created += chain_nodes(list(emission.specs), emission.source, output, stem, names)
        parts.append(output)
    writer = created[0].name if created else ""
    total = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        last = index == len(parts) - 1
        output = root if last else gs.Variable(names(f"{root.name}_sum{index}"), root.dtype)
        created.append(
            gs.Node("Add", names(f"{stem}/reparam_add"), inputs=[total, part], outputs=[output])
        )
        total = output
    if plan.final is not None:
        created.append(
            gs.Node(
                plan.final.op,
                names(f"{stem}/reparam_{plan.final.op}"),
                attrs=dict(plan.final.attrs),
                inputs=[root, *plan.final.inputs[1:]],
                outputs=[plan.root],
            )
        )
    return created, FusedBlock(RULE, plan.root.name, writer, plan.branches, plan.result)
