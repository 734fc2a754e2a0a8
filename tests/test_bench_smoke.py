"""Smoke test of the local benchmark harness (benchmarks/bench_local.py) at tiny sizes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# a, b, c and two planner workloads: d (many files: fio's per-file iolog and the per-file
# pread loop) and f (requests the planner merges); e differs from d only in its offsets; g and
# h: the engine's targets (warm ranges vs a pread loop, cold files vs fio's best depth).
WORKLOADS = "a,b,c,d,f,g,h"


def _rows(stdout: str, first: str, *, prefix: bool = False) -> list[list[str]]:
    """Cells of every markdown table row whose first cell is (or starts with) `first`."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = cells[0].startswith(first) if prefix else cells[0] == first
        if line.startswith("|") and match:
            rows.append(cells)
    return rows


def _throughput(cells: list[str]) -> float:
    return float(cells[2].replace(",", ""))  # raises on "FAILED"


def _ms(cell: str) -> float:
    return float(cell.removesuffix(" ms").replace(",", ""))


@pytest.mark.slow
def test_bench_local_quick(tmp_path: Path) -> None:
    # `make test` installs fio (scripts/system-deps.sh --bench): a missing fio must fail,
    # not silently skip the only check that the benchmarks still run.
    assert shutil.which("fio"), "fio is not installed: run scripts/system-deps.sh --bench"
    cmd = [sys.executable, "-m", "benchmarks.bench_local", "--quick", "--repeats", "1",
           "--warm-only", "--workload", WORKLOADS, "--data-dir", str(tmp_path / "data"),
           "--json", str(tmp_path / "results.json"), "--out", str(tmp_path / "bench.md")]
    # (h)'s fio sweep runs 16 fio processes: ~70 s in all on a busy 2-core machine
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    lsio_rows = _rows(out, "lsio")
    fio_rows = _rows(out, "fio buffered") + _rows(out, "fio direct=1")
    assert len(lsio_rows) == 5, out  # one per workload (a, b, c, g, h), warm only
    assert len(fio_rows) >= 7, out  # a, b, c, d, f, g, h
    for cells in lsio_rows + _rows(out, "fio buffered"):
        assert _throughput(cells) > 0, cells  # ran and returned the right byte count
    # The worst event-loop stall: a number of ms for lsio (asyncio), "—" for fio (a process).
    stall_col = _rows(out, "contender")[0].index("worst loop stall (ms)")
    assert all(_ms(cells[stall_col]) >= 0 for cells in lsio_rows), lsio_rows
    assert all(cells[stall_col] == "—" for cells in fio_rows), fio_rows

    # The engine targets (one round: not judged), fio's best depth of each I/O mode on (h)
    # with the depth it chose, and the loop-stall target under every table.
    ratio = r"median [\d.]+x, worst round [\d.]+x of 1: \*\*not judged\*\*\."
    assert re.search(r"^Target: lsio >= 1\.5x a plain Python `os\.pread` loop: " + ratio, out,
                     re.M), out
    assert re.search(r"^Target: lsio >= 0\.9x fio's best .*: " + ratio, out, re.M), out
    for name in ("fio best depth buffered", "fio best depth direct=1"):
        (cells,) = _rows(out, name)
        assert _throughput(cells) > 0 and cells[stall_col] == "—", cells
        assert re.search(rf"^{name}: queue depth (1|2|4|8|16|32|64|128) \(per round\)\.", out,
                         re.M), out
    assert len(re.findall(r"^Worst loop stall <= 10 ms: \*\*(met\*\* by every lsio row|"
                          r"missed\*\* by .*\(\d[\d.,]* ms\))", out, re.M)) == 7, out

    # The planner workloads: coalescing on and off, and the on / off ratio under each table.
    for name in ("lsio coalesce", "lsio no coalesce", "plain loop"):
        rows = _rows(out, name)
        assert len(rows) == (2 if name.startswith("lsio") else 7), (name, out)  # d, f (all)
        assert all(_throughput(cells) > 0 for cells in rows), rows
    assert len(re.findall(r"Coalescing on / off.*: auto \*\*\d+\.\d\dx\*\*", out)) == 2, out
    assert out.count("requests become") == 2, out

    # The planning-speed table (no I/O).
    for step in ("`lsio._request.normalize`", "`lsio._plan.plan`"):
        (cells,) = _rows(out, step, prefix=True)
        assert _ms(cells[1]) > 0, cells

    # Results kept alive, fresh processes: every contender on (a) and (b), kept and recycled.
    kept = {(k["workload"], k["contender"]): k for k in
            json.loads((tmp_path / "results.json").read_text())["kept"]}
    for key in ("a", "b"):
        for name in ("lsio", "plain loop", "fsspec"):
            k = kept[(key, name)]
            assert k["error"] is None and len(k["kept_s"]) == len(k["recycled_s"]) >= 2, k
    assert "### Results kept alive" in out and len(_rows(out, "b", prefix=True)) >= 3, out

    doc = (tmp_path / "bench.md").read_text()
    assert "<!-- bench_local:start -->" in doc and "<!-- bench_local:end -->" in doc
    assert "### Planning speed" in doc
    results = json.loads((tmp_path / "results.json").read_text())
    series = results["series"]
    lsio_series = [s for s in series if s["contender"].startswith("lsio")]
    assert len(lsio_series) == 3 + 1 + 1 + 4 + 4 + 3 + 1, lsio_series  # a, b, c, d, f, g, h
    for s in lsio_series:
        stall = s["worst_loop_stall_s"]
        assert isinstance(stall, float) and stall >= 0, s
        assert stall == max(x["loop_stall_s"] for x in s["samples"]), s
    for s in series:
        if s["contender"].startswith(("fio", "plain loop")):
            assert s["worst_loop_stall_s"] is None, s
            assert all(x["loop_stall_s"] is None for x in s["samples"]), s
    assert results["planning"]["n_requests"] == 100_000
    assert set(results["chosen"]) == {"h/warm/fio best depth buffered",
                                      "h/warm/fio best depth direct=1"}, results["chosen"]
    planned = results["planned_reads"]
    assert planned["d"]["n_requests"] == 2800
    assert planned["f"]["reads_on"] < planned["f"]["reads_off"] == 5000  # 0-gaps always merge


def test_plots_draw_from_the_json(tmp_path: Path) -> None:
    """benchmarks/plots.py turns every harness's JSON into a PNG (it is what make bench runs
    after the harnesses)."""
    from benchmarks import plots

    for name in ("bench_fixed", "bench_local", "bench_http", "bench_zarr"):
        png = plots.plot(ROOT / "docs" / f"{name}.json", tmp_path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_bench_stall_quick(tmp_path: Path) -> None:
    """The first-read loop-stall benchmark (benchmarks/bench_stall.py) runs at a tiny size,
    cold and warm, and reports a stall and a wall time for each fresh process."""
    for state in ("cold", "warm"):
        out = tmp_path / f"{state}.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_stall", "--size-mib", "8",
               "--samples", "1", "--state", state, "--data-dir", str(tmp_path / "data"),
               "--json", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        row, noise = json.loads(out.read_text())["rows"]
        assert row["tree"] == "this tree" and noise["tree"].startswith("no read"), row
        for r in (row, noise):
            assert len(r["stall_ms"]) == 1 and r["stall_ms"][0] >= 0, r
            assert r["wall_ms"][0] > 0 and r["loop_cpu_ms"][0] > 0, r
            assert 0 <= r["callback_cpu_ms"][0] <= r["loop_cpu_ms"][0], r
            assert r["drop_stall_ms"][0] >= 0, r
        assert "| this tree |" in proc.stdout, proc.stdout
