"""Smoke test of the HTTP benchmark harness (benchmarks/bench_http.py) at its quick sizes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from servers import nginx_binary

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("r", "s", "o")
CONTENDERS = ("lsio", "aiohttp gather", "fsspec", "obstore")


def _tables(stdout: str) -> dict[str, dict[str, list[str]]]:
    """Per workload key (the `### (r) ...` headings): the cells of each table row by contender."""
    tables: dict[str, dict[str, list[str]]] = {}
    rows: dict[str, list[str]] | None = None
    for line in stdout.splitlines():
        if m := re.match(r"### \((\w+)\) ", line):
            rows = tables.setdefault(m.group(1), {})
        elif line.startswith("|") and rows is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return tables


def _throughput(cells: list[str]) -> float:
    return float(cells[2].replace(",", ""))  # ops/s; raises on "FAILED"


@pytest.mark.slow
def test_bench_http_quick(tmp_path: Path) -> None:
    # A missing nginx must fail, not silently skip the only check that the benchmark runs.
    assert nginx_binary(), "nginx is not installed: run scripts/system-deps.sh --bench"
    cmd = [sys.executable, "-m", "benchmarks.bench_http", "--quick", "--repeats", "1",
           "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "results.json"),
           "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    tables = _tables(out)
    assert sorted(tables) == sorted(WORKLOADS), out
    for key in WORKLOADS:
        for name in CONTENDERS:
            cells = tables[key].get(name)
            assert cells is not None, (key, name, out)
            assert _throughput(cells) > 0, (key, cells)  # ran, right chunks and byte count
            assert float(cells[-2]) >= 0, (key, cells)  # worst loop stall (ms): all asyncio
    assert len(re.findall(r"^Target: lsio >= .*\*\*(met|missed)\*\*", out, re.M)) == 3, out
    assert "**nginx**: nginx/" in out, out

    doc = (tmp_path / "bench.md").read_text()
    assert doc.count("<!-- bench_http:start -->") == 1 and "<!-- bench_http:end -->" in doc
    results = json.loads((tmp_path / "results.json").read_text())
    assert {s["contender"] for s in results["series"]} == set(CONTENDERS)
    assert all(s["error"] is None and len(s["samples"]) == 1 for s in results["series"])
    for s in results["series"]:  # the worst event-loop stall, seconds
        assert isinstance(s["worst_loop_stall_s"], float) and s["worst_loop_stall_s"] >= 0, s
    assert results["workloads"]["r"]["n_requests"] == 2000
