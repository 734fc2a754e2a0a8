"""Where every road ends: one call's outcome, and what the call did.

Whichever road serves a call (a backend's small path, the bulk path, a mixed call's two
parts, the last-resort read to the end), it reports here: finished requests
(:meth:`Outcome.report`: the caller's progress, once per request, and what the deadline
names), failed ones (:meth:`Outcome.fail`: ``missing_ok`` decides, once, which failures are
missing files and which are errors), and the counters of :class:`Stats`. The call's error is
raised here only (:meth:`Outcome.raise_first`): the lowest failing request's ``OSError``,
naming its path, whichever road met it. Failures are kept as columns (an errno per request,
a sparse ``{index: detail}``), never as a Python object per request.

So "which path does this call take" is :mod:`lsio._route`; "where are its errors raised" is
this module.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import MISSING, request_error
from ._redact import redact

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._request import Requests
    from ._results import Results

__all__ = ["Counters", "Outcome", "Stats", "served", "timed", "transport_of"]

log = logging.getLogger("lsio")

Progress = Callable[["npt.NDArray[np.int64]", "Results", "npt.NDArray[np.int64]"], None]
"""Told (request indices in the caller's list, the part's results, indices in the part)."""


class Stats:
    """What one call did. ``Results.stats``, ``exc.stats`` on a call's error, and the
    iterator of ``iter_many`` once exhausted carry one.

    The paths keep raw counters; derived fields are computed when first read."""

    __slots__ = ("route", "backend", "requests", "operations", "_transferred", "retries",
                 "loop_hold", "_files", "_lengths", "_requested", "transport")

    def __init__(self, route: str, backend: str, requests: int, operations: int,
                 transferred: int | None, retries: int, loop_hold: float, files: Any,
                 lengths: Any, transport: str = "") -> None:
        self.route = route
        """Road the call took: ``"small"`` (served at once on the calling thread),
        ``"small-thread"`` (the small path on a worker thread), ``"cold"`` (a few requests
        not in the page cache, read by blocking calls off the loop), ``"bulk"`` (stat,
        plan, the backend's batched reads) or ``"mixed"`` (local and remote parts, each
        bulk)."""
        self.backend = backend
        """``"uring"``, ``"threads"``, ``"http"`` or ``"mixed"``."""
        self.requests = requests
        """Requests in the call."""
        self.operations = operations
        """Reads issued: io_uring or thread reads of files, HTTP GETs (size probes
        included)."""
        self.retries = retries
        """Requests sent again (HTTP retries, reads of changed files planned again)."""
        self.loop_hold = loop_hold
        """Longest synchronous span, in seconds, that lsio itself ran on the event loop's
        thread during the call (0.0 where the call ran on no event loop)."""
        self.transport = transport
        """What sent the HTTP requests: ``"curl"`` (lsio's C transport), ``"aiohttp"``,
        ``"mixed"`` (some each), ``""`` (none were sent)."""
        self._transferred = transferred
        self._files = files
        self._lengths = lengths
        self._requested: int | None = None

    @property
    def files(self) -> int:
        """Distinct files or objects the call named."""
        if not isinstance(self._files, int):
            self._files = len(set(self._files))
        return self._files

    @property
    def bytes_requested(self) -> int:
        """Bytes the call returned (each request's length, as read)."""
        if self._requested is None:
            self._requested = 0 if self._lengths is None else int(np.sum(self._lengths))
        return self._requested

    @property
    def bytes_transferred(self) -> int:
        """Bytes read from disk or received on the wire: more than requested where reads
        were merged through gaps or aligned for O_DIRECT, less where requests overlap."""
        return self.bytes_requested if self._transferred is None else self._transferred

    def __repr__(self) -> str:
        return (f"lsio.Stats(route={self.route!r}, backend={self.backend!r}, "
                f"requests={self.requests}, files={self.files}, "
                f"bytes_requested={self.bytes_requested}, "
                f"bytes_transferred={self.bytes_transferred}, operations={self.operations}, "
                f"retries={self.retries}, loop_hold={self.loop_hold:.6f}, "
                f"transport={self.transport!r})")


class Counters:
    """The raw counters of one bulk or mixed call, filled as it runs."""

    __slots__ = ("route", "backend", "operations", "transferred", "retries", "hold",
                 "transport")

    def __init__(self, route: str, backend: str) -> None:
        self.route, self.backend = route, backend
        self.operations = self.transferred = self.retries = 0
        self.hold = 0.0
        self.transport = ""

    def sent_by(self, transport: str) -> None:
        """Requests of the call were sent by ``transport`` (``""``: none)."""
        self.transport = merge_transports(self.transport, transport)

    def stats(self, n: int, files: Any, lengths: Any) -> Stats:
        return Stats(self.route, self.backend, n, self.operations, self.transferred,
                     self.retries, self.hold, files, lengths, self.transport)


def merge_transports(a: str, b: str) -> str:
    """What sent the requests of two parts of a call (see :attr:`Stats.transport`)."""
    return b if not a or a == b else a if not b else "mixed"


def transport_of(sent: int, by_c: int) -> str:
    """:attr:`Stats.transport` of ``sent`` HTTP requests, ``by_c`` of them by the C
    transport."""
    return "" if sent == 0 else "curl" if by_c == sent else "aiohttp" if by_c == 0 else "mixed"


class Outcome:
    """One call's finished and failed requests, in the caller's numbering."""

    __slots__ = ("n", "missing_ok", "progress", "reqs", "err", "detail", "errors", "done",
                 "counters", "keep", "parts", "late")

    def __init__(self, n: int, reqs: Callable[[], Requests], missing_ok: bool,
                 progress: Progress | None, counters: Counters, *, track: bool = False,
                 keep: bool = False) -> None:
        self.n = n
        self.keep = keep
        """``on_error="return"``: failures are kept per request, never raised."""
        self.late: str | None = None
        """With ``keep``: why the requests not finished by the deadline failed."""
        self.missing_ok = missing_ok
        self.progress = progress
        self.reqs = reqs
        """The call's requests (made on demand: only an error needs them)."""
        self.err: npt.NDArray[np.int32] | None = None
        """errno of each failed request (0: none), made at the first failure."""
        self.detail: dict[int, str] = {}
        """What the backend knows of a failure beyond its errno (an HTTP status)."""
        self.errors: dict[int, BaseException] = {}
        """A request's own exception, where it is not an errno (kept per slot)."""
        self.done = np.zeros(n, bool) if track or progress is not None else None
        """Requests reported finished (kept for progress and the deadline)."""
        self.parts: list[tuple[npt.NDArray[np.int64], Results, npt.NDArray[np.int64]]] | None
        self.parts = [] if keep and self.done is not None else None
        """With ``keep``: what was reported, to return if the deadline passes."""
        self.counters = counters

    def report(self, idx: npt.NDArray[np.int64], results: Results,
               local: npt.NDArray[np.int64]) -> None:
        """Requests ``idx`` (caller's numbering; ``results[local[k]]`` is ``idx[k]``'s)
        are finished: told to the caller's progress, once each."""
        if self.done is not None:
            fresh = ~self.done[idx]
            if not fresh.all():  # a road may see a request finish twice: told once
                idx, local = idx[fresh], local[fresh]
                if not len(idx):
                    return
            self.done[idx] = True
            if self.parts is not None:
                self.parts.append((idx, results, local))
        if self.progress is not None:
            self.progress(idx, results, local)

    def fail(self, idx: npt.NDArray[np.int64], codes: npt.NDArray[Any],
             detail: dict[int, str] | None = None) -> npt.NDArray[np.bool_]:
        """Requests ``idx`` failed with errnos ``codes`` (``detail``: by position in
        ``idx``). Returns which of them are missing files under ``missing_ok`` (their
        results are ``None``); the others are the call's errors."""
        codes = np.asarray(codes, np.int32)
        gone = (np.isin(codes, MISSING) if self.missing_ok else np.zeros(len(idx), bool))
        bad = np.flatnonzero(~gone)
        if self.keep:  # every failure a placeholder: the road skips it, settle() fills it
            gone = np.ones(len(idx), bool)
        if len(bad):
            if self.err is None:
                self.err = np.zeros(self.n, np.int32)
            self.err[idx[bad]] = codes[bad]
            for k in bad.tolist() if detail else ():
                if k in detail:  # type: ignore[operator]
                    self.detail[int(idx[k])] = detail[k]  # type: ignore[index]
        return gone

    def failed(self) -> bool:
        return self.err is not None or bool(self.errors)

    def first_error(self) -> BaseException | None:
        """The lowest failing request's error, or ``None``."""
        first = self.n
        if self.err is not None:
            hit = np.flatnonzero(self.err)
            first = int(hit[0]) if len(hit) else self.n
        if self.errors and min(self.errors) < first:
            return self.errors[min(self.errors)]
        if first == self.n:
            return None
        return request_error(int(self.err[first]), self.reqs(), first,  # type: ignore[index]
                             self.detail.get(first))

    def raise_first(self) -> None:
        """Raise the lowest failing request's error, if any failed (never with ``keep``:
        :meth:`settle` puts each in its slot)."""
        if self.keep:
            return
        exc = self.first_error()
        if exc is not None:
            raise exc

    def error(self, i: int) -> BaseException | None:
        """Request ``i``'s own exception (caller's numbering), built now, the one
        :meth:`raise_first` would raise for it; ``None`` if it did not fail."""
        if i in self.errors:
            return self.errors[i]
        if self.err is None or not self.err[i]:
            return None
        code = int(self.err[i])
        detail = self.detail.get(i, self.late if code == errno.ETIMEDOUT else None)
        return request_error(code, self.reqs(), i, detail)

    def settle(self, results: Results) -> Results:
        """``keep``: each failed request's exception put in its slot of ``results`` (the
        whole call's, in the caller's numbering), as ``Results.errors`` tells."""
        if not self.failed():
            return results
        bad = set(self.errors)
        if self.err is not None:
            bad.update(np.flatnonzero(self.err).tolist())
        results.fail({i: self.error(i) for i in sorted(bad)})  # type: ignore[misc]
        return results

    @asynccontextmanager
    async def deadline(self, seconds: float | None) -> AsyncIterator[None]:
        """The call's overall deadline (``HttpOptions.timeout``), as a ``TimeoutError``
        naming the first request not finished by then (``request_index``, ``filename``),
        as I/O errors do. With ``keep`` nothing is raised: the block ends, and each request
        not finished is a ``TimeoutError`` of its own (:meth:`expired`)."""
        if seconds is None:
            yield
            return
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            if not self.keep:
                raise self._late(seconds) from None
            self.late = (f"lsio: not read within HttpOptions.timeout={seconds} s (the "
                         f"deadline of a read_many of {self.n} requests)")

    def expired(self, reqs: Requests) -> Results:
        """``keep``, the deadline passed: the results of ``reqs`` (this road's requests)
        that finished, and a ``TimeoutError`` (``ETIMEDOUT``) for each of the others."""
        from ._results import Results

        assert self.parts is not None and self.done is not None
        mine = np.arange(len(reqs), dtype=np.int64) if reqs.number is None else reqs.number
        local = np.full(self.n, -1, np.int64)
        local[mine] = np.arange(len(reqs), dtype=np.int64)
        parts = []
        for idx, results, at in self.parts:
            keep = local[idx] >= 0
            parts.append((results.take(at[keep]), local[idx[keep]]))
        late = np.flatnonzero(~self.done[mine])
        if len(late):
            if self.err is None:
                self.err = np.zeros(self.n, np.int32)
            self.err[mine[late]] = errno.ETIMEDOUT
            absent = Results.absent(len(late))
            parts.append((absent, late))
            self.report(mine[late], absent, np.arange(len(late), dtype=np.int64))
        return Results.merge(len(reqs), parts)

    def _late(self, seconds: float) -> TimeoutError:
        reqs = self.reqs()
        late = (np.flatnonzero(~self.done) if self.done is not None
                else np.arange(self.n, dtype=np.int64))
        first = int(late[0]) if len(late) else 0
        error = TimeoutError(errno.ETIMEDOUT, f"lsio: read_many of {self.n} requests did "
                             f"not finish within HttpOptions.timeout={seconds} s "
                             f"({len(late)} not read)", reqs.paths[int(reqs.file[first])])
        error.request_index = first  # type: ignore[attr-defined]
        error.add_note(f"lsio: the first request not read: {reqs.describe(first)}")
        return error


class _Timed:
    """Runs a coroutine step by step, keeping the longest step: each step is a span the
    call ran on the event loop's thread without yielding."""

    __slots__ = ("coro", "counters")

    def __init__(self, coro: Any, counters: Counters) -> None:
        self.coro, self.counters = coro, counters

    def __await__(self) -> Any:
        it = self.coro.__await__()
        value: Any = None
        exc: BaseException | None = None
        clock, counters = time.perf_counter, self.counters
        while True:
            start = clock()
            try:
                step = it.send(value) if exc is None else it.throw(exc)
            except StopIteration as stop:
                counters.hold = max(counters.hold, clock() - start)
                return stop.value
            except BaseException:
                counters.hold = max(counters.hold, clock() - start)
                raise
            counters.hold = max(counters.hold, clock() - start)
            try:
                value, exc = (yield step), None
            except BaseException as thrown:  # cancellation, thrown into the step
                value, exc = None, thrown


def timed(coro: Any, counters: Counters) -> Any:
    """``await timed(coro, counters)``: ``await coro``, with its longest step in
    ``counters.hold``."""
    return _Timed(coro, counters)


def served(got: Results, bar: Any = None) -> Results:
    """A call a small path served: its progress (``bar``) told at once, its stats logged."""
    if bar is not None:
        everything = np.arange(len(got), dtype=np.int64)
        bar.start(len(got))
        try:
            bar(everything, got, everything)
        finally:
            bar.close()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("lsio: %s", redact(repr(got.stats)))
    return got
