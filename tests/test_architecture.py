"""The import graph: arrows point one way, no cycles, none hidden in a function."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("api", "actors", "storage")
TOP_MODULES = ("settings", "logs", "unsubscribe")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += [ROOT / f"{name}.py" for name in TOP_MODULES]
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in files}


MODULES = _modules()


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads, as far as they are the project's own."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.module is None:
        return []
    submodules = [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in submodules if name in MODULES] or [node.module]


def _imports(tree: ast.Module, *, nested: bool) -> set[str]:
    """The project's modules a module imports at import time (with ``nested``: inside functions)."""
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and (id(node) in inside) == nested:
            found.update(t for t in _targets(node) if t.split(".")[0] in (*PACKAGES, *TOP_MODULES))
    return found if nested else {t for t in found if t in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                other = stack.pop()
                component.add(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_there_are_no_import_cycles():
    graph = {name: _imports(tree, nested=False) for name, tree in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


# Loaded on first use for a measured reason, not to hide a cycle: each device sender's libraries
# cost about 20 MB in every process that imports the providers but never sends to that kind.
LAZY = {
    "actors.providers": {"actors.providers.webpush", "actors.providers.fcm", "actors.providers.apns"},
    # The web process needs the Web Push sender's module only to answer GET /push/webpush-key.
    "api.devices": {"actors.providers.webpush"},
}


def test_no_project_import_hides_inside_a_function():
    hidden = {
        name: sorted(found)
        for name, tree in MODULES.items()
        if (found := _imports(tree, nested=True) - LAZY.get(name, set()))
    }
    assert hidden == {}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("storage", ("flask", "flask_smorest", "dramatiq", "api", "actors")), ("actors", ("api", "flask"))],
)
def test_arrows_point_one_way(package, forbidden):
    offending = {}
    for name, tree in MODULES.items():
        if name.split(".")[0] != package:
            continue
        imported = {
            t
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for t in _targets(node)
        }
        if bad := sorted(t for t in imported if t.split(".")[0] in forbidden):
            offending[name] = bad
    assert offending == {}
