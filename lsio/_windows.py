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
    """Read in windows; hand each finished chunk to the pinned workers. ``keep``
    (``on_error="return"``): a failed request's output is its error, and a step's error for
    a chunk that chunk's output; neither stops the call."""
    n = len(reqs)
    steps = steps_for(pipeline, n)
    outputs = Outputs([None] * n)
    guard = Guard()  # a failed step ends the window's read at once
    run = PipelineRun(asyncio.get_running_loop(), steps, outputs, reqs.describe,
                      on_error=lambda: guard.fail(run.errors[0]), keep=keep)
    window = 0

    def hand_off(finished: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
        if bar is not None:
            bar(finished, results, local)
        if not run.stop.is_set():
            run.put(window, [(g, results[k]) for g, k in zip(
                finished.tolist(), local.tolist(), strict=True)])

    outcome = Outcome(n, lambda: reqs, missing_ok, hand_off, counters, keep=keep)
    lengths = np.zeros(n, np.int64)
    try:
        for window, (lo, hi) in enumerate(window_bounds(reqs.length, WINDOW, WINDOW_BYTES)):
            try:
                got = await guard.run(road.run(reqs.window(lo, hi), None,
                                               np.zeros(0, np.int64), outcome, off))
                lengths[lo:lo + len(got)] = got.lengths
            except BaseException as exc:
                if exc is not guard.error:
                    raise
                run.raise_first()  # the lowest failing request's step, as below
                raise
            if window:  # the window before is decoded: its memory can go
                await run.window_done(window - 1)
            run.raise_first()
        await run.window_done(window)
    except BaseException:
        run.stop.set()  # running steps finish the chunk they are on; no new ones
        raise
    finally:
        await run.close()
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
