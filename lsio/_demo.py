"""``python -m lsio demo``: write a sample dataset, read it with lsio and with a plain
Python loop, and a Zarr v3 array with zarr-python (its default codec pipeline, then lsio's)
and with ``lsio.zarr.read``; print times, throughput and the ratios: cold (the page cache
dropped before every run) when this process may, else warm; medians of alternated rounds,
every result kept and checked. ``python -m lsio bench``: the same for the caller's files.

This module runs the demo and prints its tables; the data and the measurement are in
``_demo_data.py``, the Zarr workload in ``_demo_zarr.py``."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Any

from tqdm.auto import tqdm

from ._demo_data import (
    FULL,
    QUICK,
    Sizes,
    Workload,
    WrongResult,
    demo_cache_state,
    demo_counted,
    demo_data_root,
    demo_nbytes,
    demo_plain_files,
    demo_plain_ranges,
    demo_size,
    demo_timed_rounds,
    demo_write,
)
from ._demo_zarr import (
    demo_stored,
    demo_write_zarr,
    demo_zarr_data,
    demo_zarr_matches,
    demo_zarr_missing,
    demo_zarr_root,
    demo_zarr_workloads,
)
from ._reader import Reader

__all__ = ["FULL", "QUICK", "WrongResult", "run_bench", "run_demo"]


def _write_all(root: str, data_root: str, sizes: Sizes
               ) -> tuple[list[str], str, Any, str | None]:
    """Write the sample files under ``root`` and, unless a matching one is kept, the Zarr
    array; print what the array is. Returns (small files, big file, the array's values or
    None without zarr, the array's path or None)."""
    no_zarr = demo_zarr_missing()
    zroot = demo_zarr_root(data_root, sizes)
    write_zarr = no_zarr is None and not demo_zarr_matches(zroot, sizes)
    total = (sizes.files * sizes.file_size + sizes.big_size
             + (sizes.zarr_n ** 2 * 4 if write_zarr else 0))
    with tqdm(total=total, unit="B", unit_scale=True, desc="writing sample data") as bar:
        paths, big = demo_write(root, sizes, bar)
        data = demo_zarr_data(sizes.zarr_n) if no_zarr is None else None
        if write_zarr:
            demo_write_zarr(zroot, sizes, data, bar)
    if no_zarr is not None:
        print(f"Zarr: skipped ({no_zarr})")
        return paths, big, None, None
    side, c = sizes.zarr_n, sizes.zarr_chunk
    files, stored = demo_stored(zroot)
    print(f"Zarr v3 array: {side}x{side} float32 in {c}x{c} chunks, blosc-zstd: {files} "
          f"chunk files, {stored / 1e6:.1f} MB, "
          f"{'written to' if write_zarr else 'reused from'} {zroot}")
    return paths, big, data, zroot


def _byte_workloads(reader: Reader, sizes: Sizes, paths: list[str], big: str
                    ) -> list[Workload]:
    """The whole small files, and random ranges of the big one: lsio against a plain loop."""
    rng = random.Random(42)
    n, size = sizes.ranges, sizes.range_size
    offsets = [rng.randrange(sizes.big_size // size) * size for _ in range(n)]
    return [
        Workload(f"{sizes.files} files x {demo_size(sizes.file_size)}, whole", len(paths), [
            ("lsio", lambda: reader.read_many_sync([(p,) for p in paths])),
            ("plain loop", lambda: demo_plain_files(paths))], demo_counted),
        Workload(f"{n} random {demo_size(size)} ranges of {demo_size(sizes.big_size)}", n, [
            ("lsio", lambda: reader.read_many_sync([(big, o, size) for o in offsets])),
            ("plain loop", lambda: demo_plain_ranges(big, offsets, size))], demo_counted),
    ]


def _print_tables(workloads: list[Workload], zarr_workloads: list[Workload],
                  medians: list[tuple[dict[str, float], int]], state: str) -> None:
    print(f"\n{'workload (' + state + ')':40} {'lsio/s':>12} "
          f"{'plain loop/s':>14} {'ratio':>7} {'lsio GB/s':>10}")
    for work, (t, nbytes) in zip(workloads, medians[:len(workloads)], strict=True):
        a, b = work.count / t["lsio"], work.count / t["plain loop"]
        print(f"{work.name:40} {a:12,.0f} {b:14,.0f} {a / b:6.2f}x "
              f"{nbytes / t['lsio'] / 1e9:10.2f}")
    if not zarr_workloads:
        return
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


def run_demo(rounds: int = 3, sizes: Sizes = FULL) -> int:
    reader = Reader()
    data_root = demo_data_root(sizes)
    root = tempfile.mkdtemp(prefix="lsio-demo-", dir=data_root)
    try:
        print(f"lsio demo: backend={reader.backend}, data in {root}")
        paths, big, data, zroot = _write_all(root, data_root, sizes)
        reader.read_many_sync([(paths[0],)] * 2)  # warm-up: the ring, the loop thread
        workloads = _byte_workloads(reader, sizes, paths, big)
        zarr_workloads = [] if zroot is None else demo_zarr_workloads(zroot, sizes, data)
        cold, how = demo_cache_state()
        print(f"{how}; medians of {rounds} alternated rounds, every result kept")
        medians = []
        for work in tqdm(workloads + zarr_workloads, desc="reading", unit="workload"):
            times, nbytes = demo_timed_rounds(work, rounds, cold)
            medians.append(({k: statistics.median(v) for k, v in times.items()}, nbytes))
        _print_tables(workloads, zarr_workloads, medians, "cold" if cold else "warm")
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
            plain = demo_plain_files(paths)
            times["plain loop"].append(time.perf_counter() - t)
            if demo_nbytes(plain) != nbytes:
                raise RuntimeError(f"byte counts differ: lsio {nbytes}, plain loop "
                                   f"{demo_nbytes(plain)}")
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
