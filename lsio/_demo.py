"""``python -m lsio demo``: write a sample dataset, read it with lsio and with a plain
Python loop, print throughput and the ratio: cold (the page cache dropped before every run)
when this process may, else warm; medians of alternated rounds, every result kept and
checked."""

from __future__ import annotations

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


FULL = Sizes(files=4000, file_size=64 * KiB, big_size=512 * MiB, ranges=20_000,
             range_size=4 * KiB)
"""``make demo``: a few seconds of reading each, and a page cache big enough to matter."""
QUICK = Sizes(files=40, file_size=64 * KiB, big_size=16 * MiB, ranges=200, range_size=4 * KiB)
"""``lsio demo --quick``: the same steps on little data, for the tests."""


class WrongResult(RuntimeError):
    """A contender returned something other than what was written."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One line of a table: contenders that should all return the same data."""

    name: str
    count: int
    """Items (files, ranges) each run reads."""
    contenders: list[tuple[str, Callable[[], Any]]]
    """(name, run): each run returns what it read."""
    check: Callable[[str, Any], int]
    """(contender's name, what it returned) -> the bytes it holds; raises WrongResult."""


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // KiB} KiB"


def _data_root(sizes: Sizes) -> str:
    """A temporary directory on a real disk when /tmp is tmpfs (O_DIRECT needs one)."""
    for cand in (tempfile.gettempdir(), "/var/tmp"):
        try:
            if os.statvfs(cand).f_bavail * os.statvfs(cand).f_frsize > 2 * sizes.big_size:
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


def run_demo(rounds: int = 3, sizes: Sizes = FULL) -> int:
    import statistics

    reader = Reader()
    root = tempfile.mkdtemp(prefix="lsio-demo-", dir=_data_root(sizes))
    try:
        print(f"lsio demo: backend={reader.backend}, data in {root}")
        total = sizes.files * sizes.file_size + sizes.big_size
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing sample data") as bar:
            paths, big = _write(root, sizes, bar)
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
        cold, how = _cache_state()
        print(f"{how}; medians of {rounds} alternated rounds, every result kept")
        rows = []
        for work in tqdm(workloads, desc="reading", unit="workload"):
            times, nbytes = _timed_rounds(work, rounds, cold)
            t_lsio = statistics.median(times["lsio"])
            t_plain = statistics.median(times["plain loop"])
            rows.append((work.name, work.count / t_lsio, work.count / t_plain, nbytes / t_lsio))
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
