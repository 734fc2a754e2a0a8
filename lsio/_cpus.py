"""How many CPUs this process may use: what lsio sizes its pools and per-core fan-outs by.

The host's count (``os.cpu_count``) is the wrong number in a container or under ``taskset``:
a process limited to one CPU that starts a thread per host core only makes them queue. The
usable count is the smaller of the affinity mask (``sched_getaffinity``) and the cgroup's
CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) rounded
up, and at least 1. Computed once per process (a forked child computes it again: it may
have been moved to another cgroup or given another mask).

The pipeline workers (one thread per CPU, pinned) take this process's *share* of those CPUs
(:func:`worker_cpus`): several processes on one host each starting one worker per usable CPU
(a Dask cluster of worker processes) only make them queue. The share is ``$LSIO_WORKERS``
when set; else, in a Dask ``distributed`` worker process, the threads Dask gives the
process (its ``nthreads``: Dask's own share of the host's CPUs, ``CPU_COUNT // n_workers``
by default, for ``LocalCluster`` and ``dask worker --nworkers`` alike) times
``WORKERS_PER_DASK_THREAD``; else every usable CPU. A process with less than its whole
mask leaves its workers unpinned: processes cannot pick disjoint CPUs without talking to
each other, and two pinned to the same CPU would take turns on it.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from . import _fork
from ._defaults import WORKERS_PER_DASK_THREAD

__all__ = ["affinity", "usable_cpus", "worker_cpus"]  # quota_cpus, usable, share: tested

WORKERS_ENV = "LSIO_WORKERS"
"""The environment variable that sets how many pipeline workers a process runs."""

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


def share(usable: int, setting: str | None, dask_threads: int | None) -> int:
    """This process's pipeline workers, from its usable CPUs, ``$LSIO_WORKERS`` (``setting``,
    as given) and the threads of the Dask workers it runs (None: none): at least 1, at most
    ``usable``. A setting that is no positive integer raises ValueError."""
    if setting is not None and setting.strip():
        try:
            wanted = int(setting)
        except ValueError:
            wanted = 0
        if wanted < 1:
            raise ValueError(f"lsio: ${WORKERS_ENV} must be a positive integer (pipeline "
                             f"workers per process), got {setting!r}")
        return min(usable, wanted)
    if dask_threads is not None:
        return max(1, min(usable, dask_threads * WORKERS_PER_DASK_THREAD))
    return usable


def dask_threads() -> int | None:
    """The threads of the Dask ``distributed`` workers running in this process (its
    ``nthreads``, summed: ``LocalCluster(processes=False)`` runs several in one), or None
    outside one. Looked up only where ``distributed`` is imported already."""
    module = sys.modules.get("distributed.worker")
    workers = list(getattr(getattr(module, "Worker", None), "_instances", ()) or ())
    threads = [getattr(getattr(w, "state", None), "nthreads", None) for w in workers]
    counts = [t for t in threads if isinstance(t, int) and t > 0]
    return sum(counts) if counts else None


def worker_cpus() -> tuple[int, list[int] | None]:
    """How many pipeline workers this process runs (:func:`share`), and the CPUs to pin
    them to, one each: the usable set when the process has all of it, else None (unpinned:
    see the module's docstring)."""
    cpus = usable_set()
    n = share(len(cpus), os.environ.get(WORKERS_ENV), dask_threads())
    return n, (cpus if n == len(cpus) else None)


@_fork.forget_in_child
def _forget() -> None:
    global _cached
    _cached = None
