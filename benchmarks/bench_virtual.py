"""Virtual-dataset benchmark: NetCDF4 chunks by reference, lsio's ReferenceStore against
fsspec's ReferenceFileSystem on the same kerchunk references, and h5netcdf on the file.

    python -m benchmarks.bench_virtual [--quick] [--files N] [--repeats N] [--data-dir DIR]
        [--no-nginx] [--json results.json] [--out docs/benchmarks.md]

Data (written once under `--data-dir`, reused): `--files` NetCDF4 files (default 100) written
with h5netcdf, each with one float32 variable `temp` of 256 x 256 x 256 in chunks of
16 x 32 x 32 (64 KiB each, 1 024 chunks), zlib level 4 + shuffle, values rounded to 1/64 so
they compress like measured fields; `--quick`: 32 x 64 x 64 in chunks of 8 x 16 x 16 (64
chunks), 3 files. A file's worth of distinct chunks is compressed once (HDF5's shuffle, then
zlib 4) and every file stores them in its own order, by h5py's `write_direct_chunk` (~0.2 s
a file instead of ~30 s through h5py's filters): values differ from file to file, and the
files are plain NetCDF4 that h5py, h5netcdf and kerchunk read. kerchunk references:
`kerchunk.hdf.SingleHdf5ToZarr` per file, and `kerchunk.combine.MultiZarrToZarr` of all
files along `t` (one virtual dataset).

Workloads: (1) the whole variable of one file; (N) the whole variable of the virtual dataset
of all files. Each from the local disk (warm: the files read just before each run) and from
nginx on loopback (`tests.servers.Nginx`); (1) also through `benchmarks.latency_proxy`'s
proxy in front of nginx, 30 ms before each answer, as a bucket answers (`--no-nginx` skips
both; (N) with latency is left out: fsspec takes minutes a round). Contenders, alternated
round-robin for `--repeats` rounds (default 5; `--quick` 1) after one untimed read each,
medians reported:

- `lsio ReferenceStore + zarr`: `zarr.open_group(lsio.virtual.ReferenceStore(refs))` with
  lsio's codec pipeline: every chunk of the selection in one planned `read_many`.
- `fsspec ReferenceFileSystem + zarr`: `fsspec.filesystem("reference", fo=refs,
  asynchronous=True)` over fsspec's async HTTP filesystem (nginx) or its local one wrapped
  in `AsyncFileSystemWrapper` (as zarr wraps it), in zarr's `FsspecStore`, zarr's default
  pipeline.
- `xarray h5netcdf` (workload 1, local only): `xarray.open_dataset(path,
  engine="h5netcdf")["temp"].values`.

Every result is compared with h5py's read of the same file(s) (crc32 per file). Peak RSS per
row: the row's contender reads once more in a fresh process (`--probe`), its RSS high-water
mark reset after imports (`/proc/self/clear_refs`), reported with the bytes returned.

Targets: lsio >= 1.2x fsspec locally and >= 3x with 30 ms latency, >= 1.5x h5netcdf on the
local file; lsio's peak RSS <= 1.2x the bytes returned + 100 MiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .report import replace_section

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-virtual")
LSIO = "lsio ReferenceStore + zarr"
FSSPEC = "fsspec ReferenceFileSystem + zarr"
H5NETCDF = "xarray h5netcdf"
CONTENDERS = (LSIO, FSSPEC, H5NETCDF)
START_MARK, END_MARK = "<!-- bench_virtual:start -->", "<!-- bench_virtual:end -->"
MiB = 1 << 20
LATENCY = 0.030
"""Seconds the proxy waits before each answer: a bucket's round trip."""
LATENT = "nginx + 30 ms"


@dataclass(frozen=True)
class Sizes:
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    files: int


def sizes(quick: bool, files: int | None) -> Sizes:
    if quick:
        return Sizes((32, 64, 64), (8, 16, 16), files or 3)
    return Sizes((256, 256, 256), (16, 32, 32), files or 100)


# -- data ---------------------------------------------------------------------------------

def data_files(data_dir: Path, sz: Sizes) -> list[Path]:
    """The NetCDF4 files (written if absent) and their references beside them."""
    tag = "x".join(map(str, sz.shape)) + "-" + "x".join(map(str, sz.chunks))
    where = data_dir / tag
    where.mkdir(parents=True, exist_ok=True)
    paths = [where / f"f{k:03d}.nc" for k in range(sz.files)]
    todo = [(k, p) for k, p in enumerate(paths) if not p.exists()]
    if todo:
        pool = stored_chunks(sz)
        for k, path in todo:
            _write(path, k, sz, pool)
    return paths


def stored_chunks(sz: Sizes) -> list[bytes]:
    """A file's worth of distinct chunks as HDF5 stores them with shuffle + zlib 4 (byte j
    of element i at j * count + i, then deflated), compressed once for all files."""
    ct, cy, cx = sz.chunks
    n = int(np.prod([s // c for s, c in zip(sz.shape, sz.chunks, strict=True)]))
    rng = np.random.default_rng(0)
    base = np.sin(np.linspace(0, 6, cy * cx, dtype="f4")).reshape(cy, cx)
    pool = []
    for p in range(n):
        noise = rng.standard_normal((ct, cy, cx), dtype="f4")
        block = (np.round((base + 0.1 * noise + p % 97) * 64) / 64).astype("<f4")
        shuffled = block.view(np.uint8).reshape(-1, 4).T.tobytes()
        pool.append(zlib.compress(shuffled, 4))
    return pool


def _write(path: Path, k: int, sz: Sizes, pool: list[bytes]) -> None:
    import h5netcdf

    t, y, x = sz.shape
    if any(s % c for s, c in zip(sz.shape, sz.chunks, strict=True)):
        raise ValueError(f"bench_virtual: chunks {sz.chunks} do not tile {sz.shape}")
    grid = [s // c for s, c in zip(sz.shape, sz.chunks, strict=True)]
    order = np.random.default_rng(k).permutation(len(pool))  # this file's chunk order
    tmp = path.with_suffix(".tmp")
    with h5netcdf.File(tmp, "w") as f:
        f.dimensions = {"t": t, "y": y, "x": x}
        f.create_variable("t", ("t",), "i8", data=np.arange(k * t, (k + 1) * t))
        v = f.create_variable("temp", ("t", "y", "x"), "f4", chunks=sz.chunks,
                              compression="gzip", compression_opts=4, shuffle=True)
        chunks = v._h5ds.id  # h5py's low-level dataset: stored chunks written as they are
        for i, coords in enumerate(np.ndindex(*grid)):
            start = tuple(c * size for c, size in zip(coords, sz.chunks, strict=True))
            chunks.write_direct_chunk(start, pool[order[i]])
    os.replace(tmp, path)


def references(paths: list[Path], url_of: Callable[[Path], str]) -> dict[str, Any]:
    """Kerchunk references of one file, or of all files combined along ``t``."""
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr

    cache = paths[0].parent / f"refs-{len(paths)}.json"
    if cache.exists():
        refs = json.loads(cache.read_text())
    else:
        singles = [SingleHdf5ToZarr(str(p), inline_threshold=300).translate() for p in paths]
        refs = singles[0] if len(paths) == 1 else MultiZarrToZarr(
            singles, concat_dims=["t"]).translate()
        cache.write_text(json.dumps(refs))
    text = json.dumps(refs)
    for p in paths:  # point every reference at where this run reads the file from
        text = text.replace(json.dumps(str(p))[1:-1], url_of(p))
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def local_url(path: Path) -> str:
    """``file://`` URLs: fsspec's reference filesystem finds its local filesystem by them."""
    return "file://" + str(path.resolve())


def digests(paths: list[Path]) -> list[int]:
    """crc32 of each file's `temp` as h5py reads it: results are checked against these, file
    by file (a 100-file dataset is 6.4 GiB: never held twice). Kept in `digests.json` beside
    the files, by name, size and mtime (100 full-size files take minutes to read)."""
    import h5py

    cache_file = paths[0].parent / "digests.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    out = []
    for p in paths:
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        known = cache.get(p.name)
        if known is None or known[:2] != stamp:
            with h5py.File(p) as f:
                known = cache[p.name] = [*stamp, zlib.crc32(
                    np.ascontiguousarray(f["temp"][:]).data)]
        out.append(int(known[2]))
    cache_file.write_text(json.dumps(cache))
    return out


def matches(got: np.ndarray, want: list[int]) -> bool:
    """Whether ``got`` (the files' `temp` one after the other along t) equals h5py's."""
    parts = np.split(got, len(want)) if len(got) % len(want) == 0 else []
    return len(parts) == len(want) and all(
        zlib.crc32(np.ascontiguousarray(part).data) == crc
        for part, crc in zip(parts, want, strict=True))


# -- contenders ---------------------------------------------------------------------------

def reader_of(contender: str, refs: dict[str, Any], paths: list[Path], remote: bool
              ) -> Callable[[], np.ndarray]:
    import zarr

    if contender == LSIO:
        import lsio.zarr
        from lsio.virtual import ReferenceStore

        with lsio.zarr.enable():
            arr = zarr.open_group(ReferenceStore(refs), mode="r", zarr_format=2)["temp"]
        return lambda: arr[:]
    if contender == FSSPEC:
        import fsspec
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
        from zarr.storage import FsspecStore

        target = (fsspec.filesystem("http", asynchronous=True) if remote else
                  AsyncFileSystemWrapper(fsspec.filesystem("file")))
        fs = fsspec.filesystem("reference", fo=refs, asynchronous=True,
                               fs={"http" if remote else "file": target})
        with zarr.config.set({"codec_pipeline.path":
                              "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
            arr = zarr.open_group(FsspecStore(fs, read_only=True), mode="r",
                                  zarr_format=2)["temp"]
        return lambda: arr[:]
    import xarray as xr

    def run() -> np.ndarray:
        with xr.open_dataset(paths[0], engine="h5netcdf") as ds:
            return np.asarray(ds["temp"].values)
    return run


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


@dataclass
class Row:
    workload: str
    where: str
    contender: str
    samples: list[float] = field(default_factory=list)
    nbytes: int = 0
    peak_rss: int | None = None
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def cases(paths: list[Path], servers: dict[str, str]
          ) -> Iterator[tuple[str, str, list[Path], str | None]]:
    """(workload, where, files, base URL or None for local files)."""
    for workload, files in (("1", paths[:1]), ("N", paths)):
        yield workload, "local", files, None
        for where, base in servers.items():
            if workload == "1" or where == "nginx":  # (N) with latency: minutes a round
                yield workload, where, files, base


def contenders_of(workload: str, where: str) -> tuple[str, ...]:
    return CONTENDERS if (workload, where) == ("1", "local") else (LSIO, FSSPEC)


def run_case(workload: str, where: str, files: list[Path], url_of: Callable[[Path], str],
             repeats: int, args: argparse.Namespace) -> list[Row]:
    refs = references(files, url_of)
    want = digests(files)
    rows = {c: Row(workload, where, c) for c in contenders_of(workload, where)}
    readers = {c: reader_of(c, refs, files, where != "local") for c in rows}
    for name, row in rows.items():  # one untimed read each: connections, caches, imports
        try:
            readers[name]()
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:200]
    for _ in range(repeats):
        for name, row in rows.items():
            if row.error:
                continue
            warm(files)
            gc.collect()
            try:
                start = time.perf_counter()
                got = readers[name]()
                row.samples.append(time.perf_counter() - start)
                if not matches(got, want):
                    row.error = "values differ from h5py"
                row.nbytes = got.nbytes
                del got
            except Exception as exc:  # a contender's failure is reported, not fatal
                row.error = f"{type(exc).__name__}: {exc}"[:200]
    for name, row in rows.items():
        if not row.error:
            row.peak_rss = probe_rss(args, workload, where, name)
    return list(rows.values())


def probe_rss(args: argparse.Namespace, workload: str, where: str, contender: str
              ) -> int | None:
    cmd = [sys.executable, "-m", "benchmarks.bench_virtual", "--probe", contender,
           "--probe-case", f"{workload}:{where}", "--data-dir", str(args.data_dir)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--files", str(args.files)] if args.files else []
    cmd += ["--probe-url", args.servers[where]] if where in args.servers else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak"])


def _status(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field_name)


def probe(args: argparse.Namespace) -> None:
    workload, where = args.probe_case.split(":")
    paths = data_files(args.data_dir, sizes(args.quick, args.files))
    files = paths[:1] if workload == "1" else paths
    url_of = (lambda p: f"{args.probe_url}/{p.name}") if where != "local" else local_url
    refs = references(files, url_of)
    run = reader_of(args.probe, refs, files, where != "local")
    warm(files)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    got = run()
    print(json.dumps({"peak": _status("VmHWM"), "nbytes": int(got.nbytes)}))


# -- report -------------------------------------------------------------------------------

def table(rows: list[Row]) -> list[str]:
    lsio_row = next(r for r in rows if r.contender == LSIO)
    out = ["| contender | median s | MB/s | lsio's speed-up | peak RSS MiB | returned MiB "
           "| runs |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            out.append(f"| {r.contender} | error: {r.error} | | | | | 0 |")
            continue
        speed = r.median / lsio_row.median if lsio_row.samples else float("nan")
        rss = "n/a" if r.peak_rss is None else f"{r.peak_rss / MiB:.0f}"
        out.append(f"| {r.contender} | {r.median:.4f} | {r.nbytes / r.median / 1e6:.0f} | "
                   f"{speed:.2f}x | {rss} | {r.nbytes / MiB:.1f} | {len(r.samples)} |")
    return out


def targets(rows: list[Row]) -> list[str]:
    lines = []
    by = {(r.workload, r.where, r.contender): r for r in rows}
    for (w, where, c), goal in ((("1", "local", FSSPEC), 1.2), (("N", "local", FSSPEC), 1.2),
                                 (("1", "local", H5NETCDF), 1.5), (("1", LATENT, FSSPEC), 3.0)):
        mine, theirs = by.get((w, where, LSIO)), by.get((w, where, c))
        if mine is None or theirs is None or mine.error or theirs.error:
            continue
        ratio = theirs.median / mine.median
        verdict = "met" if ratio >= goal else "missed"
        lines.append(f"Target: ({w}) {where}, lsio >= {goal}x {c}: {ratio:.2f}x "
                     f"**{verdict}**")
    for r in rows:
        if r.contender == LSIO and r.peak_rss is not None and not r.error:
            ok = r.peak_rss <= 1.2 * r.nbytes + 100 * MiB
            lines.append(f"Target: ({r.workload}) {r.where}, lsio peak RSS "
                         f"{r.peak_rss / MiB:.0f} MiB <= 1.2x {r.nbytes / MiB:.0f} MiB "
                         f"+ 100 MiB: **{'met' if ok else 'missed'}**")
    return lines


def report(rows: list[Row], sz: Sizes) -> str:
    lines = ["## Virtual datasets: NetCDF4 chunks by reference (`benchmarks/bench_virtual.py`)", "",
             f"NetCDF4 `temp` {sz.shape} in chunks of {sz.chunks} float32, "
             f"zlib 4 + shuffle; (1) one file, (N) {sz.files} files as one virtual dataset; "
             "warm.", ""]
    for key in dict.fromkeys((r.workload, r.where) for r in rows):
        group = [r for r in rows if (r.workload, r.where) == key]
        lines += [f"### ({key[0]}) whole variable, {key[1]}: ", "", *table(group), ""]
    lines += targets(rows)
    return "\n".join(lines)


@contextmanager
def servers_for(root: Path, enabled: bool) -> Iterator[dict[str, str]]:
    """Base URLs by location: nginx on loopback, and nginx behind the delaying proxy."""
    if not enabled:
        yield {}
        return
    from tests.servers import Nginx

    from .latency_proxy import LatencyProxy

    with Nginx(root) as nginx, LatencyProxy("127.0.0.1", nginx.port,
                                            delay=LATENCY) as proxy:
        yield {"nginx": nginx.url("").rstrip("/"),
               LATENT: f"http://127.0.0.1:{proxy.port}"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="lsio virtual-dataset benchmark")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-url", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        probe(args)
        return
    sz = sizes(args.quick, args.files)
    repeats = args.repeats or (1 if args.quick else 5)
    paths = data_files(args.data_dir, sz)
    rows: list[Row] = []
    with servers_for(paths[0].parent, not args.no_nginx) as servers:
        args.servers = servers
        for workload, where, files, base in cases(paths, servers):
            url_of = local_url if base is None else (lambda p, b=base: f"{b}/{p.name}")
            rows += run_case(workload, where, files, url_of, repeats, args)
    text = report(rows, sz)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"sizes": asdict(sz), "series": [
            {**asdict(r), "median": r.median} for r in rows]}, indent=1))
    if args.out:  # only this benchmark's section of the page
        replace_section(args.out, text, start_mark=START_MARK, end_mark=END_MARK)


if __name__ == "__main__":
    main()
