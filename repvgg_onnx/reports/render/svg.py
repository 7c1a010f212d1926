"""Before/after pictures of a block: a layered SVG drawing of a small DAG.

A node's row is its longest path from the block's input tensors; edges that skip rows pass
through invisible bend points so they go around boxes; boxes are centred under what feeds
them and pushed apart so they never overlap. Every name is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise

# Picture geometry, in SVG pixels.
_NODE_W, _NODE_H, _TENSOR_H, _BEND_W = 132, 40, 24, 10
_ROW_H, _ROW_GAP, _H_GAP, _PAD = 40, 30, 16, 8
_LABEL_CHAR_PX, _MONO_CHAR_PX = 7.0, 6.0


def esc(value: object) -> str:
    """``value`` as HTML text, quotes escaped too so it is safe inside attributes."""
    return escape("" if value is None else str(value), quote=True)


def as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class PictureNode:
    """A node of a block as the picture needs it; ``inputs`` holds non-constant tensors only."""

    name: str
    op: str
    label: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, data: object) -> PictureNode:
        node = as_dict(data)
        op = str(node.get("op") or "?")
        return cls(
            name=str(node.get("name") or ""),
            op=op,
            label=str(node.get("label") or op),
            inputs=tuple(str(t) for t in as_list(node.get("inputs"))),
            outputs=tuple(str(t) for t in as_list(node.get("outputs"))),
        )


@dataclass
class _Item:
    """One box of a picture's row: a tensor (top and bottom rows), a node, or a bend of an edge
    that crosses a row (so long edges go around boxes, not through them)."""

    row: int
    width: float
    height: float
    node: PictureNode | None = None
    text: str = ""
    title: str = ""
    preds: list[int] = field(default_factory=list)
    x: float = 0.0
    bend: bool = False


def block_picture(
    nodes: list[PictureNode], block_inputs: list[str], block_output: str, scope: str
) -> tuple[str, float]:
    """An SVG of the DAG from the block's input tensors (top) to its output (bottom), and its
    width. Layered layout: a node's row is its longest path from the inputs. Boxes show node
    names without ``scope``, the prefix all the block's node names share."""
    produced = {t for node in nodes for t in node.outputs}
    consumed = [t for node in nodes for t in node.inputs]
    inputs = list(dict.fromkeys([*block_inputs, *(t for t in consumed if t not in produced)]))
    outputs = [block_output] if block_output else [t for t in produced if t not in consumed]
    items, edges = _graph(nodes, inputs, outputs, scope)
    _place(items)
    return _svg(items, edges)


def _node_rows(nodes: list[PictureNode], producer: dict[str, int]) -> list[int]:
    """Row of each node: 1 + the longest path from the block inputs (row 0), by relaxation;
    the cap of ``len(nodes)`` keeps a malformed (cyclic) block finite."""
    rows = [1] * len(nodes)
    for _ in range(len(nodes)):
        changed = False
        for i, node in enumerate(nodes):
            feeders = (rows[producer[t]] for t in node.inputs if t in producer and producer[t] != i)
            row = min(1 + max(feeders, default=0), len(nodes))
            changed |= row != rows[i]
            rows[i] = row
        if not changed:
            break
    return rows


def _graph(
    nodes: list[PictureNode], inputs: list[str], outputs: list[str], scope: str
) -> tuple[list[_Item], list[tuple[list[int], str]]]:
    """Items (tensors, nodes, bends) and edges; an edge is the chain of items it passes through
    and the tensor it carries."""
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for tensor in node.outputs:
            producer.setdefault(tensor, i)
    rows = _node_rows(nodes, producer)
    last = max(rows, default=0) + 1
    items = [_Item(0, _NODE_W, _TENSOR_H, text=t.removeprefix(scope), title=t) for t in inputs]
    items += [
        _Item(row, _NODE_W, _NODE_H, node, _short_name(node, scope), _tooltip(node))
        for row, node in zip(rows, nodes, strict=True)
    ]
    items += [_Item(last, _NODE_W, _TENSOR_H, text=t.removeprefix(scope), title=t) for t in outputs]
    source = {t: i for i, t in enumerate(inputs)}
    source |= {t: len(inputs) + i for t, i in producer.items()}
    links = [
        (source[t], len(inputs) + i, t)
        for i, node in enumerate(nodes)
        for t in node.inputs
        if t in source
    ]
    links += [
        (source[t], len(inputs) + len(nodes) + i, t) for i, t in enumerate(outputs) if t in source
    ]
    edges = []
    for start, end, tensor in links:
        chain = [start]
        for row in range(items[start].row + 1, items[end].row):
            items.append(_Item(row, _BEND_W, _ROW_H, preds=[chain[-1]], bend=True))
            chain.append(len(items) - 1)
        items[end].preds.append(chain[-1])
        edges.append(([*chain, end], tensor))
    return items, edges


def _place(items: list[_Item]) -> None:
    """Horizontal positions: each item at the mean x of its predecessors, neighbours pushed
    apart to a gap, each row shifted back so it stays centred on what feeds it."""
    for row in range(max((item.row for item in items), default=-1) + 1):
        members = [item for item in items if item.row == row]
        if not members:
            continue
        for item in members:
            xs = [items[p].x for p in item.preds]
            item.x = sum(xs) / len(xs) if xs else 0.0
        desired = [item.x for item in members]
        order = sorted(range(len(members)), key=lambda k: desired[k])
        for before, after in pairwise(order):
            gap = (members[before].width + members[after].width) / 2 + _H_GAP
            members[after].x = max(members[after].x, members[before].x + gap)
        shift = sum(d - item.x for d, item in zip(desired, members, strict=True)) / len(members)
        for item in members:
            item.x += shift


def _svg(items: list[_Item], edges: list[tuple[list[int], str]]) -> tuple[str, float]:
    """The picture as inline SVG (boxes drawn over edges), and its width in pixels."""
    if not items:
        empty = '<text x="60" y="20">(no nodes)</text>'
        return f'<svg class="dag" width="120" height="40" viewBox="0 0 120 40">{empty}</svg>', 120.0
    left = min(item.x - item.width / 2 for item in items) - _PAD
    for item in items:
        item.x -= left
    width = max(item.x + item.width / 2 for item in items) + _PAD
    height = max(_row_top(item.row) for item in items) + _ROW_H + _PAD
    entries = _entry_points(items, edges)
    parts = [_edge(items, chain, tensor, entries[k]) for k, (chain, tensor) in enumerate(edges)]
    parts += [_box(item) for item in items if not item.bend]
    svg = (
        f'<svg class="dag" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">{"".join(parts)}</svg>'
    )
    return svg, width


def _row_top(row: int) -> float:
    return _PAD + row * (_ROW_H + _ROW_GAP)


def _top(item: _Item) -> float:
    return _row_top(item.row) + (_ROW_H - item.height) / 2


def _entry_points(items: list[_Item], edges: list[tuple[list[int], str]]) -> list[float]:
    """Where each edge enters its target: spread across the top of boxes with several inputs,
    in the order of where the edges come from, so they do not cross just above the box."""
    entries = [items[chain[-1]].x for chain, _ in edges]
    by_target: dict[int, list[int]] = {}
    for k, (chain, _) in enumerate(edges):
        by_target.setdefault(chain[-1], []).append(k)
    for target, ks in by_target.items():
        if len(ks) < 2:
            continue
        ks.sort(key=lambda k: items[edges[k][0][-2]].x)
        spread = min(items[target].width - 24, 18 * (len(ks) - 1))
        for j, k in enumerate(ks):
            entries[k] = items[target].x - spread / 2 + spread * j / (len(ks) - 1)
    return entries


def _edge(items: list[_Item], chain: list[int], tensor: str, entry_x: float) -> str:
    """A smooth path through the chain (straight down through bends) ending in an arrowhead."""
    points = [(items[chain[0]].x, _top(items[chain[0]]) + items[chain[0]].height)]
    for bend in chain[1:-1]:
        points += [(items[bend].x, _top(items[bend])), (items[bend].x, _top(items[bend]) + _ROW_H)]
    end_y = _top(items[chain[-1]]) - 1
    points.append((entry_x, end_y))
    path = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in pairwise(points):
        mid = (y0 + y1) / 2
        path.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
    head = [(entry_x, end_y), (entry_x - 4, end_y - 7), (entry_x + 4, end_y - 7)]
    arrow = " ".join(f"{x:.1f},{y:.1f}" for x, y in head)
    return (
        f'<path class="edge" d="{" ".join(path)}"><title>{esc(tensor)}</title></path>'
        f'<polygon class="arrow" points="{arrow}"/>'
    )


def _box(item: _Item) -> str:
    """A node (label over short name) or a tensor pill, with the full name as tooltip."""
    x0, y0, mid = item.x - item.width / 2, _top(item), _top(item) + item.height / 2
    inner = item.width - 12
    if item.node is None:
        text = _svg_text(item.x, mid, item.text, "", inner, _MONO_CHAR_PX, keep_tail=True)
        return (
            f'<g class="tensor"><title>{esc(item.title)}</title><rect x="{x0:.1f}" y="{y0:.1f}" '
            f'width="{item.width}" height="{item.height}" rx="12"/>{text}</g>'
        )
    node = item.node
    label_y = mid - 7 if item.text else mid
    label = _svg_text(item.x, label_y, node.label, "", inner, _LABEL_CHAR_PX, keep_tail=False)
    name = _svg_text(item.x, mid + 9, item.text, "name", inner, _MONO_CHAR_PX, keep_tail=True)
    return (
        f'<g class="node {_op_class(node.op)}"><title>{esc(item.title)}</title><rect x="{x0:.1f}" '
        f'y="{y0:.1f}" width="{item.width}" height="{item.height}" rx="6"/>{label}{name}</g>'
    )


def _svg_text(
    x: float, y: float, text: str, cls: str, room: float, char_px: float, keep_tail: bool
) -> str:
    """Text fitted into ``room`` pixels: squeezed up to a fifth, beyond that cut with "…" (from
    the left for names, whose tail says most; from the right for labels)."""
    limit = int(room * 1.2 / char_px)
    if len(text) > limit:
        text = "…" + text[-(limit - 1) :] if keep_tail else text[: limit - 1] + "…"
    fit = (
        f' textLength="{room:.0f}" lengthAdjust="spacingAndGlyphs"'
        if len(text) * char_px > room
        else ""
    )
    css = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{css}{fit}>{esc(text)}</text>'


def _tooltip(node: PictureNode) -> str:
    return f"{node.name}\n{node.op}: {', '.join(node.inputs)} → {', '.join(node.outputs)}"


def common_scope(names: Iterable[str]) -> str:
    """The "/"-separated directory all ``names`` share: ``/stage1/stage1.0/`` for the nodes of
    one block exported by PyTorch (names there read ``/stage1/stage1.0/rbr_dense/conv/Conv``)."""
    dirs = [name.split("/")[:-1] for name in names]
    common = next(iter(dirs), [])
    for parts in dirs:
        while parts[: len(common)] != common:
            common = common[:-1]
    return "/".join(common) + "/" if common else ""


def _short_name(node: PictureNode, scope: str) -> str:
    """The node's name without ``scope`` and a trailing ``/<op>`` (the label says it); empty if
    nothing else is left."""
    name = node.name.removeprefix(scope).lstrip("/")
    name = name.removesuffix("/" + node.op)
    return "" if name == node.op else name


def _op_class(op: str) -> str:
    return {"Conv": "op-conv", "BatchNormalization": "op-bn", "Add": "op-add"}.get(op, "op-other")


# ---------------------------------------------------------------- fuse, verify, inspect
