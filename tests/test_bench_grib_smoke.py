"""Smoke test of the GRIB2 benchmark (benchmarks/bench_grib.py) at its quick size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_grib_quick(tmp_path: Path) -> None:
    """~8 s: both rows (loopback, 30 ms proxy), the three contenders, values checked; the
    docs page keeps its other sections, and --render rebuilds the section from the JSON."""
    page = tmp_path / "bench.md"
    page.write_text("# page\n\nother sections\n")
    cmd = [sys.executable, "-m", "benchmarks.bench_grib", "--quick", "--repeats", "1",
           "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "r.json"),
           "--out", str(page)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Task was destroyed" not in proc.stderr
    for row in ("### loopback nginx", "### nginx behind a 30 ms proxy", "| lsio.grib |",
                "| herbie-style |", "| kerchunk + zarr + fsspec |"):
        assert row in proc.stdout
    assert "FAILED" not in proc.stdout
    assert "lsio.grib peak RSS (fresh process" in proc.stdout
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["shape"] == [8, 48, 64]
    assert set(got["seconds"]) == {"loopback", "latency"}
    assert got["rss"]["nbytes"] == 8 * 48 * 64 * 4 and got["rss"]["peak"] > got["rss"]["nbytes"]
    assert all(len(ts) == 1 for row in got["seconds"].values() for ts in row.values())
    assert set(got["seconds"]["latency"]) == {"lsio.grib", "herbie-style",
                                              "kerchunk + zarr + fsspec"}
    doc = page.read_text()
    assert doc.startswith("# page\n\nother sections\n") and "| lsio.grib |" in doc
    rendered = subprocess.run([sys.executable, "-m", "benchmarks.bench_grib", "--render",
                               str(tmp_path / "r.json")], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=True).stdout
    assert rendered.strip() in doc
