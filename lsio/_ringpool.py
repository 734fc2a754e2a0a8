"""Worker threads with rings of their own, for reads the loop's ring should not do alone.

Page-cache reads are CPU copies done inside ``io_uring_enter``: a big warm call is split
over these threads, each driving a private ring in C with the GIL released
(``lsio_run_blocking``), so the copies spread over the cores. The pool is process-wide
(every loop and every reader share it), started on first need with one thread per piece
and its ring made up front; :func:`close` ends the threads and frees their rings.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import TYPE_CHECKING, Any

from . import _fork
from ._ringbatch import Batch, ffi, lib, new_ring, ring_error

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["pool", "run_on_thread_ring"]  # and close(), for whoever ends lsio's threads

_pool_lock = _fork.lock()
_pool: ThreadPoolExecutor | None = None
_thread_rings = threading.local()
_finalizers: list[Any] = []
"""The finalizer of every worker thread's ring: :func:`close` runs them once the threads
have ended (a thread ring is never freed while its thread may still drive it)."""


@_fork.forget_in_child
def _forget() -> None:
    """A forked child makes worker threads and rings of its own; the inherited ones (each
    ring already forgotten by its finalizer's ``in_child``) stay untouched."""
    global _pool, _thread_rings, _finalizers
    _fork.keep(_pool)
    _pool = None
    _thread_rings = threading.local()
    _finalizers = []


def pool(workers: int) -> ThreadPoolExecutor:
    """The worker pool, with at least ``workers`` threads, each with its ring."""
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


def close() -> None:
    """End the worker threads and free their rings. Idempotent; returns at once: the
    threads finish the pieces they run (their batches keep the memory alive), then a helper
    thread frees the rings. A later parallel read starts a new pool. Does nothing in a
    forked child for the parent's pool (forgotten at the fork)."""
    global _pool, _finalizers
    with _pool_lock:
        old, _pool = _pool, None
        fins, _finalizers = _finalizers, []
    if old is None:
        return
    old.shutdown(wait=False)

    def reap() -> None:
        old.shutdown(wait=True)  # every thread has ended: nothing drives their rings
        for fin in fins:
            fin()

    threading.Thread(target=reap, name="lsio-ring-close", daemon=True).start()


def _start_thread_ring(barrier: threading.Barrier) -> None:
    _thread_ring()
    barrier.wait(timeout=10)


def run_on_thread_ring(b: Batch) -> None:
    """Drive ``b`` to completion on this worker thread's ring (the GIL released)."""
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
    ring = getattr(_thread_rings, "ptr", None)
    if ring is None:
        err = ffi.new("int *")
        ring = new_ring(err)
        if ring == ffi.NULL:
            raise ring_error(err)
        _thread_rings.ptr = ring
        # Freed when the thread ends, or by close() once the pool's threads have ended
        # (not at exit: the kernel reclaims it; a forked child only forgets its copy).
        fin = _fork.finalizer(threading.current_thread(), lib.lsio_ring_free, ring,
                              in_child=functools.partial(lib.lsio_ring_forget, ring))
        _thread_rings.finalizer = fin
        _finalizers.append(fin)  # not under _pool_lock: pool() holds it while we start
    return ring
