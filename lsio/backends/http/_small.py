"""The small-call path for URLs: a few requests, each of its own object.

A zarr store asking for one chunk, a notebook reading a handful of objects: for such calls
the bulk path's fixed cost (requests as arrays, size probes found with numpy passes, the
multipart check, the planner, the tracker: ~0.5 ms of CPU) is more than a loopback GET
itself (~0.25 ms). They need none of it: no two requests share an object, so there is
nothing to merge, deduplicate or send as one multipart request, and a range of at most
``max_read`` bytes is one GET. Here each request becomes the requests the bulk path would
send for it (one range GET; for a whole object or a suffix, the same size probe, whose body
serves the request when the object fits in it), through the same client: redirects,
signing, retries and the checks of every answer are the bulk path's.

The route (``lsio._route``) sends here calls of up to ``lsio._defaults.SMALL_URLS``
requests of the plain shapes, every one a URL of its own object; :func:`serve` decides
before any I/O whether the requests qualify, and returns ``None`` if not: the bulk road
then serves the call unchanged. Failures go to the call's outcome, which raises them as it
does the bulk road's.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..._defaults import BYTEARRAY_BELOW, READ_ATTEMPTS
from ..._memory import allocate
from ..._outcome import transport_of
from ..._presets import Preset
from ..._results import Results, shared_columns
from . import _batch
from ._client import HttpClient
from ._cost import cost_of
from ._protocol import HttpError
from ._read import Read, origin, workers
from ._version import STALE

if TYPE_CHECKING:
    from ..._call import Call
    from ..._outcome import Outcome
    from ._backend import HttpBackend

__all__ = ["serve"]

_EMPTY = memoryview(b"")

Answer = tuple[list[memoryview], list[int], dict[int, tuple[int, str]]]
"""Each request's bytes, its length, and the failed requests' (errno, detail)."""


async def serve(backend: HttpBackend, call: Call, tune: Preset, outcome: Outcome
                ) -> Results | None:
    """The call served by this path, or ``None`` before any I/O: the bulk road must."""
    assert call.plain is not None
    paths, offsets, lengths = call.plain
    flat: list[int] = []
    for i, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        flat += (i, offset, length)
    done = outcome.done  # kept for the deadline, which names the first request not read
    finished = None if done is None else (lambda i: done.__setitem__(i, True))
    used: list[HttpClient] = []
    job = read(backend, paths, flat, call.out, call.caps, tune, call.missing_ok, finished,
               used, keep_going=outcome.keep)
    if job is None:
        return None
    c = outcome.counters
    try:
        views, got, failed = await job
    finally:  # what the clients sent, failed calls included (``exc.stats``)
        for client in used:
            c.operations += client.requests
            c.retries += client.retries
            c.sent_by(transport_of(client.requests, client.c_requests))
    n = len(paths)
    missing = None
    if failed:
        idx = np.array(sorted(failed), np.int64)
        codes = np.array([failed[i][0] for i in idx.tolist()], np.int32)
        gone = outcome.fail(idx, codes, {k: failed[i][1] for k, i in enumerate(idx.tolist())})
        outcome.raise_first()  # the lowest failing request, as the bulk road reports
        missing = np.zeros(n, bool)
        missing[idx[gone]] = True
    index, zeros, _ = shared_columns(n)
    results = Results(views if call.out is None else list(call.out), index, zeros,
                      np.array(got, np.int64), missing)
    results._stats = ("small", "http", n, c.operations, None, c.retries, 0.0, paths,
                      results.lengths, c.transport)
    return results


def read(backend: HttpBackend, paths: list[str], flat: list[int],
         out: Sequence[Any] | None, caps: npt.NDArray[np.int64] | None, tune: Preset,
         missing_ok: bool, finished: Callable[[int], None] | None, used: list[HttpClient],
         *, keep_going: bool = False) -> Coroutine[Any, Any, Answer] | None:
    """The call that serves requests ``i`` = ``(paths[i], flat[3i + 1], flat[3i + 2])`` (a
    length of -1: to the end) into ``out`` if given, to await; ``None`` (before any I/O)
    if the bulk path must. ``finished(i)`` is told of each request served; each client
    the call makes is appended to ``used`` (its counters tell what it sent).
    ``keep_going``: no failure stops the other requests (``on_error="return"``)."""
    n = len(paths)
    max_read = tune.max_read
    if n == 1 and flat[1] >= 0 and 0 < flat[2] <= max_read:  # one range: one GET
        if caps is not None and caps[0] < flat[2]:
            return None  # the bulk path names the buffer that is too small
        return _versioned(lambda: _one_range(_client(backend, paths, used), flat[1],
                                             flat[2], out, missing_ok, finished))
    room = 0
    for i in range(n):
        off, length = flat[3 * i + 1], flat[3 * i + 2]
        if length > max_read:  # split into parts, or probed for its size first
            return None
        if off >= 0 and length > 0:
            room += length
            if caps is not None and caps[i] < length:
                return None  # the bulk path names the buffer that is too small
        elif caps is not None and (off < 0 or length < 0):
            return None  # a size-dependent length: the bulk path checks the buffer
    return _versioned(lambda: _many(_client(backend, paths, used), flat, out, tune, room,
                                    missing_ok, finished, keep_going))


def _client(backend: HttpBackend, paths: list[str], used: list[HttpClient]) -> HttpClient:
    """A new client of ``backend`` for ``paths``, noted in ``used``."""
    client = backend.client(paths)
    used.append(client)
    return client


async def _versioned(job: Callable[[], Coroutine[Any, Any, Answer]]) -> Answer:
    """``await job()``, again (a new client: a fresh record of versions) while an object
    changed under it (:mod:`._version`), up to ``READ_ATTEMPTS`` times in all; then the
    change is the request's error (``ESTALE``)."""
    for _ in range(READ_ATTEMPTS - 1):
        outcome = await job()
        if all(code != STALE for code, _ in outcome[2].values()):
            return outcome
    return await job()


async def _many(client: HttpClient, flat: list[int], out: Sequence[Any] | None,
                tune: Preset, room: int, missing_ok: bool,
                finished: Callable[[int], None] | None, keep_going: bool) -> Answer:
    """Several requests, or one that is not a plain range: all sent at once (up to the
    concurrency cap), then the parts of objects longer than their size probe."""
    n = len(client.paths)
    max_read = tune.max_read
    concurrency = client.options.concurrency or tune.queue_depth
    await client.start()
    arena = _memory(room) if room and out is None else None
    reads = _first_reads(flat, n, max_read, out, arena, finished)
    views = [_EMPTY] * n
    lengths = [0] * n

    ranges = {r.file: r for r in reads if r.dest is not None}
    # a 200 answer to a range streams by, keeping the range (not the whole body)
    client.file_reads = lambda file: [ranges[file]] if file in ranges else []
    rest: list[tuple[int, int, int]] = []  # requests the probe did not cover: (i, start, end)
    by_c = await _batched(client, reads, concurrency, views, lengths, finished)

    async def fetch(k: int) -> None:
        r = reads[k]
        i = r.file
        if i in by_c:
            return
        try:
            got = r.got if r.got >= 0 else await client.get(r)
        except HttpError as exc:
            if finished is not None and missing_ok and exc.errno == errno.ENOENT:
                finished(i)  # served: as missing
            raise
        if r.op >= 0:  # a range
            assert r.dest is not None
            views[i], lengths[i] = r.dest[:got], got
        else:
            off = flat[3 * i + 1]
            span = _probed(client, r, got, _tail(off, max_read), max_read, off,
                           flat[3 * i + 2])
            if isinstance(span, tuple):
                rest.append((i, *span))
                return
            views[i], lengths[i] = span, len(span)
        if finished is not None:
            finished(i)

    err = [0] * len(reads)
    detail: dict[int, str] = {}
    await workers(range(len(reads)), fetch, concurrency, err, detail, missing_ok, keep_going)
    failed = {reads[k].file: (err[k], text) for k, text in detail.items()}
    if rest and (keep_going or all(e == errno.ENOENT and missing_ok
                                   for e, _ in failed.values())):
        # parts as long as the host's requests are worth (the size probes just timed it),
        # as the bulk path's layout chooses them
        step = max_read
        if not tune.read_fixed:
            step = cost_of(origin(client.urls[rest[0][0]])).part(max_read) or max_read
        await _read_rest(client, rest, step, concurrency, missing_ok, views, lengths,
                         failed, finished, keep_going)
    return views, lengths, failed


async def _batched(client: HttpClient, reads: list[Read], concurrency: int,
                   views: list[memoryview], lengths: list[int],
                   finished: Callable[[int], None] | None) -> set[int]:
    """Send what the C transport can of ``reads`` first (:mod:`._batch`); the ranges it
    serves land in ``views``/``lengths`` and are ``finished`` as they land, its probes are
    left done for the caller. Returns the requests served."""
    by_c: set[int] = set()

    def served(done: list[Read]) -> None:
        for r in done:
            if r.op >= 0:
                assert r.dest is not None
                views[r.file], lengths[r.file] = r.dest[:r.got], r.got
                by_c.add(r.file)
                if finished is not None:
                    finished(r.file)

    await _batch.get_many(client, [r for r in reads if r.start >= 0 and _batch.eligible(
        client, r.file)], concurrency, served)
    return by_c


def _first_reads(flat: list[int], n: int, max_read: int, out: Sequence[Any] | None,
                 arena: memoryview | None, finished: Callable[[int], None] | None
                 ) -> list[Read]:
    """Each request's first GET: its range (into ``out`` or the ``arena``), or the size
    probe ``HttpBackend.stat`` would send (``op`` -1); a request of nothing sends none
    and is ``finished`` at once, as the planner gives it."""
    reads: list[Read] = []
    at = 0
    for i in range(n):
        off, length = flat[3 * i + 1], flat[3 * i + 2]
        if off < 0 or length < 0:
            tail = _tail(off, max_read)
            reads.append(Read(-1, i, off, tail, None) if tail
                         else Read(-1, i, 0, max_read, None))
        elif length:
            if arena is None:
                assert out is not None
                dest = memoryview(out[i]).cast("B")[:length]
            else:
                dest = arena[at:at + length]
                at += length
            reads.append(Read(i, i, off, length, dest))
        elif finished is not None:
            finished(i)
    return reads


async def _one_range(client: HttpClient, offset: int, length: int,
                     out: Sequence[Any] | None, missing_ok: bool,
                     finished: Callable[[int], None] | None) -> Answer:
    """The commonest call, one range of one object: its one GET, nothing to gather."""
    if client.session is None or client.pending:
        await client.start()
    if out is not None:
        dest = memoryview(out[0]).cast("B")[:length]
    else:
        dest = _memory(length)
    r = Read(0, 0, offset, length, dest)
    client.file_reads = lambda file: [r]  # a 200 answer streams by, keeping the range
    try:
        if _batch.MIN_BATCH <= 1 and _batch.eligible(client, 0):  # (the tests' C-first road)
            await _batch.get_many(client, [r], 1)
        got = r.got if r.got >= 0 else await client.get(r)
    except HttpError as exc:
        if finished is not None and missing_ok and exc.errno == errno.ENOENT:
            finished(0)  # served: as missing
        return [_EMPTY], [0], {0: (exc.errno, exc.detail)}
    if finished is not None:
        finished(0)
    return [dest[:got]], [got], {}


def _memory(size: int) -> memoryview:
    """Result memory for ``size`` bytes."""
    return memoryview(bytearray(size)) if size < BYTEARRAY_BELOW else allocate(size).data


def _tail(off: int, max_read: int) -> int:
    """Bytes of the tail probe for a request at ``off`` (a suffix not longer than
    ``max_read``); 0: probe the head (``size_probes``' rule)."""
    return -off if 0 < -off <= max_read else 0


def _probed(client: HttpClient, r: Read, got: int, tail: int, probe_size: int, off: int,
            length: int) -> memoryview | tuple[int, int]:
    """After a size probe (``HttpBackend.stat``'s rules): the request's bytes if the probe
    holds them, else its (start, end) in the object, now that the size is known."""
    file = r.file
    whole = client.whole.get(file)
    if whole is not None:  # the server sent it whole
        first, body = 0, whole.result()
    else:  # a part read later may come from the probe's bytes
        first, body = client.keep_probe(r, got, probe_size, tail)
    size = client.sizes[file]
    start = max(size + off, 0) if off < 0 else min(off, size)
    room = size - start
    end = start + (room if length < 0 or length > room else length)
    if first <= start and end <= first + len(body):
        return body[start - first:end - first]
    return (start, end)


async def _read_rest(client: HttpClient, rest: list[tuple[int, int, int]], step: int,
                     concurrency: int, missing_ok: bool, views: list[memoryview],
                     lengths: list[int], failed: dict[int, tuple[int, str]],
                     finished: Callable[[int], None] | None, keep_going: bool) -> None:
    """Requests longer than their size probe: read in parts of ``step`` bytes from the
    request's start, in parallel, as the bulk path plans them (a part the probe holds is
    copied from it)."""
    parts: list[Read] = []
    dests = {}
    for i, start, end in rest:
        dest = allocate(end - start).data
        dests[i] = (start, end, dest)
        for s in range(start, end, step):
            k = min(step, end - s)
            parts.append(Read(i, i, s, k, dest[s - start:s - start + k]))
    done = [0] * len(parts)
    await _batch.get_many(client, [r for r in parts if _batch.plain(client, r)], concurrency)

    async def part(j: int) -> None:
        r = parts[j]
        done[j] = r.got if r.got >= 0 else await client.get(r)

    err = [0] * len(parts)
    detail: dict[int, str] = {}
    await workers(range(len(parts)), part, concurrency, err, detail, missing_ok, keep_going)
    short: dict[int, int] = {}
    for j, r in enumerate(parts):
        if err[j] and r.op not in failed:
            failed[r.op] = (err[j], detail[j])
        elif done[j] < r.length:  # the object ended early: the request ends there
            short[r.op] = min(short.get(r.op, r.start + done[j]), r.start + done[j])
    for i, (start, end, dest) in dests.items():
        if i in failed:
            continue
        length = short.get(i, end) - start
        views[i], lengths[i] = dest[:length], length
        if finished is not None:
            finished(i)
