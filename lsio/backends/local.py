"""The io_uring backend: statx, openat, read and close all go through the loop's ring."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

from .._plan import Plan
from .._ring import ffi, ring_for_loop
from .._types import ProgressFn, StatResult
from ._base import ReadResult

__all__ = ["UringBackend"]


def _addresses(plan: Plan, buffers: list[Any]) -> tuple[npt.NDArray[np.uint64], list[Any]]:
    """Destination address of every read; the cffi buffer handles keep the memory pinned."""
    handles = [ffi.from_buffer(buf, require_writable=True) for buf in buffers]
    bases = np.fromiter((int(ffi.cast("uintptr_t", h)) for h in handles), np.uint64,
                        len(handles))
    if not len(bases):
        return np.zeros(0, np.uint64), handles
    return bases[plan.op_base] + plan.op_buf.astype(np.uint64), handles


class UringBackend:
    name = "uring"

    async def stat(self, paths: list[str], *, queue_depth: int) -> StatResult:
        return await ring_for_loop(asyncio.get_running_loop()).stat(paths,
                                                                    queue_depth=queue_depth)

    async def read(
        self,
        paths: list[str],
        stat: StatResult,
        file_direct: npt.NDArray[np.int32],
        plan: Plan,
        buffers: list[Any],
        *,
        queue_depth: int,
        max_open: int,
        on_progress: ProgressFn | None,
        workers: int = 1,
        missing_ok: bool = False,
        caller_memory: bool = False,
        changed: npt.NDArray[np.bool_] | None = None,
    ) -> ReadResult:
        ring = ring_for_loop(asyncio.get_running_loop())
        addresses, handles = _addresses(plan, buffers)
        done, err, file_err = await ring.read(
            paths, stat.size, file_direct, plan, addresses, queue_depth=queue_depth,
            max_open=max_open, on_progress=on_progress, keepalive=(buffers, handles),
            workers=workers, missing_ok=missing_ok, caller_memory=caller_memory,
            changed=changed,
        )
        return ReadResult(done, err, file_err, changed)
