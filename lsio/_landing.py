"""``read_each``'s ring windows: each chunk handed over as it lands, not once its window is in.

Theory of operation
-------------------
Requests the small-call path cannot serve (cold local data, URLs, progress) are read in
windows, ``EACH_READ_AHEAD`` of them at once, each one ``read_many``. Each window's call is
given a :class:`Landing` as its progress: the engine tells it of every request as it lands,
from wherever completions are processed (the ring's eventfd pump, once per wake-up for every
completion it reaped; a thread backend's gather; the HTTP backend's once-per-loop-turn
flush). So a chunk goes to its callback while the window's other reads are still in flight:
a cold read waits for no slower read, and the disk reads while the cores decode.

Per wake-up the loop's work is a few numpy calls and one job per worker at most: the landed
requests, sorted, are cut into runs of consecutive requests (the batch form's unit) and the
runs spread over the pinned workers. Memory stays bounded: a window's read starts only when
the window ``EACH_READ_AHEAD`` before it is read, and then the chunks of the window two before
that are waited for (each job keeps its window's memory alive until it ends).

A callback's exception stops the hand-off (no new run starts), ends the reads and is raised;
however the call ends, ``read_each`` waits for every job handed out, so no
callback runs once the call has returned or raised.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from ._defaults import BATCH_WINDOW, BATCH_WINDOWS_MIN, EACH_READ_AHEAD
from ._progress import Progress

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._reader import Reader
    from ._results import Results

__all__ = ["ring_windows"]


class _Run(Protocol):
    """What :func:`ring_windows` needs of a ``read_each`` call (``lsio._each._Run``)."""

    requests: Sequence[tuple[str, int, int | None]]
    missing_ok: bool
    stopped: bool
    running: list[Future[Any]]

    def hand(self, results: Results, lo: int, a: int = 0, b: int | None = None) -> None:
        ...


def runs_of(finished: npt.NDArray[np.int64], local: npt.NDArray[np.int64]
            ) -> list[tuple[int, int, int]]:
    """Landed requests ``finished`` (``results[local[k]]`` is ``finished[k]``'s chunk) as
    runs ``(first request, a, b)``: ``results[a:b]`` are requests ``first`` on."""
    if len(finished) > 1 and np.any(finished[1:] < finished[:-1]):
        order = np.argsort(finished, kind="stable")
        finished, local = finished[order], local[order]
    cuts = np.flatnonzero((np.diff(finished) != 1) | (np.diff(local) != 1)) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    ends = np.concatenate((cuts, [len(finished)])).tolist()
    first, at = finished.tolist(), local.tolist()
    return [(first[s], at[s], at[s] + e - s) for s, e in zip(starts, ends, strict=True)]


class Landing(Progress):
    """One window's progress: each landed request's chunk handed to the callbacks at once
    (``workers`` > 0: as jobs on the pinned workers; 0: inline, on the loop's thread)."""

    def __init__(self, run: _Run, lo: int, bar: Any, workers: int,
                 failure: asyncio.Future[BaseException]) -> None:
        super().__init__(None)
        self.run, self.lo, self.bar, self.workers = run, lo, bar, workers
        self.failure = failure
        """Set (thread-safely) with the first exception a worker job's callback raised."""
        self.jobs: list[Future[Any]] = []
        """The jobs handed to the workers (the window's memory lives until they end)."""
        self.error: BaseException | None = None
        """The first exception a job's callback raised, set before that job ends: a job
        seen done has told it here, while ``failure`` is set on a later loop turn."""
        from ._pipeline import worker_pool  # here: ``import lsio`` stays light

        self.pool = worker_pool() if workers else None

    def __call__(self, finished: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
        if self.bar is not None:
            self.bar(finished + self.lo, results, local)
        run = self.run
        if run.stopped or not len(finished):
            return
        runs = runs_of(finished + self.lo, local)
        if not self.workers:  # the caller's thread: a raise here ends the read (its Guard)
            for first, a, b in runs:
                run.hand(results, first - a, a, b)
            return
        for part in _spread(runs, self.workers):
            cf = self.pool.submit(self._job, results, part)  # type: ignore[union-attr]
            run.running.append(cf)
            self.jobs.append(cf)

    def _job(self, results: Results, runs: list[tuple[int, int, int]]) -> None:
        """On a worker: the runs handed over in turn, until the call stops."""
        try:
            for first, a, b in runs:
                if self.run.stopped:
                    return
                self.run.hand(results, first - a, a, b)
        except BaseException as exc:
            self.run.stopped = True  # no further run starts
            if self.error is None:
                self.error = exc
            loop = self.failure.get_loop()
            loop.call_soon_threadsafe(_set, self.failure, exc)


def _set(fut: asyncio.Future[BaseException], exc: BaseException) -> None:
    if not fut.done():
        fut.set_result(exc)


def _spread(runs: list[tuple[int, int, int]], workers: int
            ) -> list[list[tuple[int, int, int]]]:
    """The runs of one wake-up as up to ``workers`` jobs of about as many chunks each
    (a run longer than its share is cut)."""
    total = sum(b - a for _, a, b in runs)
    if workers <= 1 or total < 2 * workers:
        return [runs]
    share = -(-total // workers)
    parts: list[list[tuple[int, int, int]]] = [[]]
    room = share
    for first, a, b in runs:
        while b > a:
            take = min(room, b - a)
            parts[-1].append((first, a, a + take))
            first, a, room = first + take, a + take, room - take
            if room == 0 and (b > a or len(parts) < workers):
                parts.append([])
                room = share
    return [p for p in parts if p]


async def ring_windows(run: _Run, reader: Reader, spans: list[tuple[int, int]], bar: Any,
                       workers: int) -> None:
    """Read ``spans`` of ``run``'s requests in ring windows, ``EACH_READ_AHEAD`` at once,
    each chunk handed over as it lands (``workers``: on the pinned workers; 0: inline)."""
    total = sum(hi - lo for lo, hi in spans)
    size = min(BATCH_WINDOW, max(64, -(-total // BATCH_WINDOWS_MIN)))
    windows = [(lo, min(lo + size, end)) for start, end in spans
               for lo in range(start, end, size)]
    loop = asyncio.get_running_loop()
    failure: asyncio.Future[BaseException] = loop.create_future()
    reads: list[asyncio.Task[Any] | None] = []
    """Each window's read; ``None`` once read (a done task keeps its results alive, and
    with them the window's raw bytes, until the call ends)."""
    landings: list[Landing] = []

    def read(k: int) -> None:
        lo, hi = windows[k]
        landing = Landing(run, lo, bar, workers, failure)
        landings.append(landing)
        reads.append(loop.create_task(reader.read_many(
            run.requests[lo:hi], missing_ok=run.missing_ok, progress=cast(Any, landing))))
    try:
        for k in range(min(EACH_READ_AHEAD, len(windows))):
            read(k)
        for k in range(len(windows)):
            task = reads[k]
            assert task is not None
            await asyncio.wait((task, failure), return_when=asyncio.FIRST_COMPLETED)
            if failure.done():
                raise failure.result()
            task.result()
            reads[k] = task = None  # its jobs hold what they still need
            if k + EACH_READ_AHEAD < len(windows):
                read(k + EACH_READ_AHEAD)
            if k >= 2:  # at most two windows read and not yet handed over
                await _jobs_done(landings[k - 2], failure)
        for landing in landings:
            await _jobs_done(landing, failure)
    finally:
        await _cancel_reads(reads)


async def _jobs_done(landing: Landing, failure: asyncio.Future[BaseException]) -> None:
    """Wait for ``landing``'s jobs; the first failure of a callback is raised as soon as it
    is known (a failing job sets ``failure``), and once they are done, any of theirs
    (``failure`` is set a loop turn after the job ended: never return before it)."""
    left = [cf for cf in landing.jobs if not cf.done()]
    if left and not failure.done():
        waiting = asyncio.gather(*(asyncio.wrap_future(cf) for cf in left),
                                 return_exceptions=True)
        await asyncio.wait((waiting, failure), return_when=asyncio.FIRST_COMPLETED)
    if failure.done():
        raise failure.result()
    if landing.error is not None:
        raise landing.error


async def _cancel_reads(reads: list[asyncio.Task[Any] | None]) -> None:
    """Failed or cancelled: cancel the windows still being read and wait for them."""
    left = [task for task in reads if task is not None]
    for task in left:
        if not task.done():
            task.cancel()
    for task in left:
        if not task.done():
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled():
            task.exception()  # retrieved: the first failure was raised already

