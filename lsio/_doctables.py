"""The docs' tables of defaults, generated from the code so they cannot drift.

``python -m lsio._doctables`` rewrites the marked regions of ``README.md`` and
``docs/how-it-works.md`` (``<!-- lsio:NAME -->`` ... ``<!-- /lsio:NAME -->``) with:

- ``presets``: the :data:`lsio._presets.PRESETS` knobs and their sources;
- ``defaults``: every constant of ``lsio/_defaults.py`` with its value and docstring.

``--check`` exits 1 when a file's region differs from what would be written (the tests run it).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from ._presets import PRESETS

__all__: list[str] = []  # a command (python -m lsio._doctables): no module imports from it

_HERE = Path(__file__).resolve().parent
DOCS = [_HERE.parent / "README.md", _HERE.parent / "docs" / "how-it-works.md"]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,}"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def presets_table() -> str:
    rows = ["| preset | `max_gap` | `max_read` | `queue_depth` | where the numbers come from |",
            "|---|---:|---:|---:|---|"]
    for p in PRESETS.values():
        gap = "none" if p.max_gap is None else _size(p.max_gap)
        rows.append(f"| `{p.name}` | {gap} | {_size(p.max_read)} | {p.queue_depth} | "
                    f"{_one_line(p.source)} |")
    return "\n".join(rows)


def defaults_table() -> str:
    """Each constant of ``_defaults.py``: its section, value (as written, and evaluated
    when that helps) and docstring."""
    source = (_HERE / "_defaults.py").read_text()
    module = ast.parse(source)
    namespace: dict[str, object] = {}
    exec(compile(source, "_defaults.py", "exec"), namespace)  # noqa: S102 - our own file
    rows = ["| constant | value | what it is, and where the number comes from |",
            "|---|---:|---|"]
    body = module.body
    for i, node in enumerate(body):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        value = namespace[name]
        written = ast.get_source_segment(source, node.value) or repr(value)
        shown = f"`{written}`"
        if isinstance(value, int) and not written.replace("_", "").isdigit():
            shown += f" ({_size(value)})"
        doc = body[i + 1] if i + 1 < len(body) else None
        text = ""
        if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            text = str(doc.value.value)
        rows.append(f"| `{name}` | {_one_line(shown)} | {_one_line(text)} |")
    return "\n".join(rows)


TABLES = {"presets": presets_table, "defaults": defaults_table}


def render(text: str) -> str:
    """``text`` with every marked region replaced by its table."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- lsio:{name} -->\n).*?(\n<!-- /lsio:{name} -->)", re.S)
        table = make().replace("\\", "\\\\")  # a replacement template: escape backslashes
        text = pattern.sub(rf"\g<1>{table}\g<2>", text)
    return text


def rewrite(check: bool = False) -> list[Path]:
    """Rewrite the docs (or, with ``check``, only list those that would change)."""
    stale = []
    for path in DOCS:
        old = path.read_text()
        new = render(old)
        if new != old:
            stale.append(path)
            if not check:
                path.write_text(new)
    return stale


if __name__ == "__main__":  # pragma: no cover - the command line
    check = "--check" in sys.argv[1:]
    changed = rewrite(check)
    for path in changed:
        print(f"{'stale' if check else 'rewrote'}: {path}")
    sys.exit(1 if check and changed else 0)
