"""Smoke test of the fixed-cost benchmark (benchmarks/bench_fixed.py) at a tiny size: every
row runs and returns a figure, the targets are judged, and the sections are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_fixed_quick(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.bench_fixed", "--rounds", "1", "--calls", "20",
           "--imports", "1", "--zarr-size", "512", "--data-dir", str(tmp_path / "data"),
           "--json", str(tmp_path / "fixed.json"), "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "fixed.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    for name in ("asyncio.to_thread(os.pread)", "read_many, one whole file", "LsioStore.get",
                 "zarr LocalStore.get", "read_many, 16 files", "open().read() loop, 16 files",
                 "10 concurrent LsioStore.get", "read_many, one URL range (4 KiB)",
                 "aiohttp GET (kept-alive session)", "lsio.zarr.read, empty selection",
                 "lsio.zarr.read, one chunk", "zarr + lsio pipeline, one chunk",
                 "zarr default pipeline, empty selection"):
        assert rows[name]["dropped_us"] > 0 and rows[name]["kept_us"] > 0, name
    assert all(t["measured"] != "not measured" for t in data["targets"])
    assert len(data["import_ms"]) == 1 and "numpy" in data["loaded"]
    assert "aiohttp" not in data["loaded"] and "tqdm" not in data["loaded"]
    text = (tmp_path / "bench.md").read_text()
    assert "<!-- bench_fixed:start -->" in text and "| LsioStore.get |" in text
