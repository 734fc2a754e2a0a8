"""The docs are written for users and cannot go stale: the README's demo figures are in the
format scripts/readme_figures.py writes (from a fresh demo run, never by hand), that script
still finds the tables the demo prints, and the README and docs/ carry no internal issue
numbers, no unnamed "here" measurements and no reference to files outside the repository."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import check_ok, run_python

ROOT = Path(__file__).resolve().parent.parent


def _figures_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_figures",
                                                  ROOT / "scripts" / "readme_figures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _user_docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_figures_block_is_the_scripts() -> None:
    figures = _figures_script()
    fig = figures.parse((ROOT / "README.md").read_text())  # raises when hand-edited
    assert "backend " in fig.machine and "CPUs" in fig.machine
    assert fig.tables.startswith("workload (")


def test_readme_figures_rejects_a_hand_edit() -> None:
    figures = _figures_script()
    readme = (ROOT / "README.md").read_text()
    edited = readme.replace("```text\n", "```text\n(edited) ", 1)
    with pytest.raises(ValueError, match="format"):
        figures.parse(edited)


def _demo_output(state: str) -> str:
    """What lsio/_demo.py prints for two byte workloads and two Zarr ones (no I/O)."""
    from lsio._demo import _print_tables
    from lsio._demo_data import Workload

    def work(name: str) -> Workload:
        return Workload(name, 100, [], lambda _name, _got: 0)

    byte_t = {"lsio": 0.01, "plain loop": 0.04}
    zarr_t = {"zarr": 0.5, "lsio pipeline": 0.2, "lsio.zarr.read": 0.1}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print("lsio demo: backend=uring, data in /tmp/x")
        _print_tables([work("files"), work("ranges")], [work("whole"), work("part")],
                      [(byte_t, 10**6), (byte_t, 10**6), (zarr_t, 10**7), (zarr_t, 10**6)],
                      state)
    return out.getvalue()


def test_readme_figures_finds_the_demos_tables() -> None:
    figures = _figures_script()
    text = figures.tables(_demo_output("warm"))
    byte_table, zarr_table = text.split("\n\n")
    assert byte_table.startswith("workload (warm)") and len(byte_table.splitlines()) == 3
    assert zarr_table.startswith("Zarr workload (warm), ms") and len(zarr_table.splitlines()) == 3
    fig = figures.Figures("a machine, 2 CPUs, backend uring", "2026-01-02", text)
    readme = f"intro\n{figures.START}\nold\n{figures.END}\nrest\n"
    written = figures.replace(readme, fig)
    assert written.startswith("intro\n") and written.endswith("\nrest\n")
    assert figures.parse(written) == fig
    with pytest.raises(ValueError, match="no demo table"):
        figures.tables("lsio demo: failed\n")


# "#12", "issue 13", "issues #10 and #11" (not Markdown headings, "#" colours or anchors)
ISSUE_REF = re.compile(r"(?<![\w&#/])#\d+\b|\b[Ii]ssues? #?\d+\b")
BANNED = (ISSUE_REF, re.compile(r"\bmeasured here\b", re.I), re.compile("FIELD_NOTES"))


@pytest.mark.parametrize("path", _user_docs(), ids=lambda p: p.name)
def test_docs_name_no_internal_issue_or_unnamed_machine(path: Path) -> None:
    hits = [f"{path.name}:{n}: {m.group(0)!r}"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            for rx in BANNED for m in rx.finditer(line)]
    assert not hits, "\n".join(hits)


def test_issue_reference_pattern_can_fail() -> None:
    assert ISSUE_REF.search("Engine issue (#2):") and ISSUE_REF.search("issue 13's targets")
    assert ISSUE_REF.search("re-run (issues #10 and #11)")
    assert not ISSUE_REF.search("## Semantics") and not ISSUE_REF.search('color "#d62728"')
    assert not ISSUE_REF.search("[link](#section-2)")


def test_readme_quick_start_runs() -> None:
    """The README's first example, as a user pastes it, reads through io_uring on Linux."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n", readme.index("## Quick start")) + len("```python\n")
    code = readme[start:readme.index("```\n", start)]
    env = {"PYTHONPATH": str(ROOT), "LSIO_REQUIRE_URING": "1"} if sys.platform == "linux" else {}
    out = check_ok(run_python(code, env=env, timeout=120, cwd="/tmp"))
    assert "100 files, 6553600 bytes; 100 byte tail" in out
    if sys.platform == "linux":
        assert out.splitlines()[-1].startswith("uring ")


def test_benchmarks_page_keeps_every_section() -> None:
    """Each benchmark `make bench` runs with `--out` rewrites only its own section of
    docs/benchmarks.md: the page keeps its head and every benchmark's section."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    make = (ROOT / "Makefile").read_text()
    names = re.findall(r"benchmarks\.(bench_\w+) --out docs/benchmarks\.md", make)
    assert len(names) >= 8, names
    for head in ("# lsio benchmarks", "## The machine", "## How to reproduce", "## At a glance"):
        assert head in page, head
    for name in names:
        start, end = page.find(f"<!-- {name}:start -->"), page.find(f"<!-- {name}:end -->")
        assert 0 < start < end, f"docs/benchmarks.md lacks the {name} section"

