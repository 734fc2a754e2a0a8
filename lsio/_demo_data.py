"""The demo's data and measurement (``python -m lsio demo`` and ``bench``, run by
``lsio/_demo.py``): how much it writes, the sample files, the plain-Python contenders, the
page-cache state and the timed, alternated rounds."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FULL", "QUICK", "Sizes", "Workload", "WrongResult", "demo_cache_state", "demo_counted",
    "demo_data_root", "demo_nbytes", "demo_plain_files", "demo_plain_ranges", "demo_size",
    "demo_timed_rounds", "demo_write"
]

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


def demo_size(n: int) -> str:
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


def demo_data_root(sizes: Sizes) -> str:
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


def demo_write(root: str, sizes: Sizes, bar: Any) -> tuple[list[str], str]:
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


def demo_plain_files(paths: list[str]) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def demo_plain_ranges(path: str, offsets: list[int], size: int) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, size, off) for off in offsets]
    finally:
        os.close(fd)


def demo_nbytes(result: Any) -> int:
    return sum(len(b) for b in result)


def demo_counted(_name: str, result: Any) -> int:
    """The check of the byte workloads: their sizes only (the bytes are random)."""
    return demo_nbytes(result)


def demo_cache_state() -> tuple[bool, str]:
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


def demo_timed_rounds(work: Workload, rounds: int, cold: bool
                      ) -> tuple[dict[str, list[float]], int]:
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
