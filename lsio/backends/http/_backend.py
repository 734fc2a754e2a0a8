"""The HTTP backend: the backend interface over HTTP(S), S3, GCS and Azure.

A call runs in the same three steps as the local backends:

1. *Stat*: objects whose requests need the size (whole-object reads, suffixes, very long
   ranges) are fetched with ``Range: bytes=0-(max_read-1)`` (or a tail probe); the answer's
   ``Content-Range`` gives the size and its body is kept (:attr:`StatResult.bodies`), so an
   object smaller than ``max_read`` costs exactly one request. Other objects are never asked
   for their size: a range past the end simply comes back short.
2. *Layout*: on plain HTTP servers, whether they answer ``multipart/byteranges`` (probed once
   per host and process): those get the ``http`` preset's small gap, others the cloud gap.
3. *Read*: the planner's reads become range GETs, a fixed number of worker coroutines (the
   concurrency cap) taking them in plan order; small reads of one file on a multipart server
   go together in one request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..._defaults import ARENA_ALIGN
from ..._outcome import transport_of
from ..._plan import Plan
from ..._presets import PRESETS, Preset
from ..._request import Requests
from ..._types import Bodies, ProgressFn, StatResult
from ..._url import HttpOptions, redact
from .._base import Layout, ReadResult, RunOptions
from ..cloud import PROVIDERS
from . import _batch, _head, _list, _small, _verdict
from ._client import Credentials, HttpClient
from ._cost import PROBE_BYTES, cost_of
from ._protocol import (
    HttpError,
    Retry,
    content_range,
    plan_jobs,
    range_header,
    size_probes,
)
from ._read import PACE, PlanReads, Read, origin, workers
from ._session import read_body

if TYPE_CHECKING:
    from ..._call import Call
    from ..._outcome import Outcome
    from ..._prefix import Prefixes
    from ..._results import Results
    from ..._route import Strategy

__all__ = ["HttpBackend"]

CALIBRATE_MIN_RANGES = 64
"""A host not measured yet is measured before planning a call with this many ranges on it
(one request of 1 MiB): below that, the preset's gap is good enough."""


@dataclass(slots=True)
class _Call:
    """The backend's state for one call (``StatResult.state``)."""

    client: HttpClient
    concurrency: int
    probe_size: int
    missing_ok: bool
    multipart: bool = False
    probing: dict[Any, asyncio.Lock] = field(default_factory=dict)
    told: tuple[int, int, int] = (0, 0, 0)
    """The client's (requests, retries, requests by the C transport) already reported."""

    def tally(self) -> tuple[int, int, str]:
        """The client's requests and retries since the last tally, and what sent them
        (:attr:`lsio.Stats.transport`)."""
        c = self.client
        now = (c.requests, c.retries, c.c_requests)
        sent, again, by_c = (now[k] - self.told[k] for k in range(3))
        self.told = now
        return sent, again, transport_of(sent, by_c)


class HttpBackend:
    name = "http"

    def __init__(self, options: HttpOptions, prefixes: Prefixes | None = None) -> None:
        self.options = options
        self.prefixes = prefixes
        """Options per URL prefix (:mod:`lsio._prefix`), or ``None``."""
        self._auths: Credentials = {}
        """Credentials per service (a provider's ``auth_key``), found on first use (a
        lookup takes ~0.1 s: files, a metadata server)."""

    def client(self, paths: list[str]) -> HttpClient:
        """A client for one call's ``paths``, sharing the backend's credentials and the
        cloud providers' registry (:mod:`lsio.backends.cloud`)."""
        return HttpClient(paths, self.options, self._auths, PROVIDERS, self.prefixes)

    def list_keys(self, root: str, prefix: str, delimiter: str | None = None
                  ) -> AsyncIterator[str]:
        """Keys under the object-store ``root`` starting with ``prefix`` (:mod:`._list`)."""
        return _list.list_keys(self.client, root, prefix, delimiter)

    async def head(self, path: str) -> _head.Head:
        """The metadata of the object at ``path`` (:mod:`._head`); ``OSError`` naming it."""
        client = self.client([path])
        await client.start()
        try:
            return await _head.head(client, 0)
        except HttpError as exc:
            raise OSError(exc.errno, f"{os.strerror(exc.errno)}: {redact(exc.detail)}",
                          path) from None

    async def read_small(self, call: Call, strategy: Strategy, tune: Preset | None,
                         outcome: Outcome | None) -> Results | None:
        """The small path (:mod:`._small`): a few requests, each of its own object."""
        assert tune is not None and outcome is not None
        return await _small.serve(self, call, tune, outcome)

    def close(self) -> None:
        """Forget the credentials found (connections belong to each loop's session, which
        closes with its loop)."""
        self._auths.clear()

    # -- stat ----------------------------------------------------------------------------
    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool,
                   keep_going: bool = False) -> StatResult:
        client = self.client(reqs.paths)
        call = _Call(client, self.options.concurrency or tune.queue_depth, tune.max_read,
                     missing_ok)
        await client.start()
        if len(reqs.paths) > PACE:  # (resolving thousands of URLs takes milliseconds)
            await asyncio.sleep(0)
        need, suffix = size_probes(reqs, tune.max_read)
        n = len(reqs.paths)
        err = np.zeros(n, np.int32)
        detail: dict[int, str] = {}

        async def probe(file: int) -> None:
            tail = int(suffix[file])
            r = tried.get(file) or (Read(-1, file, -tail, tail, None) if tail else
                                    Read(-1, file, 0, call.probe_size, None))
            got = await client.get(r)
            if file not in client.whole:  # else the server sent it whole
                client.keep_probe(r, got, call.probe_size, tail)

        heads = np.flatnonzero(need & (suffix == 0)).tolist()
        tried = await _batch.probe_many(client, heads, call.probe_size, call.concurrency)
        todo = list(tried)
        todo += np.flatnonzero(need & (suffix != 0)).tolist()
        await workers(sorted(todo), probe, call.concurrency, err, detail, missing_ok,
                      keep_going)
        size = np.where(err == 0, np.array(client.sizes, np.int64), 0)
        sent, again, by = call.tally()
        bodies = _bodies(client)
        return StatResult(size, np.ones(n, np.int64), err, detail=detail, bodies=bodies,
                          state=call, operations=sent, retries=again, transport=by,
                          transferred=0 if bodies is None else int(np.sum(bodies[1].clip(0))))

    # -- layout --------------------------------------------------------------------------
    async def layout(self, reqs: Requests, stat: StatResult, tune: Preset, *,
                     direct: bool | None, own_destinations: bool) -> Layout:
        """Plain HTTP servers that answer multipart ranges keep the ``http`` preset's small
        gap; object stores and servers that do not get the gap their host's answers show
        worth reading through (:mod:`._cost`; the cloud preset's until measured). A gap the
        user set is kept. Merging is bounded by ``HttpOptions.max_transfer_ratio``, and
        the plan is sparse: gap bytes are dropped as they arrive."""
        call: _Call = stat.state
        n = len(reqs.paths)
        gap = tune.max_gap
        if not tune.gap_fixed:
            if tune.name == "http":
                call.multipart = self.options.multi_range and await _verdict.probe(
                    call.client, reqs)
            if not call.multipart:  # one range per request: what does a request cost?
                gap = await self._calibrated_gap(call, reqs, PRESETS["cloud"].max_gap
                                                 if tune.name == "http" else gap)
        part = None
        if len(reqs) and not tune.read_fixed:
            part = cost_of(origin(call.client.urls[int(reqs.file[0])])).part(tune.max_read)
        return Layout(file_direct=np.zeros(n, np.int32), file_align=np.ones(n, np.int64),
                      arena_align=ARENA_ALIGN, max_gap=gap, check_eof=False, sparse=True,
                      gap_budget_ratio=self.options.max_transfer_ratio, max_read=part)

    async def _calibrated_gap(self, call: _Call, reqs: Requests, fallback: int | None
                              ) -> int | None:
        """The gap worth reading through on the host of the call's first range
        (:mod:`._cost`): measured on the host's earlier answers, or now, with one read of
        the call's own bytes when the call has at least ``CALIBRATE_MIN_RANGES`` ranges
        there; ``fallback`` (the preset's gap) until a host is measured."""
        ranged = np.flatnonzero((reqs.offset >= 0) & (reqs.length > 0))
        if not len(ranged):
            return fallback
        first = int(ranged[0])
        file = int(reqs.file[first])
        client = call.client
        cost = cost_of(origin(client.urls[file]))
        gap = cost.gap()
        if gap is None and len(ranged) >= CALIBRATE_MIN_RANGES:
            await self._calibrate(client, file, int(reqs.offset[first]))
            gap = cost.gap()
        return fallback if gap is None else gap

    @staticmethod
    async def _calibrate(client: HttpClient, file: int, start: int) -> None:
        """Time one ``PROBE_BYTES`` read at ``start`` (a byte the call wants): its time to
        first byte and its stream rate go to the host's record, and its bytes serve the
        call's reads they cover. (A new connection's setup inflates that first TTFB a
        little; later answers refine it.) Any failure or a server ignoring ``Range`` ends
        the calibration quietly: the reads report errors."""
        for length in (PROBE_BYTES,):
            t0 = time.perf_counter()
            try:
                resp = await client._open(file, range_header(start, length))
            except (HttpError, Retry, TimeoutError):
                return
            t1 = time.perf_counter()
            try:
                cr = content_range(resp.headers.get("Content-Range"))
                if resp.status != 206 or cr is None or cr[0] != start:
                    return
                body = await read_body(resp, str(resp.url))
                if len(body) != cr[1] - cr[0]:
                    return
                cost_of(origin(resp.url)).answer(t1 - t0, len(body),
                                                 time.perf_counter() - t1)
                if length == PROBE_BYTES and file not in client.prefetch:
                    if cr[2] is not None:
                        client.sizes[file] = cr[2]
                    client.prefetch[file] = (start, body)
            except (HttpError, Retry, TimeoutError):
                return
            finally:
                resp.close() if resp.status == 200 else resp.release()

    # -- read ----------------------------------------------------------------------------
    async def read(self, reqs: Requests, stat: StatResult, layout: Layout, plan: Plan,
                   buffers: list[Any], run: RunOptions) -> ReadResult:
        """Execute ``plan`` (destinations as for the local backends). The result counts
        the GETs sent since the stat (:meth:`_Call.tally`)."""
        call: _Call = stat.state
        client = call.client
        p = plan
        done = np.zeros(p.nops, np.int64)
        err = np.zeros(p.nops, np.int32)
        make = PlanReads(p, [memoryview(b).cast("B") for b in buffers])
        finished = _progress_batcher(run.on_progress, done, err)
        client.file_reads = lambda file: [make(op) for op in range(
            int(p.file_op_start[file]), int(p.file_op_end[file]))]

        async def single(op: int) -> None:
            r = make(op)
            done[op] = r.got if r.got >= 0 else await client.get(r)
            finished([op])

        async def multi(ops: list[int]) -> None:
            reads = [make(op) for op in ops]
            for r in await _verdict.serve_multi(client, call.probing, reads):
                r.got = await client.get(r)  # what no multipart answer served: one by one
            for r in reads:
                done[r.op] = r.got
            finished(ops)

        multi_ok = (_verdict.multi_files(client) if self.options.multi_range
                    else np.zeros(len(client.paths), bool))
        jobs = plan_jobs(p, multi_ok)
        by_c: set[int] = set()

        def served(reads: list[Read]) -> None:
            ops = [r.op for r in reads]
            done[ops] = [r.got for r in reads]
            by_c.update(ops)
            finished(ops)

        singles = [j for j in jobs if isinstance(j, int)]
        await _batch.get_many(client, [r async for r in make.many(singles)
                                       if _batch.plain(client, r)], call.concurrency, served)
        job_errs: dict[int, str] = {}
        job_err = np.zeros(len(jobs), np.int32)

        async def one(j: int) -> None:
            job = jobs[j]
            await (single(job) if isinstance(job, int) else multi(job))

        await asyncio.sleep(0)  # (a batch's end and what follows take milliseconds)
        left = [j for j, job in enumerate(jobs)  # (a worker would run through the served
                if not isinstance(job, int) or job not in by_c]  # ones without a pause)
        await workers(left, one, call.concurrency, job_err, job_errs, run.missing_ok,
                      run.keep_going)
        detail = _spread(jobs, job_err, job_errs, err)
        sent, again, by = call.tally()
        return ReadResult(done, err, None, detail, operations=sent, retries=again,
                          transport=by)


def _spread(jobs: list[int | list[int]], job_err: npt.NDArray[np.int32],
            job_errs: dict[int, str], err: npt.NDArray[np.int32]) -> dict[int, str]:
    """Each failed job's errno onto its reads (in ``err``); returns their details."""
    detail: dict[int, str] = {}
    for j in np.flatnonzero(job_err).tolist():
        job = jobs[j]
        for op in [job] if isinstance(job, int) else job:
            err[op] = job_err[j]
            detail[op] = job_errs[j]
    return detail


def _bodies(client: HttpClient) -> Bodies | None:
    """What the size probes left in memory (see :data:`lsio._types.Bodies`)."""
    n = len(client.paths)
    first = np.zeros(n, np.int64)
    have = np.full(n, -1, np.int64)
    index = np.zeros(n, np.int64)
    buffers: list[memoryview] = []
    for file, (start, body) in client.prefetch.items():
        first[file], have[file], index[file] = start, len(body), len(buffers)
        buffers.append(body)
    for file, fut in client.whole.items():
        if fut.done() and fut.exception() is None:
            first[file], have[file], index[file] = 0, len(fut.result()), len(buffers)
            buffers.append(fut.result())
    return (first, have, index, buffers) if buffers else None


def _progress_batcher(on_progress: ProgressFn | None, done: npt.NDArray[np.int64],
                      err: npt.NDArray[np.int32]) -> Callable[[list[int]], None]:
    """``finished(ops)``: tell ``on_progress`` about finished reads once per loop turn."""
    pending: list[int] = []
    loop = asyncio.get_running_loop()

    def flush() -> None:
        ops = np.array(pending, np.int64)
        pending.clear()
        assert on_progress is not None
        on_progress(ops, done, err)

    def finished(ops: list[int]) -> None:
        if on_progress is None:
            return
        if not pending:
            loop.call_soon(flush)
        pending.extend(ops)

    return finished
