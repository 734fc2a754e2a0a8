"""Smoke test of the remote benchmark (benchmarks/bench_remote.py) at its quick sizes: moto and
azurite started, every row present, every read checked byte for byte (no speed targets)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("moto", "azurite")
WORKLOADS = ("objects", "sparse", "big")
CONTENDERS = ("lsio", "obstore")


def _rows(stdout: str) -> dict[tuple[str, str, str], list[str]]:
    """(server, workload, contender) -> the cells of its table row (`### <server> (...)`)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    server = None
    for line in stdout.splitlines():
        if m := re.match(r"### (\w+) ", line):
            server = m.group(1)
        elif line.startswith("| ") and server is not None and not line.startswith("| workload"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[(server, cells[0], cells[1])] = cells
    return rows


@pytest.mark.slow
def test_bench_remote_quick(tmp_path: Path) -> None:
    # A missing emulator must fail, not silently skip the only check that the benchmark runs.
    assert shutil.which("azurite-blob"), \
        "azurite is not installed: run scripts/system-deps.sh --bench"
    cmd = [sys.executable, "-m", "benchmarks.bench_remote", "--quick",
           "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "results.json"),
           "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    rows = _rows(out)
    for server in SERVERS:
        for key in WORKLOADS:
            for name in CONTENDERS + (("lsio-unbounded",) if key == "sparse" else ()):
                cells = rows.get((server, key, name))
                assert cells is not None, (server, key, name, out)
                assert float(cells[2].replace(",", "")) > 0, cells  # MB/s; raises on FAILED
                assert cells[-2] == "yes" and cells[-1] == "1", cells  # verified, one run
                assert float(cells[4].rstrip("x")) >= 1.0, cells  # transferred >= requested
    assert not (tmp_path / "data").exists()  # the local copy is cleaned up

    doc = (tmp_path / "bench.md").read_text()
    assert doc.count("<!-- bench_remote:start -->") == 1 and "<!-- bench_remote:end -->" in doc
    results = json.loads((tmp_path / "results.json").read_text())
    series = {(s["state"], s["workload"], s["contender"]): s for s in results["series"]}
    assert len(series) == len(SERVERS) * (len(WORKLOADS) * len(CONTENDERS) + 1)  # + unbounded
    for (_, key, _), s in series.items():
        assert s["error"] is None and len(s["samples"]) == 1, s
        assert len(s["net_bytes"]) == 1 and len(s["rss_growth"]) == 1, s
        assert s["samples"][0]["nbytes"] == results["workloads"][key]["n_requests"] * \
            results["workloads"][key]["request_size"], s
    assert results["workloads"]["sparse"]["n_requests"] == 500
