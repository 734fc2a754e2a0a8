"""Planner measurements without I/O: how fast lsio normalises and plans a request list, and
how many reads it plans for a benchmark workload with coalescing on and off.

Both call lsio's private stages exactly as ``lsio.Reader._run`` does (``normalize``, then
``plan`` with the preset's knobs, ``split_size=LINUX_MAX_RW``, ``own_destinations=False``).
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from typing import Any

import numpy as np

from .report import PlannedReads, PlanTiming
from .workloads import GiB, KiB, Workload

PLAN_REQUESTS = 1_000_000
PLAN_REQUESTS_QUICK = 100_000
PLAN_FILES = 100
PLAN_FILE_SIZE = 1 * GiB
PLAN_MAX_LENGTH = 64 * KiB
PLAN_PRESET = "nvme"
PLAN_REPEATS = 3
_SEED = 20_240_602


def plan_requests(n: int, n_files: int = PLAN_FILES,
                  seed: int = _SEED) -> list[tuple[str, int, int]]:
    """`n` random `(path, offset, length)` tuples (Python ints: the normaliser's fast path)."""
    rng = np.random.default_rng(seed)
    paths = [f"/lsio-plan-bench/f{i:03d}.bin" for i in range(n_files)]
    files = rng.integers(0, n_files, n)
    lengths = rng.integers(1, PLAN_MAX_LENGTH + 1, n)
    offsets = rng.integers(0, PLAN_FILE_SIZE - lengths + 1)
    return list(zip(map(paths.__getitem__, files.tolist()), offsets.tolist(),
                    lengths.tolist(), strict=True))


def _plan(reqs: Any, file_size: np.ndarray, max_gap: int | None, max_read: int) -> Any:
    """`lsio._plan.plan` called as `Reader._run` calls it for buffered reads."""
    from lsio._defaults import ARENA_ALIGN
    from lsio._plan import LINUX_MAX_RW, plan

    return plan(reqs.file, reqs.offset, reqs.length, file_size=file_size,
                file_align=np.ones(len(reqs.paths), np.int64), max_gap=max_gap,
                max_read=max_read, split_size=LINUX_MAX_RW, arena_align=ARENA_ALIGN,
                own_destinations=False)


def measure_planning(n_requests: int, *, n_files: int = PLAN_FILES,
                     repeats: int = PLAN_REPEATS) -> PlanTiming:
    """Wall time of `normalize` and of `plan` (each run `repeats` times), then their peak
    extra memory in one more pass under tracemalloc (which slows allocations, so untimed)."""
    from lsio._defaults import ARENA_ALIGN
    from lsio._presets import PRESETS
    from lsio._request import normalize

    knobs = PRESETS[PLAN_PRESET]
    items = plan_requests(n_requests, n_files)
    sizes = np.full(n_files, PLAN_FILE_SIZE, np.int64)

    norm_s: list[float] = []
    plan_s: list[float] = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        reqs = normalize(items)
        t1 = time.perf_counter()
        p = _plan(reqs, sizes, knobs.max_gap, knobs.max_read)
        t2 = time.perf_counter()
        norm_s.append(t1 - t0)
        plan_s.append(t2 - t1)
        del reqs, p
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reqs = normalize(items)
        norm_peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        p = _plan(reqs, sizes, knobs.max_gap, knobs.max_read)
        plan_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return PlanTiming(
        n_requests=n_requests, n_files=n_files, file_size=PLAN_FILE_SIZE,
        max_length=PLAN_MAX_LENGTH, preset=knobs.name, max_gap=knobs.max_gap,
        max_read=knobs.max_read, arena_align=ARENA_ALIGN, n_reads=p.nops,
        bytes_requested=int(p.req_length.sum()), bytes_read=p.bytes_read,
        normalize_s=norm_s, plan_s=plan_s, normalize_peak=norm_peak, plan_peak=plan_peak)


def planned_reads(wl: Workload) -> PlannedReads:
    """Reads lsio plans for `wl` with coalescing on and off, with the knobs a default
    `lsio.Reader()` picks for its data (preset detected from the first path). Buffered
    alignment; the benchmark's 4 KiB-aligned requests plan the same for O_DIRECT."""
    import lsio
    from lsio._request import normalize

    reqs = normalize([(r.path, r.offset, r.length) for r in wl.requests])
    sizes = np.array([os.stat(p).st_size for p in reqs.paths], np.int64)
    on = lsio.Reader(coalesce=True).tuning(reqs.paths[0])
    off = lsio.Reader(coalesce=False).tuning(reqs.paths[0])
    p_on = _plan(reqs, sizes, on.max_gap, on.max_read)
    p_off = _plan(reqs, sizes, off.max_gap, off.max_read)
    return PlannedReads(workload=wl.key, preset=on.name, max_gap=on.max_gap,
                        max_read=on.max_read, n_requests=len(reqs), reads_on=p_on.nops,
                        reads_off=p_off.nops, bytes_on=p_on.bytes_read,
                        bytes_off=p_off.bytes_read)
