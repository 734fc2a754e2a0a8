"""``iter_many``: a call's chunks in completion order, as an async iterator that tells what
the call did (``stats``) once exhausted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._bulk import off_loop
from ._call import parse
from ._outcome import Counters, Outcome, Stats, timed
from ._progress import Progress
from ._redact import redact_exception
from ._results import Results
from ._route import route

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["Chunks"]

_Batch = tuple[npt.NDArray[np.int64], Results, npt.NDArray[np.int64]]


class Chunks(AsyncIterator[tuple[int, memoryview]]):
    """``async for index, chunk in reader.iter_many(...)``: each request's chunk as it
    completes. Leaving the loop early cancels the reads still running. With ``keep``
    (``on_error="return"``) a failed request comes as ``(index, exception)``."""

    def __init__(self, reader: Reader, requests: Iterable[Any], out: Sequence[Any] | None,
                 bar: Progress | None, missing_ok: bool, keep: bool = False) -> None:
        self._keep = keep
        self._outcome: Outcome | None = None
        self._gen = self._run(reader, requests, out, bar, missing_ok)
        self.stats: Stats | None = None
        """What the call did (:class:`lsio.Stats`), once the iterator is exhausted or the
        call failed; ``None`` before."""

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> tuple[int, memoryview]:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _run(self, reader: Reader, requests: Iterable[Any], out: Sequence[Any] | None,
                   bar: Progress | None, missing_ok: bool
                   ) -> AsyncGenerator[tuple[int, memoryview], None]:
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue()

        def report(finished: npt.NDArray[np.int64], results: Results,
                   local: npt.NDArray[np.int64]) -> None:
            queue.put_nowait((finished, results, local))
            if bar is not None:
                bar(finished, results, local)

        counters = Counters("bulk", reader.backend)
        task = asyncio.ensure_future(timed(self._read(reader, requests, out, bar, missing_ok,
                                                      report, counters), counters))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (batch := await queue.get()) is not None:
                finished, results, local = batch
                for i, k in zip(finished.tolist(), local.tolist(), strict=True):
                    chunk = results[k]
                    if chunk is None and self._outcome is not None:
                        chunk = self._outcome.error(i) or chunk  # a failure (keep)
                    yield i, chunk
            try:
                task.result()  # raises the read's error, if any
            except Exception as exc:
                redact_exception(exc)
                self.stats = getattr(exc, "stats", None)
                raise
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if bar is not None:
                bar.close()

    async def _read(self, reader: Reader, requests: Iterable[Any], out: Sequence[Any] | None,
                    bar: Progress | None, missing_ok: bool, report: Any, counters: Counters
                    ) -> None:
        call = parse(requests, out, missing_ok, plain_max=0)
        strategy = route(call, False, reader.direct)  # the bulk road: it reports each chunk
        reqs = await off_loop(strategy.off_loop, call.reqs)
        if bar is not None:
            bar.start(len(reqs))
        outcome = Outcome(len(reqs), lambda: reqs, missing_ok, report, counters,
                          keep=self._keep)
        if self._keep:
            self._outcome = outcome
        caps = call.caps if call.caps is not None else np.zeros(0, np.int64)
        try:
            results = await reader._road.run(reqs, call.out, caps, outcome, strategy.off_loop)
        except Exception as exc:
            exc.stats = counters.stats(len(reqs), reqs.paths, None)  # type: ignore[attr-defined]
            raise
        self.stats = counters.stats(len(reqs), reqs.paths, results.lengths)
