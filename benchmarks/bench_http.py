"""HTTP benchmark: lsio against Python HTTP clients, reading from a loopback nginx.

    python -m benchmarks.bench_http [--quick] [--workload r,s,o] [--repeats N]
        [--contenders NAME,...] [--data-dir DIR] [--nginx-workers N]
        [--out docs/benchmarks.md] [--json results.json]

One nginx (`tests/servers.py`, the one the tests use) serves the data directory on 127.0.0.1.
Every contender (`lsio`, `aiohttp gather`, `fsspec`, `obstore`; see `http_contenders.py`) runs
in the same process and on the same event loop, round-robin (A B C D A B C D ...) for
`--repeats` rounds (default 5, 2 with `--quick`); tables report medians. Before every run each
data file is read once, so nginx serves from the page cache. Every run is checked (number of
chunks, total bytes, content of a few chunks against the local file). A contender that fails
(setup or a run) shows FAILED in its row; the rest of the run goes on.

Workloads: (r) random 4 KiB ranges of one file, (s) many small files read whole, (o) one big
object read whole. Targets: lsio >= 2x the best peer on (r), >= 1.5x on (s), >= 1x obstore on
(o). `--out FILE` writes the section between `<!-- bench_http:start -->` and
`<!-- bench_http:end -->` (appended to the end of FILE when absent); `--json` the raw samples.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import Nginx, nginx_binary

from .contenders import RunFn
from .harness import log, stall_text, time_run, verify
from .http_contenders import CONTENDERS, LSIO, HttpContender, HttpContext, HttpWorkload
from .report import (
    STALL_HEADER,
    STALL_NOTE,
    Sample,
    Series,
    failed_row,
    format_machine,
    format_stall,
    machine_details,
    replace_section,
    series_json,
)
from .workloads import GiB, KiB, MiB, Workload, WorkloadSpec, materialize, warm_cache

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-http")
DEFAULT_WORKLOADS = "r,s,o"
START_MARK = "<!-- bench_http:start -->"
END_MARK = "<!-- bench_http:end -->"
STATE = "warm"  # nginx always serves from the page cache here

FULL_SPECS: dict[str, WorkloadSpec] = {
    "r": WorkloadSpec("r", "20 000 random 4 KiB ranges of one 2 GiB file", "ranges",
                      n_files=1, file_size=2 * GiB, n_requests=20_000, request_size=4 * KiB),
    "s": WorkloadSpec("s", "2000 files x 64 KiB, read whole", "files",
                      n_files=2000, file_size=64 * KiB, n_requests=2000, request_size=64 * KiB),
    "o": WorkloadSpec("o", "one 512 MiB object, read whole", "files",
                      n_files=1, file_size=512 * MiB, n_requests=1, request_size=512 * MiB),
}

QUICK_SPECS: dict[str, WorkloadSpec] = {
    "r": WorkloadSpec("r", "2000 random 4 KiB ranges of one 64 MiB file (quick)", "ranges",
                      n_files=1, file_size=64 * MiB, n_requests=2000, request_size=4 * KiB),
    "s": WorkloadSpec("s", "200 files x 64 KiB, read whole (quick)", "files",
                      n_files=200, file_size=64 * KiB, n_requests=200, request_size=64 * KiB),
    "o": WorkloadSpec("o", "one 32 MiB object, read whole (quick)", "files",
                      n_files=1, file_size=32 * MiB, n_requests=1, request_size=32 * MiB),
}


@dataclass(frozen=True)
class Target:
    """lsio's goal on a workload: ``ratio`` x the reference (None = the best peer)."""

    ratio: float
    reference: str | None = None


TARGETS: dict[str, Target] = {"r": Target(2.0), "s": Target(1.5), "o": Target(1.0, "obstore")}
OP_UNITS = {"r": "ranges/s", "s": "files/s", "o": "objects/s"}


@dataclass(frozen=True)
class TargetResult:
    workload: str
    ratio_wanted: float
    reference: str | None  # contender name, None when no reference ran
    ratio: float | None  # lsio / reference (median ops/s), None when either did not run
    met: bool
    note: str = ""


@dataclass(frozen=True)
class Config:
    specs: tuple[WorkloadSpec, ...]
    repeats: int
    data_dir: Path
    quick: bool
    contenders: tuple[str, ...] | None  # None = all
    nginx_workers: int
    out: Path | None
    json_path: Path | None


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(description="lsio HTTP benchmark (loopback nginx)")
    ap.add_argument("--quick", action="store_true", help="small data sets (smoke run)")
    ap.add_argument("--workload", default=DEFAULT_WORKLOADS,
                    help=f"comma list of workloads (default {DEFAULT_WORKLOADS})")
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin rounds, medians reported (default 5, --quick 2)")
    ap.add_argument("--contenders", default=None,
                    help="comma list of contender names (default: all)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)

    specs = QUICK_SPECS if a.quick else FULL_SPECS
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    keys = [k.strip() for k in a.workload.split(",") if k.strip()]
    unknown = [k for k in keys if k not in specs]
    if unknown or not keys:
        ap.error(f"unknown workload(s) {unknown}; known: {sorted(specs)}")
    if repeats < 1 or a.nginx_workers < 1:
        ap.error("--repeats and --nginx-workers must be >= 1")
    names = tuple(n.strip() for n in a.contenders.split(",") if n.strip()) if a.contenders \
        else None
    known = [c.name for c in CONTENDERS]
    if names is not None and (bad := [n for n in names if n not in known]):
        ap.error(f"unknown contender(s) {bad}; known: {known}")
    return Config(specs=tuple(specs[k] for k in keys), repeats=repeats, data_dir=a.data_dir,
                  quick=a.quick, contenders=names, nginx_workers=a.nginx_workers, out=a.out,
                  json_path=a.json_path)


# --------------------------------------------------------------------------- running


def select(cfg: Config) -> list[HttpContender]:
    return [c for c in CONTENDERS if cfg.contenders is None or c.name in cfg.contenders]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


async def prepare(contenders: list[HttpContender], hw: HttpWorkload,
                  ctx: HttpContext) -> tuple[list[Series], dict[str, RunFn]]:
    """Set up every contender once, on the benchmark loop; a failing setup is recorded."""
    series: list[Series] = []
    fns: dict[str, RunFn] = {}
    for c in contenders:
        s = Series(workload=hw.wl.key, state=STATE, contender=c.name, mode="http")
        try:
            fns[c.name] = await c.setup(hw, ctx)
        except Exception as e:  # a broken contender must not stop the run
            s.error = _error(e)
            log(f"  {c.name}: setup FAILED: {s.error}")
        series.append(s)
    return series, fns


async def _cancel(tasks: set[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run_once(runner: asyncio.Runner, fn: RunFn, hw: HttpWorkload, rnd: int) -> Sample:
    """Warm the cache, one timed and verified run; the buffers are released on return.

    A failed run may leave requests of a `gather` behind on the loop: they are cancelled so they
    cannot slow down the next contender."""
    warm_cache(hw.wl)
    loop = runner.get_loop()
    before = asyncio.all_tasks(loop)
    try:
        seconds, payload, stall = time_run(runner, fn)
    except BaseException:
        if leftovers := asyncio.all_tasks(loop) - before:
            runner.run(_cancel(leftovers))
        raise
    nbytes, n_ops = verify(hw.wl, payload)
    return Sample(round=rnd, seconds=seconds, nbytes=nbytes, n_ops=n_ops, loop_stall_s=stall)


def run_workload(cfg: Config, hw: HttpWorkload, runner: asyncio.Runner) -> list[Series]:
    ctx = HttpContext()
    try:
        series, fns = runner.run(prepare(select(cfg), hw, ctx))
        for rnd in range(cfg.repeats):
            for s in series:
                if s.error is not None:
                    continue
                tag = f"  [{hw.wl.key} {rnd + 1}/{cfg.repeats}] {s.contender}:"
                try:
                    sample = run_once(runner, fns[s.contender], hw, rnd)
                except Exception as e:  # report it, keep going
                    s.error = _error(e)
                    log(f"{tag} FAILED: {s.error}")
                    continue
                s.samples.append(sample)
                log(f"{tag} {sample.seconds * 1e3:.1f} ms, "
                    f"{sample.n_ops / sample.seconds:,.0f} ops/s, "
                    f"{sample.nbytes / sample.seconds / 1e6:,.1f} MB/s"
                    f"{stall_text(sample.loop_stall_s)}")
    finally:
        runner.run(ctx.cleanup.aclose())
    return series


# --------------------------------------------------------------------------- output


def nginx_version() -> str:
    binary = nginx_binary()
    if binary is None:
        return "not installed"
    try:
        proc = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    text = (proc.stderr or proc.stdout).strip()  # nginx -v prints to stderr
    return text.removeprefix("nginx version: ") or "unknown"


def best_peer(series: list[Series]) -> Series | None:
    """The fastest successful non-lsio contender (median ops/s)."""
    peers = {c.name for c in CONTENDERS if c.peer}
    ok = [s for s in series if s.ok and s.contender in peers]
    return max(ok, key=lambda s: s.ops_per_s, default=None)


def _find(series: list[Series], name: str) -> Series | None:
    return next((s for s in series if s.contender == name), None)


def judge(key: str, series: list[Series]) -> TargetResult:
    """Is lsio's target on this workload met?"""
    target = TARGETS[key]
    lsio = _find(series, LSIO)
    if target.reference is None:
        ref = best_peer(series)
    else:
        ref = _find(series, target.reference)
        ref = ref if ref is not None and ref.ok else None
    ref_name = ref.contender if ref is not None else None
    if lsio is None or not lsio.ok:
        why = "lsio not run" if lsio is None else "lsio FAILED"
        return TargetResult(key, target.ratio, ref_name, None, False, why)
    if ref is None:
        who = target.reference or "no peer"
        return TargetResult(key, target.ratio, None, None, False, f"{who} did not run")
    ratio = lsio.ops_per_s / ref.ops_per_s
    return TargetResult(key, target.ratio, ref_name, ratio, ratio >= target.ratio)


def _ops(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def _bandwidth(key: str, s: Series) -> str:
    return f"{s.mb_per_s / 1e3:,.2f}" if key == "o" else f"{s.mb_per_s:,.1f}"


def format_http_table(key: str, series: list[Series]) -> str:
    """One row per contender: median seconds, ops/s, MB/s (GB/s for the big object), the ratio
    to the best peer, the worst event-loop stall and the number of runs."""
    unit = "GB/s" if key == "o" else "MB/s"
    ref = best_peer(series)
    rows = [f"| contender | median s | {OP_UNITS[key]} | {unit} | vs best peer | "
            f"{STALL_HEADER} | runs |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for s in series:
        if not s.ok:
            rows.append(failed_row(s, 4))
            continue
        seconds = statistics.median(x.seconds for x in s.samples)
        ratio = f"{s.ops_per_s / ref.ops_per_s:.2f}x" if ref is not None else "—"
        rows.append(f"| {s.contender} | {seconds:.4f} | {_ops(s.ops_per_s)} | "
                    f"{_bandwidth(key, s)} | {ratio} | {format_stall(s)} | {len(s.samples)} |")
    return "\n".join(rows)


def format_target(t: TargetResult) -> str:
    wanted = (f"lsio >= {t.ratio_wanted:g}x "
              + (TARGETS[t.workload].reference or "the best peer"))
    if t.ratio is None:
        return f"Target: {wanted}: **missed** ({t.note})."
    verdict = "met" if t.met else "missed"
    ref = f" (`{t.reference}`)" if TARGETS[t.workload].reference is None else ""
    return f"Target: {wanted}{ref}: {t.ratio:.2f}x, **{verdict}**."


def render(cfg: Config, results: list[Series], targets: dict[str, TargetResult],
           details: dict[str, str], argv: Sequence[str]) -> str:
    parts = ["## HTTP: lsio vs Python HTTP clients, loopback nginx (`benchmarks/bench_http.py`)",
             "", f"Command: `python -m benchmarks.bench_http {shlex.join(argv)}`  ",
             f"Median of {cfg.repeats} round-robin round(s); one nginx with "
             f"{cfg.nginx_workers} worker process(es) on 127.0.0.1 (sendfile, keep-alive); "
             "every data file read into the page cache before every run.",
             "", format_machine(details), ""]
    for spec in cfg.specs:
        rows = [s for s in results if s.workload == spec.key]
        parts += [f"### ({spec.key}) {spec.title}", "", format_http_table(spec.key, rows), "",
                  format_target(targets[spec.key]), ""]
    parts += ["Notes: all contenders share one asyncio event loop (the default loop, not uvloop) "
              "and are timed by wall clock around one call (connections are opened in the "
              "first timed run of each contender, kept alive after); one-off setup (reader, "
              "session, store, request list) is done before timing. `lsio`: one `lsio.Reader()`, "
              "`read_many` of `(url, offset, length)` (`(url, 0, None)` for whole objects). "
              "`aiohttp gather`: one `ClientSession` (default connector, at most 100 "
              "connections), `asyncio.gather` of one GET per request with a `Range` header. "
              "`fsspec`: `HTTPFileSystem(asynchronous=True)` (aiohttp underneath), "
              "`_cat_ranges` / `_cat` / `_cat_file`. `obstore`: `HTTPStore.from_url(...)` with "
              "`allow_http`, one `get_ranges_async` call for ranges (by default obstore merges "
              "ranges at most 1 MiB apart into one GET, so on (r) it downloads nearly the whole "
              "file in one or two GETs), `gather` of `get_async` + `bytes_async` for objects. "
              "*vs best peer*: median ops/s over that of the fastest "
              "non-lsio contender. Every result is checked (number of chunks, total bytes, "
              "content of a few chunks). Raw per-round numbers: `--json`.", "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, results: list[Series], targets: dict[str, TargetResult],
              details: dict[str, str]) -> None:
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "data_dir": str(cfg.data_dir),
                   "nginx_workers": cfg.nginx_workers,
                   "contenders": [c.name for c in select(cfg)]},
        "workloads": {s.key: dataclasses.asdict(s) for s in cfg.specs},
        "series": series_json(results),
        "targets": {k: dataclasses.asdict(t) for k, t in targets.items()},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


def http_machine_details(cfg: Config) -> dict[str, str]:
    """`report.machine_details` without fio, plus nginx and aiohttp."""
    details = machine_details(cfg.data_dir)
    details.pop("fio", None)
    details["nginx"] = f"{nginx_version()} ({cfg.nginx_workers} worker(s), loopback)"
    try:
        import aiohttp

        details["packages"] += f", aiohttp {aiohttp.__version__}"
    except ImportError:
        details["packages"] += ", aiohttp not installed"
    return details


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = cfg.data_dir.resolve()
    workloads: dict[str, Workload] = {}
    for spec in cfg.specs:
        log(f"preparing data for ({spec.key}) {spec.title} ...")
        workloads[spec.key] = materialize(spec, data_dir)

    results: list[Series] = []
    with Nginx(data_dir, workers=cfg.nginx_workers) as server, asyncio.Runner() as runner:
        log(f"nginx serving {data_dir} at {server.url()}")
        for spec in cfg.specs:
            log(f"({spec.key}) {spec.title}:")
            hw = HttpWorkload.build(workloads[spec.key], data_dir, server.url)
            results += run_workload(cfg, hw, runner)

    targets = {spec.key: judge(spec.key, [s for s in results if s.workload == spec.key])
               for spec in cfg.specs}
    details = http_machine_details(cfg)
    text = render(cfg, results, targets, details, argv)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, results, targets, details)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
