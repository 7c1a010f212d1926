"""Affine regions: the largest subgraphs computing a tensor as an affine map of one tensor.

A *region* is a tree of linear ops (see :mod:`.readers`) whose interior tensors are each read
once, by the next op of the tree, and by nothing else (no graph output, no other node, no
subgraph). Its root is a linear op whose output is read elsewhere. Expressing the root bottom
up gives a sum of *terms*: each a form of the algebra applied to a *source* tensor (a tensor
the region reads but does not compute). Terms of the same source merge into one form; terms of
different sources stay in a smaller Add (RepGhost's ``dw(x1) + BN(x1) + shortcut``).

Where composing two ops is not exact (padding would see a shift, a ConvTranspose's input
side…), the tree is *cut*: the inner tensor becomes the root of a region of its own, and the
outer op reads it as a source; each cut with a real reason is reported as skipped. Cost is
checked on the whole region first (DBB's average-pool branch costs more alone than merged);
if the region would cost more multiply-adds than the nodes it replaces, it is planned again
with every composition checked on its own (a depthwise conv before a pointwise one stays).

Planning never touches the graph; :mod:`.rewrite` applies the plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import onnx_graphsurgeon as gs

from repvgg_onnx.algebra.evolve import evolve
from repvgg_onnx.algebra.linear_forms import IDENTITY, Form, channel_affine, compose, sum_forms
from repvgg_onnx.io.mapped_weights import release_mapped_pages

from .data_movement import chain_as_pad, describe_nodes
from .graph_utils import constant_values, describe_uses, has_single_use, producer, rank
from .pass_result import Refusal, attempt
from .readers import Kind, Layout, LinearOp, cost_of, keeps_channels, read_node
from .region_memory import KnownRoot
from .region_terms import (
    WEIGHTED,
    Emission,
    Expression,
    RegionPlan,
    Term,
    border_rtol,
    channels_of,
    dtype_of,
    layouts_conflict,
    meet,
    negate,
    node_text,
    opset_of,
    positions_ratio,
    same_leading_dims,
    shape_facts,
    spatial_size,
)
from .rewrite import node_specs
from .runtime_patterns import TAIL_OPS, fused_pattern_ending_at, kept_tail_reason

RULE = "affine_region"

#: Ops a region may stack below its root before the tensor there is cut (becomes a source of
#: this region and the root of another). Each level costs planning two or three Python frames,
#: so this keeps a region's planning far inside the default recursion limit of 1,000; regions
#: of real models are a few ops deep.
MAX_REGION_DEPTH = 96

_MOVING = (Kind.DATA_MOVEMENT, Kind.PAD)
#: Ops that can add elements around the data: a chain holding one may be a pad.
_BORDER_WRITERS = frozenset({"Pad", "Concat", "Expand", "Tile"})


def _spreads_constants(op: LinearOp) -> bool:
    """A data-movement op whose inputs are all constants (not folded: too large)."""
    return op.kind is Kind.DATA_MOVEMENT and all(
        constant_values(t) is not None for t in op.node.inputs if t.name
    )


_UNREAD = object()
"""What :meth:`RegionFinder.reading` finds for a node it has not read yet."""


class _Costly(Exception):
    """The region as a whole would cost more than the nodes it replaces."""


@dataclass
class RegionFinder:
    """Reads each node once (when planning first asks about it), then plans the regions of
    ``graph``."""

    graph: gs.Graph
    readings: dict[int, LinearOp | Refusal | None] = field(default_factory=dict)
    anchors: set[int] = field(default_factory=set)
    _in_graph: set[int] = field(default_factory=set)
    _linked: dict[int, bool] = field(default_factory=dict)
    _costs: dict[int, float] = field(default_factory=dict)
    _region_costs: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._in_graph = {id(node) for node in self.graph.nodes}

    def reading(self, node: gs.Node | None) -> LinearOp | Refusal | None:
        """``read_node(node)`` for a node of the graph, read once; ``None`` for any other
        (a graph input's or constant's missing producer, a node of a subgraph)."""
        if node is None:
            return None
        key = id(node)
        found = self.readings.get(key, _UNREAD)
        if found is _UNREAD:
            found = self.readings[key] = read_node(node) if key in self._in_graph else None
        return found

    def is_linear(self, node: gs.Node) -> bool:
        return isinstance(self.reading(node), LinearOp)

    def op_of(self, tensor: gs.Tensor) -> LinearOp | None:
        reading = self.reading(producer(tensor))
        return reading if isinstance(reading, LinearOp) else None

    def refusal_of(self, tensor: gs.Tensor) -> Refusal | None:
        reading = self.reading(producer(tensor))
        return reading if isinstance(reading, Refusal) else None

    def is_interior(self, tensor: gs.Tensor) -> bool:
        """Computed by a linear op and read only once, by another linear op of the graph."""
        if id(tensor) in self.anchors:
            return False
        known = self._linked.get(id(tensor))
        if known is None:
            known = self._links_two_linear_ops(tensor)
            self._linked[id(tensor)] = known
        return known

    def _links_two_linear_ops(self, tensor: gs.Tensor) -> bool:
        """The part of :meth:`is_interior` planning does not change (the graph is not edited
        while planning; only the anchors grow)."""
        op = self.op_of(tensor)
        if op is None or op.output is not tensor or not has_single_use(self.graph, tensor):
            return False
        reader = self.reading(tensor.outputs[0])
        return isinstance(reader, LinearOp) and any(t is tensor for t in reader.inputs)

    def plan_all(
        self, replan: set[int] | None = None, known: dict[int, KnownRoot] | None = None
    ) -> tuple[list[RegionPlan], list[Refusal], dict[int, KnownRoot]]:
        """Plans for every region worth rewriting, the candidates skipped (with reasons), and
        each root planned in its own place with what it reported (the next run's ``known``).

        Roots are planned last node first, each with the roots cut below it right after it.
        With ``replan`` (node ids) only the roots among those nodes are planned; a root of
        ``known`` that is not among them repeats its refusals where it stands (see
        :mod:`.region_memory`); any other node is not even read."""
        roots: list[tuple[gs.Tensor, KnownRoot | None]] = []
        for node in self.graph.nodes:
            if replan is None or id(node) in replan:
                reading = self.reading(node)
                if isinstance(reading, LinearOp) and not self.is_interior(reading.output):
                    roots.append((reading.output, None))
            elif known and (entry := known.get(id(node))) is not None:
                roots.append((entry.output, entry))
        plans, skipped = [], []
        known_now: dict[int, KnownRoot] = {}
        planned: set[int] = set()
        for root, entry in reversed(roots):
            if id(root) in planned:
                continue
            if entry is None:
                tree_plans, tree_skipped = self._plan_tree(root, planned)
                plans.extend(tree_plans)
                entry = KnownRoot(producer(root), root, tuple(tree_skipped))
            skipped.extend(entry.skipped)
            known_now[id(entry.node)] = entry
        return plans, skipped, known_now

    def _plan_tree(
        self, root: gs.Tensor, planned: set[int]
    ) -> tuple[list[RegionPlan], list[Refusal]]:
        """Plan ``root`` and, depth first, the roots cut below it that are not ``planned``
        yet: their plans and their refusals."""
        plans, skipped = [], []
        pending = [root]
        while pending:
            tensor = pending.pop()
            if id(tensor) in planned:
                continue
            planned.add(id(tensor))
            plan, cuts, skips = self._plan_root(tensor)
            release_mapped_pages()  # the region's weights were read; its plan holds new ones
            skipped.extend(skips)
            if plan is not None:
                plans.append(plan)
            for cut in cuts:
                if id(cut) not in self.anchors:
                    self.anchors.add(id(cut))
                    if self.op_of(cut) is not None:
                        pending.append(cut)
        return plans, skipped

    def _plan_root(self, root: gs.Tensor):
        op = self.op_of(root)
        if op is None:
            return None, [], []
        attempt = None
        for local_costs in (False, True):
            attempt = _Attempt(self, local_costs, op)
            try:
                expression = attempt.expand(op, root=True)
                plan = attempt.plan(op, expression)
            except _Costly:
                continue
            return plan, attempt.cuts, attempt.skipped
        return None, attempt.cuts, attempt.skipped

    def cost(self, op: LinearOp) -> float:
        """``cost_of(op)`` at its output's channel count, computed once per op (nothing the
        cost depends on changes while planning)."""
        known = self._costs.get(id(op))
        if known is None:
            known = self._costs[id(op)] = cost_of(op, channels_of(op.output))
        return known

    def region_cost(self, op: LinearOp) -> float:
        """Multiply-adds per output position of every op of the region rooted at ``op``: no
        composition that costs more can ever pay off, so none is computed. Computed once per
        root, and only where a composition needs it (a chain of ops on a source needs none)."""
        known = self._region_costs.get(id(op))
        if known is None:
            known = self._region_costs[id(op)] = self._sum_region_cost(op)
        return known

    def _sum_region_cost(self, op: LinearOp) -> float:
        root, total, stack = op.output, 0.0, [op]
        while stack:
            current = stack.pop()
            cost = self.cost(current)
            total += cost * positions_ratio(current.output, root)
            stack.extend(self.op_of(t) for t in current.inputs if self.is_interior(t))
        return total


@dataclass
class _Attempt:
    """One bottom-up reading of a region (with or without a cost check per composition)."""

    finder: RegionFinder
    local_costs: bool
    root: LinearOp
    cuts: list[gs.Tensor] = field(default_factory=list)
    skipped: list[Refusal] = field(default_factory=list)
    depth: int = 0

    def express(self, tensor: gs.Tensor) -> Expression:
        """``tensor`` as a sum of terms of the region's sources: itself, if it is a source; else
        its op expanded. At :data:`MAX_REGION_DEPTH` ops below the root it is cut instead (a
        source here, the root of a region of its own), so planning a chain or sum of any
        length stays within Python's recursion limit and linear in its size: the pieces merge
        in the next round."""
        if not self.finder.is_interior(tensor) or any(c is tensor for c in self.cuts):
            return Expression((Term(tensor, IDENTITY),))
        if self.depth >= MAX_REGION_DEPTH:
            self.cuts.append(tensor)
            return Expression((Term(tensor, IDENTITY),))
        self.depth += 1
        try:
            return self.expand(self.finder.op_of(tensor))
        finally:
            self.depth -= 1

    def expand(self, op: LinearOp, root: bool = False) -> Expression:
        """The output of ``op`` as a sum of terms of the region's sources."""
        if op.kind is Kind.SUM:
            return self._expand_sum(op)
        if op.kind is Kind.RESHAPE:
            return self._expand_reshape(op, root)
        chain = self._data_movement_chain(op, root)
        if isinstance(chain, Refusal):
            self.skipped.append(chain.by(RULE, op.node.name))
            chain = None
        if chain is not None:
            return self._expand_chain(op, *chain)
        if op.kind is Kind.DATA_MOVEMENT:
            self.cuts.extend(op.inputs)
            return self._keep(op)
        inner = self.express(op.input)
        return self._apply(op, op.form, inner, (op.node,), op.label, op.input)

    def _expand_sum(self, op: LinearOp) -> Expression:
        terms: list[Term] = []
        nodes: tuple[gs.Node, ...] = (op.node,)
        cost = self.finder.cost(op)
        for tensor, sign in zip(op.inputs, op.signs, strict=True):
            part = self.express(tensor)
            nodes += part.nodes
            cost += part.cost
            terms.extend(part.terms if sign > 0 else (negate(t) for t in part.terms))
        layout, laid_out = Layout.ANY, None
        for term in terms:
            met = meet(layout, term.layout)
            if met is None:
                return self._cut_all(op, _terms_conflict(laid_out, term))
            if term.layout is not Layout.ANY:
                laid_out = laid_out or term
            layout = met
        return Expression(tuple(terms), nodes, cost)

    def _cut_all(self, op: LinearOp, reason: str | None) -> Expression:
        """Every input of the sum ``op`` becomes a source (and a root)."""
        self.cuts.extend(op.inputs)
        if reason:
            self.skipped.append(Refusal(RULE, op.node.name, reason))
        terms = [Term(t, IDENTITY) for t in op.inputs]
        terms = [t if s > 0 else negate(t) for t, s in zip(terms, op.signs, strict=True)]
        return Expression(tuple(terms), (op.node,), self.finder.cost(op))

    def _expand_reshape(self, op: LinearOp, root: bool) -> Expression:
        """A Reshape that keeps the last axis is the identity on ``[..., C]`` maps. At the root,
        any Reshape is kept as the region's last step (the result is reshaped the same way)."""
        if root and not keeps_channels(op):
            inner = self.express(op.input)
            if any(term.is_raw for term in inner.terms):
                return self._cut(op, op.input, None)
            return evolve(inner, final=op.node)
        if not keeps_channels(op):
            return self._cut(op, op.input, None)
        inner = self.express(op.input)
        for term in inner.terms:
            channels_first = term.layout is Layout.CHANNELS_FIRST
            if term.is_raw or term.form.spatial_rank or channels_first:
                return self._cut(op, op.input, None)
        terms = [evolve(t, layout=Layout.CHANNELS_LAST, reshaped=True) for t in inner.terms]
        terms[0] = evolve(terms[0], nodes=(*terms[0].nodes, op.node))
        if root and not all(same_leading_dims(t.source, op.output) for t in terms):
            return evolve(inner, final=op.node)
        return Expression(tuple(terms), inner.nodes, inner.cost)

    def _data_movement_chain(
        self, op: LinearOp, root: bool
    ) -> tuple[list[LinearOp], gs.Tensor] | Refusal | None:
        """The element-moving ops ``op`` tops (inputs before readers) and the one tensor they
        all move, if they can write a border (a Pad, Concat, Expand or Tile; at the root of a
        region, where no linear op reads the result, only a Pad) and are more than a lone Pad
        (which its reader reads); why not, if they move several tensors."""
        if op.kind not in _MOVING:
            return None
        chain, sources = self._collect_movers(op)
        writers = {"Pad"} if root else _BORDER_WRITERS
        if (len(chain) == 1 and op.kind is Kind.PAD) or not sources:
            return None
        if not any(o.node.op in writers for o in chain):
            return None
        if len(sources) > 1:
            names = ", ".join(f"'{t.name}'" for t in sources.values())
            return Refusal.because(
                f"{describe_nodes([o.node for o in chain])} read {len(sources)} tensors "
                f"({names}), not one, so they are not a pad"
            )
        return chain, next(iter(sources.values()))

    def _collect_movers(self, top: LinearOp) -> tuple[list[LinearOp], dict[int, gs.Tensor]]:
        """Below ``top``: the moving ops each read only by the next one, each after the ops it
        reads (``top`` last), and every other variable tensor they read (the sources).
        Interior tensors are read once, so the ops form a tree. A moving op of constants only
        (an ``Expand`` of the per-channel value over a border strip, too large to fold) is
        evaluated with the chain, even where it is read twice."""
        chain: list[LinearOp] = []
        sources: dict[int, gs.Tensor] = {}
        spread: set[int] = set()
        stack = [(top, False)]
        while stack:
            op, inputs_done = stack.pop()
            if inputs_done:
                chain.append(op)
                continue
            stack.append((op, True))
            for tensor in op.inputs:
                below = self.finder.op_of(tensor)
                if constant_values(tensor) is not None:
                    continue
                if below is not None and below.kind in _MOVING and self._is_open(tensor):
                    stack.append((below, False))
                elif below is not None and _spreads_constants(below):
                    if id(below) not in spread:
                        spread.add(id(below))
                        chain.append(below)
                else:
                    sources[id(tensor)] = tensor
        return chain, sources

    def _is_open(self, tensor: gs.Tensor) -> bool:
        return self.finder.is_interior(tensor) and not any(c is tensor for c in self.cuts)

    def _expand_chain(self, op: LinearOp, chain: list[LinearOp], source: gs.Tensor) -> Expression:
        nodes = tuple(o.node for o in chain)
        form = chain_as_pad(list(nodes), source, opset_of(self.finder.graph))
        if isinstance(form, Refusal):
            self.cuts.extend(t for o in chain for t in o.inputs)
            self.skipped.append(form.by(RULE, op.node.name))
            return self._keep(op)
        inner = self.express(source)
        return self._apply(op, form, inner, nodes, "Pad", source)

    def _keep(self, op: LinearOp) -> Expression:
        """``op`` stays a node of its own: its output is a source of the region above (the
        caller makes its input a root of the region below)."""
        self.cuts.append(op.output)
        return Expression((Term(op.output, IDENTITY),))

    def _apply(
        self,
        op: LinearOp,
        form: Form,
        inner: Expression,
        nodes: tuple[gs.Node, ...],
        label: str,
        input_tensor: gs.Tensor,
    ) -> Expression:
        """``form(inner)``: distributed over the terms if per-channel, else composed with
        the terms merged (one source only)."""
        op_cost = self.finder.cost(op)
        if form.channel_map() is not None:
            return self._apply_channel_affine(op, form, inner, nodes, label, input_tensor)
        groups = inner.by_source()
        if len(groups) != 1:
            return self._cut(op, input_tensor, None, form, nodes, label)
        merged = self._merge(inner)
        if isinstance(merged, Refusal):
            return self._cut(op, input_tensor, merged.reason, form, nodes, label)
        layout = meet(op.layout, merged.layout)
        if layout is None:
            reason = f"{node_text(op)} cannot absorb {_the_term(merged)} before it: "
            reason += layouts_conflict(op.label, op.layout, merged.describe(), merged.layout)
            reported = not (op.kind in WEIGHTED and merged.weighted)
            return self._cut(op, input_tensor, reason if reported else None, form, nodes, label)
        tail = self._runtime_fused_tail(op, merged)
        if tail is not None:
            self.skipped.append(tail.by(RULE, merged.nodes[-1].name))
            return self._cut(op, input_tensor, None, form, nodes, label)
        cost = op_cost + merged.cost * form.input_positions_per_output()
        new_cost = form.composed_cost(merged.form, channels_of(op.output))
        too_costly = not merged.is_raw and (
            (self.local_costs and new_cost > cost) or new_cost > self.finder.region_cost(self.root)
        )
        if too_costly:
            reason = (
                f"{node_text(op)} composed with {_the_term(merged)} before it "
                f"would cost {new_cost:.0f} multiply-adds per output, not {cost:.0f}"
            )
            reported = not (op.kind in WEIGHTED and merged.weighted)
            return self._cut(op, input_tensor, reason if reported else None, form, nodes, label)
        composite = attempt(lambda: compose(form, merged.form, border_rtol(op)))
        if isinstance(composite, Refusal):
            reason = (
                f"{node_text(op)} cannot absorb {_the_term(merged)} before it: " + composite.reason
            )
            reported = not merged.is_raw and not (op.kind in WEIGHTED and merged.weighted)
            return self._cut(op, input_tensor, reason if reported else None, form, nodes, label)
        term = Term(
            merged.source,
            composite,
            (*merged.labels, label),
            merged.nodes + nodes,
            cost,
            layout,
            merged.negative,
            merged.weighted or op.kind in WEIGHTED,
            merged.reshaped,
        )
        return Expression((term,))

    def _runtime_fused_tail(self, op: LinearOp, merged: Term) -> Refusal | None:
        """Why bare Mul/Div/Add/Sub constants read by a weighted op stay before it, or
        ``None``: they end a non-linear pattern onnxruntime fuses (a GELU's ``· 0.5``, a
        LayerNorm's ``· γ + β``; see :mod:`runtime_patterns`). After any other non-linear op
        (YOLOv7's ``ImplicitA`` after a SiLU) they fold into the weighted op."""
        if op.kind not in WEIGHTED or not merged.nodes:
            return None
        if any(node.op not in TAIL_OPS for node in merged.nodes):
            return None
        if not is_activation_output(self.finder, merged.source):
            return None
        pattern = fused_pattern_ending_at(merged.source)
        if pattern is None:
            return None
        return Refusal.because(kept_tail_reason(merged.nodes[-1], pattern, node_text(op)))

    def _apply_channel_affine(
        self, op, form: Form, inner: Expression, nodes, label, input_tensor
    ) -> Expression:
        """A per-channel map applied to each term of ``inner``, its shift to the first only."""
        terms = []
        scale_only = channel_affine(form.channel_map()[0], 0.0)
        for index, term in enumerate(inner.terms):
            layout = meet(op.layout, term.layout)
            step = form if index == 0 else scale_only
            if layout is None:
                return self._cut(op, input_tensor, None, form, nodes, label)
            composed = attempt(partial(compose, step, term.form))
            if isinstance(composed, Refusal):
                return self._cut(op, input_tensor, None, form, nodes, label)
            terms.append(evolve(term, form=composed, labels=(*term.labels, label), layout=layout))
        cost = inner.cost + self.finder.cost(op)
        terms[0] = evolve(terms[0], nodes=terms[0].nodes + nodes)
        return Expression(tuple(terms), inner.nodes, cost)

    def _merge(self, inner: Expression) -> Term | Refusal:
        """The terms of one source as a single term (their Add nodes included)."""
        terms = inner.terms
        if len(terms) == 1:
            term = terms[0]
            return evolve(term, nodes=term.nodes + inner.nodes, cost=inner.total_cost)
        source = terms[0].source
        layout = Layout.ANY
        for term in terms:
            layout = meet(layout, term.layout) or layout
        shape = shape_facts(terms, source, layout)
        if isinstance(shape, Refusal):
            return shape
        form = attempt(
            lambda: sum_forms(
                [t.form for t in terms],
                [t.describe() for t in terms],
                spatial_rank=shape[0],
                channels=shape[1],
                input_size=spatial_size(source, shape[0]),
            ),
            errors=(ValueError,),
        )
        if isinstance(form, Refusal):
            return form
        label = "(" + ", ".join(t.describe() for t in terms) + ")"
        weighted = any(t.weighted for t in terms)
        reshaped = any(t.reshaped for t in terms)
        nodes, cost = inner.all_nodes, inner.total_cost
        return Term(source, form, (label,), nodes, cost, layout, False, weighted, reshaped)

    def _cut(
        self,
        op: LinearOp,
        input_tensor: gs.Tensor,
        reason: str | None,
        form: Form | None = None,
        nodes: tuple[gs.Node, ...] | None = None,
        label: str | None = None,
    ) -> Expression:
        """Stop the region below ``op``: its input becomes a source (and a region root)."""
        self.cuts.append(input_tensor)
        if reason:
            self.skipped.append(Refusal(RULE, op.node.name, reason))
        form = op.form if form is None else form
        if form is None or form.emittable_reason():
            return self._keep(op)
        term = Term(
            input_tensor,
            form,
            (label or op.label,),
            nodes or (op.node,),
            self.finder.cost(op),
            op.layout,
            weighted=op.kind in WEIGHTED,
        )
        return Expression((term,))

    def plan(self, op: LinearOp, expression: Expression) -> RegionPlan | None:
        """What replaces the region rooted at ``op``, or ``None`` if nothing is gained."""
        root = op.output
        emitted: list[tuple[Term, Form]] = []
        for terms in expression.by_source():
            merged = self._merged_group(terms)
            if merged is None:
                emitted.extend((t, t.form) for t in terms)
            else:
                emitted.append(merged)
        emissions = []
        for term, form in emitted:
            emission = self._emission(term, form, root, expression.final is not None)
            if isinstance(emission, Refusal):
                self.skipped.append(emission.by(RULE, op.node.name))
                return None
            emissions.append(emission)
        new_nodes = sum(e.node_count for e in emissions) + len(emissions) - 1
        new_nodes += expression.final is not None
        replaced = expression.all_nodes
        if new_nodes >= len(replaced) or new_nodes == 0:
            self._explain_kept_sum(op, expression)
            self._explain_kept_channel_op(op, replaced)
            return None
        branches = tuple(t.describe() for t in expression.terms)
        result = " + ".join(e.label for e in emissions)
        if expression.final is not None:
            result += f" → {expression.final.op}"
        return RegionPlan(
            root, op.node, replaced, tuple(emissions), branches, result, expression.final
        )

    def _merged_group(self, terms: list[Term]) -> tuple[Term, Form] | None:
        """The terms of one source merged, or ``None`` to keep them apart (with a reason)."""
        if len(terms) == 1:
            term = terms[0]
            if not term.is_raw and term.form.multiply_adds() > term.cost and not self.local_costs:
                raise _Costly
            return term, term.form
        merged = self._merge(Expression(tuple(terms)))
        if isinstance(merged, Refusal):
            names = ", ".join(t.describe() for t in terms)
            self.skipped.append(merged.prefixed(f"{names}: ").by(RULE, _last_node_name(terms)))
            return None
        adds = (len(terms) - 1) * (channels_of(terms[0].source) or 1)
        budget = sum(t.cost for t in terms) + adds
        if merged.form.multiply_adds() > budget:
            if not self.local_costs:
                raise _Costly
            names = ", ".join(t.describe() for t in terms)
            reason = (
                f"merging {names} of '{terms[0].source.name}' would cost "
                f"{merged.form.multiply_adds():.0f} multiply-adds per output instead of "
                f"{budget:.0f}"
            )
            self.skipped.append(Refusal(RULE, _last_node_name(terms), reason))
            return None
        return merged, merged.form

    def _emission(
        self, term: Term, form: Form, root: gs.Tensor, reshaped_after: bool
    ) -> Emission | Refusal:
        if term.is_raw:
            return Emission(term.source, (), f"'{term.source.name}'")
        reason = form.emittable_reason()
        if reason:
            return Refusal.because(f"{term.describe()} cannot be one node: {reason}")
        if term.reshaped and not reshaped_after and not same_leading_dims(term.source, root):
            return Refusal.because(
                f"{term.describe()} reshapes '{term.source.name}' into the shape of "
                f"'{root.name}', which one linear op cannot do"
            )
        channels_last = term.layout is Layout.CHANNELS_LAST
        specs = node_specs(form, dtype_of(term), channels_last, rank(term.source))
        if isinstance(specs, Refusal):
            return specs.prefixed(f"{term.describe()} is left as it is: ")
        if not specs:
            return Emission(term.source, (), f"'{term.source.name}'")
        return Emission(term.source, tuple(specs), form.label(specs))

    def _explain_kept_channel_op(self, op: LinearOp, replaced: tuple[gs.Node, ...]) -> None:
        """A per-channel op left alone right after a linear op says why: that op's output is
        read by others too (a GELU's ``x / √2`` beside its ``x · …``), or is a graph output."""
        if op.kind not in (Kind.SCALE, Kind.SHIFT, Kind.BATCHNORM) or len(replaced) != 1:
            return
        source = op.input
        if self.finder.op_of(source) is None or self.finder.is_interior(source):
            return
        if has_single_use(self.finder.graph, source):
            return
        reason = _describe_source(self.finder, source, op.node)
        self.skipped.append(
            Refusal(
                RULE, op.node.name, f"{node_text(op)} cannot fold into the op before it: {reason}"
            )
        )

    def _explain_kept_sum(self, op: LinearOp, expression: Expression) -> None:
        groups = expression.by_source()
        if op.kind is not Kind.SUM or len(groups) < 2:
            return
        linear = any(not t.is_raw for t in expression.terms)
        refused = [self.finder.refusal_of(t.source) for t in expression.terms]
        if not linear and not any(refused):
            return
        parts = [_describe_source(self.finder, group[0].source, op.node) for group in groups]
        self.skipped.append(
            Refusal(
                RULE,
                op.node.name,
                "the terms read different tensors: " + "; ".join(parts) + ", so the Add stays",
            )
        )


def _last_node_name(terms: list[Term]) -> str:
    """The name of the last node of the first term that has one (a raw term has none)."""
    return next((term.nodes[-1].name for term in terms if term.nodes), "")


def _the_term(term: Term) -> str:
    """``"the Conv3x3+BN (BatchNormalization 'bn1')"``: a term and the last node it spans."""
    last = f" ({term.nodes[-1].op} '{term.nodes[-1].name}')" if term.nodes else ""
    return f"the {term.describe()}{last}"


def _terms_conflict(first: Term | None, second: Term) -> str | None:
    """Why a sum of two terms of one source in conflicting layouts stays an Add (terms of
    different sources stay apart anyway)."""
    if first is None or first.source is not second.source:
        return None
    conflict = layouts_conflict(first.describe(), first.layout, second.describe(), second.layout)
    return f"the terms read '{second.source.name}' in different layouts: {conflict}; the Add stays"


def is_activation_output(finder: RegionFinder, tensor: gs.Tensor) -> bool:
    """``tensor`` is computed by a non-linear op (not a linear op, graph input or constant)."""
    node = producer(tensor)
    return node is not None and finder.op_of(tensor) is None and finder.refusal_of(tensor) is None


def _describe_source(finder: RegionFinder, tensor: gs.Tensor, reader: gs.Node) -> str:
    """Why the region stops at ``tensor``, for the reason of a sum that stays."""
    node = producer(tensor)
    refusal = finder.refusal_of(tensor)
    if refusal is not None:
        return f"term '{tensor.name}' comes from {refusal.reason}"
    if node is None:
        return f"'{tensor.name}' (an input)"
    if finder.op_of(tensor) is None:
        return f"term '{tensor.name}' comes from {node.op} '{node.name}', which is not linear"
    if not has_single_use(finder.graph, tensor):
        return (
            f"'{tensor.name}' (from {node.op} '{node.name}') is also read by "
            f"{describe_uses(finder.graph, tensor, reader)}, so it must keep its value"
        )
    return f"'{tensor.name}' (from {node.op} '{node.name}')"
