"""The docs' tables of defaults are generated from the code (``python -m lsio._doctables``):
they must match it, so a changed number cannot leave the docs behind."""

from __future__ import annotations

from lsio import _defaults, _doctables
from lsio._presets import PRESETS


def test_docs_tables_match_the_code() -> None:
    stale = _doctables.rewrite(check=True)
    assert not stale, f"run `python -m lsio._doctables`: {[str(p) for p in stale]} drifted"


def test_every_default_and_preset_says_where_it_comes_from() -> None:
    table = _doctables.defaults_table()
    names = [n for n in vars(_defaults) if n.isupper()]
    assert len(names) >= 20
    for name in names:
        row = next(r for r in table.splitlines() if r.startswith(f"| `{name}` |"))
        assert len(row.rsplit("|", 2)[1].strip()) > 20, f"{name} has no source"
    assert all(len(p.source) > 40 for p in PRESETS.values())
    presets = _doctables.presets_table()
    assert all(f"| `{name}` |" in presets for name in PRESETS)
