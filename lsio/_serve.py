"""A parsed and routed call on its road, for the reader's doors (:mod:`lsio._reader`).

The doors serve the local small path themselves (a call of one page-cached chunk costs ~20
us: no frame more than it needs); everything else comes here: the HTTP small path under the
call's deadline, or the bulk road (:mod:`lsio._bulk`), with the call's
:class:`lsio._outcome.Outcome` and its ``stats``.

``on_error="return"`` (:func:`keeps`) is one flag down the same roads: the outcome keeps
each failure in its request's slot instead of raising the lowest one
(:meth:`lsio._outcome.Outcome.settle`), and the backends read on past a failure. The local
small path needs nothing for it: it declines any call with an error, which the bulk road
then serves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bulk import off_loop
from ._call import Call
from ._outcome import Counters, Outcome, served, timed
from ._pipeline import PipelineArg
from ._request import Requests
from ._results import Results
from ._route import Strategy

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["keeps", "serve"]

log = logging.getLogger("lsio")

ON_ERROR = ("raise", "return")


def keeps(on_error: Any) -> bool:
    """Whether ``on_error`` asks for partial results (``"return"``); ``"raise"``: no.
    ``ValueError`` naming any other value."""
    if on_error not in ON_ERROR:
        raise ValueError(f"lsio: on_error={on_error!r}: expected 'raise' or 'return'")
    return bool(on_error == "return")


async def serve(reader: Reader, call: Call, strategy: Strategy, pipeline: PipelineArg,
                keep: bool = False) -> Any:
    """The call on its road: the backend's small path if the route says so and the path
    takes it, else the bulk road. ``keep``: ``on_error="return"``."""
    if strategy.small and not (keep and strategy.remote and reader.http.timeout is not None):
        # (partial results at a deadline need the bulk road's record of what finished)
        got = await _small_road(reader, call, strategy, keep)
        if got is not None:
            return served(got, call.progress)
    counters = Counters("bulk", reader.backend)
    try:
        return await timed(_bulk_call(reader, call, strategy, counters, pipeline, keep),
                           counters)
    except Exception as exc:
        exc.stats = counters.stats(len(call), call.known_paths(), None)  # type: ignore[attr-defined]
        raise


async def _small_road(reader: Reader, call: Call, strategy: Strategy, keep: bool
                      ) -> Results | None:
    if not strategy.remote:
        return await reader._backend.read_small(call, strategy, None, None)
    paths = call.plain[0]  # type: ignore[index]
    tune = reader._tune_url(paths[0])
    counters = Counters("small", "http")
    outcome = Outcome(len(call), call.reqs, call.missing_ok, None, counters,
                      track=reader.http.timeout is not None, keep=keep)
    try:
        async with outcome.deadline(reader.http.timeout):
            got = await reader._http_backend().read_small(call, strategy, tune, outcome)
            return got if got is None or not keep else outcome.settle(got)
    except Exception as exc:
        exc.stats = counters.stats(len(call), paths, None)  # type: ignore[attr-defined]
        raise
    return None  # pragma: no cover - with keep and no deadline, the block returns


async def _bulk_call(reader: Reader, call: Call, strategy: Strategy, counters: Counters,
                     pipeline: PipelineArg, keep: bool) -> Any:
    reqs: Requests = await off_loop(strategy.off_loop, call.reqs)
    bar = call.progress
    if bar is not None:
        bar.start(len(reqs))
    try:
        if pipeline is not None:
            from ._windows import run_pipeline

            return await run_pipeline(reader._road, reqs, pipeline, bar, call.missing_ok,
                                      counters, strategy.off_loop, keep)
        outcome = Outcome(len(reqs), lambda: reqs, call.missing_ok, bar, counters,
                          track=reader.http.timeout is not None, keep=keep)
        caps = call.caps if call.caps is not None else np.zeros(0, np.int64)
        results = await reader._road.run(reqs, call.out, caps, outcome, strategy.off_loop)
        if keep:
            outcome.settle(results)
        results._stats = counters.stats(len(reqs), reqs.paths, results.lengths)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("lsio: %s", results.stats)
        return results
    finally:
        if bar is not None:
            bar.close()
