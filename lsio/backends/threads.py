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

from .. import _fork
from .._aio import uncancellable
from .._defaults import STAT_GROUP
from .._errors import MISSING
from .._plan import Plan
from .._presets import Preset
from .._request import Requests
from .._types import StatResult
from ._base import Layout, ReadResult, RunOptions
from ._local_small import LocalSmallPath
from .local import local_layout, with_details

__all__ = ["ThreadsBackend"]


class ThreadsBackend(LocalSmallPath):
    name = "threads"

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = _fork.lock()
        _fork.track(self, ThreadsBackend._forget)

    def _forget(self) -> None:
        """In a forked child: start a pool of its own (the parent's threads are not there)."""
        _fork.keep(self._pool)
        self._pool = None

    def close(self) -> None:
        """End this backend's threads. Idempotent and non-blocking: jobs already running
        finish (they hold their memory and close their files), queued ones still run, then
        the threads exit. A later call starts a new pool. In a forked child the parent's
        pool was forgotten at the fork: nothing to do."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="lsio")
            return self._pool

    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool,
                   keep_going: bool = False) -> StatResult:
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

    async def read(self, reqs: Requests, stat: StatResult, layout: Layout, plan: Plan,
                   buffers: list[Any], run: RunOptions) -> ReadResult:
        job = _Job(reqs.paths, plan, buffers, stat.version, run.missing_ok,
                   np.zeros(len(reqs.paths), bool) if run.changed is None else run.changed,
                   keep_going=run.keep_going)
        pool = self._executor()
        limit = asyncio.Semaphore(max(1, min(run.max_open, run.queue_depth)))
        on_progress = run.on_progress
        running: set[concurrent.futures.Future[int]] = set()

        async def one(f: int, lo: int, hi: int) -> None:
            async with limit:
                fut = pool.submit(job, f, lo, hi)
                running.add(fut)  # left there if cancelled: the job may still be writing
                end = await asyncio.wrap_future(fut)
                running.discard(fut)
            if on_progress is not None and end > lo:  # skipped ops (stopped) are not done
                on_progress(np.arange(lo, end, dtype=np.int64), job.done, job.err)

        try:
            await asyncio.gather(*(one(*j) for j in _slices(plan, self._workers)))
        except asyncio.CancelledError:
            job.stop.set()
            if run.caller_memory:  # a job mid-read still writes into the caller's buffers
                left = [f for f in running if not f.cancel()]
                if left:
                    await uncancellable(asyncio.ensure_future(
                        asyncio.wait([asyncio.wrap_future(f) for f in left])))
            raise
        finally:
            job.stop.set()
        return ReadResult(job.done, job.err, job.changed)


def _slices(plan: Plan, workers: int) -> list[tuple[int, int, int]]:
    """(file, first read, one past the last) of each job: slices of each file's reads, so
    one big file still spreads over the pool."""
    jobs: list[tuple[int, int, int]] = []
    for f in range(len(plan.file_op_start)):
        lo, hi = int(plan.file_op_start[f]), int(plan.file_op_end[f])
        step = max(64, -(-(hi - lo) // workers))
        jobs.extend((f, a, min(a + step, hi)) for a in range(lo, hi, step))
    return jobs


class _Job:
    """Reads a slice of one file's planned reads on a worker thread (called with (file,
    first read, one past the last)); what they did lands in ``done``/``err``."""

    def __init__(self, paths: list[str], plan: Plan, buffers: list[Any],
                 version: npt.NDArray[np.int64] | None, missing_ok: bool,
                 changed: npt.NDArray[np.bool_], *, keep_going: bool = False) -> None:
        self.paths, self.plan, self.version, self.missing_ok = paths, plan, version, missing_ok
        self.keep_going = keep_going
        """No failure stops the other reads (``on_error="return"``)."""
        self.views = [memoryview(b).cast("B") for b in buffers]
        self.done = np.zeros(plan.nops, np.int64)
        self.err = np.zeros(plan.nops, np.int32)
        self.changed = changed
        self.stop = threading.Event()

    def __call__(self, f: int, lo: int, hi: int) -> int:
        """Read ops lo..hi of file f; returns one past the last op it finished."""
        if self.stop.is_set():
            return lo
        try:
            # O_NONBLOCK: a path replaced by a FIFO since the stat must not hang here
            fd = os.open(self.paths[f], os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self.err[lo:hi] = exc.errno or errno.EIO
            if not (self.keep_going or self.missing_ok and exc.errno in MISSING):
                self.stop.set()
            return hi
        try:
            if self.version is not None and fingerprint(os.fstat(fd)) != self.version[f]:
                self.changed[f] = True  # another version: read none of it
                return hi
            for i in range(lo, hi):
                if self.stop.is_set():
                    return i
                self._read(fd, i)
            return hi
        finally:
            os.close(fd)

    def _read(self, fd: int, i: int) -> None:
        """Read op ``i`` up to its planned length, not the stat's size: a read planned one
        byte past the end is how a grown or replaced file shows itself."""
        p = self.plan
        off, want = int(p.op_offset[i]), int(p.op_length[i])
        dst = self.views[p.op_base[i]][p.op_buf[i]: p.op_buf[i] + want]
        got = 0
        while got < want:
            try:
                n = os.preadv(fd, [dst[got:]], off + got)
            except InterruptedError:
                continue
            except OSError as exc:
                self.err[i] = exc.errno or errno.EIO
                if not self.keep_going:
                    self.stop.set()
                break
            if n == 0:
                break
            got += n
        self.done[i] = got


def fingerprint(st: os.stat_result) -> int:
    """One number for a file's identity and version: device, inode, size and times."""
    return hash((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
