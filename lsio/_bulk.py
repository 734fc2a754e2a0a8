"""The bulk road: stat -> plan -> backend reads -> results, for calls of any size.

Every call the small paths decline comes here (:mod:`lsio._route`). A call's requests are
split by storage (local files, URLs: a mixed call runs both parts at once), each part is
stat'ed by its backend, planned by the pure planner (``lsio._plan``) as the backend's
layout asks, and read by the backend into one arena or the caller's buffers. Requests of
files that changed while read are planned and read again (one version each). Finished and
failed requests go to the call's :class:`lsio._outcome.Outcome`, which applies
``missing_ok``, progress, the deadline and the lowest-index error for every part.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ._callbacks import Guard
from ._defaults import OUT_INFLIGHT_BYTES, READ_ATTEMPTS
from ._errors import no_memory
from ._inmemory import caller, read_to_end, serve_from_memory, too_small
from ._memory import allocate
from ._outcome import Outcome
from ._plan import LINUX_MAX_RW, Plan, distinct, plan, resolve_ranges
from ._presets import PRESETS, Preset
from ._request import Requests
from ._results import Results
from ._tracker import Tracker, stale
from ._types import StatResult
from ._url import is_url, local_path
from .backends._base import Backend, Layout, ReadResult, RunOptions

__all__ = ["Bulk", "off_loop"]

T = TypeVar("T")


async def off_loop(on_thread: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, in a thread when the route says so (``Strategy.off_loop``):
    checking and planning 50 000 requests takes ~35 ms, which would stall the event loop;
    a thread hop costs ~0.1 ms."""
    if not on_thread:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


class _Changed(Exception):
    """A remote object changed while the call read it, before any request was handed out:
    the call's remote part is read again."""


@dataclass(frozen=True, slots=True)
class _Part:
    """One storage's requests of a call, and where their bytes go."""

    reqs: Requests
    out: Sequence[Any] | None
    caps: npt.NDArray[np.int64]
    remote: bool

    def select(self, keep: npt.NDArray[np.bool_]) -> _Part:
        out = None if self.out is None else [self.out[int(i)] for i in np.flatnonzero(keep)]
        return _Part(self.reqs.select(keep), out,
                     self.caps[keep] if self.out is not None else self.caps, self.remote)


@dataclass(slots=True)
class Bulk:
    """The bulk road of one reader."""

    tuning: Callable[[str], Preset]
    local: Backend
    remote: Callable[[], Backend]
    direct: bool | None
    max_open: Callable[[], int]
    timeout: float | None

    async def run(self, reqs: Requests, out: Sequence[Any] | None,
                  caps: npt.NDArray[np.int64], outcome: Outcome, off: bool) -> Results:
        """Every request of the call, in order."""
        remote = (np.fromiter(map(is_url, reqs.paths), bool, len(reqs.paths))
                  if reqs.has_urls() else np.zeros(len(reqs.paths), bool))
        outcome.counters.backend = self.local.name
        if not remote.any():
            return await self._part(_Part(reqs, out, caps, False), outcome, off)
        outcome.counters.backend = "http" if remote.all() else "mixed"
        async with outcome.deadline(self.timeout):
            if remote.all():
                return await self._part(_Part(reqs, out, caps, True), outcome, off)
            outcome.counters.route = "mixed"
            return await self._mixed(reqs, remote, out, caps, outcome, off)
        return outcome.expired(reqs)  # on_error="return": the deadline passed

    async def _mixed(self, reqs: Requests, remote: npt.NDArray[np.bool_],
                     out: Sequence[Any] | None, caps: npt.NDArray[np.int64],
                     outcome: Outcome, off: bool) -> Results:
        """Local and remote requests in one call: each part planned for its own storage,
        both running at once; the lowest failing request of either is the call's error."""
        parts = [reqs.part(~remote), reqs.part(remote)]
        where = [np.flatnonzero(~remote[reqs.file]), np.flatnonzero(remote[reqs.file])]
        tasks = []
        for is_remote, part, at in zip((False, True), parts, where, strict=True):
            sub_out = None if out is None else [out[i] for i in at.tolist()]
            tasks.append(asyncio.ensure_future(self._part(_Part(
                part, sub_out, caps[at] if out is not None else caps, is_remote),
                outcome, off)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            got = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in got if isinstance(e, BaseException)
                  and not isinstance(e, asyncio.CancelledError)]
        if errors:
            outcome.raise_first()  # the lowest failing request of both parts
            raise min(errors, key=lambda e: getattr(e, "request_index", len(reqs)))
        if any(isinstance(e, BaseException) for e in got):
            raise asyncio.CancelledError()
        return Results.merge(len(reqs), list(zip(got, where, strict=True)))  # type: ignore[arg-type]

    async def _part(self, part: _Part, outcome: Outcome, off: bool, attempt: int = 0
                    ) -> Results:
        """One storage's requests. ``attempt``: how many times they were read before, their
        files having changed under the read (remote objects that kept changing
        ``READ_ATTEMPTS`` times fail with ``ESTALE``)."""
        while True:
            try:
                return await self._part_once(part, outcome, off, attempt)
            except _Changed:  # nothing handed out yet: the whole part again
                attempt += 1
                outcome.counters.retries += len(part.reqs)

    async def _part_once(self, part: _Part, outcome: Outcome, off: bool, attempt: int
                         ) -> Results:
        reqs = part.reqs
        tune = self.tuning(reqs.paths[0]) if len(reqs) else PRESETS["nvme"]
        backend = self.remote() if part.remote else self.local
        if not part.remote and "file://" in "\n".join(reqs.paths).lower():
            reqs = reqs.with_paths([local_path(p) for p in reqs.paths])
            part = _Part(reqs, part.out, part.caps, False)
        stat = await backend.stat(reqs, tune=tune, missing_ok=outcome.missing_ok,
                                  keep_going=outcome.keep)
        counters = outcome.counters
        counters.operations += stat.operations
        counters.retries += stat.retries
        counters.transferred += stat.transferred
        counters.sent_by(stat.transport)
        if part.remote and attempt + 1 < READ_ATTEMPTS and np.any(stat.err == errno.ESTALE):
            raise _Changed()  # between a size probe's requests: nothing is handed out yet
        gone = np.zeros(len(reqs), bool)
        failed = np.flatnonzero(stat.err[reqs.file])
        if len(failed):
            files = reqs.file[failed]
            detail = {k: stat.detail[int(f)] for k, f in enumerate(files.tolist())
                      if int(f) in stat.detail}
            gone[failed[outcome.fail(caller(reqs, failed), stat.err[files], detail)]] = True
            outcome.raise_first()
        parts: list[tuple[Results, npt.NDArray[np.int64]]] = []
        left = ~gone
        if gone.any():
            idx = np.flatnonzero(gone)
            absent = Results.absent(len(idx))
            parts.append((absent, idx))
            outcome.report(caller(reqs, idx), absent, np.arange(len(idx), dtype=np.int64))
        if stat.bodies is not None:
            served = serve_from_memory(stat.bodies, reqs, stat.size, part.out, part.caps,
                                       outcome, left)
            if served is not None:
                done, early = served
                parts.append((early, np.flatnonzero(done)))
                left &= ~done
        if not parts:
            return await self._read(backend, part, stat, tune, outcome, off, attempt)
        late = await self._read(backend, part.select(left), stat, tune, outcome, off, attempt)
        parts.append((late, np.flatnonzero(left)))
        return Results.merge(len(reqs), parts)

    async def _read(self, backend: Backend, part: _Part, stat: StatResult, tune: Preset,
                    outcome: Outcome, off: bool, attempt: int) -> Results:
        """layout -> plan -> backend read -> results, once the sizes are known."""
        reqs, out = part.reqs, part.out
        layout = await backend.layout(reqs, stat, tune, direct=self.direct,
                                      own_destinations=out is not None)
        p = await off_loop(
            off, plan, reqs.file, reqs.offset, reqs.length, file_size=stat.size,
            file_align=layout.file_align, max_gap=layout.max_gap,
            max_read=layout.max_read or tune.max_read,
            split_size=LINUX_MAX_RW, arena_align=layout.arena_align,
            own_destinations=out is not None, check_eof=layout.check_eof,
            sparse=layout.sparse and out is None,
            gap_budget=_gap_budget(reqs, stat.size, layout.gap_budget_ratio))
        buffers = _buffers(reqs, p, out, part.caps)
        tracker = await off_loop(off, Tracker, p, *(
            (reqs.file, stat.size) if layout.check_eof else ()))
        results = Results(buffers[:len(reqs)] if out is not None else buffers, p.req_base,
                          p.req_buf, tracker.lengths)

        def report(finished: npt.NDArray[np.int64]) -> None:
            tracker.reported[finished] = True
            outcome.report(caller(reqs, finished), results, finished)

        if p.nops == 0:
            if outcome.done is not None:
                report(np.arange(len(reqs), dtype=np.int64))
            return results
        hold = [0.0]
        res = await self._execute(backend, part, stat, layout, p, buffers, tune, tracker,
                                  report if outcome.done is not None else None,
                                  outcome, hold)
        counters = outcome.counters
        counters.hold = max(counters.hold, hold[0])
        counters.operations += res.operations if res.operations is not None else p.nops
        counters.retries += res.retries
        counters.sent_by(res.transport)
        counters.transferred += int(res.done.sum())
        return await self._settle(part, p, res, layout, tracker, results, outcome, off,
                                  attempt, report)

    async def _execute(self, backend: Backend, part: _Part, stat: StatResult, layout: Layout,
                       p: Plan, buffers: list[Any], tune: Preset, tracker: Tracker,
                       report: Callable[[npt.NDArray[np.int64]], None] | None,
                       outcome: Outcome, hold: list[float]) -> ReadResult:
        """The backend reads the plan; each finished request is reported as it lands."""
        on_progress = guard = None
        if report is not None:
            empty = np.flatnonzero(p.req_group < 0)  # nothing to read: finished already
            if len(empty):
                report(empty)

            def finished_reads(ops: npt.NDArray[np.int64], done: npt.NDArray[np.int64],
                               err: npt.NDArray[np.int32]) -> None:
                finished = tracker.update(ops[err[ops] == 0], done)
                if len(finished):
                    report(finished)

            # the caller's callback runs inside the backend's completion handling: one
            # that raises must end the read (and the call), not the backend
            guard = Guard()
            on_progress = guard.wrap(finished_reads)
        depth = tune.queue_depth
        if part.out is not None:
            depth = min(depth, max(4, OUT_INFLIGHT_BYTES * p.nops // max(p.bytes_read, 1)))
        reading = backend.read(part.reqs, stat, layout, p, buffers, RunOptions(
            queue_depth=depth, max_open=self.max_open(), on_progress=on_progress,
            missing_ok=outcome.missing_ok, keep_going=outcome.keep,
            caller_memory=part.out is not None,
            changed=tracker.changed if layout.check_eof else None, hold=hold))
        return await (reading if guard is None else guard.run(reading))

    async def _settle(self, part: _Part, p: Plan, res: ReadResult, layout: Layout,
                      tracker: Tracker, results: Results, outcome: Outcome, off: bool,
                      attempt: int, report: Callable[[npt.NDArray[np.int64]], None]
                      ) -> Results:
        """Failed reads to the outcome; requests of changed files read again."""
        reqs = part.reqs
        if part.remote and attempt + 1 < READ_ATTEMPTS:
            redo = stale(reqs, p, res, tracker)  # objects that changed while read
            if redo is not None and outcome.done is None:
                raise _Changed()  # (requests served by size probes too): all again
            if redo is not None:  # those handed out are final; the others again
                return await self._again(part, results, redo, outcome, off, attempt)
        _failures(reqs, p, res, tracker, results, outcome,
                  report if outcome.done is not None else None)
        if outcome.done is None and np.any(res.done != p.op_length):
            tracker.update(np.arange(p.nops, dtype=np.int64), res.done)
        if not layout.check_eof:
            return results
        tracker.check(np.flatnonzero(res.err == 0), res.done)
        redo = tracker.changed[reqs.file] & ~tracker.reported & ~results.missing
        if not redo.any():
            return results
        return await self._again(part, results, redo, outcome, off, attempt)

    async def _again(self, part: _Part, results: Results, redo: npt.NDArray[np.bool_],
                     outcome: Outcome, off: bool, attempt: int) -> Results:
        """Files replaced or changed while they were read: their requests not yet handed
        out (``redo``) are planned and read again from a fresh stat, so each returns one
        version; after ``READ_ATTEMPTS``, each such file is read to its end at once (a
        local file; a URL's last attempt reports the change, ``ESTALE``)."""
        rest = part.select(redo)
        outcome.counters.retries += int(redo.sum())
        if attempt + 1 < READ_ATTEMPTS or part.remote:
            again = await self._part(rest, outcome, off, attempt + 1)
        else:
            again = await read_to_end(rest.reqs, rest.out, rest.caps, outcome)
        keep = np.flatnonzero(~redo)
        return Results.merge(len(part.reqs), [(results.take(keep), keep),
                                              (again, np.flatnonzero(redo))])


def _buffers(reqs: Requests, p: Plan, out: Sequence[Any] | None,
             caps: npt.NDArray[np.int64]) -> list[Any]:
    """Where the plan's reads land: a fresh arena, or the caller's buffers (checked to be
    large enough) and a scratch buffer for end-of-file probes."""
    if out is None:
        try:
            return [allocate(p.arena_size)]
        except (OSError, MemoryError) as exc:  # mmap: ENOMEM; numpy: MemoryError
            raise no_memory(reqs, p.req_length, p.arena_size) from exc
    small = np.flatnonzero(caps < p.req_length)
    if len(small):
        i = int(small[0])
        raise too_small(reqs, i, int(caps[i]), int(p.req_length[i]))
    buffers = list(out)
    if p.eof_scratch:
        buffers.append(bytearray(p.eof_scratch))
    return buffers


def _failures(reqs: Requests, p: Plan, res: ReadResult, tracker: Tracker, results: Results,
              outcome: Outcome, report: Callable[[npt.NDArray[np.int64]], None] | None
              ) -> None:
    """Failed reads to the outcome: files or objects found gone while reading become
    missing results under ``missing_ok``; any other failure raises the lowest failing
    request's error."""
    failed = np.flatnonzero(res.err)
    if not len(failed):
        return
    groups, first_op = distinct(p.op_group[failed])[0], {}
    for op in failed[::-1].tolist():  # each group's first failing read
        first_op[int(p.op_group[op])] = op
    victims = tracker.requests_of(groups)
    ops = np.array([first_op[int(g)] for g in p.req_group[victims].tolist()], np.int64)
    detail = {k: res.detail[op] for k, op in enumerate(ops.tolist()) if op in res.detail}
    gone = outcome.fail(caller(reqs, victims), res.err[ops], detail)
    lost = victims[gone]
    if len(lost):
        results.missing[lost] = True
        results.lengths[lost] = 0
        if report is not None:
            report(lost[~tracker.reported[lost]])
    outcome.raise_first()


def _gap_budget(reqs: Requests, size: npt.NDArray[np.int64], ratio: float | None
                ) -> int | None:
    """Gap bytes a call may read through: ``ratio - 1`` times the bytes its requests ask
    for (ranges clamped to the sizes known; a range of an object whose size was not asked
    counts in full)."""
    if ratio is None:
        return None
    start, end = resolve_ranges(reqs.file, reqs.offset, reqs.length, size)
    asked = float((end - start).astype(np.float64).sum())
    return int(min(max(ratio - 1.0, 0.0) * asked, 2.0**62))
