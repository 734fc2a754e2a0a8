"""Interop benchmark: the code people already have (kerchunk references through zarr, a
VirtualiZarr ManifestStore, h5py on a file object) with lsio underneath, against the same code
on the filesystem or store it uses today.

    python -m benchmarks.bench_interop [--quick] [--workload refs-http,refs-local,...]
        [--repeats N] [--warmup N] [--data-dir DIR] [--out docs/benchmarks.md] [--json FILE]

Data (pinned, `interop_contenders.py`): one NetCDF4/HDF5 file written with h5netcdf, a float32
variable of 1024 chunks of 64 KiB (128 x 128), zlib level 4 + shuffle, values from a fixed
seed; its kerchunk references come from `kerchunk.hdf.SingleHdf5ToZarr`. One nginx on
loopback (`tests/servers.py`) serves it. Per workload every contender is set up once and run
`--warmup` times untimed (default 1: connections, first-use imports), then all run
round-robin (A B C A B C ...) for `--repeats` rounds (default 5, 2 with `--quick`) on one
event loop; each run reads the whole variable and is checked against h5py's read of the local file
(every value). Before every run the file is read once, so it is in the page cache.

Targets (lsio over the best peer): median ratio >= the target and no round below 0.95x it.
Each table also gives the share of a run spent decoding (every chunk decoded alone, from
memory, on one thread, with numcodecs): it is paid alike on both sides, so it bounds the ratio.
`--out FILE` writes the section between `<!-- bench_interop:start -->` and
`<!-- bench_interop:end -->`; `--json` the raw samples and each round's ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.servers import Nginx

from .bench_http import nginx_version
from .contenders import RunFn
from .harness import WrongResult, log, stall_text, time_run
from .interop_contenders import (
    CONTENDERS,
    FULL,
    QUICK,
    Context,
    Data,
    compressed_bytes,
    decode_seconds,
    materialize,
)
from .report import (
    STALL_HEADER,
    STALL_NOTE,
    Sample,
    Series,
    failed_row,
    format_machine,
    format_stall,
    machine_details_with,
    replace_section,
    series_json,
)

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-interop")
START_MARK = "<!-- bench_interop:start -->"
END_MARK = "<!-- bench_interop:end -->"
PACKAGES = ("h5py", "h5netcdf", "kerchunk", "virtualizarr", "obspec-utils", "xarray")
ROUND_FLOOR = 0.95  # no round below this share of the target


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    target: float  # lsio over the best peer


WORKLOADS: dict[str, Workload] = {w.key: w for w in (
    Workload("refs-http", "kerchunk references, ReferenceFileSystem + zarr 3, file on nginx",
             2.0),
    Workload("refs-local", "kerchunk references, ReferenceFileSystem + zarr 3, local file", 1.1),
    Workload("vz-http", "VirtualiZarr ManifestStore + zarr 3, file on nginx", 2.0),
    Workload("h5py-http", "h5py through a file object, file on nginx", 1.5),
)}


@dataclass(frozen=True)
class Config:
    workloads: tuple[Workload, ...]
    repeats: int
    warmup: int  # untimed runs of each contender after its setup
    data_dir: Path
    quick: bool
    out: Path | None
    json_path: Path | None


@dataclass(frozen=True)
class Verdict:
    workload: str
    target: float
    reference: str | None  # the best peer's name
    ratio: float | None  # median seconds of the reference over lsio's
    rounds: list[float]  # each round's own ratio
    bound: float | None  # the reference's median over the decoding time: no ratio beyond
    met: bool
    note: str = ""


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(description="lsio interop benchmark (fsspec, obspec, h5py)")
    ap.add_argument("--quick", action="store_true", help="a 16-chunk file (smoke run)")
    ap.add_argument("--workload", default=",".join(WORKLOADS),
                    help=f"comma list (default {','.join(WORKLOADS)})")
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin rounds, medians reported (default 5, --quick 2)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs of each contender before the rounds (default 1)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)
    keys = [k.strip() for k in a.workload.split(",") if k.strip()]
    if not keys or (bad := [k for k in keys if k not in WORKLOADS]):
        ap.error(f"unknown workload(s) {keys and bad}; known: {list(WORKLOADS)}")
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    if repeats < 1 or a.warmup < 0:
        ap.error("--repeats must be >= 1, --warmup >= 0")
    return Config(tuple(WORKLOADS[k] for k in keys), repeats, a.warmup, a.data_dir, a.quick,
                  a.out, a.json_path)


# --------------------------------------------------------------------------- running


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _warm(data: Data) -> None:
    with open(data.path, "rb") as f:
        while f.read(8 << 20):
            pass


def _check(data: Data, payload: Any) -> None:
    got = np.asarray(payload)
    if got.shape != data.expected.shape or got.dtype != data.expected.dtype:
        raise WrongResult(f"returned {got.dtype}{got.shape}, expected "
                          f"{data.expected.dtype}{data.expected.shape}")
    if not np.array_equal(got, data.expected):
        raise WrongResult(f"{int((got != data.expected).sum())} values differ from h5py's")


def run_workload(cfg: Config, wl: Workload, ctx: Context,
                 runner: asyncio.Runner) -> list[Series]:
    contenders = [c for c in CONTENDERS if c.workload == wl.key]
    series = [Series(workload=wl.key, state="warm", contender=c.name, mode="floor" if c.floor
                     else "lsio" if c.lsio else "peer") for c in contenders]
    fns: dict[str, RunFn] = {}
    for c, s in zip(contenders, series, strict=True):
        try:
            fns[c.name] = fn = runner.run(c.setup(ctx))
            for _ in range(cfg.warmup):  # connections, first-use imports: not timed
                _check(ctx.data, time_run(runner, fn, watch_loop=False).payload)
        except Exception as e:  # lsio.fsspec not there yet, a broken peer: the rest goes on
            s.error = _error(e)
            log(f"  {c.name}: setup FAILED: {s.error}")
    spec = ctx.data.spec
    for rnd in range(cfg.repeats):
        for c, s in zip(contenders, series, strict=True):
            if s.error is not None:
                continue
            tag = f"  [{wl.key} {rnd + 1}/{cfg.repeats}] {c.name}:"
            try:
                _warm(ctx.data)
                timed = time_run(runner, fns[c.name], watch_loop=c.on_loop)
                _check(ctx.data, timed.payload)
            except Exception as e:  # report it, keep going
                s.error = _error(e)
                log(f"{tag} FAILED: {s.error}")
                continue
            s.samples.append(Sample(round=rnd, seconds=timed.seconds, nbytes=spec.nbytes,
                                    n_ops=spec.n_chunks, loop_stall_s=timed.loop_stall))
            log(f"{tag} {timed.seconds * 1e3:.1f} ms, "
                f"{spec.nbytes / timed.seconds / 1e6:,.1f} MB/s{stall_text(timed.loop_stall)}")
    return series


def _median_s(s: Series) -> float:
    return statistics.median(x.seconds for x in s.samples)


def _role(s: Series) -> str:
    return s.mode  # "lsio", "peer" or "floor", set in run_workload


def best_peer(series: list[Series]) -> Series | None:
    return min((s for s in series if s.ok and _role(s) == "peer"), key=_median_s, default=None)


def judge(wl: Workload, series: list[Series], decode_s: float) -> Verdict:
    lsio = next((s for s in series if _role(s) == "lsio"), None)
    ref = best_peer(series)
    name = ref.contender if ref is not None else None
    bound = _median_s(ref) / decode_s if ref is not None else None
    if lsio is None or not lsio.ok:
        return Verdict(wl.key, wl.target, name, None, [], bound, False,
                       "lsio FAILED" if lsio is not None else "lsio not run")
    if ref is None:
        return Verdict(wl.key, wl.target, None, None, [], None, False, "no peer ran")
    theirs = {x.round: x.seconds for x in ref.samples}
    rounds = [theirs[x.round] / x.seconds for x in lsio.samples if x.round in theirs]
    ratio = _median_s(ref) / _median_s(lsio)
    met = ratio >= wl.target and min(rounds, default=0.0) >= ROUND_FLOOR * wl.target
    return Verdict(wl.key, wl.target, name, ratio, rounds, bound, met)


# --------------------------------------------------------------------------- output


def format_table(series: list[Series], decode_s: float) -> str:
    ref = best_peer(series)
    rows = ["| contender | median s | MB/s (decoded) | vs best peer | worst round | "
            f"decoding share | {STALL_HEADER} | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in series:
        if not s.ok:
            rows.append(failed_row(s, 5))
            continue
        med = _median_s(s)
        vs = worst = "—"
        if ref is not None:
            vs = f"{_median_s(ref) / med:.2f}x"
            theirs = {x.round: x.seconds for x in ref.samples}
            per_round = [theirs[x.round] / x.seconds for x in s.samples if x.round in theirs]
            worst = f"{min(per_round):.2f}x" if per_round and _role(s) == "lsio" else "—"
        rows.append(f"| {s.contender} | {med:.3f} | {s.mb_per_s:,.1f} | {vs} | {worst} | "
                    f"{decode_s / med:.0%} | {format_stall(s)} | {len(s.samples)} |")
    return "\n".join(rows)


def format_verdict(v: Verdict) -> str:
    wanted = f"lsio >= {v.target:g}x the best peer, no round below {ROUND_FLOOR * v.target:.2f}x"
    bound = ("" if v.bound is None else f" Decoding alone bounds any ratio to the best peer "
             f"at {v.bound:.2f}x (its median over the decoding time).")
    if v.ratio is None:
        return f"Target: {wanted}: **missed** ({v.note}).{bound}"
    rounds = ", ".join(f"{r:.2f}" for r in v.rounds)
    return (f"Target: {wanted} (`{v.reference}`): {v.ratio:.2f}x (rounds: {rounds}), "
            f"**{'met' if v.met else 'missed'}**.{bound}")


def data_text(data: Data, decode_s: float) -> str:
    spec, packed = data.spec, compressed_bytes(data)
    return (f"Data: `{data.path.name}`, float32 `t{spec.shape}` in {spec.n_chunks} chunks of "
            f"128 x 128 (64 KiB), zlib level 4 + shuffle: {spec.nbytes / 2**20:.0f} MiB "
            f"stored in {packed / 2**20:.1f} MiB ({spec.nbytes / packed:.1f}x). Decoding every "
            f"chunk from memory on one thread (numcodecs): {decode_s * 1e3:.0f} ms.")


def render(cfg: Config, data: Data, decode_s: float, results: dict[str, list[Series]],
           verdicts: dict[str, Verdict], details: dict[str, str], argv: Sequence[str],
           elapsed: float) -> str:
    parts = ["## Interop: fsspec, obspec and h5py with lsio underneath "
             "(`benchmarks/bench_interop.py`)", "",
             f"Command: `python -m benchmarks.bench_interop {shlex.join(argv)}` "
             f"({elapsed / 60:.1f} min)  ",
             f"Median of {cfg.repeats} round-robin round(s), after {cfg.warmup} untimed "
             "run(s) of each contender (connections, first-use imports); one nginx on "
             "127.0.0.1; the file in the page cache before every run.", "",
             data_text(data, decode_s), "", format_machine(details), ""]
    for wl in cfg.workloads:
        parts += [f"### ({wl.key}) {wl.title}", "", format_table(results[wl.key], decode_s),
                  "", format_verdict(verdicts[wl.key]), ""]
    parts += ["Notes: each run reads the whole variable into numpy and is compared, value by "
              "value, with h5py's read of the local file. refs-*: "
              "`ReferenceFileSystem(refs, fs=..., asynchronous=True)` in zarr's `FsspecStore`, "
              "read with zarr's async API and its default codec pipeline; the no-I/O row "
              "inlines every chunk's bytes in the references (what zarr, the reference "
              "filesystem and decoding cost alone: not a peer). vz-http: VirtualiZarr's "
              "`HDFParser` builds the `ManifestStore` through the contender's store (not "
              "timed), zarr reads it. h5py-http: `h5py.File(fs.open(url))`, fsspec's HTTP file "
              "at each block size of the sweep; the best is the reference. *worst round*: the "
              "lowest of lsio's per-round ratios to the best peer. *decoding share*: one "
              "thread's decoding time over the row's median (zarr may decode on several "
              "threads).", "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, data: Data, decode_s: float,
              results: dict[str, list[Series]], verdicts: dict[str, Verdict],
              details: dict[str, str], elapsed: float) -> None:
    spec = data.spec
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "warmup": cfg.warmup,
                   "data_dir": str(cfg.data_dir),
                   "workloads": [w.key for w in cfg.workloads], "elapsed_s": elapsed},
        "data": {"file": data.path.name, "shape": list(spec.shape), "chunks": spec.n_chunks,
                 "nbytes": spec.nbytes, "stored_bytes": compressed_bytes(data),
                 "decode_s": decode_s},
        "series": series_json([s for wl in cfg.workloads for s in results[wl.key]]),
        "targets": {k: dataclasses.asdict(v) for k, v in verdicts.items()},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    started = time.perf_counter()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.data_dir.chmod(0o755)  # nginx's workers may run as another user
    data_dir = cfg.data_dir.resolve()
    log("preparing the data (NetCDF4 file, kerchunk references) ...")
    data = materialize(QUICK if cfg.quick else FULL, data_dir)
    decode_s = decode_seconds(data)
    results: dict[str, list[Series]] = {}
    with Nginx(data_dir) as server, asyncio.Runner() as runner:
        log(f"nginx serving {data_dir} at {server.url()}")
        for wl in cfg.workloads:
            log(f"({wl.key}) {wl.title}:")
            ctx = Context(data, server.url(data.path.name), server.url().rstrip("/"))
            try:
                results[wl.key] = run_workload(cfg, wl, ctx, runner)
            finally:
                runner.run(ctx.cleanup.aclose())
    verdicts = {wl.key: judge(wl, results[wl.key], decode_s) for wl in cfg.workloads}
    details = machine_details_with(data_dir, PACKAGES)
    details["nginx"] = f"{nginx_version()} (1 worker, loopback)"
    elapsed = time.perf_counter() - started
    text = render(cfg, data, decode_s, results, verdicts, details, argv, elapsed)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, data, decode_s, results, verdicts, details, elapsed)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

