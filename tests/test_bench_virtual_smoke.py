"""Smoke test of the virtual-dataset benchmark (benchmarks/bench_virtual.py): --quick with two
files, one round, local, nginx and nginx behind the 30 ms proxy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LSIO, FSSPEC, H5 = ("lsio ReferenceStore + zarr", "fsspec ReferenceFileSystem + zarr",
                    "xarray h5netcdf")


@pytest.mark.slow
def test_bench_virtual_quick(tmp_path: Path) -> None:
    (tmp_path / "bench.md").write_text("# page\n\nother sections\n")
    cmd = [sys.executable, "-m", "benchmarks.bench_virtual", "--quick", "--files", "2",
           "--repeats", "1", "--data-dir", str(tmp_path / "data"),
           "--json", str(tmp_path / "results.json"), "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    headings = re.findall(r"^### \((\w)\) whole variable, (.+?): $", out, re.M)
    assert headings == [("1", "local"), ("1", "nginx"), ("1", "nginx + 30 ms"),
                        ("N", "local"), ("N", "nginx")], out
    for name, count in ((LSIO, 5), (FSSPEC, 5), (H5, 1)):
        rows = re.findall(rf"^\| {re.escape(name)} \| ([\d.]+) \| (\d+) \| ([\d.]+)x \| "
                          rf"(\d+) \| ([\d.]+) \| 1 \|$", out, re.M)
        assert len(rows) == count, (name, out)
    assert len(re.findall(r"^Target: .*\*\*(met|missed)\*\*", out, re.M)) == 9, out
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(s["error"] is None and len(s["samples"]) == 1 for s in results["series"])
    assert {s["nbytes"] for s in results["series"] if s["workload"] == "N"} == {
        2 * 32 * 64 * 64 * 4}
    assert all(s["peak_rss"] > 0 for s in results["series"])
    doc = (tmp_path / "bench.md").read_text()
    assert doc.startswith("# page\n\nother sections\n"), doc[:200]  # only its section
    assert "<!-- bench_virtual:start -->\n## Virtual datasets" in doc
    assert doc.rstrip().endswith("<!-- bench_virtual:end -->")
