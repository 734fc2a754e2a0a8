"""``python -m lsio demo``: write a sample dataset, read it with lsio and with a plain
Python loop, print throughput and the ratio."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from ._reader import Reader

__all__ = ["run_bench", "run_demo"]

SMALL_FILES = 4000
SMALL_SIZE = 64 * 1024
BIG_SIZE = 512 * 1024 * 1024
RANGES = 20_000
RANGE_SIZE = 4096


def _data_root() -> str:
    """A temporary directory on a real disk when /tmp is tmpfs (O_DIRECT needs one)."""
    for cand in (tempfile.gettempdir(), "/var/tmp"):
        try:
            if os.statvfs(cand).f_bavail * os.statvfs(cand).f_frsize > 2 * BIG_SIZE:
                return cand
        except OSError:
            continue
    return tempfile.gettempdir()


def _write(root: str, bar: Any) -> tuple[list[str], str]:
    block = os.urandom(SMALL_SIZE)
    paths = []
    for i in range(SMALL_FILES):
        path = os.path.join(root, f"chunk-{i:05d}.bin")
        with open(path, "wb") as f:
            f.write(block)
        paths.append(path)
        bar.update(SMALL_SIZE)
    big = os.path.join(root, "big.bin")
    piece = os.urandom(16 * 1024 * 1024)
    with open(big, "wb") as f:
        for _ in range(BIG_SIZE // len(piece)):
            f.write(piece)
            bar.update(len(piece))
    return paths, big


def _plain_files(paths: list[str]) -> int:
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total


def _plain_ranges(path: str, offsets: list[int]) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return sum(len(os.pread(fd, RANGE_SIZE, off)) for off in offsets)
    finally:
        os.close(fd)


def _best(fn: Callable[[], int], repeats: int = 3) -> tuple[float, int]:
    best, nbytes = float("inf"), 0
    for _ in range(repeats):
        t = time.perf_counter()
        nbytes = fn()
        best = min(best, time.perf_counter() - t)
    return best, nbytes


def run_demo() -> int:
    reader = Reader()
    root = tempfile.mkdtemp(prefix="lsio-demo-", dir=_data_root())
    try:
        print(f"lsio demo: backend={reader.backend}, data in {root}")
        total = SMALL_FILES * SMALL_SIZE + BIG_SIZE
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing sample data") as bar:
            paths, big = _write(root, bar)
        rng = random.Random(42)
        offsets = [rng.randrange(BIG_SIZE // RANGE_SIZE) * RANGE_SIZE for _ in range(RANGES)]
        workloads = [
            (f"{SMALL_FILES} files x 64 KiB, whole", len(paths),
             lambda: reader.read_many_sync([(p,) for p in paths]).nbytes,
             lambda: _plain_files(paths)),
            (f"{RANGES} random 4 KiB ranges of 512 MiB", RANGES,
             lambda: reader.read_many_sync([(big, o, RANGE_SIZE) for o in offsets]).nbytes,
             lambda: _plain_ranges(big, offsets)),
        ]
        print("(data was just written, so it is in the page cache: a warm read)")
        rows = []
        for name, count, with_lsio, plain in tqdm(workloads, desc="reading", unit="workload"):
            t_lsio, n_lsio = _best(with_lsio)
            t_plain, n_plain = _best(plain)
            if n_lsio != n_plain:
                raise RuntimeError(f"byte counts differ: lsio {n_lsio}, plain {n_plain}")
            rows.append((name, count / t_lsio, count / t_plain, n_lsio / t_lsio))
        print(f"\n{'workload':40} {'lsio/s':>12} {'plain loop/s':>14} {'ratio':>7} "
              f"{'lsio GB/s':>10}")
        for name, a, b, bw in rows:
            print(f"{name:40} {a:12,.0f} {b:14,.0f} {a / b:6.2f}x {bw / 1e9:10.2f}")
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
        t = time.perf_counter()
        nbytes = reader.read_many_sync([(p,) for p in paths]).nbytes
        times["lsio"].append(time.perf_counter() - t)
        if local:
            t = time.perf_counter()
            plain = _plain_files(paths)
            times["plain loop"].append(time.perf_counter() - t)
            if plain != nbytes:
                raise RuntimeError(f"byte counts differ: lsio {nbytes}, plain loop {plain}")
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
