"""The fallback backend: ``os.preadv`` on a thread pool, for where io_uring cannot be used
(seccomp, ``kernel.io_uring_disabled``, not Linux) or when ``LSIO_BACKEND=threads``.

Each job opens its file, reads a slice of that file's planned reads and closes the file in a
``finally``, all inside the worker thread, so cancellation can never leak a descriptor and
the destination memory stays referenced by the running job until it returns. Reads are
always buffered here.

A file's reads may be spread over several jobs, so several descriptors. Each job compares
its descriptor's identity (``fstat``: device, inode, size, times) with the stat's: a job that
opened another version of the file reads nothing and flags the file as changed, so every
byte returned comes from the version that was planned for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import stat as stat_mod
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from .._aio import uncancellable
from .._defaults import STAT_GROUP
from .._plan import Plan
from .._presets import Preset
from .._request import Requests
from .._types import ProgressFn, StatResult
from ._base import Layout, ReadResult
from .local import local_layout, with_details

__all__ = ["ThreadsBackend"]


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

    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool) -> StatResult:
        paths = reqs.paths
        n = len(paths)
        size = np.zeros(n, np.int64)
        err = np.zeros(n, np.int32)
        version = np.zeros(n, np.int64)

        def job(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                try:
                    st = os.stat(paths[i])
                except OSError as exc:
                    err[i] = exc.errno or errno.EIO
                    continue
                size[i] = st.st_size
                version[i] = fingerprint(st)
                if stat_mod.S_ISDIR(st.st_mode):
                    err[i] = errno.EISDIR
                elif not stat_mod.S_ISREG(st.st_mode):  # FIFOs, devices: no size to plan
                    err[i] = errno.EINVAL

        loop = asyncio.get_running_loop()
        pool = self._executor()
        await asyncio.gather(*(loop.run_in_executor(pool, job, lo, min(lo + STAT_GROUP, n))
                               for lo in range(0, n, STAT_GROUP)))
        return with_details(StatResult(size, np.zeros(n, np.int64), err, version), paths)

    async def layout(self, reqs: Requests, stat: StatResult, tune: Preset, *,
                     direct: bool | None, own_destinations: bool) -> Layout:
        """Always through the page cache (no O_DIRECT here)."""
        return local_layout(stat, tune, np.zeros(len(reqs.paths), np.int32))

    async def read(
        self,
        reqs: Requests,
        stat: StatResult,
        layout: Layout,
        plan: Plan,
        buffers: list[Any],
        *,
        queue_depth: int,
        max_open: int,
        on_progress: ProgressFn | None,
        missing_ok: bool = False,
        caller_memory: bool = False,
        changed: npt.NDArray[np.bool_] | None = None,
    ) -> ReadResult:
        paths = reqs.paths
        done = np.zeros(plan.nops, np.int64)
        err = np.zeros(plan.nops, np.int32)
        if changed is None:
            changed = np.zeros(len(paths), bool)
        views = [memoryview(b).cast("B") for b in buffers]
        stop = threading.Event()
        version = stat.version

        def job(f: int, lo: int, hi: int) -> int:
            """Read ops lo..hi of file f; returns one past the last op it finished."""
            if stop.is_set():
                return lo
            try:
                # O_NONBLOCK: a path replaced by a FIFO since the stat must not hang here
                fd = os.open(paths[f], os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                err[lo:hi] = exc.errno or errno.EIO
                if not (missing_ok and exc.errno == errno.ENOENT):
                    stop.set()
                return hi
            try:
                if version is not None and fingerprint(os.fstat(fd)) != version[f]:
                    changed[f] = True  # another version: read none of it
                    return hi
                for i in range(lo, hi):
                    if stop.is_set():
                        return i
                    off, want = int(plan.op_offset[i]), int(plan.op_length[i])
                    dst = views[plan.op_base[i]][plan.op_buf[i]: plan.op_buf[i] + want]
                    got = 0
                    # Up to the planned length, not the stat's size: a read planned one
                    # byte past the end is how a grown or replaced file shows itself.
                    while got < want:
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

        pool = self._executor()
        limit = asyncio.Semaphore(max(1, min(max_open, queue_depth)))
        running: set[concurrent.futures.Future[int]] = set()

        async def run(f: int, lo: int, hi: int) -> None:
            async with limit:
                fut = pool.submit(job, f, lo, hi)
                running.add(fut)  # left there if cancelled: the job may still be writing
                end = await asyncio.wrap_future(fut)
                running.discard(fut)
            if on_progress is not None and end > lo:  # skipped ops (stopped) are not done
                on_progress(np.arange(lo, end, dtype=np.int64), done, err)

        together = asyncio.gather(*(run(*j) for j in jobs))
        try:
            await together
        except asyncio.CancelledError:
            stop.set()
            if caller_memory:  # a job mid-read still writes into the caller's buffers
                left = [f for f in running if not f.cancel()]
                if left:
                    await uncancellable(asyncio.ensure_future(
                        asyncio.wait([asyncio.wrap_future(f) for f in left])))
            raise
        finally:
            stop.set()
        return ReadResult(done, err, changed)


def fingerprint(st: os.stat_result) -> int:
    """One number for a file's identity and version: device, inode, size and times."""
    return hash((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
