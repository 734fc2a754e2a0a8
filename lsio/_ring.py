"""The io_uring glue to the event loop: one ring per loop, woken through its eventfd.

The arrays the C engine reads are built in ``_ringbatch`` (no loop there), the worker
threads with rings of their own live in ``_ringpool``; this module is the only one that
registers a ring with an event loop.

Theory of operation
-------------------
* One ring per event loop. A ring and the eventfd registered with it belong to the loop that
  created them and are only ever touched from that loop's thread: zarr's sync API runs a loop
  in its own thread and Jupyter has another, and both may use lsio at once.
* The kernel signals the eventfd whenever it posts completions; ``loop.add_reader`` on it
  wakes us. Waiting (the loop's selector) is split from processing (``lsio_pump``, one C call
  that reaps every completion, advances each file's state machine and refills the submission
  queue). Python runs once per wake-up, not once per chunk.
* Work is described as batches of arrays (see ``_uring_build``). A batch stays referenced by
  its ring until the kernel has completed every request of it, even when the task awaiting
  it was cancelled: the kernel never writes into memory that was freed or reused.
* Cached (page-cache) reads complete inside ``io_uring_submit``, so the pump keeps reaping
  and refilling while that happens, up to a bound, and then yields to the loop.
* Teardown: when the loop is garbage collected, at interpreter exit, or when the next ring is
  created and finds its loop closed, the ring drains (blocking until the kernel is done
  with every buffer), closes the files it opened, and closes the ring and the eventfd.
* fork: a child shares its parent's rings (their queues are shared memory). It forgets them
  (``_fork``): it unmaps and closes its copies (``Ring._forget``) and never drains,
  unregisters or reaps them; its own loops get rings of their own.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import os
import time
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _fork, _ringpool
from ._aio import uncancellable
from ._cpus import affinity
from ._defaults import PUMP_BUDGET, PUMP_NS, RING_ENTRIES
from ._plan import LINUX_MAX_RW, Plan
from ._ringbatch import (
    DIRECT_OFF,
    DIRECT_ON,
    IMPORT_ERROR,
    Batch,
    ReadJob,
    ReadOptions,
    RingUnavailable,
    cached_share,
    close_fds,
    ffi,
    lib,
    new_ring,
    open_spanning,
    path_table,
    probe,
    ptr,
    ring_error,
    teardown,
)
from ._types import StatResult

__all__ = [
    "DIRECT_OFF", "DIRECT_ON", "RING_ENTRIES", "ReadOptions", "RingUnavailable", "cached_share",
    "ffi", "probe", "ring_for_loop",
]


def _spare_a_core(ring: Any) -> None:
    """Keep the kernel's workers for this ring (the big reads handed to them with
    ``IOSQE_ASYNC``) off one of the cores this process may use, so the event loop's thread
    always has a core: on this 2-core machine, a cold 256 MiB buffered read stalled a 1 ms
    heartbeat 30-100 ms with the workers on both cores, 2-10 ms with them on one. Best
    effort: nothing changes where the kernel refuses."""
    allowed = affinity()
    if len(allowed) < 2:
        return
    cpus = np.array(allowed[1:], np.int32)
    lib.lsio_ring_iowq(ring, len(cpus), ptr("int *", cpus), 0)


class Ring:
    """An io_uring instance bound to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if lib is None:
            raise RingUnavailable(errno.ENOSYS, IMPORT_ERROR)
        err = ffi.new("int *")
        ring = new_ring(err)
        if ring == ffi.NULL:
            raise ring_error(err)
        # Weak: the ring must not keep its loop alive (the registry maps loop -> ring).
        self._loop = weakref.ref(loop)
        self._ptr = ring
        self._efd = lib.lsio_ring_eventfd(ring)
        _spare_a_core(ring)
        self._live: dict[int, Batch] = {}
        self._slot_freed: asyncio.Event | None = None
        loop.add_reader(self._efd, self._on_ready)
        # The finalizer holds the C ring and the live batches (so their buffers outlive the
        # kernel's use of them), never the loop itself.
        # At interpreter exit the loop may still be running in a daemon thread (lsio's own
        # sync loop, a user's): tearing its ring down under it would crash. _at_exit
        # releases only rings whose loop is idle; the kernel reclaims the rest. In a forked
        # child the ring is the parent's: the child only forgets it (_forget).
        self._finalizer = _fork.finalizer(loop, teardown, ring, self._live,
                                          in_child=self._forget)
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        if loop is None:  # pragma: no cover - the loop is gone, so nobody can call us
            raise RuntimeError("lsio: the ring's event loop no longer exists")
        return loop

    # -- waking and dispatching -------------------------------------------------------
    def _on_ready(self) -> None:
        try:
            os.read(self._efd, 8)
        except BlockingIOError:
            pass
        self._pump()

    def _pump(self) -> None:
        start = time.perf_counter()
        live = list(self._live.values())
        try:
            self._pump_once()
        finally:  # each read in flight learns the longest hold of the loop it saw
            held = time.perf_counter() - start
            for b in live:
                if b.hold is not None and held > b.hold[0]:
                    b.hold[0] = held

    def _pump_once(self) -> None:
        n = lib.lsio_pump(self._ptr, PUMP_BUDGET, PUMP_NS)
        if n < 0:  # the ring itself failed: nothing in flight can be trusted to finish
            exc = OSError(-n, f"io_uring_submit failed: {os.strerror(-n)}")
            for b in list(self._live.values()):
                if not b.future.done():
                    b.future.set_exception(exc)
            return
        for b in list(self._live.values()):
            c = b.c
            if b.on_progress is not None and c.nlog != b.seen:
                new = b.log[b.seen : c.nlog]
                b.seen = c.nlog
                b.on_progress(new, b.done, b.err)
            if lib.lsio_batch_finished(c):
                lib.lsio_ring_remove(self._ptr, c)
                del self._live[id(b)]
                if not b.future.done():
                    b.future.set_result(None)
                if self._slot_freed is not None:
                    self._slot_freed.set()
        if n >= PUMP_BUDGET or lib.lsio_ring_more(self._ptr):
            self.loop.call_soon(self._pump)

    async def _run(self, b: Batch, *, wait_on_cancel: bool = False) -> None:
        """Run ``b`` to completion. Cancelled, the batch stops: nothing new starts and its
        reads in flight are cancelled in the kernel. With ``wait_on_cancel`` (the caller's
        own memory is the destination) the cancellation returns only once no read of the
        batch can write anywhere any more; otherwise at once, the batch keeping its memory
        alive until the kernel is done."""
        b.future = self.loop.create_future()
        while lib.lsio_ring_add(self._ptr, b.c) < 0:
            # Every slot taken (thousands of concurrent calls): wait for one to finish.
            self._slot_freed = self._slot_freed or asyncio.Event()
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._live[id(b)] = b
        self._pump()
        try:
            await asyncio.shield(b.future)
        except asyncio.CancelledError:
            # Stop submitting; the batch stays registered (and its memory alive) until the
            # kernel has completed what is in flight and its files are closed.
            b.on_progress = None
            if not b.future.done():
                lib.lsio_batch_cancel(self._ptr, b.c)
                self._pump()
            if wait_on_cancel:
                await uncancellable(b.future)
            raise

    # -- the two operations the local backend needs -----------------------------------
    async def stat(self, paths: list[str], *, queue_depth: int) -> StatResult:
        """statx every path through the ring (no file is opened)."""
        b = Batch(lib.LSIO_PHASE_STAT, path_table(paths), max_inflight=queue_depth,
                  fail_fast=False)
        b.statbuf = b.attach("unsigned char *", "statbuf",
                             np.zeros(256 * max(len(paths), 1), np.uint8))
        b.set_log(len(paths))
        await self._run(b)
        return StatResult(b.fsize.copy(), b.falign.astype(np.int64), b.ferr.copy())

    async def read(self, paths: list[str], file_size: npt.NDArray[np.int64],
                   file_direct: npt.NDArray[np.int32], plan: Plan,
                   addresses: npt.NDArray[np.uint64], opts: ReadOptions,
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Execute a plan. ``addresses`` is the destination address of each read.

        Returns bytes done and errno per read, and errno per file (failed open). The
        destination memory (``opts.keepalive``) stays referenced until the kernel is done.
        With ``opts.workers > 1`` the reads are split over that many threads with rings of
        their own (``_ringpool``). A file whose reads span pieces is opened once, here, so
        every piece reads the same version of it; if that descriptor's size is not
        ``file_size``, ``opts.changed[f]`` is set before any read starts.
        """
        if plan.nops and int(np.max(plan.op_length)) > LINUX_MAX_RW:
            raise ValueError("plan has a read above Linux's read cap")
        job = ReadJob(path_table(paths), plan, file_size, file_direct, addresses, opts)
        if opts.workers <= 1:
            b = job.batch(0, plan.nops)
            b.on_progress = opts.on_progress
            b.hold = opts.hold
            await self._run(b, wait_on_cancel=opts.caller_memory)
            return job.done, job.err, b.ferr
        # Page-cache reads are CPU copies done inside io_uring_enter: spread them over
        # threads, each driving its own ring in C with the GIL released.
        cuts = np.linspace(0, plan.nops, opts.workers + 1).astype(np.int64)
        spans = [(int(a), int(z)) for a, z in zip(cuts[:-1], cuts[1:], strict=True) if z > a]
        pre = open_spanning(paths, file_size, plan, cuts[1:-1], opts.changed)
        # worker threads are not the loop: they issue every read inline (async_min=0)
        pieces = [job.batch(lo, hi, pre, 0) for lo, hi in spans]
        if opts.fresh:  # each worker faults in its own part of the fresh arena
            for b, (lo, hi) in zip(pieces, spans, strict=True):
                b.span = (int(np.min(addresses[lo:hi])),
                          int(np.max(addresses[lo:hi] + plan.op_length[lo:hi].astype(np.uint64))))
        try:
            await self._run_pieces(job, pieces)
        finally:
            close_fds(pre)
        return job.done, job.err, np.max([b.ferr for b in pieces], axis=0)

    async def _run_pieces(self, job: ReadJob, pieces: list[Batch]) -> None:
        """Run ``pieces`` of one read on worker threads' rings. Cancelled, the pieces stop;
        with ``caller_memory`` this returns only once they all have."""
        pool, on_progress = _ringpool.pool(job.opts.workers), job.opts.on_progress

        async def run(b: Batch) -> None:
            await self.loop.run_in_executor(pool, _ringpool.run_on_thread_ring, b)
            if on_progress is not None and b.c.nlog:  # only the reads it finished
                on_progress(b.log[: b.c.nlog].copy(), job.done, job.err)

        together = asyncio.gather(*(run(b) for b in pieces))
        try:
            await asyncio.shield(together)
        except asyncio.CancelledError:
            job.stop_flag[0] = 1  # the worker threads see this at their next refill
            # without caller memory the pieces finish on their own (their memory is kept
            # alive by the batches); the caller's descriptors must outlive them either way
            await uncancellable(together)
            raise

    def _forget(self) -> None:
        """In a forked child: the ring is the parent's, which still drives it. Give back
        this process's mappings and descriptors of it, and never touch it again (no
        drain, no unregistering, nothing removed from the loop's selector)."""
        self.closed = True
        ring, self._ptr = self._ptr, None
        lib.lsio_ring_forget(ring)

    def close(self) -> None:
        """Drain and release the ring now (normally done by the loop's finalizer).

        Idempotent; a no-op in a forked child (the ring is the parent's, forgotten at the
        fork). Blocks only while the kernel finishes the reads in flight, which are
        cancelled first; calls still waiting on the ring fail with ``EBADF``. The next
        :func:`ring_for_loop` of the loop makes a new ring."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self._efd)
        except Exception:  # noqa: BLE001 - the loop may already be closed
            pass
        waiting = [b.future for b in self._live.values()]
        self._finalizer()
        exc = OSError(errno.EBADF, "lsio: the io_uring instance was closed during the call")
        for fut in waiting:
            if not fut.done():
                try:
                    fut.set_exception(exc)
                except RuntimeError:  # its loop is closed: nobody waits on it any more
                    pass


_rings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ring] = weakref.WeakKeyDictionary()
_rings_lock = _fork.lock()


@_fork.forget_in_child
def _forget() -> None:
    """A forked child makes rings of its own; the inherited ones (each already forgotten,
    see Ring._forget) and their loops stay untouched."""
    global _rings
    _fork.keep(*_rings.items())
    _rings = weakref.WeakKeyDictionary()


@atexit.register
def _at_exit() -> None:
    for loop, ring in list(_rings.items()):
        if not loop.is_running():
            ring.close()


def ring_for_loop(loop: asyncio.AbstractEventLoop) -> Ring:
    """The ring of ``loop``, created on first use. Call from the loop's own thread."""
    ring = _rings.get(loop)
    if ring is not None and not ring.closed:
        return ring
    with _rings_lock:
        # Rings of loops that were closed but are still referenced somewhere: release now.
        for other, r in list(_rings.items()):
            if other.is_closed():
                r.close()
                del _rings[other]
        ring = Ring(loop)
        _rings[loop] = ring
    return ring
