"""The fallback backend: ``os.preadv`` on a thread pool, for where io_uring cannot be used
(seccomp, ``kernel.io_uring_disabled``, not Linux) or when ``LSIO_BACKEND=threads``.

Each job opens its file, reads a slice of that file's planned reads and closes the file in a
``finally``, all inside the worker thread, so cancellation can never leak a descriptor and
the destination memory stays referenced by the running job until it returns. Reads are
always buffered here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from .._plan import Plan
from .._ring import ProgressFn, StatResult
from ._base import ReadResult

__all__ = ["ThreadsBackend"]

STAT_GROUP = 256
"""Paths stat'ed per job: big enough that the thread hop is amortised."""


class ThreadsBackend:
    name = "threads"

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="lsio")
            return self._pool

    async def stat(self, paths: list[str], *, queue_depth: int) -> StatResult:
        n = len(paths)
        size = np.zeros(n, np.int64)
        err = np.zeros(n, np.int32)

        def job(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                try:
                    st = os.stat(paths[i])
                except OSError as exc:
                    err[i] = exc.errno or errno.EIO
                    continue
                size[i] = st.st_size
                if stat_mod.S_ISDIR(st.st_mode):
                    err[i] = errno.EISDIR

        loop = asyncio.get_running_loop()
        pool = self._executor()
        await asyncio.gather(*(loop.run_in_executor(pool, job, lo, min(lo + STAT_GROUP, n))
                               for lo in range(0, n, STAT_GROUP)))
        return StatResult(size, np.zeros(n, np.int64), err)

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
    ) -> ReadResult:
        done = np.zeros(plan.nops, np.int64)
        err = np.zeros(plan.nops, np.int32)
        file_err = np.zeros(len(paths), np.int32)
        views = [memoryview(b).cast("B") for b in buffers]
        stop = threading.Event()
        sizes = stat.size

        def job(f: int, lo: int, hi: int) -> int:
            """Read ops lo..hi of file f; returns one past the last op it finished."""
            if stop.is_set():
                return lo
            try:
                fd = os.open(paths[f], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                file_err[f] = err[lo:hi] = exc.errno or errno.EIO
                stop.set()
                return hi
            try:
                for i in range(lo, hi):
                    if stop.is_set():
                        return i
                    off, want = int(plan.op_offset[i]), int(plan.op_length[i])
                    dst = views[plan.op_base[i]][plan.op_buf[i]: plan.op_buf[i] + want]
                    got = 0
                    while got < want and off + got < sizes[f]:
                        try:
                            n = os.preadv(fd, [dst[got:]], off + got)
                        except InterruptedError:
                            continue
                        except OSError as exc:
                            err[i] = exc.errno or errno.EIO
                            stop.set()
                            break
                        if n == 0:
                            break
                        got += n
                    done[i] = got
                return hi
            finally:
                os.close(fd)

        # Slices of each file's reads, so one big file still spreads over the pool.
        jobs: list[tuple[int, int, int]] = []
        for f in range(len(paths)):
            lo, hi = int(plan.file_op_start[f]), int(plan.file_op_end[f])
            step = max(64, -(-(hi - lo) // self._workers))
            jobs.extend((f, a, min(a + step, hi)) for a in range(lo, hi, step))

        loop = asyncio.get_running_loop()
        pool = self._executor()
        limit = asyncio.Semaphore(max(1, min(max_open, queue_depth)))

        async def run(f: int, lo: int, hi: int) -> None:
            async with limit:
                end = await loop.run_in_executor(pool, job, f, lo, hi)
            if on_progress is not None and end > lo:  # skipped ops (stopped) are not done
                on_progress(np.arange(lo, end, dtype=np.int64), done, err)

        try:
            await asyncio.gather(*(run(*j) for j in jobs))
        finally:
            stop.set()
        return ReadResult(done, err, file_err)
