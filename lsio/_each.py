"""Per-chunk reads: "read these; call me with ``(index, view)`` as each chunk lands".

:func:`read_each` is the engine's hook for layers that consume chunks one by one (the zarr
decoder): it reads the requests and hands each chunk to a callback, which owns the view
until it returns. With ``threads=True`` the callbacks run on the engine's pinned worker
threads (one per core), where the engine picks one of four schedules:

- *inline*: a few cached chunks, little work: read by the small-call path and handed over
  on the caller's thread (a thread hop costs as much as decoding one such chunk);
- *cold worker*: one chunk not in the page cache: read by blocking calls and handed over on
  a worker (~1 ms, where io_uring's open, statx and read take 3-6 ms);
- *worker parts*: local data in the page cache: each worker reads its parts with the
  small-call path and hands them over right away, so read and callback run on one core
  while the stored bytes are in its cache;
- *ring windows*: everything else (cold parts, URLs, progress): ``read_many`` windows, a few
  read ahead, each chunk handed to the workers as it lands, while the window's other reads
  are in flight (:mod:`lsio._landing`).

:func:`prefault` faults in fresh output memory on the workers while the reads run;
:func:`read_gets` serves a store's concurrent gets; :func:`list_keys` lists an object-store
root.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._call import parse
from ._defaults import (
    EACH_INLINE_BYTES,
    EACH_PART_BYTES,
    EACH_WORKER_READ_BYTES,
    POPULATE_MIN,
    SMALL_BYTES,
    SMALL_CALL_BYTES,
    SMALL_COLD_REQUESTS,
    SMALL_COLD_SPLIT,
    SMALL_OFF_LOOP_BYTES,
    SMALL_REQUESTS,
)
from ._outcome import served
from ._progress import make_progress
from ._url import is_url, local_path
from .backends._local_small import read_now

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ._reader import Reader
    from ._results import Results

__all__ = ["prefault", "read_each", "read_gets"]

Request = tuple[str, int, "int | None"]

OnChunk = Callable[[int, "memoryview | None"], None]
"""``on_chunk(index, view)``: the chunk of ``requests[index]`` (``None``: missing, with
``missing_ok``); the view is valid until the callback returns."""

OnChunks = Callable[[int, "Results"], None]
"""``on_chunks(start, results)``, the batch form: ``results[k]`` is the chunk of
``requests[start + k]`` (``results.missing`` says which are missing, ``results.addresses()``
where each lies), a run of consecutive requests that landed together; valid until the
callback returns. One C call for a run costs less than one per chunk: decoding 64x64
float32 chunks per chunk took 25-50% more CPU here (two GIL hand-overs per chunk)."""


def _pool() -> Any:
    """The engine's pinned workers (loaded on first use: ``import lsio`` stays light)."""
    from ._pipeline import worker_pool

    return worker_pool()


def _workers() -> int:
    """How many pinned workers there are."""
    from ._pipeline import worker_count

    return worker_count()


def _small_read(requests: Sequence[Request], missing_ok: bool, limit: int,
                wait: bool = False) -> Results | None:
    """Requests served by the local backends' small path on this thread (within ``limit``
    bytes; ``wait``: from the disk too), or ``None``."""
    call = parse(list(requests), None, missing_ok, plain_max=len(requests))
    return read_now(call, limit, wait=wait)


def _small_allowed(reader: Reader) -> bool:
    """Whether local calls may take the small-call path: not turned off (``route="bulk"``),
    not O_DIRECT by request (the small path reads the page cache)."""
    return reader.route != "bulk" and reader.direct is not True


class _Run:
    """One :func:`read_each` call's state: the callback, the worker jobs still running, and
    the flag that stops handing chunks out once the call ends (done, failed, cancelled)."""

    __slots__ = ("requests", "on_chunk", "on_chunks", "missing_ok", "running", "stopped")

    def __init__(self, requests: Sequence[Request], on_chunk: OnChunk | None,
                 on_chunks: OnChunks | None, missing_ok: bool) -> None:
        self.requests, self.missing_ok = requests, missing_ok
        self.on_chunk, self.on_chunks = on_chunk, on_chunks
        self.running: list[Future[Any]] = []
        self.stopped = False

    def hand(self, results: Results, lo: int, a: int = 0, b: int | None = None) -> None:
        """Chunks ``a:b`` of ``results`` (requests ``lo + a`` on) to the callback: in turn,
        or as one run to the batch form."""
        if self.on_chunks is not None:
            whole = a == 0 and (b is None or b == len(results))
            if not self.stopped:
                self.on_chunks(lo + a, results if whole else results.take(
                    np.arange(a, len(results) if b is None else b)))
            return
        on_chunk = self.on_chunk
        assert on_chunk is not None
        for k, view in enumerate(results[a:b], lo + a):
            if self.stopped:
                return
            on_chunk(k, view)

    def read_part(self, lo: int, hi: int, wait: bool = False,
                  limit: int = EACH_WORKER_READ_BYTES) -> bool:
        """Requests ``lo:hi`` read by the small-call path on this thread (``wait``: from
        the disk too) and handed over; False (nothing handed over) when it cannot serve
        them: not all cached, an error, more than ``limit`` bytes."""
        if self.stopped:
            return True  # the call has ended: nobody waits for these
        got = _small_read(self.requests[lo:hi], self.missing_ok, limit, wait)
        if got is None:
            return False
        self.hand(got, lo)
        return True

    def read_parts(self, spans: list[tuple[int, int]]) -> list[bool]:
        """On a worker: :meth:`read_part` for each span in turn; whether each was served."""
        return [self.read_part(lo, hi) for lo, hi in spans]

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` on a pinned worker, tracked until the call ends."""
        cf = _pool().submit(fn, *args)
        self.running.append(cf)
        return asyncio.wrap_future(cf)

    async def settle(self) -> None:
        """Stop handing out chunks and wait for the worker jobs already running: no
        callback runs once the call has returned."""
        self.stopped = True
        for cf in self.running:
            if not cf.done() and not cf.cancel():
                await asyncio.shield(asyncio.wrap_future(cf))


async def read_each(reader: Reader, requests: Sequence[Request],
                    on_chunk: OnChunk | None = None, *, on_chunks: OnChunks | None = None,
                    missing_ok: bool = False, progress: Any = False, threads: bool = False,
                    work_bytes: int = 0) -> None:
    """Read ``requests`` (``(path, offset, length)`` tuples) and call
    ``on_chunk(index, view)`` once per request as its chunk lands, in no set order.

    The callback owns ``view`` (a read-only ``memoryview``) until it returns; ``view`` is
    ``None`` for a missing file with ``missing_ok``. Without ``threads`` the callbacks run
    on the caller's thread; with it they may run on the engine's pinned worker threads, at
    once (the callback must be thread-safe). ``work_bytes``: about how many bytes each
    callback writes (a decoded chunk), which sizes the inline and per-worker schedules.
    ``on_chunks`` instead of ``on_chunk``: the batch form (:data:`OnChunks`), one call per
    run of chunks that landed together, under the same terms.

    A read error is raised as ``read_many`` raises it (naming the request); a callback's
    exception ends the call and is raised. However the call ends (done, failed,
    cancelled), no callback is running once it has returned or raised."""
    if (on_chunk is None) == (on_chunks is None):
        raise TypeError("lsio: read_each takes on_chunk or on_chunks (one of them)")
    if not len(requests):
        return
    local = not is_url(requests[0][0])
    if local and "://" in requests[0][0]:
        # file:// URLs (kerchunk's local references): the small path reads paths, and the
        # ring windows held several windows of stored bytes (~100 MiB for 6 NetCDF files)
        requests = [(local_path(p), o, n) for p, o, n in requests]
    run = _Run(requests, on_chunk, on_chunks, missing_ok)
    bar = make_progress(progress)
    if bar is not None:
        bar.start(len(requests))
    try:
        spans = [(0, len(requests))]
        if bar is None and _small_allowed(reader) and local:
            spans = await _warm(run, threads, work_bytes)
            if spans:  # missed the page cache
                reader = _cold_reader(reader, requests, spans)
        if spans:
            from ._landing import ring_windows

            await ring_windows(run, reader, spans, bar, _workers() if threads else 0)
    finally:
        await run.settle()
        if bar is not None:
            bar.close()


_DIRECT_TWINS: weakref.WeakKeyDictionary[Reader, Reader] = weakref.WeakKeyDictionary()


def _cold_reader(reader: Reader, requests: Sequence[Request],
                 spans: list[tuple[int, int]]) -> Reader:
    """The reader of the ring windows of ``spans``, which the small path found out of the
    page cache: with ``direct=None`` on io_uring, when they return ``SMALL_CALL_BYTES`` or
    more and a sample of their files is mostly not cached, a twin reading with O_DIRECT.
    A ``read_many`` of them all would decide so, but each window is smaller than that and
    would read buffered: 147 cold 22 KiB chunks (3.4 MB) took 6.7 ms buffered against
    3.9 ms with O_DIRECT here."""
    if reader.direct is not None or reader.backend != "uring":
        return reader
    total, paths = 0, list[str]()
    for lo, hi in spans:
        for k in range(lo, hi):
            item: Any = requests[k]
            if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[2], int)):
                return reader  # a whole file (its size unknown here), or a request the
            path, n = item[0], int(item[2])  # windows' read_many will name as bad
            total += n
            if not paths or paths[-1] != path:
                paths.append(path)
            if total >= SMALL_CALL_BYTES:
                break
        if total >= SMALL_CALL_BYTES:
            break
    else:
        return reader
    from .backends.local import looks_cached

    if looks_cached(paths):
        return reader
    twin = _DIRECT_TWINS.get(reader)
    if twin is None:
        from ._reader import Reader

        settings: dict[str, Any] = {**reader._settings, "direct": True}
        twin = _DIRECT_TWINS[reader] = Reader(**settings)
    return twin


async def _warm(run: _Run, threads: bool, work_bytes: int) -> list[tuple[int, int]]:
    """The schedules for local data the small-call path may read: inline, cold worker,
    worker parts. Returns the spans of requests left to the ring windows."""
    n = len(run.requests)
    if (n <= SMALL_REQUESTS and (not threads or n * work_bytes <= EACH_INLINE_BYTES)
            and run.read_part(0, n, limit=SMALL_BYTES)):
        return []  # a few cached chunks: read and handed over here, no thread hop
    if not threads:
        return [(0, n)]
    if n <= SMALL_COLD_REQUESTS and await run.submit(run.read_part, 0, n, True):
        return []  # one cold chunk (a Dask task's), read and handed over on a worker
    return await _worker_parts(run, work_bytes)


async def _worker_parts(run: _Run, work_bytes: int) -> list[tuple[int, int]]:
    """Read and hand over the chunks on the pinned workers, in parts of up to
    ``SMALL_REQUESTS``: each worker reads its part's page-cache data with one small-path C
    call (no event loop, no ring) and hands it over right away, while it is in the CPU's
    cache; so reads and callbacks spread over every core. Returns the spans whose data was
    not all in the page cache (or went wrong): the ring windows read those."""
    n, workers = len(run.requests), _workers()
    step = max(1, min(SMALL_REQUESTS, EACH_PART_BYTES // max(1, work_bytes)))
    parts = -(-n // step)
    parts = -(-parts // workers) * workers  # as many parts per worker: balanced
    step = max(1, -(-n // parts))
    spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    # a few jobs per worker, each running its parts in turn: 256 parts submitted one by
    # one held the loop ~25 ms
    groups = np.array_split(np.arange(len(spans)), min(len(spans), 2 * workers))
    futures = [run.submit(run.read_parts, [spans[i] for i in group.tolist()])
               for group in groups]
    served = [ok for part in await asyncio.gather(*futures) for ok in part]
    missed: list[tuple[int, int]] = []
    for (lo, hi), ok in zip(spans, served, strict=True):
        if ok:
            continue
        if missed and missed[-1][1] == lo:  # adjacent: one span, so few big windows
            missed[-1] = (missed[-1][0], hi)
        else:
            missed.append((lo, hi))
    return missed


@contextlib.asynccontextmanager
async def prefault(arrays: Any) -> AsyncIterator[None]:
    """Fault in the memory of fresh output arrays (one or a list; those of at least
    ``POPULATE_MIN`` bytes) on the workers, in big steps (``MADV_POPULATE_WRITE``), while
    the body writes into them: zarr hands over fresh ``np.empty`` memory, whose first
    touches otherwise fault one 4 KiB page at a time inside the decode calls. On leaving,
    the populating stops at its next step and is waited for."""
    spans = {}
    for o in arrays if isinstance(arrays, list) else [arrays]:
        if isinstance(o, np.ndarray) and o.nbytes >= POPULATE_MIN and (
                o.flags.c_contiguous or o.flags.f_contiguous):
            spans[o.__array_interface__["data"][0]] = o.nbytes
    try:
        from ._uring import ffi, lib
    except ImportError:  # pragma: no cover - depends on the build
        spans = {}
    if not spans:
        yield
        return
    stop = ffi.new("int[1]")
    run = _Run((), None, None, False)
    workers = _workers()
    for base, n in spans.items():
        step = -(-n // workers)
        for at in range(0, n, step):
            run.submit(lib.lsio_populate, base + at, min(step, n - at), stop)
    try:
        yield
    finally:
        stop[0] = 1  # done or failed: the populating ends at its next step
        await run.settle()


async def read_gets(reader: Reader, requests: list[Request]) -> list[Any]:
    """A store's concurrent gets, read together: each request's ``memoryview``, ``None``
    for a missing file, or its ``OSError`` (returned, not raised: one failing get does not
    fail the others). Cached local data is served at once (the small-call path, no loop
    turn); a few cold local requests (up to ``SMALL_COLD_SPLIT``) are each read by blocking
    calls on a worker thread, at once, as zarr's ``LocalStore`` does; else one
    ``read_many``, and on an error one call per request to find whose."""
    local = "://" not in requests[0][0]
    if local and _small_allowed(reader):
        got = _small_read(requests, True, (1 << 63) - 1 if reader.route == "small" else
                          SMALL_BYTES)
        if got is not None:
            n = len(requests)
            got._stats = ("small", reader.backend, n, n, None, 0, 0.0, n, got.lengths)
            return list(served(got))
    if local and len(requests) <= SMALL_COLD_SPLIT:
        return list(await asyncio.gather(*(_read_one(reader, r) for r in requests)))
    try:
        return list(await reader.read_many(requests, missing_ok=True))
    except OSError as exc:
        if len(requests) == 1:
            return [exc]
    return [await _read_one(reader, r, cold=False) for r in requests]


async def _read_one(reader: Reader, request: Request, cold: bool = True) -> Any:
    """One request's bytes, None if missing, or its error (returned, not raised): with
    ``cold``, by blocking calls on a worker thread, else (an error, a big value) by
    ``read_many``."""
    try:
        if cold and _small_allowed(reader):
            got = await asyncio.get_running_loop().run_in_executor(
                None, _small_read, [request], True, SMALL_OFF_LOOP_BYTES, True)
            if got is not None:
                return got[0]
        return (await reader.read_many([request], missing_ok=True))[0]
    except OSError as exc:
        return exc
