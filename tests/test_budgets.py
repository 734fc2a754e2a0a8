"""The code's size budgets (issue 21): no module of ``lsio/`` over 400 lines (the planner
520), no function over 60, no test counters (``served = [0]``) in production modules, and the
zarr layer going through the engine's public door only.

Modules and functions over budget today are listed in ``KNOWN_OVER_BUDGET`` with their
current size: the test fails when one of them grows or a new one goes over, and tells what
remains; an entry is removed once its refactor lands (the test fails on a stale entry too, so
the list only shrinks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

LSIO = Path(__file__).resolve().parent.parent / "lsio"

MODULE_LINES = 400
MODULE_LINES_OF = {"_plan.py": 520, "_defaults.py": 520}
"""The planner's own budget; and the table of every tuning number, each with where it comes
from (no logic: its length is its docstrings, and the docs' tables are generated from it)."""

FUNCTION_LINES = 60

KNOWN_OVER_BUDGET: dict[str, int] = {}
"""What is over budget today ("module" or "module::qualified.function" -> its lines)."""

COUNTER_NAMES = ("served", "count", "calls", "hits", "seen")


def _modules() -> Iterator[tuple[str, str, ast.Module]]:
    for path in sorted(LSIO.rglob("*.py")):
        text = path.read_text()
        yield path.relative_to(LSIO).as_posix(), text, ast.parse(text)


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every function and method with its qualified name and source span (the ``def``
    line to its last line, decorators left out)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def _sizes() -> dict[str, tuple[int, int]]:
    """Every module and function over its budget: name -> (size, budget)."""
    over = {}
    for rel, text, tree in _modules():
        budget = MODULE_LINES_OF.get(rel, MODULE_LINES)
        if (lines := text.count("\n")) > budget:
            over[rel] = (lines, budget)
        for name, lines in _functions(tree):
            if lines > FUNCTION_LINES:
                over[f"{rel}::{name}"] = (lines, FUNCTION_LINES)
    return over


def test_functions_span_counts_the_def_to_its_last_line() -> None:
    tree = ast.parse("class A:\n    @d\n    def f(self):\n        x = 1\n\n        return x\n"
                     "def g():\n    def h():\n        pass\n")
    assert dict(_functions(tree)) == {"A.f": 4, "g": 3, "g.h": 2}


def test_modules_and_functions_stay_within_budget() -> None:
    over = _sizes()
    new = {k: v for k, v in over.items() if k not in KNOWN_OVER_BUDGET}
    grown = {k: (v[0], KNOWN_OVER_BUDGET[k]) for k, v in over.items()
             if k in KNOWN_OVER_BUDGET and v[0] > KNOWN_OVER_BUDGET[k]}
    stale = sorted(k for k in KNOWN_OVER_BUDGET if k not in over)
    remaining = "\n".join(f"  {k}: {v[0]} lines (budget {v[1]})" for k, v in sorted(over.items()))
    print(f"over budget, still to split:\n{remaining}")
    assert not new, f"over budget (lines, budget): {new}"
    assert not grown, f"grew past its recorded size (now, recorded): {grown}"
    assert not stale, (f"within budget now: remove from KNOWN_OVER_BUDGET: {stale}")


def test_no_counters_in_production_modules() -> None:
    """A module-level ``name = [0]`` is a test counter (``served = [0]``): tests read what a
    call did from ``Results.stats``, not from counters kept in the library."""
    found = []
    for rel, _, tree in _modules():
        for node in tree.body:
            if (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.List)
                    and len(node.value.elts) == 1
                    and isinstance(node.value.elts[0], ast.Constant)
                    and node.value.elts[0].value == 0):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [f"{rel} {ast.unparse(t)}" for t in targets]
    assert sorted(set(found)) == sorted(KNOWN_COUNTERS), f"module-level counters: {found}"


KNOWN_COUNTERS: list[str] = []
"""Counters still in place (none: calls tell what they did through ``Results.stats``)."""


def test_zarr_uses_the_engines_public_door() -> None:
    """Nothing under ``lsio/zarr`` imports the engine's private modules (``_small``,
    ``_uring``, ``_ring``) or reads a reader's or backend's private attributes."""
    found = []
    for rel, _, tree in _modules():
        if not rel.startswith("zarr/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                names = [node.module or ""] + [a.name for a in node.names]
                bad = [n for n in names if n.split(".")[-1] in ("_small", "_uring", "_ring")]
                found += [f"{rel} imports {n}" for n in bad]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                  and not node.attr.startswith("__")):
                owner = ast.unparse(node.value)
                if owner.split(".")[-1] in ("reader", "backend"):
                    found.append(f"{rel} reads {owner}.{node.attr}")
    assert sorted(set(found)) == sorted(KNOWN_REACHES), "\n".join(found)


KNOWN_REACHES: list[str] = []
"""The zarr layer's reaches into the engine today (issue 21 item 6 removes them)."""
