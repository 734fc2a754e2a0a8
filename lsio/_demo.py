"""``python -m lsio demo``: write a sample dataset, read it with lsio and with a plain
Python loop, and a Zarr v3 array with zarr-python (its default codec pipeline, then lsio's)
and with ``lsio.zarr.read``; print times, throughput and the ratios: cold (the page cache
dropped before every run) when this process may, else warm; medians of alternated rounds,
every result kept and checked."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ._reader import Reader

__all__ = ["FULL", "QUICK", "WrongResult", "run_bench", "run_demo"]

KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much data the demo writes and reads."""

    files: int
    """Small files, each read whole."""
    file_size: int
    """Bytes in each small file."""
    big_size: int
    """Bytes in the file the ranges are read from (a multiple of 16 MiB)."""
    ranges: int
    """Random ranges read from the big file."""
    range_size: int
    """Bytes in each range (a multiple of 4 KiB, the ranges are aligned to it)."""
    zarr_n: int
    """The Zarr array is zarr_n x zarr_n float32 (a multiple of 4096 / 8 = 512)."""
    zarr_chunk: int
    """... in chunks of zarr_chunk x zarr_chunk."""


FULL = Sizes(files=4000, file_size=64 * KiB, big_size=512 * MiB, ranges=20_000,
             range_size=4 * KiB, zarr_n=4096, zarr_chunk=256)
"""``make demo``: a few seconds of reading each, and a page cache big enough to matter. The
Zarr array is 64 MiB in 256 chunks of 256 KiB (about 65 KiB compressed), a common chunk
size; zarr-python reads it cold in about half a second on a 2-core VM."""
QUICK = Sizes(files=40, file_size=64 * KiB, big_size=16 * MiB, ranges=200, range_size=4 * KiB,
              zarr_n=512, zarr_chunk=128)
"""``lsio demo --quick``: the same steps on little data, for the tests."""


class WrongResult(RuntimeError):
    """A contender returned something other than what was written."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One line of a table: contenders that should all return the same data."""

    name: str
    count: int
    """Items (files, ranges, chunks) each run reads."""
    contenders: list[tuple[str, Callable[[], Any]]]
    """(name, run): each run returns what it read."""
    check: Callable[[str, Any], int]
    """(contender's name, what it returned) -> the bytes it holds; raises WrongResult."""


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // KiB} KiB"


def _in_memory(path: str) -> bool:
    """Whether ``path`` is on tmpfs or ramfs (the longest mount point holding it): dropping
    the page cache does not make such data cold."""
    best, kind = "", ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    mount = fields[1].replace("\\040", " ")
                    inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                    if inside and len(mount) > len(best):
                        best, kind = mount, fields[2]
    except OSError:
        return False
    return kind in ("tmpfs", "ramfs")


def _data_root(sizes: Sizes) -> str:
    """A temporary directory on a real disk, with room (cold reads and O_DIRECT need one):
    /tmp unless it is tmpfs, else /var/tmp."""
    for cand in (tempfile.gettempdir(), "/var/tmp"):
        try:
            st = os.statvfs(cand)
            if st.f_bavail * st.f_frsize > 2 * sizes.big_size and not _in_memory(
                    os.path.realpath(cand)):
                return cand
        except OSError:
            continue
    return tempfile.gettempdir()


def _write(root: str, sizes: Sizes, bar: Any) -> tuple[list[str], str]:
    block = os.urandom(sizes.file_size)
    paths = []
    for i in range(sizes.files):
        path = os.path.join(root, f"chunk-{i:05d}.bin")
        with open(path, "wb") as f:
            f.write(block)
        paths.append(path)
        bar.update(sizes.file_size)
    big = os.path.join(root, "big.bin")
    piece = os.urandom(16 * MiB)
    with open(big, "wb") as f:
        for _ in range(sizes.big_size // len(piece)):
            f.write(piece)
            bar.update(len(piece))
    return paths, big


def _plain_files(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def _plain_ranges(path: str, offsets: list[int], size: int) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, size, off) for off in offsets]
    finally:
        os.close(fd)


def _nbytes(result: Any) -> int:
    return sum(len(b) for b in result)


def _counted(_name: str, result: Any) -> int:
    """The check of the byte workloads: their sizes only (the bytes are random)."""
    return _nbytes(result)


def _cache_state() -> tuple[bool, str]:
    """Whether each run starts cold (the page cache dropped first), and why (not)."""
    if os.geteuid() != 0:
        return False, "warm: dropping the page cache needs root (run `sudo make demo` for cold)"
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        return False, "warm: /proc/sys/vm/drop_caches is read-only here (a container?)"
    return True, "cold: the page cache is dropped before every run"


def _drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def _timed_rounds(work: Workload, rounds: int, cold: bool) -> tuple[dict[str, list[float]], int]:
    """Seconds per run of each contender, alternated (round r starts with contender r),
    every result checked and kept until all rounds are done (as users keep what they read:
    each run gets fresh memory); and the bytes each returned (the same for all, checked)."""
    contenders = work.contenders
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    nbytes: dict[str, int] = {}
    kept = []
    for r in range(rounds):
        for k in range(len(contenders)):
            name, fn = contenders[(r + k) % len(contenders)]
            if cold:
                _drop_caches()
            t = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - t)
            kept.append(result)
            nbytes[name] = work.check(name, result)
    if len(set(nbytes.values())) != 1:
        raise WrongResult(f"{work.name}: byte counts differ: {nbytes}")
    return times, nbytes.popitem()[1]


# -- the Zarr workload -------------------------------------------------------------------------

ZARR_DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
"""zarr-python's own codec pipeline (the default of its ``codec_pipeline.path``)."""
ZARR_LSIO = "lsio.zarr.LsioCodecPipeline"
ZARR_MARK = {"lsio_demo": {"data": 1, "complete": True}}
"""The array's attributes, set after its last chunk: bump ``data`` when :func:`_zarr_data`
changes, and the arrays the demo kept are written again."""
ZARR_SUB = ((1000, 3000), (500, 3600))
"""The sub-selection of the 4096 x 4096 array (scaled with the array): chunks cut on all sides."""


def _zarr_missing() -> str | None:
    """Why the Zarr workload cannot run here, or None when it can."""
    try:
        import zarr  # noqa: F401

        from . import zarr as _  # noqa: F401
    except ImportError as exc:
        return f"{exc}; `make setup` installs zarr-python, or pip install 'lsio[zarr]'"
    return None


def _zarr_data(n: int) -> Any:
    """The array's values: 8 x 8 blocks of a ramp plus noise from an integer hash of the
    index, in steps of 1/16: exact in float32, so the same on every machine and numpy
    version; blosc-zstd stores them in about a quarter (measured data often compresses so)."""
    import numpy as np

    k = np.arange(n * n, dtype=np.uint64).reshape(n, n)
    for mul in (0x9E3779B97F4A7C15, 0xFF51AFD7ED558CCD):  # splitmix64 / murmur3 mixing
        k *= np.uint64(mul)
        k ^= k >> np.uint64(33)
    ramp = np.arange(n, dtype=np.float32) // 8
    return (ramp[:, None] + ramp[None, :]) + (k >> np.uint64(58)).astype(np.float32) / 16


def _zarr_kwargs(sizes: Sizes) -> dict[str, Any]:
    import zarr.codecs

    n, c = sizes.zarr_n, sizes.zarr_chunk
    return dict(shape=(n, n), dtype="float32", chunks=(c, c), fill_value=0.0,
                compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"))


def _zarr_root(data_root: str, sizes: Sizes) -> str:
    n, c = sizes.zarr_n, sizes.zarr_chunk
    return os.path.join(data_root, "lsio-demo-zarr", f"{n}x{n}_c{c}.zarr")


def _zarr_matches(root: str, sizes: Sizes) -> bool:
    """The array at ``root`` was written to the end, with the metadata (and data version)
    the demo would write now."""
    import zarr

    try:
        with open(os.path.join(root, "zarr.json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    attributes = doc.pop("attributes", None)
    want = zarr.create_array(store=zarr.storage.MemoryStore(), **_zarr_kwargs(sizes))
    expected = json.loads(json.dumps(want.metadata.to_dict()))
    expected.pop("attributes", None)
    return bool(doc == expected and attributes == ZARR_MARK)


def _write_zarr(root: str, sizes: Sizes, data: Any, bar: Any) -> None:
    import zarr

    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    arr = zarr.create_array(store=root, **_zarr_kwargs(sizes))
    band = max(sizes.zarr_chunk, 1024 // sizes.zarr_chunk * sizes.zarr_chunk)  # whole chunks
    for r0 in range(0, sizes.zarr_n, band):
        arr[r0:r0 + band] = data[r0:r0 + band]
        bar.update(data[r0:r0 + band].nbytes)
    arr.attrs.update(ZARR_MARK)  # last: marks the array complete


def _stored(root: str) -> tuple[int, int]:
    """(chunk files, bytes) under ``root``, metadata left out."""
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(root)
             for f in names if f != "zarr.json"]
    return len(sizes), sum(sizes)


def _equal_to(expected: Any, root: str) -> Callable[[str, Any], int]:
    """The check of a Zarr workload: every value equals the one written to ``root``."""
    import numpy as np

    def check(name: str, got: Any) -> int:
        got = np.asarray(got)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            raise WrongResult(f"{name} returned {got.dtype} {got.shape}, not "
                              f"{expected.dtype} {expected.shape}")
        if not np.array_equal(got, expected):
            bad = np.argwhere(got != expected)
            raise WrongResult(f"{name}: {len(bad):,} of {got.size:,} values differ from those "
                              f"written to {root}, the first at "
                              f"{tuple(int(i) for i in bad[0])}")
        return int(got.nbytes)
    return check


def _zarr_contenders(default: Any, piped: Any, root: str, sel: Any
                     ) -> list[tuple[str, Callable[[], Any]]]:
    from .zarr import read_sync

    return [("zarr", lambda: default[sel]), ("lsio pipeline", lambda: piped[sel]),
            ("lsio.zarr.read", lambda: read_sync(root, sel))]


def _zarr_workloads(root: str, sizes: Sizes, data: Any) -> list[Workload]:
    """The whole array and a sub-selection, each read by zarr-python with its default codec
    pipeline, by zarr-python with lsio's, and by lsio's fast path. zarr picks the pipeline
    when it opens an array, so each array is opened (once, untimed) under its own config."""
    import zarr

    from .zarr import read_sync

    arrays = []
    for path in (ZARR_DEFAULT, ZARR_LSIO):
        with zarr.config.set({"codec_pipeline.path": path}):
            arr = zarr.open_array(root, mode="r")
        got = type(arr.async_array.codec_pipeline)
        if f"{got.__module__}.{got.__qualname__}" != path:
            raise WrongResult(f"zarr opened {root} with {got.__module__}.{got.__qualname__}, "
                              f"not {path}")
        arrays.append(arr)
    default, piped = arrays
    n, c = sizes.zarr_n, sizes.zarr_chunk
    scale = n / 4096
    sub = tuple(slice(int(a * scale), int(b * scale)) for a, b in ZARR_SUB)
    whole = (slice(0, n), slice(0, n))
    out = []
    for sel, name in ((whole, "whole array"),
                      (sub, "[" + ", ".join(f"{s.start}:{s.stop}" for s in sub) + "]")):
        chunks = math.prod((s.stop - 1) // c - s.start // c + 1 for s in sel)
        out.append(Workload(f"{name} ({chunks} chunks)", chunks,
                            _zarr_contenders(default, piped, root, sel),
                            _equal_to(data[sel], root)))
    for arr in arrays:  # warm-up: zarr's loop thread, lsio's ring and pinned workers
        arr[:1, :1]
    read_sync(root, (slice(0, 1), slice(0, 1)))
    return out


def run_demo(rounds: int = 3, sizes: Sizes = FULL) -> int:
    import statistics

    reader = Reader()
    data_root = _data_root(sizes)
    root = tempfile.mkdtemp(prefix="lsio-demo-", dir=data_root)
    try:
        print(f"lsio demo: backend={reader.backend}, data in {root}")
        no_zarr = _zarr_missing()
        zroot = _zarr_root(data_root, sizes)
        write_zarr = no_zarr is None and not _zarr_matches(zroot, sizes)
        total = (sizes.files * sizes.file_size + sizes.big_size
                 + (sizes.zarr_n ** 2 * 4 if write_zarr else 0))
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing sample data") as bar:
            paths, big = _write(root, sizes, bar)
            data = _zarr_data(sizes.zarr_n) if no_zarr is None else None
            if write_zarr:
                _write_zarr(zroot, sizes, data, bar)
        if no_zarr is None:
            side, c = sizes.zarr_n, sizes.zarr_chunk
            files, stored = _stored(zroot)
            print(f"Zarr v3 array: {side}x{side} float32 in {c}x{c} chunks, blosc-zstd: {files} "
                  f"chunk files, {stored / 1e6:.1f} MB, "
                  f"{'written to' if write_zarr else 'reused from'} {zroot}")
        else:
            print(f"Zarr: skipped ({no_zarr})")
        rng = random.Random(42)
        n, size = sizes.ranges, sizes.range_size
        offsets = [rng.randrange(sizes.big_size // size) * size for _ in range(n)]
        reader.read_many_sync([(paths[0],)] * 2)  # warm-up: the ring, the loop thread
        workloads = [
            Workload(f"{sizes.files} files x {_size(sizes.file_size)}, whole", len(paths), [
                ("lsio", lambda: reader.read_many_sync([(p,) for p in paths])),
                ("plain loop", lambda: _plain_files(paths))], _counted),
            Workload(f"{n} random {_size(size)} ranges of {_size(sizes.big_size)}", n, [
                ("lsio", lambda: reader.read_many_sync([(big, o, size) for o in offsets])),
                ("plain loop", lambda: _plain_ranges(big, offsets, size))], _counted),
        ]
        zarr_workloads = [] if data is None else _zarr_workloads(zroot, sizes, data)
        cold, how = _cache_state()
        print(f"{how}; medians of {rounds} alternated rounds, every result kept")
        medians = []
        for work in tqdm(workloads + zarr_workloads, desc="reading", unit="workload"):
            times, nbytes = _timed_rounds(work, rounds, cold)
            medians.append(({k: statistics.median(v) for k, v in times.items()}, nbytes))
        state = "cold" if cold else "warm"
        print(f"\n{'workload (' + state + ')':40} {'lsio/s':>12} "
              f"{'plain loop/s':>14} {'ratio':>7} {'lsio GB/s':>10}")
        for work, (t, nbytes) in zip(workloads, medians[:len(workloads)], strict=True):
            a, b = work.count / t["lsio"], work.count / t["plain loop"]
            print(f"{work.name:40} {a:12,.0f} {b:14,.0f} {a / b:6.2f}x "
                  f"{nbytes / t['lsio'] / 1e9:10.2f}")
        if zarr_workloads:
            print(f"\n{'Zarr workload (' + state + '), ms':34} {'zarr':>7} {'lsio pipeline':>13} "
                  f"{'ratio':>7} {'lsio.zarr.read':>14} {'ratio':>7} {'lsio GB/s':>10}")
            for work, (t, nbytes) in zip(zarr_workloads, medians[len(workloads):], strict=True):
                z, p, f = t["zarr"], t["lsio pipeline"], t["lsio.zarr.read"]
                print(f"{work.name:34} {z * 1e3:7.1f} {p * 1e3:13.1f} {z / p:6.2f}x "
                      f"{f * 1e3:14.1f} {z / f:6.2f}x {nbytes / f / 1e9:10.2f}")
            print("zarr: zarr.open_array(path)[sel] on zarr's default codec pipeline; lsio "
                  "pipeline: the same,\nthe array opened after lsio.zarr.enable(); "
                  "lsio.zarr.read(path, sel): lsio's fast path; ratio:\nzarr's time over "
                  "the one on its left; lsio GB/s: the array bytes lsio.zarr.read returns "
                  "per second")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _sources(items: list[str]) -> list[str]:
    """Files named, files under directories named (sorted), and URLs, in order."""
    from ._url import is_url

    out: list[str] = []
    for item in items:
        if is_url(item) or not os.path.isdir(item):
            out.append(item)
            continue
        for dirpath, _, names in sorted(os.walk(item)):
            out.extend(os.path.join(dirpath, n) for n in sorted(names))
    return out


def run_bench(items: list[str], repeats: int) -> int:
    """``python -m lsio bench SOURCE...``: read every file (or URL) whole with lsio and, for
    local files, with a plain Python loop, alternating; print medians and the ratio."""
    import statistics

    from ._url import is_url

    paths = _sources(items)
    if not paths:
        raise ValueError("lsio bench: no files found in " + ", ".join(items))
    reader = Reader()
    local = not any(is_url(p) for p in paths)
    print(f"lsio bench: {len(paths)} files or objects, backend={reader.backend}, "
          f"{repeats} alternated rounds (the first also warms the cache)")
    times: dict[str, list[float]] = {"lsio": [], "plain loop": []}
    nbytes = 0
    for _ in tqdm(range(repeats), desc="rounds", unit="round"):
        # each round's results are kept until it ends, as users keep what they read
        t = time.perf_counter()
        got = reader.read_many_sync([(p,) for p in paths])
        times["lsio"].append(time.perf_counter() - t)
        nbytes = got.nbytes
        if local:
            t = time.perf_counter()
            plain = _plain_files(paths)
            times["plain loop"].append(time.perf_counter() - t)
            if _nbytes(plain) != nbytes:
                raise RuntimeError(f"byte counts differ: lsio {nbytes}, plain loop "
                                   f"{_nbytes(plain)}")
        del got
    print(f"\n{'reader':12} {'median s':>10} {'files/s':>12} {'MB/s':>10} {'vs plain':>9}")
    base = statistics.median(times["plain loop"]) if times["plain loop"] else None
    for name, runs in times.items():
        if not runs:
            continue
        med = statistics.median(runs)
        ratio = f"{base / med:8.2f}x" if base else "       -"
        print(f"{name:12} {med:10.4f} {len(paths) / med:12,.0f} {nbytes / med / 1e6:10.1f} "
              f"{ratio}")
    return 0
