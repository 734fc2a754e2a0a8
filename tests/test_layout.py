"""The package's layout: no import circles among lsio's modules.

Only imports that run when a module is imported count (module level, class bodies, ``if`` and
``try`` at module level); an import inside a function runs when it is called, and one under
``if TYPE_CHECKING:`` never runs. Importing ``a.b.c`` runs ``a/b/__init__.py`` first: that
counts too, but for the importer's own packages (being imported already).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lsio

PACKAGE = Path(lsio.__file__).resolve().parent

ALLOWED: set[frozenset[str]] = set()
"""Circles known and waiting to be removed (each a set of module names)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runs_at_import(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                out += _runs_at_import(node.body)
            out += _runs_at_import(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in
                                                                  node.handlers)):
                out += _runs_at_import(block)
        elif isinstance(node, (ast.ClassDef, ast.With)):
            out += _runs_at_import(node.body)
    return out


def import_graph() -> dict[str, set[str]]:
    """Each lsio module -> the lsio modules it imports when it is imported."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runs_at_import(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            edges.add(target)
            edges.update(f"{target}.{a.name}" for a in node.names)
        for e in list(edges):  # the packages an import runs first
            while "." in e:
                e = e.rpartition(".")[0]
                edges.add(e)
        own = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
        graph[name] = {e for e in edges if e in modules and e not in own}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    found = [sorted(c) for c in cycles(import_graph()) if c not in ALLOWED]
    assert not found, f"import circles among lsio modules: {found}"


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_the_graph_sees_relative_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "lsio.backends.cloud._types" in graph["lsio.backends.cloud.aws"]
    assert "lsio._url" in graph["lsio.backends.cloud.aws"]
    # the leaf imports nothing of lsio
    assert graph["lsio.backends.cloud._types"] == set()
    # the HTTP client imports no provider: the backend hands it the registry
    assert not {m for m in graph["lsio.backends.http._client"]
                if m.startswith("lsio.backends.cloud.") and not m.endswith("._types")}
