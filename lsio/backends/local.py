"""The io_uring backend: statx, openat, read and close all go through the loop's ring.

Its policy lives here, next to the ring: whether a call reads with O_DIRECT (``direct=None``
samples the page cache), what alignment that needs, and when page-cache reads are spread
over one ring per core.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cpus import usable_cpus
from .._defaults import (
    ARENA_ALIGN,
    CACHE_SAMPLE,
    CACHED_FRACTION,
    FALLBACK_ALIGN,
    PARALLEL_MIN_BYTES,
    PARALLEL_MIN_READS,
    SMALL_CALL_BYTES,
    STAT_DEPTH,
)
from .._memory import is_fresh
from .._plan import Plan, resolve_ranges
from .._presets import Preset
from .._request import Requests
from .._ring import DIRECT_OFF, DIRECT_ON, ReadOptions, cached_share, ffi, ring_for_loop
from .._types import StatResult
from ._base import Layout, ReadResult, RunOptions
from ._local_small import LocalSmallPath

__all__ = ["UringBackend", "local_layout", "looks_cached", "special_detail", "with_details"]


def _addresses(plan: Plan, buffers: list[Any]) -> tuple[npt.NDArray[np.uint64], list[Any]]:
    """Destination address of every read; the cffi buffer handles keep the memory pinned."""
    handles = [ffi.from_buffer(buf, require_writable=True) for buf in buffers]
    bases = np.fromiter((int(ffi.cast("uintptr_t", h)) for h in handles), np.uint64,
                        len(handles))
    if not len(bases):
        return np.zeros(0, np.uint64), handles
    return bases[plan.op_base] + plan.op_buf.astype(np.uint64), handles


def special_detail(path: str) -> str:
    """Why a file whose stat said EINVAL is refused: its kind (FIFOs, sockets and devices
    have no size to plan with, and a FIFO would block a read)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    kinds = ((stat_mod.S_ISFIFO, "a FIFO"), (stat_mod.S_ISCHR, "a character device"),
             (stat_mod.S_ISBLK, "a block device"), (stat_mod.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{kind}; lsio reads regular files only"


def with_details(stat: StatResult, paths: list[str]) -> StatResult:
    """``stat`` with the refusal of each special file explained."""
    odd = np.flatnonzero(stat.err == errno.EINVAL)
    if not len(odd):
        return stat
    return replace(stat, detail={int(f): special_detail(paths[int(f)]) for f in odd})


def _call_bytes(reqs: Requests, size: npt.NDArray[np.int64]) -> int:
    """Bytes a call returns, from the request arrays and the file sizes."""
    start, end = resolve_ranges(reqs.file, reqs.offset, reqs.length, size)
    return int((end - start).sum())


def looks_cached(paths: list[str]) -> bool:
    """Whether the files of a call are (mostly) in the page cache, from a small sample."""
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(CACHE_SAMPLE, len(paths))
                                   ).astype(int).tolist()))
    shares = [cached_share(paths[i]) for i in picks]
    known = sorted(x for x in shares if x >= 0)
    if not known:
        return False
    # the median by hand: np.median imports numpy.ma (~20 ms on the loop, first call only)
    mid = len(known) // 2
    median = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
    return median >= CACHED_FRACTION


def _direct_modes(align: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    """O_DIRECT for each file whose filesystem allows it with an alignment that tiles the
    read-size cap: 0 means the filesystem refuses O_DIRECT (tmpfs), and odd alignments (not
    a power of two dividing 4096) stay buffered."""
    ok = (align != 0) & ((align < 0) | ((align <= 4096) & ((4096 % np.maximum(align, 1)) == 0)))
    return np.where(ok, DIRECT_ON, DIRECT_OFF).astype(np.int32)


def local_layout(stat: StatResult, tune: Preset, direct: npt.NDArray[np.int32], *,
                 parallel: bool = False) -> Layout:
    """The layout of local files read with the ``direct`` mode of each."""
    align = np.where(direct != DIRECT_OFF, np.where(stat.align > 0, stat.align,
                                                    FALLBACK_ALIGN), 1).astype(np.int64)
    return Layout(file_direct=direct, file_align=align,
                  arena_align=FALLBACK_ALIGN if direct.any() else ARENA_ALIGN,
                  max_gap=tune.max_gap, check_eof=True, parallel=parallel)


class UringBackend(LocalSmallPath):
    name = "uring"

    def close(self) -> None:
        """Nothing to release: this backend holds nothing of its own. The ring it reads
        through belongs to the event loop (shared by every reader on it, released with the
        loop or by ``Ring.close``), and the worker rings of parallel page-cache reads are
        process-wide (``_ringpool.close``)."""

    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool,
                   keep_going: bool = False) -> StatResult:
        ring = ring_for_loop(asyncio.get_running_loop())
        stat = await ring.stat(reqs.paths, queue_depth=max(tune.queue_depth, STAT_DEPTH))
        return with_details(stat, reqs.paths)

    async def layout(self, reqs: Requests, stat: StatResult, tune: Preset, *,
                     direct: bool | None, own_destinations: bool) -> Layout:
        """``direct=None``: calls returning under ``SMALL_CALL_BYTES`` read buffered without
        sampling; others sample the page cache and read cached data buffered (spread over
        the cores when big), the rest with O_DIRECT. The caller's own buffers are always
        filled through the page cache (they need not be aligned)."""
        n = len(reqs.paths)
        tiny = direct is None and _call_bytes(reqs, stat.size) < SMALL_CALL_BYTES
        warm = not tiny and direct is not True and looks_cached(reqs.paths)
        modes = (_direct_modes(stat.align) if not (own_destinations or warm or tiny
                                                   or direct is False)
                 else np.zeros(n, np.int32))
        return local_layout(stat, tune, modes, parallel=warm)

    async def read(self, reqs: Requests, stat: StatResult, layout: Layout, plan: Plan,
                   buffers: list[Any], run: RunOptions) -> ReadResult:
        ring = ring_for_loop(asyncio.get_running_loop())
        addresses, handles = _addresses(plan, buffers)
        workers = usable_cpus() if layout.parallel and (plan.nops >= PARALLEL_MIN_READS or
                                                 plan.bytes_read >= PARALLEL_MIN_BYTES) else 1
        done, err, _ = await ring.read(
            reqs.paths, stat.size, layout.file_direct, plan, addresses, ReadOptions(
                queue_depth=run.queue_depth, max_open=run.max_open, on_progress=run.on_progress,
                keepalive=(buffers, handles), workers=workers, missing_ok=run.missing_ok,
                keep_going=run.keep_going, caller_memory=run.caller_memory,
                changed=run.changed, hold=run.hold,
                fresh=not run.caller_memory and is_fresh(buffers[0])),
        )
        return ReadResult(done, err, run.changed)
