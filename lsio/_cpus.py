"""How many CPUs this process may use: what lsio sizes its pools and per-core fan-outs by.

The host's count (``os.cpu_count``) is the wrong number in a container or under ``taskset``:
a process limited to one CPU that starts a thread per host core only makes them queue. The
usable count is the smaller of the affinity mask (``sched_getaffinity``) and the cgroup's
CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) rounded
up, and at least 1. Computed once per process (a forked child computes it again: it may
have been moved to another cgroup or given another mask).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import _fork

__all__ = ["affinity", "usable_cpus", "usable_set"]  # quota_cpus, usable: table-tested

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_cached: int | None = None


def affinity() -> list[int]:
    """The CPUs this process may run on, in order (all of them where there is no mask)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover - not Linux


def quota_cpus(cgroup: str, files: dict[str, str]) -> float | None:
    """The CPU quota, in CPUs, of the cgroup described by ``cgroup`` (the text of
    ``/proc/self/cgroup``) and ``files`` (cgroup file path relative to the cgroup mount ->
    its text; missing files absent); ``None`` when there is no quota.

    Pure: the caller reads the files (:func:`_cgroup_files`). Each cgroup on the way from
    the process's own to the root may set a quota; the smallest counts.
    """
    quotas = [q for d in _dirs(cgroup) for q in (_v2(files.get(f"{d}cpu.max")),
                                                  _v1(files, d)) if q is not None]
    return min(quotas) if quotas else None


def _dirs(cgroup: str) -> list[str]:
    """Directories (relative to the mount, with a trailing ``/``) from the process's cgroup
    up to the root, for the v2 hierarchy and the v1 ``cpu`` controller."""
    out: list[str] = []
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            prefix = ""  # v2: one hierarchy, mounted at the root
        elif "cpu" in controllers.split(","):
            prefix = controllers + "/"  # v1: e.g. cpu,cpuacct/
        else:
            continue
        rel = path.strip().strip("/")
        steps = rel.split("/") if rel else []
        for k in range(len(steps), -1, -1):
            d = "/".join(steps[:k])
            out.append(f"{prefix}{d}/" if d else prefix)
    return out


def _v2(text: str | None) -> float | None:
    """``cpu.max``: ``"max 100000"`` (no quota) or ``"<quota> <period>"``."""
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1(files: dict[str, str], d: str) -> float | None:
    """``cpu.cfs_quota_us`` (-1: no quota) over ``cpu.cfs_period_us``."""
    try:
        quota = int(files.get(f"{d}cpu.cfs_quota_us", "-1").strip())
        period = int(files.get(f"{d}cpu.cfs_period_us", "0").strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable(cpus: int, quota: float | None) -> int:
    """CPUs usable from an affinity count and a quota in CPUs (rounded up), at least 1."""
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _cgroup_files(cgroup: str) -> dict[str, str]:
    """The cgroup files :func:`quota_cpus` may look at, as they are now."""
    files: dict[str, str] = {}
    for d in _dirs(cgroup):
        for name in ("cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"):
            try:
                files[d + name] = (_CGROUP_ROOT / (d + name)).read_text()
            except (OSError, ValueError):
                continue
    return files


def usable_cpus() -> int:
    """How many CPUs this process may use: affinity and cgroup CPU quota, at least 1."""
    global _cached
    if _cached is None:
        try:
            cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            cgroup = ""
        _cached = usable(len(affinity()), quota_cpus(cgroup, _cgroup_files(cgroup)))
    return _cached


def usable_set() -> list[int]:
    """The first :func:`usable_cpus` CPUs of the affinity mask: where lsio pins one thread
    per usable CPU."""
    return affinity()[:usable_cpus()]


@_fork.forget_in_child
def _forget() -> None:
    global _cached
    _cached = None
