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


async def run_pipeline(road: Bulk, reqs: Requests, pipeline: PipelineArg,
                       bar: Progress | None, missing_ok: bool, counters: Counters,
                       off: bool, keep: bool = False) -> Outputs:
    """Read in windows; hand each chunk to the pinned workers as it lands. A window's read
    starts once the window two before it is decoded, not once the one before it is read: no
    window waits for the slowest read of the last (two windows in memory, as before).
    ``keep`` (``on_error="return"``): a failed request's output is its error, and a step's
    error for a chunk that chunk's output; neither stops the call."""
    n = len(reqs)
    steps = steps_for(pipeline, n)
    outputs = Outputs([None] * n)
    bounds = window_bounds(reqs.length, WINDOW, WINDOW_BYTES)
    firsts = np.array([lo for lo, _ in bounds], np.int64)
    guards: list[Guard] = []  # one per window read: a failed step ends them at once

    def failed() -> None:
        for guard in guards:
            guard.fail(run.errors[0])

    run = PipelineRun(asyncio.get_running_loop(), steps, outputs, reqs.describe,
                      on_error=failed, keep=keep)
    reads: list[asyncio.Future[Results]] = []

    def hand_off(finished: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
        if bar is not None:
            bar(finished, results, local)
        if not run.stop.is_set() and len(finished):  # one report: one window's requests
            window = int(np.searchsorted(firsts, finished[0], side="right")) - 1
            run.put(window, [(g, results[k]) for g, k in zip(
                finished.tolist(), local.tolist(), strict=True)])

    async def read_window(k: int) -> Results:
        return await guards[k].run(road.run(reqs.window(*bounds[k]), None,
                                            np.zeros(0, np.int64), outcome, off))

    def read(k: int) -> None:
        guards.append(Guard())
        if run.errors:  # a step failed already: this window's read fails at once
            guards[k].fail(run.errors[0])
        reads.append(asyncio.ensure_future(read_window(k)))

    outcome = Outcome(n, lambda: reqs, missing_ok, hand_off, counters, keep=keep)
    lengths = np.zeros(n, np.int64)
    try:
        for k, (lo, _) in enumerate(bounds):
            if not k:
                read(0)
            if k + 1 < len(bounds):
                if k:  # the window two before the next one is decoded: its memory can go
                    await run.window_done(k - 1)
                read(k + 1)
            try:
                got = await reads[k]
                lengths[lo:lo + len(got)] = got.lengths
            except BaseException as exc:
                if exc is not guards[k].error:
                    raise
                run.raise_first()  # the lowest failing request's step, as below
                raise
            run.raise_first()
        if bounds:
            await run.window_done(len(bounds) - 1)
    except BaseException:
        run.stop.set()  # running steps finish the chunk they are on; no new ones
        raise
    finally:
        await _stop_reads(reads)
        await run.close()
    outputs.stats = counters.stats(n, reqs.paths, lengths)
    outputs.errors = np.zeros(n, bool)
    if keep:
        _settle(outputs, outcome, run.failed or [])
    return outputs


async def _stop_reads(reads: list[asyncio.Future[Results]]) -> None:
    """Failed or cancelled: cancel the window reads still running and wait for them."""
    for task in reads:
        if not task.done():
            task.cancel()
    for task in reads:
        if not task.done():
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled():
            task.exception()  # retrieved: the first failure was raised already


def _settle(outputs: Outputs, outcome: Outcome, failed: list[int]) -> None:
    """Each failed request's error as its output (a read's, or its step's)."""
    outputs.errors[failed] = True
    if outcome.failed():
        slots = Results.absent(len(outputs))
        outcome.settle(slots)
        for i in np.flatnonzero(slots.errors).tolist():
            outputs[i] = slots[i]
            outputs.errors[i] = True
