"""``python -m lsio demo``: write a sample dataset, read it with lsio and with a plain
Python loop, print throughput and the ratio: cold (the page cache dropped before every run)
when this process may, else warm; medians of alternated rounds, every result kept."""

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


def _plain_files(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def _plain_ranges(path: str, offsets: list[int]) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, RANGE_SIZE, off) for off in offsets]
    finally:
        os.close(fd)


def _nbytes(result: Any) -> int:
    return sum(len(b) for b in result)


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


def _timed_rounds(contenders: list[tuple[str, Callable[[], Any]]], rounds: int, cold: bool
                  ) -> tuple[dict[str, list[float]], int]:
    """Seconds per run of each contender, alternated (round r starts with contender r),
    every result kept until all rounds are done (as users keep what they read: each run
    gets fresh memory); and the bytes each returned (the same for all, checked)."""
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
            nbytes[name] = _nbytes(result)
    if len(set(nbytes.values())) != 1:
        raise RuntimeError(f"byte counts differ: {nbytes}")
    return times, nbytes.popitem()[1]


def run_demo(rounds: int = 3) -> int:
    import statistics

    reader = Reader()
    root = tempfile.mkdtemp(prefix="lsio-demo-", dir=_data_root())
    try:
        print(f"lsio demo: backend={reader.backend}, data in {root}")
        total = SMALL_FILES * SMALL_SIZE + BIG_SIZE
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing sample data") as bar:
            paths, big = _write(root, bar)
        rng = random.Random(42)
        offsets = [rng.randrange(BIG_SIZE // RANGE_SIZE) * RANGE_SIZE for _ in range(RANGES)]
        reader.read_many_sync([(paths[0],)] * 2)  # warm-up: the ring, the loop thread
        workloads = [
            (f"{SMALL_FILES} files x 64 KiB, whole", len(paths), [
                ("lsio", lambda: reader.read_many_sync([(p,) for p in paths])),
                ("plain loop", lambda: _plain_files(paths))]),
            (f"{RANGES} random 4 KiB ranges of 512 MiB", RANGES, [
                ("lsio", lambda: reader.read_many_sync([(big, o, RANGE_SIZE) for o in offsets])),
                ("plain loop", lambda: _plain_ranges(big, offsets))]),
        ]
        cold, how = _cache_state()
        print(f"{how}; medians of {rounds} alternated rounds, every result kept")
        rows = []
        for name, count, contenders in tqdm(workloads, desc="reading", unit="workload"):
            times, nbytes = _timed_rounds(contenders, rounds, cold)
            t_lsio = statistics.median(times["lsio"])
            t_plain = statistics.median(times["plain loop"])
            rows.append((name, count / t_lsio, count / t_plain, nbytes / t_lsio))
        print(f"\n{'workload (' + ('cold' if cold else 'warm') + ')':40} {'lsio/s':>12} "
              f"{'plain loop/s':>14} {'ratio':>7} {'lsio GB/s':>10}")
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
