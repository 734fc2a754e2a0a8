"""Tuning presets per storage class, and picking one from what a path is.

The presets' numbers live here, each with where it comes from; every other tuning number is
in ``lsio/_defaults.py``.
A :class:`lsio.Reader` picks a preset from the first path of a call (a local block device,
rotational or not, from sysfs; a network filesystem from ``statfs``) unless the user names
one; any knob can be overridden on the reader.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["PRESETS", "Preset", "detect_preset"]

KiB, MiB = 1024, 1024 * 1024
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class Preset:
    """Planner and engine knobs for one kind of storage."""

    name: str
    """Preset name: ``nvme``, ``hdd``, ``network_fs``, ``http`` or ``cloud``."""

    max_gap: int | None
    """Largest gap (bytes) read through to merge two requests; ``None``: merge only
    overlapping requests (deduplication, no coalescing)."""

    max_read: int
    """Largest merged read, and the size big reads are split into."""

    queue_depth: int
    """Reads in flight per call."""

    source: str = ""
    """Where the numbers come from (rendered into the docs' presets table)."""

    gap_fixed: bool = False
    """The user set the gap (``max_gap=`` or ``coalesce=False``): backends keep it rather
    than advise another (an HTTP server without multipart ranges gets the cloud gap)."""

    read_fixed: bool = False
    """The user set ``max_read``: backends keep it rather than advise another (remote reads
    size their parts from what a request to the host costs)."""

    def with_(self, **knobs: Any) -> Preset:
        """A copy with some knobs replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in knobs.items() if v is not None})


PRESETS: dict[str, Preset] = {
    "nvme": Preset(
        "nvme", max_gap=4 * KiB, max_read=4 * MiB, queue_depth=64,
        source="Local SSD/NVMe. Gap: merging pays while reading the gap costs less than one "
        "more read; a merged read also occupies one queue slot where several reads ran in "
        "parallel, so the break-even is about bandwidth / (2 x IOPS at depth). Measured on this "
        "machine's virtio SSD, 100 000 sorted 4 KiB ranges 0-16 KiB apart, cold, O_DIRECT, "
        "against no coalescing: gap 0 1.07x, 4 KiB 1.09x, 8 KiB 0.87x, 16 KiB 0.52x "
        "(tensorstore merges only <= 255 extra bytes on files). Read size: kvikio's 4 MiB "
        "tasks keep a fast device busy with parallel reads. Depth: fio reaches this device's "
        "limits at iodepth 64."),
    "hdd": Preset(
        "hdd", max_gap=1 * MiB, max_read=16 * MiB, queue_depth=8,
        source="Spinning disk: a seek (~8 ms) costs ~1.2 MB of transfer at 150 MB/s, so "
        "merging through gaps up to 1 MiB pays (object_store's default gap); fewer reads in "
        "flight let the elevator order them; 16 MiB merged cap as zarr-python's get_ranges."),
    "network_fs": Preset(
        "network_fs", max_gap=256 * KiB, max_read=16 * MiB, queue_depth=32,
        source="NFS/Lustre/GPFS/CephFS...: round trips of ~0.2-1 ms dominate small reads; "
        "256 KiB gap (a quarter of object_store's, as such servers also read ahead) and "
        "zarr's 16 MiB cap."),
    "cloud": Preset(
        "cloud", max_gap=1 * MiB, max_read=8 * MiB, queue_depth=32,
        source="Object stores (S3, GCS, Azure) and HTTP servers without multipart ranges: each "
        "request costs a round trip (and money), so merge through object_store/obstore's 1 MiB "
        "gap. Parts of 8 MiB: the common S3 ranged-GET size (AWS advises 8-16 MB parts); 32 "
        "requests in flight (obstore/zarr run 10 ranges at once, kvikio 4 MiB tasks over a "
        "64-thread pool); a 512 MiB object on loopback nginx reads at 1.3 GB/s."),
    "http": Preset(
        "http", max_gap=4 * KiB, max_read=8 * MiB, queue_depth=32,
        source="Plain HTTP servers that answer multipart/byteranges (nginx, Apache, Caddy...): "
        "up to 128 ranges ride in one request, so reading gaps no longer saves round trips. "
        "Measured on loopback nginx, 20 000 random 4 KiB ranges of 2 GiB: gap 0 44 k/s, "
        "4 KiB 57 k/s, 64 KiB 29 k/s, 256 KiB 4.3 k/s, 1 MiB 5.1 k/s (no multipart: 10 k/s). "
        "A server found not to do multipart (probed once per host) gets the cloud gap."),
}

# statfs f_type magic numbers of network/cluster filesystems (linux/magic.h and the
# filesystems' sources).
_NETWORK_FS = {
    0x6969: "nfs",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x00C36400: "cephfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x19830326: "beegfs",
    0x65735546: "fuse",
    0x013111A8: "ibrix",
    0x6B414653: "afs",
}


def _fs_type(path: str) -> int | None:
    try:
        from ._uring import lib
    except ImportError:  # not built (not Linux): no way to tell, assume local
        return None
    value = int(lib.lsio_fs_type(os.fsencode(path)))
    return value if value >= 0 else None


def _rotational(path: str) -> bool | None:
    """Whether the block device holding ``path`` spins (sysfs ``queue/rotational``).

    Virtual disks (virtio, Xen) report 1 by default whatever backs them, so for them the
    flag says nothing and this returns ``None`` (``lsio calibrate`` measures instead)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    real = os.path.realpath(base)
    if "/virtio" in real or "/xen" in real or "/vbd-" in real:
        return None
    for candidate in (f"{base}/queue/rotational", f"{base}/../queue/rotational"):
        try:
            with open(candidate) as f:
                return f.read().strip() == "1"
        except OSError:
            continue
    return None


_cache: dict[str, str] = {}


def detect_preset(path: str) -> str:
    """Name of the preset for the storage ``path`` lives on (cached per directory)."""
    key = os.path.dirname(path)
    found = _cache.get(key)
    if found is None:
        found = _detect(path)
        if len(_cache) < 4096:
            _cache[key] = found
    return found


def _detect(path: str) -> str:
    m = _URL.match(path)
    if m and not path.startswith("file://"):
        return "http" if m.group(0).lower() in ("http://", "https://") else "cloud"
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    probe = probe or "."
    if _fs_type(probe) in _NETWORK_FS:
        return "network_fs"
    if _rotational(probe):
        return "hdd"
    return "nvme"
