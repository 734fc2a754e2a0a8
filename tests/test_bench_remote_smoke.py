"""Smoke test of the remote benchmark (benchmarks/bench_remote.py) at its quick sizes: moto,
azurite and the GCS emulator started, every row present, every read checked byte for byte, the
client's CPU and (for lsio) the GETs sent and what sent them reported (no speed targets)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import fake_gcs_binary

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("moto", "azurite", "gcs")
WORKLOADS = ("objects", "sparse", "big")
CONTENDERS = ("lsio", "lsio-aiohttp", "obstore")
LSIO = ("lsio", "lsio-aiohttp", "lsio-unbounded")


def _rows(stdout: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """(server, workload, contender) -> its table row, cell by column name (`### <server>`)."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    server, header = None, None
    for line in stdout.splitlines():
        if m := re.match(r"### (\w+) ", line):
            server = m.group(1)
        elif not line.startswith("| ") or server is None:
            continue
        elif line.startswith("| workload"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        else:
            assert header is not None, line
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == len(header), (header, cells)
            rows[(server, cells[0], cells[1])] = dict(zip(header, cells, strict=True))
    return rows


def _check_row(row: dict[str, str], key: str, name: str, c_built: bool) -> None:
    assert float(row["MB/s"].replace(",", "")) > 0, row  # raises on FAILED
    assert row["verified"] == "yes" and row["runs"] == "1", row
    assert float(row["transferred / requested"].rstrip("x")) >= 1.0, row
    assert float(row["CPU / chunk (us)"].replace(",", "")) > 0, row
    if name == "obstore":  # its requests are not counted
        assert row["GETs"] == "—" and row["sent by"] == "—", row
        assert row["vs obstore"] == "1.00x", row
        return
    assert int(row["GETs"].replace(",", "")) >= 1, row
    if name == "lsio-aiohttp" or not c_built:
        assert row["sent by"] == "aiohttp", row
    elif name == "lsio" and key == "objects":  # many whole objects: all in C batches
        assert row["sent by"] == "curl", row
    elif name == "lsio" and key == "sparse":  # a call's lone size probe may go the aiohttp way
        assert row["sent by"] in ("curl", "mixed"), row
    else:  # one object, or a few merged GETs (unbounded): lone requests go the aiohttp way
        assert row["sent by"] in ("curl", "mixed", "aiohttp"), row
    if name == "lsio":  # the ratios over the aiohttp road
        assert row["vs lsio-aiohttp"].endswith("x"), row
        assert float(row["CPU vs lsio-aiohttp"].rstrip("x")) > 0, row


@pytest.mark.slow
def test_bench_remote_quick(tmp_path: Path) -> None:
    from lsio.backends.http._curl import AVAILABLE

    # A missing emulator must fail, not silently skip the only check that the benchmark runs.
    assert shutil.which("azurite-blob"), \
        "azurite is not installed: run scripts/system-deps.sh --bench"
    fake_gcs_binary()  # raises when fake-gcs-server is not installed
    cmd = [sys.executable, "-m", "benchmarks.bench_remote", "--quick",
           "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "results.json"),
           "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "### gcs (fake-gcs-server" in out, out
    assert f"lsio's C transport: {'built' if AVAILABLE else 'not built'}" in out, out

    rows = _rows(out)
    for server in SERVERS:
        for key in WORKLOADS:
            for name in CONTENDERS + (("lsio-unbounded",) if key == "sparse" else ()):
                row = rows.get((server, key, name))
                assert row is not None, (server, key, name, out)
                _check_row(row, key, name, AVAILABLE)
    assert not (tmp_path / "data").exists()  # the local copy is cleaned up

    doc = (tmp_path / "bench.md").read_text()
    assert doc.count("<!-- bench_remote:start -->") == 1 and "<!-- bench_remote:end -->" in doc
    results = json.loads((tmp_path / "results.json").read_text())
    series = {(s["state"], s["workload"], s["contender"]): s for s in results["series"]}
    assert len(series) == len(SERVERS) * (len(WORKLOADS) * len(CONTENDERS) + 1)  # + unbounded
    for (_, key, name), s in series.items():
        assert s["error"] is None and len(s["samples"]) == 1, s
        assert len(s["net_bytes"]) == 1 and len(s["rss_growth"]) == 1, s
        assert len(s["cpu_s"]) == 1 and s["cpu_s"][0] > 0, s
        counted = 1 if name in LSIO else 0
        assert len(s["gets"]) == counted and len(s["transports"]) == counted, s
        assert s["samples"][0]["nbytes"] == results["workloads"][key]["n_requests"] * \
            results["workloads"][key]["request_size"], s
    assert results["workloads"]["sparse"]["n_requests"] == 500
