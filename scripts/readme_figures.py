"""Write the README's demo figures from a fresh ``python -m lsio demo`` run, so they cannot go
stale: ``make readme-figures`` runs the demo, then this script with the demo's venv

    python scripts/readme_figures.py README.md DEMO_OUTPUT

replaces everything between ``<!-- figures:start -->`` and ``<!-- figures:end -->`` in
README.md with the demo's tables and the machine they were measured on (this machine: the
script runs right after the demo, in the demo's Python). tests/test_docs.py checks that the
README's block is in the format ``render`` writes and that ``tables`` still finds the demo's
tables in what ``lsio/_demo.py`` prints."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks/
from benchmarks.machine import cpu_model, memory_gib  # noqa: E402

START = "<!-- figures:start -->"
END = "<!-- figures:end -->"
NOTE = ("<!-- written by `make readme-figures` (scripts/readme_figures.py) from a fresh "
        "`make demo`; edits here are overwritten -->")
# the first line of each of the demo's tables (lsio/_demo.py, _print_tables)
TABLE_HEADS = (re.compile(r"^workload \((cold|warm)\) +lsio/s "),
               re.compile(r"^Zarr workload \((cold|warm)\), ms +zarr "))
HEADER = re.compile(r"^`make demo` on (?P<machine>.+), (?P<date>\d{4}-\d{2}-\d{2}):$")


@dataclass(frozen=True)
class Figures:
    machine: str
    """The machine and software the figures were measured with, in one line."""
    date: str
    """YYYY-MM-DD."""
    tables: str
    """The demo's tables as it printed them, separated by one blank line."""


def tables(output: str) -> str:
    """The demo's tables (each from its header line to the first blank line) in its output;
    ValueError when the demo printed no byte table."""
    lines = output.splitlines()
    found: list[list[str]] = []
    for i, line in enumerate(lines):
        if any(h.match(line) for h in TABLE_HEADS):
            block = []
            for row in lines[i:]:
                if not row.strip():
                    break
                block.append(row.rstrip())
            # the Zarr table's explanation follows its rows without a blank line
            found.append([r for r in block if not r.startswith(("zarr: ", "the array ",
                                                                  "zarr's time "))])
    if not found or not TABLE_HEADS[0].match(found[0][0]):
        raise ValueError("no demo table found in the demo's output (did the demo fail?)")
    return "\n\n".join("\n".join(b) for b in found)


def _memory() -> str:
    gib = memory_gib()
    return "memory unknown" if gib is None else f"{gib:.0f} GiB"


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(backend: str) -> str:
    """This machine and the demo's software, in one line."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu_model()}, {cpus} CPUs, {_memory()}, Linux {platform.release()}, Python "
            f"{platform.python_version()}, zarr {_version('zarr')}, backend {backend}")


def render(fig: Figures) -> str:
    """The README block between the markers (markers included)."""
    return (f"{START}\n{NOTE}\n`make demo` on {fig.machine}, {fig.date}:\n\n```text\n"
            f"{fig.tables}\n```\n{END}")


def parse(readme: str) -> Figures:
    """The figures in a README's block; ValueError when it is missing or not in the format
    ``render`` writes."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    block = readme[start:end + len(END)]
    lines = block.splitlines()
    head = HEADER.match(lines[2]) if len(lines) > 2 else None
    if head is None:
        raise ValueError("the figures block's header line is not in the script's format")
    body = block.split("```text\n", 1)[-1].rsplit("\n```", 1)[0]
    try:
        fig = Figures(head["machine"], head["date"], tables(body + "\n"))
    except ValueError:
        fig = None
    if fig is None or render(fig) != block:
        raise ValueError("the figures block is not in the format scripts/readme_figures.py "
                         "writes: run `make readme-figures`")
    return fig


def replace(readme: str, fig: Figures) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    return readme[:start] + render(fig) + readme[end + len(END):]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: readme_figures.py README.md DEMO_OUTPUT", file=sys.stderr)
        return 2
    readme, output = Path(argv[0]), Path(argv[1]).read_text()
    backend = re.search(r"backend=(\w+)", output)
    fig = Figures(machine(backend[1] if backend else "unknown"),
                  _dt.date.today().isoformat(), tables(output))
    readme.write_text(replace(readme.read_text(), fig))
    print(f"{readme}: demo figures written ({fig.machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
