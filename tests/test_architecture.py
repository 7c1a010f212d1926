"""The package's layers import downwards only, and no module imports itself back in a cycle.

Layers, lowest first (``docs/architecture.md``): ``version`` and ``errors``; ``algebra``,
``io`` and ``reports.render`` (dicts to text, Markdown, HTML: it reads no record); ``graph``;
``passes`` and ``verification`` (which know nothing of each other); ``pipeline``; ``reports``;
``api``; ``cli``. A module may import its own layer and the layers it is allowed below; the
import graph of the package's modules has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "repvgg_onnx"

#: What each layer may import besides itself.
_BASE = {"version", "errors"}
ALLOWED = {
    "version": set(),
    "errors": set(),
    "algebra": _BASE,
    "io": _BASE,
    "render": _BASE,
    "graph": _BASE | {"io"},
    "passes": _BASE | {"algebra", "io", "graph"},
    "verification": _BASE | {"io", "render"},
    "pipeline": _BASE | {"algebra", "io", "graph", "passes", "verification", "render"},
    "reports": _BASE | {"algebra", "io", "graph", "passes", "verification", "pipeline", "render"},
    "api": _BASE | {"io", "graph", "verification", "pipeline", "reports", "render"},
    "cli": _BASE | {"io", "verification", "reports", "render", "api"},
}


def module_files() -> dict[str, Path]:
    """Every module of the installed package by dotted name (``passes/`` is ``.passes``)."""
    files = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "passes").glob("*.py"):
        name = "" if path.stem == "__init__" else "." + path.stem
        files[f"{PACKAGE}.passes{name}"] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from x import y`` counts ``x.y`` when that
    is a module, else ``x``), wherever the import statement sits."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {module for module in found if module in known and module != name}


def layer_of(module: str) -> str:
    """``repvgg_onnx.graph.shapes`` → ``graph``; ``repvgg_onnx.cli`` → ``cli``;
    ``repvgg_onnx.reports.render.html`` → ``render``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1:3] == ["reports", "render"]:
        return "render"
    return parts[1]


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def test_every_module_belongs_to_a_layer():
    layers = {layer_of(module) for module in module_files()} - {"package", "__main__"}
    assert layers <= set(ALLOWED), f"modules outside every layer: {layers - set(ALLOWED)}"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer → imported`` for every import a layer is not allowed."""
    wrong = []
    for importer, imported in graph.items():
        layer = layer_of(importer)
        if layer in ("package", "__main__"):
            continue
        for module in sorted(imported):
            target = layer_of(module)
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{importer} → {module}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(import_graph()) == []


def test_the_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    # the package root re-exports the API: its modules read ``__version__`` from
    # ``repvgg_onnx.version``, never from the root
    assert cycles({name: deps - {PACKAGE} for name, deps in graph.items()}) == []
    assert [name for name, deps in graph.items() if PACKAGE in deps and name != "__main__"] == []


def graphsurgeon_internals_imported(files: dict[str, Path]) -> list[str]:
    """Modules outside ``graph/`` that import a module of onnx-graphsurgeon's own (its
    ``ir``, ``importers``, ``exporters``...), not its public ``onnx_graphsurgeon`` API."""
    found = []
    for name, path in files.items():
        if layer_of(name) == "graph":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{name} → {n}" for n in names if n.startswith("onnx_graphsurgeon.")]
    return found


def test_only_the_graph_crossing_imports_graphsurgeon_internals():
    assert graphsurgeon_internals_imported(module_files()) == []


def test_an_upward_import_is_caught():
    graph = import_graph()
    graph["repvgg_onnx.io.stripped_model"] = {"repvgg_onnx.passes.graph_utils"}
    assert upward_imports(graph) == [
        "repvgg_onnx.io.stripped_model → repvgg_onnx.passes.graph_utils"
    ]


def test_a_cycle_is_caught():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


SUBPACKAGES = sorted(
    name for name, path in module_files().items() if path.name == "__init__.py" and "." in name
)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_subpackage_says_what_it_holds(package):
    path = module_files()[package]
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring) > 80, f"{package} has no paragraph saying what it holds"
