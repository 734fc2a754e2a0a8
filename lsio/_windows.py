"""``read_many(pipeline=...)``: the bulk road in windows, each finished chunk handed to the
pinned workers (:mod:`lsio._pipeline`) while the next chunks are read."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._callbacks import Guard
from ._defaults import WINDOW_BYTES
from ._outcome import Counters, Outcome
from ._pipeline import WINDOW, PipelineArg, PipelineRun, steps_for
from ._progress import Progress
from ._request import Requests
from ._results import Results
from ._sync import Escaped, boxed

if TYPE_CHECKING:
    from ._bulk import Bulk

__all__ = ["run_pipeline"]


def window_bounds(length: npt.NDArray[np.int64], count: int, nbytes: int
                  ) -> list[tuple[int, int]]:
    """``(lo, hi)`` of each window: at most ``count`` requests and, past its first, at most
    ``nbytes`` bytes (a read to the end of a file, length -1, counts as 0: unknown)."""
    n = len(length)
    ends = np.cumsum(np.maximum(length, 0))
    bounds = []
    lo = 0
    while lo < n:
        base = int(ends[lo - 1]) if lo else 0
        fits = int(np.searchsorted(ends, base + nbytes, side="right"))
        hi = min(lo + count, max(fits, lo + 1), n)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class Outputs(list[Any]):
    """Each request's last step output, in request order, what the call did (``stats``,
    :class:`lsio.Stats`), and which requests failed (``errors``: with ``on_error=
    "return"``, their outputs are their exceptions)."""

    stats: Any = None
    errors: npt.NDArray[np.bool_]


class _Reads:
    """The window reads of one pipelined call, each a task under a :class:`Guard` of its
    own: a failed step ends them all at once."""

    def __init__(self, road: Bulk, reqs: Requests, bounds: list[tuple[int, int]],
                 off: bool) -> None:
        self.road, self.reqs, self.bounds, self.off = road, reqs, bounds, off
        self.guards: list[Guard] = []
        self.tasks: list[asyncio.Future[Results] | None] = []
        """Each window's read; ``None`` once its results were taken (a done task keeps its
        result alive, and with it the window's raw bytes until the call ends)."""
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        """A step failed: every window read ends (those started later at once)."""
        self.error = self.error or exc
        for guard in self.guards:
            guard.fail(exc)

    def start(self, k: int, outcome: Outcome) -> None:
        guard = Guard()
        self.guards.append(guard)
        if self.error is not None:
            guard.fail(self.error)
        self.tasks.append(asyncio.ensure_future(self._read(guard, k, outcome)))

    async def _read(self, guard: Guard, k: int, outcome: Outcome) -> Results:
        # a step's KeyboardInterrupt or SystemExit leaves this task boxed: let out of a task,
        # asyncio re-raises it out of the loop (lsio's loop thread ended, a *_sync caller
        # waited for ever); :meth:`result` raises it in the caller's task
        return await boxed(guard.run(self.road.run(self.reqs.window(*self.bounds[k]), None,
                                                   np.zeros(0, np.int64), outcome, self.off)))

    async def result(self, k: int, run: PipelineRun) -> Results:
        """Window ``k``'s results; a failed step's error (the lowest request's) first."""
        task = self.tasks[k]
        assert task is not None
        try:
            got = await task
        except Escaped as carried:  # raised here, in the caller's task
            if carried.exc is self.guards[k].error:
                run.raise_first()
            raise carried.exc from None
        except BaseException as exc:
            if exc is self.guards[k].error:
                run.raise_first()
            raise
        self.tasks[k] = None
        return got

    async def stop(self) -> None:
        """Failed or cancelled: cancel the reads still running and wait for them."""
        tasks = [task for task in self.tasks if task is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            if not task.done():
                await asyncio.gather(task, return_exceptions=True)
            elif not task.cancelled():
                task.exception()  # retrieved: the first failure was raised already


async def run_pipeline(road: Bulk, reqs: Requests, pipeline: PipelineArg,
                       bar: Progress | None, missing_ok: bool, counters: Counters,
                       off: bool, keep: bool = False) -> Outputs:
    """Read in windows; hand each chunk to the pinned workers as it lands. A window's read
    starts once the window two before it is decoded, not once the one before it is read: no
    window waits for the slowest read of the last (two windows in memory, as before).
    ``keep`` (``on_error="return"``): a failed request's output is its error, and a step's
    error for a chunk that chunk's output; neither stops the call."""
    n = len(reqs)
    outputs = Outputs([None] * n)
    bounds = window_bounds(reqs.length, WINDOW, WINDOW_BYTES)
    firsts = np.array([lo for lo, _ in bounds], np.int64)
    reads = _Reads(road, reqs, bounds, off)
    run = PipelineRun(asyncio.get_running_loop(), steps_for(pipeline, n), outputs,
                      reqs.describe, on_error=lambda: reads.fail(run.errors[0]), keep=keep)

    def hand_off(finished: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
        if bar is not None:
            bar(finished, results, local)
        if not run.stop.is_set() and len(finished):  # one report: one window's requests
            window = int(np.searchsorted(firsts, finished[0], side="right")) - 1
            run.put(window, [(g, results[k]) for g, k in zip(
                finished.tolist(), local.tolist(), strict=True)])

    outcome = Outcome(n, lambda: reqs, missing_ok, hand_off, counters, keep=keep)
    lengths = np.zeros(n, np.int64)
    try:
        for k, (lo, _) in enumerate(bounds):
            if not k:
                reads.start(0, outcome)
            if k + 1 < len(bounds):
                if k:  # the window two before the next one is decoded: its memory can go
                    await run.window_done(k - 1)
                reads.start(k + 1, outcome)
            got = await reads.result(k, run)
            lengths[lo:lo + len(got)] = got.lengths
            del got  # the workers hold the views they still need
            run.raise_first()
        if bounds:
            await run.window_done(len(bounds) - 1)
    except BaseException:
        run.stop.set()  # running steps finish the chunk they are on; no new ones
        raise
    finally:
        await reads.stop()
        await run.close()
    # every step has run now: a step of the window before the last may have failed after the
    # last window was done (that window's own wait is not awaited once the last is read)
    run.raise_first()
    outputs.stats = counters.stats(n, reqs.paths, lengths)
    outputs.errors = np.zeros(n, bool)
    if keep:
        _settle(outputs, outcome, run.failed or [])
    return outputs


def _settle(outputs: Outputs, outcome: Outcome, failed: list[int]) -> None:
    """Each failed request's error as its output (a read's, or its step's)."""
    outputs.errors[failed] = True
    if outcome.failed():
        slots = Results.absent(len(outputs))
        outcome.settle(slots)
        for i in np.flatnonzero(slots.errors).tolist():
            outputs[i] = slots[i]
            outputs.errors[i] = True
