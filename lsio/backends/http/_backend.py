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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..._defaults import ARENA_ALIGN
from ..._plan import Plan
from ..._presets import PRESETS, Preset
from ..._request import Requests
from ..._types import Bodies, ProgressFn, StatResult
from ..._url import HttpOptions
from .._base import Layout, ReadResult, RunOptions
from ..cloud import PROVIDERS
from . import _list, _small
from ._client import Credentials, HttpClient
from ._cost import PROBE_BYTES, cost_of
from ._multi import NotMulti
from ._protocol import (
    HttpError,
    Retry,
    content_range,
    plan_jobs,
    range_header,
    size_probes,
)
from ._read import Read, origin, workers
from ._session import read_body

if TYPE_CHECKING:
    from ..._call import Call
    from ..._outcome import Outcome
    from ..._results import Results
    from ..._route import Strategy

__all__ = ["HttpBackend"]

MULTI_OK: dict[Any, bool] = {}
"""Per origin: whether it answers multi-range requests with multipart bodies (learned once
per process)."""


CALIBRATE_MIN_RANGES = 64
"""A host not measured yet is measured before planning a call with this many ranges on it
(one request of 1 MiB): below that, the preset's gap is good enough."""


class _NoVerdict(Exception):
    """Multi-range requests kept failing for other reasons: no answer on multipart."""


@dataclass(slots=True)
class _Call:
    """The backend's state for one call (``StatResult.state``)."""

    client: HttpClient
    concurrency: int
    probe_size: int
    missing_ok: bool
    multipart: bool = False
    probing: dict[Any, asyncio.Lock] = field(default_factory=dict)


class HttpBackend:
    name = "http"

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._auths: Credentials = {}
        """Credentials per service (a provider's ``auth_key``), found on first use (a
        lookup takes ~0.1 s: files, a metadata server)."""

    def client(self, paths: list[str]) -> HttpClient:
        """A client for one call's ``paths``, sharing the backend's credentials and the
        cloud providers' registry (:mod:`lsio.backends.cloud`)."""
        return HttpClient(paths, self.options, self._auths, PROVIDERS)

    def list_keys(self, root: str, prefix: str, delimiter: str | None = None
                  ) -> AsyncIterator[str]:
        """Keys under the object-store ``root`` starting with ``prefix`` (:mod:`._list`)."""
        return _list.list_keys(self.client, root, prefix, delimiter)

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
    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool) -> StatResult:
        client = self.client(reqs.paths)
        call = _Call(client, self.options.concurrency or tune.queue_depth, tune.max_read,
                     missing_ok)
        await client.start()
        need, suffix = size_probes(reqs, tune.max_read)
        n = len(reqs.paths)
        err = np.zeros(n, np.int32)
        detail: dict[int, str] = {}

        async def probe(file: int) -> None:
            tail = int(suffix[file])
            r = Read(-1, file, -tail, tail, None) if tail else Read(-1, file, 0,
                                                                    call.probe_size, None)
            got = await client.get(r)
            if file not in client.whole:  # else the server sent it whole
                client.keep_probe(r, got, call.probe_size, tail)

        await workers(np.flatnonzero(need).tolist(), probe, call.concurrency, err, detail,
                      missing_ok)
        size = np.where(err == 0, np.array(client.sizes, np.int64), 0)
        return StatResult(size, np.ones(n, np.int64), err, detail=detail,
                          bodies=_bodies(client), state=call)

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
                call.multipart = await self._probe_multipart(call, reqs)
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

    async def _probe_multipart(self, call: _Call, reqs: Requests) -> bool:
        """Whether every plain-HTTP server of this call answers multipart ranges. Servers
        not yet known are asked once per process, with two 1-byte ranges of the call's own
        requests (``bytes=a-a,b-b``)."""
        if not self.options.multi_range:
            return False
        client = call.client
        verdicts = []
        asked: set[Any] = set()
        file, offset, length = reqs.file, reqs.offset, reqs.length
        ok = (offset >= 0) & (length > 0)
        # each file's sorted starts, once (a scan per file would be quadratic in big calls)
        order = np.lexsort((offset[ok], file[ok]))
        f_sorted, o_sorted = file[ok][order], offset[ok][order]
        heads = np.flatnonzero(np.r_[True, f_sorted[1:] != f_sorted[:-1]]) if len(
            f_sorted) else np.zeros(0, np.int64)
        bounds = np.append(heads, len(f_sorted))
        seen: set[Any] = set()
        for k, f in enumerate(f_sorted[heads].tolist()):
            if client.targets[f].kind != "http":
                continue
            where = origin(client.urls[f])
            if where in MULTI_OK:
                if where not in seen:
                    seen.add(where)
                    verdicts.append(MULTI_OK[where])
                continue
            if where in asked or bounds[k + 1] - bounds[k] < 2:
                continue
            starts = o_sorted[bounds[k]:bounds[k + 1]]
            far = np.flatnonzero(starts >= starts[0] + 2)
            if not len(far):
                continue
            asked.add(where)
            a, b = int(starts[0]), int(starts[far[0]])
            probe = [Read(-1, f, a, 1, memoryview(bytearray(1))),
                     Read(-1, f, b, 1, memoryview(bytearray(1)))]
            try:
                if await client.get_multi(probe):  # no range satisfiable (416) or parts
                    continue  # missing: ask again later
                verdict = True
            except NotMulti:
                verdict = False
            except (HttpError, Retry):
                continue  # the reads themselves will report what is wrong
            MULTI_OK[where] = verdict
            verdicts.append(verdict)
        return bool(verdicts) and all(verdicts)

    # -- read ----------------------------------------------------------------------------
    async def read(self, reqs: Requests, stat: StatResult, layout: Layout, plan: Plan,
                   buffers: list[Any], run: RunOptions) -> ReadResult:
        """Execute ``plan`` (destinations as for the local backends)."""
        call: _Call = stat.state
        client = call.client
        p = plan
        done = np.zeros(p.nops, np.int64)
        err = np.zeros(p.nops, np.int32)
        views = [memoryview(b).cast("B") for b in buffers]
        finished = _progress_batcher(run.on_progress, done, err)

        made: dict[int, Read] = {}

        def make(op: int) -> Read:
            r = made.get(op)
            if r is not None:
                return r
            length = int(p.op_length[op])
            base, at = int(p.op_base[op]), int(p.op_buf[op])
            start = int(p.op_offset[op])
            if p.op_piece is None:
                r = Read(op, int(p.op_file[op]), start, length, views[base][at:at + length])
            else:  # sparse: only the pieces' bytes are kept
                assert p.piece_offset is not None and p.piece_length is not None
                assert p.piece_buf is not None
                arena = views[base]
                lo, hi = int(p.op_piece[op]), int(p.op_piece[op + 1])
                pieces = [(o - start, arena[b:b + n]) for o, n, b in zip(
                    p.piece_offset[lo:hi].tolist(), p.piece_length[lo:hi].tolist(),
                    p.piece_buf[lo:hi].tolist(), strict=True)]
                if len(pieces) == 1 and pieces[0][0] == 0 and len(pieces[0][1]) == length:
                    r = Read(op, int(p.op_file[op]), start, length, pieces[0][1])
                else:
                    r = Read(op, int(p.op_file[op]), start, length, None, pieces=pieces,
                             starts=[q[0] for q in pieces])
            made[op] = r
            return r

        def file_reads(file: int) -> list[Read]:
            return [make(op) for op in range(int(p.file_op_start[file]),
                                             int(p.file_op_end[file]))]

        client.file_reads = file_reads

        async def single(op: int) -> None:
            r = make(op)
            done[op] = r.got if r.got >= 0 else await client.get(r)
            finished([op])

        async def multi(ops: list[int]) -> None:
            reads = [make(op) for op in ops]
            for r in await self._multi(call, reads):  # what no multipart answer served
                r.got = await client.get(r)  # goes one by one
            for r in reads:
                done[r.op] = r.got
            finished(ops)

        jobs = plan_jobs(p, self._multi_files(call))
        job_errs: dict[int, str] = {}
        job_err = np.zeros(len(jobs), np.int32)

        async def one(j: int) -> None:
            job = jobs[j]
            await (single(job) if isinstance(job, int) else multi(job))

        await workers(range(len(jobs)), one, call.concurrency, job_err, job_errs,
                      run.missing_ok)
        detail: dict[int, str] = {}
        for j in np.flatnonzero(job_err).tolist():
            job = jobs[j]
            for op in [job] if isinstance(job, int) else job:
                err[op] = job_err[j]
                detail[op] = job_errs[j]
        return ReadResult(done, err, None, detail)

    def _multi_files(self, call: _Call) -> npt.NDArray[np.bool_]:
        """Files whose small reads may share a multipart request."""
        client = call.client
        if not self.options.multi_range:
            return np.zeros(len(client.paths), bool)
        return np.array([t.kind == "http" and f not in client.prefetch
                         and MULTI_OK.get(origin(client.urls[f])) is not False
                         for f, t in enumerate(client.targets)], bool)

    async def _multi(self, call: _Call, reads: list[Read]) -> list[Read]:
        """Serve ``reads`` (one file) with multipart requests where the server takes them;
        the first one to a server not known yet goes alone and gives the verdict."""
        client = call.client
        where = origin(client.urls[reads[0].file])
        left = reads
        if MULTI_OK.get(where) is None:
            async with call.probing.setdefault(where, asyncio.Lock()):
                if MULTI_OK.get(where) is None:
                    try:
                        left = await self._multi_with_retries(client, reads)
                        MULTI_OK[where] = True
                    except NotMulti:
                        MULTI_OK[where] = False
                    except _NoVerdict:
                        left = list(reads)
        if left is reads and MULTI_OK.get(where):
            try:
                left = await self._multi_with_retries(client, reads)
            except (NotMulti, _NoVerdict):
                left = list(reads)
        return left

    @staticmethod
    async def _multi_with_retries(client: HttpClient, reads: list[Read]) -> list[Read]:
        return await client.retrying(lambda: client.get_multi(reads),
                                     lambda exc, attempts: _NoVerdict())


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
