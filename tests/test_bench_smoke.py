"""Smoke test of the local benchmark harness (benchmarks/bench_local.py) at tiny sizes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _rows(stdout: str, contender: str) -> list[list[str]]:
    """Cells of every markdown table row whose first cell is `contender`."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == contender:
            rows.append(cells)
    return rows


def _throughput(cells: list[str]) -> float:
    return float(cells[2].replace(",", ""))  # raises on "FAILED"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_bench_local_quick(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.bench_local", "--quick", "--repeats", "1",
           "--warm-only", "--data-dir", str(tmp_path / "data"),
           "--json", str(tmp_path / "results.json"), "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lsio_rows = _rows(proc.stdout, "lsio")
    fio_rows = _rows(proc.stdout, "fio buffered") + _rows(proc.stdout, "fio direct=1")
    assert len(lsio_rows) == 3, proc.stdout  # one per workload (a, b, c), warm only
    assert fio_rows, proc.stdout
    for cells in lsio_rows + _rows(proc.stdout, "fio buffered"):
        assert _throughput(cells) > 0, cells  # ran and returned the right byte count

    doc = (tmp_path / "bench.md").read_text()
    assert "<!-- bench_local:start -->" in doc and "<!-- bench_local:end -->" in doc
    assert (tmp_path / "results.json").stat().st_size > 0
