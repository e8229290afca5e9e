"""The layout a newcomer can follow: no import cycles in the package, and tests that share code through helpers.

Imports are read from the source (every ``import`` and ``from … import``, those
under ``TYPE_CHECKING`` included), so the graph is the one a reader sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT


def module_name(path: Path, root: Path, package: str) -> str:
    """``exporter/web/app.py`` -> ``calabi_exporter.web.app``; a package's ``__init__`` is the package."""
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules among ``modules`` that ``path`` (module ``name``) imports.

    ``from package import module`` is an edge to the module alone; ``from
    package import something`` to the package.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            found.update(submodules if submodules <= modules else {base, *submodules})
    return found & modules - {name}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of the package below ``root`` and the modules of the package it imports."""
    paths = {module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}
    return {name: imported(path, name, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_finds_a_loop_of_three_and_nothing_in_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_cycles() -> None:
    assert cycles(import_graph(ROOT / "exporter", "calabi_exporter")) == []


def packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with each subpackage (``store``, ``web``) as one node: the layers and the modules between them."""

    def node(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 else name

    collapsed: dict[str, set[str]] = {}
    for name, targets in graph.items():
        collapsed.setdefault(node(name), set()).update(node(t) for t in targets)
    return {name: targets - {name} for name, targets in collapsed.items()}


def test_no_subpackage_imports_a_module_that_imports_it_back() -> None:
    """No upward import: a subpackage (the store, the web layer) imports no module that depends on it."""
    assert cycles(packages(import_graph(ROOT / "exporter", "calabi_exporter"))) == []


def test_no_test_module_imports_another_and_no_benchmark_imports_a_test_module() -> None:
    """Code two test modules (or a benchmark and a test) share lives in a helper module of ``tests``."""
    test_modules = {module_name(path, ROOT / "tests", "tests") for path in (ROOT / "tests").rglob("test_*.py")}
    assert len(test_modules) > 60  # every tier's modules are found
    crossing = {}
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = module_name(path, ROOT / folder, folder)
            if found := imported(path, name, test_modules):
                crossing[name] = sorted(found)
    assert crossing == {}
