"""``python -m lsio calibrate PATH``: measure a storage location and say how lsio would tune
reads from it.

Measures, with lsio itself and cold data (O_DIRECT where the filesystem allows it, and the
page cache dropped first when running as root): the latency of single 4 KiB reads, 4 KiB
random-read throughput at several queue depths, and 1 MiB random-read bandwidth. From those:

* ``queue_depth``: the smallest depth reaching 90% of the best 4 KiB throughput;
* ``max_gap``: the break-even gap, bandwidth / (2 x IOPS): reading through a smaller gap
  costs less than one more read, counting that a merged read also takes one queue slot
  where two reads ran in parallel (rounded down to a power of two);
* ``max_read``: enough bytes per read to cover ~8 reads' worth of latency at full bandwidth,
  between 4 MiB (kvikio's task size) and 64 MiB;
* the preset: ``network_fs`` for network filesystems, ``hdd`` when a read takes >= 2 ms
  (a seek), else ``nvme``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ._presets import PRESETS, Preset, detect_preset
from ._reader import Reader

__all__ = ["main"]

KiB, MiB = 1024, 1024 * 1024
SCRATCH_SIZE = 256 * MiB
"""Size of the scratch file written when PATH is a directory: large enough that random
reads rarely hit the same stripe twice, small enough to write in a second or two."""

DEPTHS = (1, 4, 16, 64, 128)
SMALL_READS = 2000
LATENCY_READS = 200
BIG_READS = 64


@dataclass(frozen=True, slots=True)
class Calibration:
    """What calibration measured and what it chose."""

    path: str
    cold: str
    latency_s: float
    iops: dict[int, float]
    bandwidth: float
    preset: Preset


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(x).bit_length() - 1) if x >= 1 else 0


async def _timed(reader: Reader, path: str, offsets: np.ndarray, size: int) -> float:
    requests = [(path, int(o), size) for o in offsets]
    _drop_caches()
    t = time.perf_counter()
    results = await reader.read_many(requests)
    elapsed = time.perf_counter() - t
    if results.nbytes != size * len(requests):
        raise OSError(f"calibration read {results.nbytes} bytes of {size * len(requests)}")
    return elapsed


async def _measure(path: str, size: int) -> tuple[float, dict[int, float], float]:
    rng = np.random.default_rng(7)
    blocks = size // (4 * KiB)

    def offsets(n: int, unit: int) -> np.ndarray:
        count = size // unit
        return rng.choice(count, size=min(n, count), replace=False) * unit

    lat_reader = Reader(queue_depth=1, direct=True, coalesce=False)
    latency = await _timed(lat_reader, path, offsets(LATENCY_READS, 4 * KiB), 4 * KiB)
    latency /= min(LATENCY_READS, blocks)
    iops = {}
    for qd in DEPTHS:
        r = Reader(queue_depth=qd, direct=True, coalesce=False)
        offs = offsets(SMALL_READS, 4 * KiB)
        iops[qd] = len(offs) / await _timed(r, path, offs, 4 * KiB)
    big = Reader(queue_depth=16, direct=True, coalesce=False, max_read=MiB)
    offs = offsets(BIG_READS, MiB)
    bandwidth = len(offs) * MiB / await _timed(big, path, offs, MiB)
    return latency, iops, bandwidth


def choose(path: str, latency: float, iops: dict[int, float], bandwidth: float) -> Preset:
    """The preset and knobs for the measured figures (pure)."""
    best = max(iops.values())
    depth = min(qd for qd, v in iops.items() if v >= 0.9 * best)
    kind = detect_preset(path)
    if kind not in ("network_fs", "cloud"):
        kind = "hdd" if latency >= 2e-3 else "nvme"
    gap = _pow2_floor(bandwidth / best / 2)
    read = min(64 * MiB, max(4 * MiB, _pow2_floor(bandwidth * latency * 8) * 2))
    return PRESETS[kind].with_(queue_depth=depth, max_gap=gap, max_read=read)


def calibrate(path: str) -> Calibration:
    """Measure ``path`` (a file of at least 64 MiB, or a directory to write a scratch file
    in) and return the tuning lsio would use there."""
    scratch = None
    if os.path.isdir(path):
        fd, scratch = tempfile.mkstemp(prefix=".lsio-calibrate-", dir=path)
        with os.fdopen(fd, "wb") as f:
            piece = os.urandom(16 * MiB)
            for _ in range(SCRATCH_SIZE // len(piece)):
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        target = scratch
    else:
        target = path
    try:
        size = os.path.getsize(target)
        if size < 64 * MiB:
            raise ValueError(f"lsio calibrate: {path!r} has {size} bytes; give a file of at "
                             "least 64 MiB or a directory to write a scratch file in")
        cold = "page cache dropped" if _drop_caches() else "O_DIRECT (not root: cache kept)"
        latency, iops, bandwidth = asyncio.run(_measure(target, size))
    finally:
        if scratch is not None:
            os.unlink(scratch)
    return Calibration(path, cold, latency, iops, bandwidth,
                       choose(path, latency, iops, bandwidth))


def main(path: str) -> int:
    c = calibrate(path)
    print(f"lsio calibrate {c.path} ({c.cold})")
    print(f"  4 KiB read latency, queue depth 1: {c.latency_s * 1e6:,.0f} us")
    for qd, v in c.iops.items():
        print(f"  4 KiB random reads, queue depth {qd:>3}: {v:,.0f} /s")
    print(f"  1 MiB random reads, queue depth 16: {c.bandwidth / 1e9:.2f} GB/s")
    p = c.preset
    print(f"\npreset: {p.name}  (detected from the path alone: {detect_preset(c.path)})")
    print(f"  queue_depth = {p.queue_depth}   (90% of the best 4 KiB throughput)")
    print(f"  max_gap     = {p.max_gap}   (bandwidth / (2 x IOPS) = "
          f"{c.bandwidth / max(c.iops.values()) / 2:,.0f} bytes, rounded down to a power of 2)")
    print(f"  max_read    = {p.max_read}")
    print(f"\nlsio.Reader(preset={p.name!r}, queue_depth={p.queue_depth}, "
          f"max_gap={p.max_gap}, max_read={p.max_read})")
    return 0
