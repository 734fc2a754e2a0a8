"""Per-chunk pipelines: the steps applied to each chunk as soon as its bytes have arrived.

Theory of operation
-------------------
``read_many(requests, pipeline=...)`` reads the request list in windows of
:data:`WINDOW` requests. As each chunk's read completes (the engine reports finished requests
from its completion loop), the chunk is handed to a worker thread, which runs all of that
chunk's steps back to back: decompress, check, copy into place. Workers are one per core,
each pinned to its core, so a chunk's decoded bytes stay in that core's cache from one step to
the next; numcodecs and numpy release the GIL in their loops, so the cores work in parallel.

The next window is read while the workers decode the current one (its read starts once the
window two before it is decoded, not once the last read of the one before it lands), and a
window's memory is released once its chunks are done, so memory stays bounded however long
the request list.
The first failing step stops everything: no new chunks are handed out, the running steps
finish, and the step's exception is raised with a note naming the request and the step.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _fork
from ._cpus import worker_cpus
from ._defaults import JOB, WINDOW
from ._redact import redact_exception

if TYPE_CHECKING:
    import queue
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["WINDOW", "PipelineArg", "PipelineRun", "copy_to", "steps_for", "worker_count",
           "worker_pool"]

Step = Any
"""A callable ``buffer -> buffer`` (``None`` ends the chain: a sink), or a codec with a
``decode`` method (numcodecs)."""

PipelineArg = Sequence[Step] | Sequence[Sequence[Step]] | Callable[[int], Sequence[Step]] | None


def _is_codec(step: Any) -> bool:
    return callable(getattr(step, "decode", None)) and callable(getattr(step, "encode", None))


def _check_step(step: Any, where: str) -> None:
    if not (_is_codec(step) or callable(step)):
        raise TypeError(f"lsio: pipeline {where} is {step!r}: a step must be callable "
                        "(buffer -> buffer) or a codec with .decode")


def steps_for(pipeline: PipelineArg, n: int) -> Callable[[int], Sequence[Step]]:
    """The steps of request ``i``, checked early. ``pipeline`` is a list of steps (every
    request), a list of ``n`` such lists (one per request), or a function of the index."""
    if callable(pipeline) and not isinstance(pipeline, (list, tuple)) and not _is_codec(
            pipeline):
        return pipeline
    if not isinstance(pipeline, (list, tuple)):
        raise TypeError(f"lsio: pipeline must be a list of steps, a list of such lists (one "
                        f"per request) or a function of the request index, not "
                        f"{type(pipeline).__name__}")
    if pipeline and all(isinstance(p, (list, tuple)) for p in pipeline):
        if len(pipeline) != n:
            raise ValueError(f"lsio: pipeline has {len(pipeline)} step lists for {n} requests")
        for i, steps in enumerate(pipeline):
            for k, step in enumerate(steps):
                _check_step(step, f"[{i}][{k}]")
        per_request = list(pipeline)
        return per_request.__getitem__
    for k, step in enumerate(pipeline):
        _check_step(step, f"step #{k}")
    shared = tuple(pipeline)
    return lambda i: shared


class copy_to:  # noqa: N801 - reads as a verb in a pipeline: [codec, lsio.copy_to(arr, sel)]
    """A sink step: view the chunk as ``dtype``/``shape`` and copy it into
    ``array[region]``; the request's result is then ``None``.

    ``shape`` defaults to the region's shape and ``dtype`` to the array's."""

    __slots__ = ("array", "region", "dtype", "shape")

    def __init__(self, array: npt.NDArray[Any], region: Any = ..., *, dtype: Any = None,
                 shape: Sequence[int] | None = None) -> None:
        self.array = array
        self.region = region
        self.dtype = np.dtype(dtype) if dtype is not None else array.dtype
        self.shape = tuple(shape) if shape is not None else array[region].shape

    def __call__(self, buf: Any) -> None:
        src = np.frombuffer(buf, self.dtype) if not isinstance(buf, np.ndarray) else buf
        self.array[self.region] = src.reshape(self.shape)

    def __repr__(self) -> str:
        return f"lsio.copy_to(<array {self.array.shape}>, {self.region!r})"


def _step_name(step: Any) -> str:
    if _is_codec(step):
        return f"{type(step).__name__}.decode"
    return getattr(step, "__qualname__", None) or repr(step)


def run_steps(items: list[tuple[int, Any]], steps: Callable[[int], Sequence[Step]],
              outputs: list[Any], describe: Callable[[int], str],
              stop: threading.Event, failed: list[int] | None = None) -> None:
    """Run every step of each ``(request index, chunk)`` on this worker thread, until the
    call is stopped (cancelled, or another chunk failed). ``failed`` (``on_error=
    "return"``): a step's exception is its chunk's output, its index appended there, and
    the other chunks go on."""
    for i, buf in items:
        if stop.is_set():
            return
        if buf is None:  # missing (missing_ok): nothing to decode
            continue
        for k, step in enumerate(steps(i)):
            try:
                buf = step.decode(buf) if _is_codec(step) else step(buf)
            except Exception as exc:
                if failed is None:
                    stop.set()
                exc.add_note(f"lsio: in pipeline step #{k} ({_step_name(step)}) of "
                             f"{describe(i)}")
                try:
                    exc.request_index = i  # type: ignore[attr-defined]
                    exc.step_index = k  # type: ignore[attr-defined]
                except AttributeError:  # pragma: no cover - exceptions with __slots__
                    pass
                if failed is None:
                    raise
                buf = redact_exception(exc)
                failed.append(i)
                break
            if buf is None:
                break
        outputs[i] = buf


# -- the workers: one per core, pinned -------------------------------------------------------

_pool_lock = _fork.lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


@_fork.forget_in_child
def _forget() -> None:
    """A forked child starts workers of its own (the parent's threads are not there)."""
    global _pool, _pool_workers
    _fork.keep(_pool)
    _pool, _pool_workers = None, 0


def worker_pool() -> ThreadPoolExecutor:
    """The pipeline workers: one thread per CPU of this process's share (see
    :mod:`lsio._cpus`: all usable CPUs, or fewer in each of several Dask worker processes),
    each pinned to its own CPU when the process has its whole CPU set."""
    from concurrent.futures import ThreadPoolExecutor  # here: only pipelines need it

    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None:
            n, cpus = worker_cpus()
            counter = itertools.count()

            def pin() -> None:
                if cpus is not None:
                    _pin(cpus[next(counter) % len(cpus)])

            _pool = ThreadPoolExecutor(n, thread_name_prefix="lsio-step", initializer=pin)
            _pool_workers = n
        return _pool


def _pin(cpu: int) -> None:
    """Pin the calling thread to ``cpu``."""
    if hasattr(os, "sched_setaffinity"):
        try:  # on Linux, pid 0 means the calling thread
            os.sched_setaffinity(0, {cpu})
        except OSError:  # pragma: no cover - a cpuset that forbids it
            pass


def close_worker_pool() -> None:
    """End the pipeline workers (process-wide: zarr's batched reads share them). Idempotent
    and non-blocking: queued and running steps finish, then the threads exit; the next
    :func:`worker_pool` starts new ones. In a forked child the parent's pool is already
    forgotten, so this does nothing to it."""
    global _pool, _pool_workers
    with _pool_lock:
        old, _pool, _pool_workers = _pool, None, 0
    if old is not None:
        old.shutdown(wait=False)


def worker_count() -> int:
    """How many threads :func:`worker_pool` runs (starting it if it has not started yet)."""
    worker_pool()
    return _pool_workers


class PipelineRun:
    """One call's hand-off to its workers: a queue the engine's completion callbacks fill
    (~1 us a chunk) and one worker thread per core (pinned, started for this call: ~0.1 ms)
    drains, with per-window countdowns so the caller knows when a window's memory can go.
    Threads of its own, not a shared pool, so concurrent calls never wait on each other and a
    step may itself run a pipelined read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, steps: Callable[[int], Sequence[Step]],
                 outputs: list[Any], describe: Callable[[int], str],
                 on_error: Callable[[], None] | None = None, keep: bool = False) -> None:
        from queue import SimpleQueue  # here: only pipelines need it

        self.loop = loop
        self.on_error = on_error
        """Called on the loop when a step fails (the reader stops the window's read)."""
        self.steps, self.outputs, self.describe = steps, outputs, describe
        self.queue: queue.SimpleQueue[tuple[int, list[tuple[int, Any]]] | None] = (
            SimpleQueue())
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.failed: list[int] | None = [] if keep else None
        """``on_error="return"``: chunks whose step raised (their output is the error)."""
        self._lock = threading.Lock()
        self._left: dict[int, int] = {}
        self._closed: set[int] = set()
        self._done: dict[int, asyncio.Future[None]] = {}
        self.workers: list[asyncio.Future[None]] = []
        n, cpus = worker_cpus()
        for k in range(n):
            done: asyncio.Future[None] = loop.create_future()
            self.workers.append(done)
            cpu = None if cpus is None else cpus[k]
            threading.Thread(target=self._work, args=(cpu, done), daemon=True,
                             name=f"lsio-step-{k if cpu is None else cpu}").start()

    def put(self, window: int, items: list[tuple[int, Any]]) -> None:
        if window not in self._done:
            self._done[window] = self.loop.create_future()
            self._left[window] = 0
        for j in range(0, len(items), JOB):
            part = items[j:j + JOB]
            with self._lock:
                self._left[window] += len(part)
            self.queue.put((window, part))

    async def window_done(self, window: int) -> None:
        """Wait until every chunk of ``window`` went through its steps."""
        with self._lock:
            self._closed.add(window)
            if window not in self._done:
                return
            if self._left[window] == 0 and not self._done[window].done():
                self._done[window].set_result(None)
        await self._done[window]
        self.raise_first()

    def raise_first(self) -> None:
        if self.errors:
            raise min(self.errors, key=lambda e: getattr(e, "request_index", 1 << 62))

    async def close(self) -> None:
        """Stop the worker loops (after the queued chunks, unless stopped) and wait."""
        for _ in self.workers:
            self.queue.put(None)
        await asyncio.shield(asyncio.gather(*self.workers, return_exceptions=True))

    def _work(self, cpu: int | None, done: asyncio.Future[None]) -> None:
        if cpu is not None:
            _pin(cpu)
        try:
            self._drain()
        finally:
            self.loop.call_soon_threadsafe(_settle, done)

    def _drain(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            window, items = job
            if not self.stop.is_set():
                try:
                    run_steps(items, self.steps, self.outputs, self.describe, self.stop,
                              self.failed)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self.stop.set()
                    self.errors.append(exc)
                    if self.on_error is not None:
                        self.loop.call_soon_threadsafe(self.on_error)
            with self._lock:
                self._left[window] -= len(items)
                finished = window in self._closed and self._left[window] == 0
            if finished or self.stop.is_set():
                self.loop.call_soon_threadsafe(_settle, self._done[window])


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
