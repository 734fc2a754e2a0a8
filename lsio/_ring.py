"""The only module that touches io_uring and the event loop.

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
import functools
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _fork
from ._aio import uncancellable
from ._cpus import affinity
from ._defaults import ASYNC_MIN, PUMP_BUDGET, PUMP_NS, RING_ENTRIES, RING_FILES
from ._plan import LINUX_MAX_RW, Plan
from ._types import ProgressFn, StatResult

try:
    from ._uring import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    ffi = lib = None
    _IMPORT_ERROR: str | None = f"the lsio._uring extension is not built ({exc})"
else:
    _IMPORT_ERROR = None

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "DIRECT_OFF", "DIRECT_ON", "RING_ENTRIES", "RingUnavailable", "cached_share", "ffi", "probe",
    "ring_for_loop",
]

DIRECT_OFF = lib.LSIO_DIRECT_OFF if lib is not None else 0
"""``lsio_batch.fdirect``: read through the page cache."""
DIRECT_ON = lib.LSIO_DIRECT_ON if lib is not None else 1
"""``lsio_batch.fdirect``: read with O_DIRECT."""


def _new_ring(err: Any) -> Any:
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError):  # pragma: no cover
        soft = RING_FILES
    nfiles = RING_FILES if soft < 0 else max(1, min(RING_FILES, soft))
    return lib.lsio_ring_new(RING_ENTRIES, nfiles, err)

class RingUnavailable(OSError):
    """io_uring cannot be used here (not built, blocked by seccomp, disabled by sysctl)."""


def _spare_a_core(ptr: Any) -> None:
    """Keep the kernel's workers for this ring (the big reads handed to them with
    ``IOSQE_ASYNC``) off one of the cores this process may use, so the event loop's thread
    always has a core: on this 2-core machine, a cold 256 MiB buffered read stalled a 1 ms
    heartbeat 30-100 ms with the workers on both cores, 2-10 ms with them on one. Best
    effort: nothing changes where the kernel refuses."""
    allowed = affinity()
    if len(allowed) < 2:
        return
    cpus = np.array(allowed[1:], np.int32)
    lib.lsio_ring_iowq(ptr, len(cpus), _ptr("int *", cpus), 0)


def _ptr(ctype: str, arr: npt.NDArray[Any]) -> Any:
    return ffi.cast(ctype, arr.ctypes.data)


def _path_table(paths: list[str]) -> tuple[bytes, npt.NDArray[np.uint64]]:
    """All paths in one blob, each NUL-terminated, plus a ``char *`` per path.

    Each path's start comes from the encoded lengths, never from scanning for separators,
    and the blob must hold exactly one NUL per path: a path with a NUL inside it (which
    ``_request`` refuses) cannot shift the table, it raises here instead. ASCII paths (the
    usual case) cost no Python call per path: one join, one encode, lengths by ``map``.
    """
    joined = "\0".join([*paths, ""])  # each path followed by its NUL
    if joined.isascii():
        blob = joined.encode("ascii")
        lengths = np.fromiter(map(len, paths), np.uint64, len(paths))
    else:
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        blob = b"\0".join([*encoded, b""])
        lengths = np.fromiter(map(len, encoded), np.uint64, len(encoded))
    if blob.count(0) != len(paths):
        raise ValueError("lsio: a path contains a NUL byte")
    if not paths:
        return blob, np.zeros(0, np.uint64)
    lengths += np.uint64(1)
    starts = np.cumsum(lengths, dtype=np.uint64) - lengths
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(blob)))
    return blob, starts + np.uint64(base)


class _Batch:
    """One unit of work on a ring: arrays the C engine reads and writes, kept alive here."""

    future: asyncio.Future[None]
    log: npt.NDArray[np.int64]
    done: npt.NDArray[np.int64]
    err: npt.NDArray[np.int32]
    statbuf: npt.NDArray[np.uint8]

    def __init__(self, phase: int, table: tuple[bytes, npt.NDArray[np.uint64]], *,
                 max_inflight: int, fail_fast: bool) -> None:
        self.blob, self.path_ptrs = table  # shared by the pieces of one call
        n = len(self.path_ptrs)
        self.c = ffi.new("lsio_batch *")
        self.keep: list[Any] = []
        c = self.c
        c.phase = phase
        c.slot = -1
        c.fail_fast = int(fail_fast)
        c.max_inflight = max_inflight
        c.nfiles = n
        c.paths = _ptr("const char **", self.path_ptrs)
        self.fsize = self._arr("long long *", "fsize", np.zeros(n, np.int64))
        self.falign = self._arr("int *", "falign", np.zeros(n, np.int32))
        self.fdirect = self._arr("int *", "fdirect", np.zeros(n, np.int32))
        self.ferr = self._arr("int *", "ferr", np.zeros(n, np.int32))
        self._arr("int *", "fd", np.full(n, -1, np.int32))
        self._arr("long long *", "active", np.zeros(n, np.int64))
        self._arr("int *", "fstate", np.zeros(n, np.int32))
        self.seen = 0
        self.on_progress: ProgressFn | None = None
        self.span: tuple[int, int] | None = None
        """Destination memory [start, end) a worker thread faults in before reading."""

    def _arr(self, ctype: str, field: str, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        arr = np.ascontiguousarray(arr)
        self.keep.append(arr)
        setattr(self.c, field, _ptr(ctype, arr))
        return arr

    def set_log(self, size: int) -> None:
        self.log = self._arr("long long *", "log", np.zeros(max(size, 1), np.int64))


class Ring:
    """An io_uring instance bound to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if lib is None:
            raise RingUnavailable(errno.ENOSYS, _IMPORT_ERROR)
        err = ffi.new("int *")
        ptr = _new_ring(err)
        if ptr == ffi.NULL:
            raise RingUnavailable(err[0], f"io_uring_setup failed: {os.strerror(err[0])}")
        # Weak: the ring must not keep its loop alive (the registry maps loop -> ring).
        self._loop = weakref.ref(loop)
        self._ptr = ptr
        self._efd = lib.lsio_ring_eventfd(ptr)
        _spare_a_core(ptr)
        self._live: dict[int, _Batch] = {}
        self._slot_freed: asyncio.Event | None = None
        loop.add_reader(self._efd, self._on_ready)
        # The finalizer holds the C ring and the live batches (so their buffers outlive the
        # kernel's use of them), never the loop itself.
        # At interpreter exit the loop may still be running in a daemon thread (lsio's own
        # sync loop, a user's): tearing its ring down under it would crash. _at_exit
        # releases only rings whose loop is idle; the kernel reclaims the rest. In a forked
        # child the ring is the parent's: the child only forgets it (_forget).
        self._finalizer = _fork.finalizer(loop, _teardown, ptr, self._live,
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

    async def _run(self, b: _Batch, *, wait_on_cancel: bool = False) -> None:
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
        b = _Batch(lib.LSIO_PHASE_STAT, _path_table(paths), max_inflight=queue_depth,
                   fail_fast=False)
        b.statbuf = np.zeros(256 * max(len(paths), 1), np.uint8)
        b.c.statbuf = ffi.cast("unsigned char *", b.statbuf.ctypes.data)
        b.set_log(len(paths))
        await self._run(b)
        return StatResult(b.fsize.copy(), b.falign.astype(np.int64), b.ferr.copy())

    async def read(
        self,
        paths: list[str],
        file_size: npt.NDArray[np.int64],
        file_direct: npt.NDArray[np.int32],
        plan: Plan,
        addresses: npt.NDArray[np.uint64],
        *,
        queue_depth: int,
        max_open: int,
        on_progress: ProgressFn | None = None,
        keepalive: Any = None,
        workers: int = 1,
        missing_ok: bool = False,
        caller_memory: bool = False,
        changed: npt.NDArray[np.bool_] | None = None,
        fresh: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Execute a plan. ``addresses`` is the destination address of each read.

        Returns bytes done and errno per read, and errno per file (failed open). The
        destination memory (``keepalive``) stays referenced until the kernel is done.
        ``workers > 1`` splits the reads over that many threads with rings of their own
        (for page-cache reads, which are CPU-bound); completions then arrive per piece.
        A file whose reads span pieces is opened once, here, so every piece reads the same
        version of it; if that descriptor's size is not ``file_size``, ``changed[f]`` is
        set before any read starts. ``missing_ok``: a file gone since the stat fails its
        reads with ENOENT without stopping the others. ``caller_memory``: the destinations
        are the caller's, so a cancellation waits until nothing can write into them.
        ``fresh``: the destinations are new memory, which worker rings fault in first.
        """
        if plan.nops and int(plan.op_length.max()) > LINUX_MAX_RW:
            raise ValueError("plan has a read above Linux's read cap")
        job = _ReadJob(_path_table(paths), plan, file_size, file_direct, addresses,
                       queue_depth=queue_depth, max_open=max_open, missing_ok=missing_ok,
                       keepalive=keepalive)
        if workers <= 1:
            b = job.batch(0, plan.nops)
            b.on_progress = on_progress
            await self._run(b, wait_on_cancel=caller_memory)
            return job.done, job.err, b.ferr
        # Page-cache reads are CPU copies done inside io_uring_enter: spread them over
        # threads, each driving its own ring in C with the GIL released.
        cuts = np.linspace(0, plan.nops, workers + 1).astype(np.int64)
        spans = [(int(a), int(z)) for a, z in zip(cuts[:-1], cuts[1:], strict=True) if z > a]
        pre = _open_spanning(paths, file_size, plan, cuts[1:-1], changed)
        # worker threads are not the loop: they issue every read inline (async_min=0)
        pieces = [job.batch(lo, hi, pre, 0) for lo, hi in spans]
        if fresh:  # each worker faults in its own part of the fresh arena
            for b, (lo, hi) in zip(pieces, spans, strict=True):
                b.span = (int(addresses[lo:hi].min()),
                          int((addresses[lo:hi] + plan.op_length[lo:hi].astype(np.uint64)).max()))
        try:
            await self._run_pieces(job, pieces, _worker_pool(workers), on_progress,
                                   caller_memory)
        finally:
            _close_fds(pre)
        return job.done, job.err, np.max([b.ferr for b in pieces], axis=0)

    async def _run_pieces(self, job: _ReadJob, pieces: list[_Batch], pool: ThreadPoolExecutor,
                          on_progress: ProgressFn | None, caller_memory: bool) -> None:
        """Run ``pieces`` of one read on worker threads' rings. Cancelled, the pieces stop;
        with ``caller_memory`` this returns only once they all have."""
        async def run(b: _Batch) -> None:
            await self.loop.run_in_executor(pool, _run_on_thread_ring, b)
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
        ptr, self._ptr = self._ptr, None
        lib.lsio_ring_forget(ptr)

    def close(self) -> None:
        """Drain and release the ring now (normally done by the loop's finalizer)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self._efd)
        except Exception:  # noqa: BLE001 - the loop may already be closed
            pass
        self._finalizer()


def _open_spanning(paths: list[str], file_size: npt.NDArray[np.int64], plan: Plan,
                   cuts: npt.NDArray[np.int64], changed: npt.NDArray[np.bool_] | None
                   ) -> npt.NDArray[np.int32] | None:
    """Descriptors of the files whose reads the ``cuts`` split over several worker rings
    (-1 for the others): one open per file, so all pieces read one version of it. Only
    used for page-cache reads, whose opens are quick."""
    first, last = plan.file_op_start, plan.file_op_end
    spanning = [f for f in range(len(paths)) if last[f] > first[f]
                and np.any((cuts > first[f]) & (cuts < last[f]))]
    if not spanning:
        return None
    pre = np.full(len(paths), -1, np.int32)
    try:
        for f in spanning:
            fd = os.open(paths[f], os.O_RDONLY | os.O_CLOEXEC)
            pre[f] = fd
            if os.fstat(fd).st_size != file_size[f] and changed is not None:
                changed[f] = True  # replaced since the stat: the reader plans again
    except OSError:
        _close_fds(pre)  # the rings open it themselves and report the error per read
        return None
    return pre


def _close_fds(pre: npt.NDArray[np.int32] | None) -> None:
    if pre is not None:
        for fd in pre[pre >= 0].tolist():
            os.close(fd)
        pre[:] = -1


class _ReadJob:
    """What the batches of one read share: the plan, the destinations and the outputs (bytes
    done and errno per read), and the stop flag its pieces on several rings watch."""

    def __init__(self, table: tuple[bytes, npt.NDArray[np.uint64]], plan: Plan,
                 file_size: npt.NDArray[np.int64], file_direct: npt.NDArray[np.int32],
                 addresses: npt.NDArray[np.uint64], *, queue_depth: int, max_open: int,
                 missing_ok: bool, keepalive: Any) -> None:
        self.table, self.plan = table, plan
        self.file_size, self.file_direct, self.addresses = file_size, file_direct, addresses
        self.queue_depth, self.max_open, self.missing_ok = queue_depth, max_open, missing_ok
        self.keepalive = keepalive
        self.done = np.zeros(plan.nops, np.int64)
        self.err = np.zeros(plan.nops, np.int32)
        self.stop_flag = np.zeros(1, np.int32)

    def batch(self, lo: int, hi: int, pre: npt.NDArray[np.int32] | None = None,
              async_min: int = ASYNC_MIN) -> _Batch:
        """The batch of reads ``lo:hi`` (``pre``: descriptors opened by the caller)."""
        plan, n = self.plan, len(self.file_size)
        b = _Batch(lib.LSIO_PHASE_READ, self.table, max_inflight=self.queue_depth,
                   fail_fast=True)
        b._arr("int *", "stop_flag", self.stop_flag)
        b.c.missing_ok = int(self.missing_ok)
        b.c.async_min = async_min
        if pre is not None:
            b._arr("int *", "fpre", pre)
        b.keep.append(self.keepalive)
        b.fsize[:] = self.file_size
        b.fdirect[:] = self.file_direct
        b.c.max_open = self.max_open
        b.c.nops = hi - lo
        b._arr("long long *", "fop_start", np.clip(plan.file_op_start, lo, hi))
        b._arr("long long *", "fop_end", np.clip(plan.file_op_end, lo, hi))
        b._arr("long long *", "fnext", np.clip(plan.file_op_start, lo, hi))
        b._arr("long long *", "fpending", np.zeros(n, np.int64))
        b._arr("long long *", "ooff", plan.op_offset)
        b._arr("long long *", "olen", plan.op_length)
        b._arr("unsigned long long *", "oaddr", self.addresses)
        b.done = b._arr("long long *", "odone", self.done)
        b.err = b._arr("int *", "oerr", self.err)
        b.set_log(hi - lo)
        return b


def _teardown(ptr: Any, live: dict[int, _Batch]) -> None:
    lib.lsio_ring_drain(ptr)
    for b in live.values():
        lib.lsio_ring_remove(ptr, b.c)
    live.clear()
    lib.lsio_ring_free(ptr)


_rings: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ring] = weakref.WeakKeyDictionary()
_rings_lock = _fork.lock()


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


_pool_lock = _fork.lock()
_pool: ThreadPoolExecutor | None = None
_thread_rings = threading.local()


@_fork.forget_in_child
def _forget() -> None:
    """A forked child makes rings and worker threads of its own; the inherited ones (each
    already forgotten, see Ring._forget) and their loops stay untouched."""
    global _rings, _pool, _thread_rings
    _fork.keep(*_rings.items(), _pool)
    _rings = weakref.WeakKeyDictionary()
    _pool = None
    _thread_rings = threading.local()


def _worker_pool(workers: int) -> ThreadPoolExecutor:
    # imported here: most processes never read enough at once to need the pool
    from concurrent.futures import ThreadPoolExecutor

    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="lsio-ring")
            # Start every thread with its ring now (a barrier puts one task on each), so the
            # pool's footprint (threads, ring fds) is fixed from the first parallel call on
            # rather than growing whenever the executor happens to spawn another thread.
            barrier = threading.Barrier(workers)
            for f in [_pool.submit(_start_thread_ring, barrier) for _ in range(workers)]:
                f.result()
        return _pool


def _start_thread_ring(barrier: threading.Barrier) -> None:
    _thread_ring()
    barrier.wait(timeout=10)


def _run_on_thread_ring(b: _Batch) -> None:
    if b.span is not None:
        # Fresh result memory costs a page fault per 4 KiB page on first touch (up to ~1 ms
        # per MiB on this VM): one madvise per piece takes them here, spread over the
        # workers, instead of one by one inside the reads (10 000 warm 64 KiB files, every
        # result kept, fresh process: 1.4-1.8 s before, 0.45-0.5 s with this; recycled
        # memory 0.34 s). Pages already present (a reused arena) cost a page-table walk.
        lib.lsio_populate(b.span[0], b.span[1] - b.span[0], b.c.stop_flag)
    ret = lib.lsio_run_blocking(_thread_ring(), b.c)
    if ret < 0:
        raise OSError(-ret, f"io_uring failed: {os.strerror(-ret)}")


def _thread_ring() -> Any:
    """This worker thread's own ring, made on first use."""
    ptr = getattr(_thread_rings, "ptr", None)
    if ptr is None:
        err = ffi.new("int *")
        ptr = _new_ring(err)
        if ptr == ffi.NULL:
            raise RingUnavailable(err[0], f"io_uring_setup failed: {os.strerror(err[0])}")
        # Freed when the thread ends (the pool's threads live until interpreter exit).
        _thread_rings.ptr = ptr
        # (not at exit: the kernel reclaims it; a forked child only forgets its copy)
        _thread_rings.finalizer = _fork.finalizer(
            threading.current_thread(), lib.lsio_ring_free, ptr,
            in_child=functools.partial(lib.lsio_ring_forget, ptr))
    return ptr


def cached_share(path: str) -> float:
    """Share of ``path``'s pages in the page cache (-1: unknown)."""
    return float(lib.lsio_cached_share(os.fsencode(path)))


def probe() -> str | None:
    """``None`` if a ring can be set up here, else the reason it cannot."""
    if lib is None:
        return _IMPORT_ERROR
    err = ffi.new("int *")
    ptr = lib.lsio_ring_new(8, 8, err)
    if ptr == ffi.NULL:
        return f"io_uring_setup failed: {os.strerror(err[0])} (errno {err[0]})"
    lib.lsio_ring_free(ptr)
    return None
