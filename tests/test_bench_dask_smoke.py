"""Smoke test of the Dask benchmark (benchmarks/bench_dask.py): --quick, one round, warm only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("zarr + lsio pipeline", "zarr + default pipeline")
WORKLOADS = ("a1", "a2")  # --quick: dask chunks of one zarr chunk, and of 2x2


@pytest.mark.slow
def test_bench_dask_quick(tmp_path: Path) -> None:
    import distributed  # noqa: F401 - installed by make test (bench extra); fail, not skip
    cmd = [sys.executable, "-m", "benchmarks.bench_dask", "--quick", "--repeats", "1",
           "--warm-only", "--data-dir", str(tmp_path / "data"),
           "--json", str(tmp_path / "results.json"), "--out", str(tmp_path / "bench.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    headings = re.findall(r"^### \((\w+)\) (\w+): ", out, re.M)
    assert headings == [(w, "warm") for w in WORKLOADS], out
    for name in CONTENDERS:
        rows = re.findall(rf"^\| {re.escape(name)} \| ([^|]+) \| ([^|]+) \|.* \| (\d+) \|$", out,
                          re.M)
        assert len(rows) == len(WORKLOADS), (name, out)
        for seconds, gbps, runs in rows:
            assert float(seconds) > 0 and float(gbps) > 0 and runs == "1", rows
    # one target (several chunks per task), one chunk per task reported without one
    assert len(re.findall(r"^Target: .*>= 2x.*\*\*(met|missed)\*\*", out, re.M)) == 1, out
    assert len(re.findall(r"^Reported, no target: one zarr chunk per task", out, re.M)) == 1

    doc = (tmp_path / "bench.md").read_text()
    assert doc.count("<!-- bench_dask:start -->") == 1 and "<!-- bench_dask:end -->" in doc
    results = json.loads((tmp_path / "results.json").read_text())
    assert {s["contender"] for s in results["series"]} == set(CONTENDERS)
    assert all(s["error"] is None and len(s["samples"]) == 1 for s in results["series"])
    # both workers read with the contender's pipeline: lsio's without the store's get
    checks = results["worker_checks"]
    assert {len(checks[c]) for c in CONTENDERS} == {2}, checks
    assert all(v == ["lsio.zarr.LsioCodecPipeline"] * 2 + [0]
               for v in checks["zarr + lsio pipeline"].values()), checks
    assert all(v[:2] == ["zarr.core.codec_pipeline.BatchedCodecPipeline"] * 2 and v[2] > 0
               for v in checks["zarr + default pipeline"].values()), checks
    # make bench draws the figure from this JSON
    from benchmarks import plots

    png = plots.plot(tmp_path / "results.json", tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
