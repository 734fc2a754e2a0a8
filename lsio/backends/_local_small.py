"""The local backends' small path: a call of a few requests whose data is in the page cache.

zarr-python asks its store for one chunk at a time, a notebook cell reads a handful of
files: for such calls the bulk road's fixed cost (stat through the ring, plan, two
event-loop round trips: ~0.5-1 ms) dwarfs the copy. Here the call is served on the calling
thread in two C calls (``lsio/_c/small.h``): open every file and take its size from the
descriptor (so a file replaced meanwhile cannot tear a request), then copy with reads that
never wait for the disk (``RWF_NOWAIT``). A copy bigger than the route allows on the
calling thread runs on a worker thread; one request that misses the page cache is read by
blocking calls off the loop (:data:`lsio._route.Strategy`). No planner, no cache sample.

Anything unusual (an odd request, an error, a path lookup or a page not in memory, a file
that changed) declines the call (``None``) before any result is handed out, and it takes
the bulk road unchanged: errors are raised there, and cold data is read through the
backend's batched reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._aio import uncancellable
from .._cpus import usable_cpus
from .._defaults import SMALL_SPLIT_MISSES, SMALL_SPLIT_SHARE
from .._results import Results, shared_columns

if TYPE_CHECKING:
    from .._call import Call
    from .._route import Strategy

try:
    from .._uring import ffi, lib
except ImportError:  # pragma: no cover - depends on the build
    ffi = lib = None

__all__ = ["LocalSmallPath", "read_now"]

T = TypeVar("T")


class LocalSmallPath:
    """The small path of the local backends (io_uring and threads share it)."""

    name: str

    def close(self) -> None:
        """Release what the backend holds (the small path holds nothing between calls)."""

    async def read_small(self, call: Call, strategy: Strategy, tune: Any = None,
                         outcome: Any = None) -> Results | None:
        """The call served for a caller on the event loop, or ``None`` (the bulk road).
        (``tune`` and ``outcome`` are for remote backends: a local small call declines on
        any error, so its errors are the bulk road's.)"""
        start = time.perf_counter()
        small = _open_long(call, strategy) if strategy.split_files else open_call(call)
        keep = bool(strategy.thread_bytes)  # files stay open for a copy on a thread
        got = None if small is None else small.serve(strategy.inline_bytes, keep,
                                                     *_copiers(small, wait=False))
        if got is not None:
            return _stamp(got, "small", self.name, small, time.perf_counter() - start)
        if small is not None and small.total:
            if not small.total <= strategy.thread_bytes:
                if keep:
                    small.close()  # over both limits: the bulk road reads it
                return None
            got = await _off_loop(_serve_or_cold, small, call, strategy)
            route = "small-thread"
        elif strategy.split_files:
            return None
        elif strategy.cold:
            got = await _off_loop(_cold, call, strategy.thread_bytes or strategy.inline_bytes)
            route = "cold"
        else:
            return None
        return None if got is None else _stamp(got, route, self.name, small,
                                               time.perf_counter() - start)

    def serve_small(self, call: Call, strategy: Strategy) -> Results | None:
        """The call served on this thread, which may wait (a blocking caller), or ``None``."""
        long = bool(strategy.split_files)
        small = _open_long(call, strategy) if long else open_call(call)
        limit = strategy.thread_bytes if long else strategy.inline_bytes
        got = None if small is None else small.serve(limit, False,
                                                     *_copiers(small, wait=True))
        if got is not None:
            return _stamp(got, "small", self.name, small, 0.0)
        if strategy.cold and not long and (small is None or not small.total):
            got = _cold(call, strategy.inline_bytes)
            return None if got is None else _stamp(got, "cold", self.name, None, 0.0)
        return None


def _stamp(got: Results, route: str, backend: str, small: Any, hold: float) -> Results:
    n = len(got.lengths)
    got._stats = (route, backend, n, n, None, 0, hold if route == "small" else 0.0,
                  small.nfiles if small is not None else n, got.lengths)
    return got


class SmallCall:
    """A small call whose files are open: :meth:`serve` reads it, once, on any thread (the
    C call releases the GIL) and closes the files whatever happens."""

    __slots__ = ("n", "flat", "dest", "caps", "pinned", "out", "nfiles", "files", "total",
                 "wait")

    def __init__(self, n: int, flat: Any, dest: Any, caps: Any, pinned: Any,
                 out: Sequence[Any] | None, nfiles: int, files: Any, wait: bool) -> None:
        self.n, self.flat, self.dest, self.caps, self.pinned = n, flat, dest, caps, pinned
        self.out, self.nfiles, self.files, self.wait = out, nfiles, files, wait
        self.total = 0
        """Bytes the call returns, once :meth:`serve` found it over its limit."""

    def serve(self, limit: int, keep_open: bool = False, threads: int = 1,
              misses: int = 0) -> Results | None:
        """The results; ``None`` if the bulk road must read the call (a page not in memory,
        a change), or if it returns more than ``limit`` bytes (then ``total`` says how many,
        and with ``keep_open`` the files stay open for another try). ``threads``: copy on
        this many threads (this one included), each a run of requests of equal bytes;
        ``misses``: reads missing the page cache that may wait for the disk instead."""
        n = self.n
        res = ffi.new("long long[]", 3 * n + 2)
        arena = ffi.new("void **")
        total = lib.lsio_small_serve(n, self.flat, self.dest, self.caps, limit, self.nfiles,
                                     self.files, keep_open, self.wait, threads,
                                     SMALL_SPLIT_SHARE, misses, res, arena)
        if total < 0:
            self.total = res[3 * n + 1] if total == lib.LSIO_SMALL_BIG else 0
            return None
        table = np.frombuffer(ffi.buffer(res), np.int64)
        index, zeros, none = shared_columns(n) if n <= 128 else (
            np.arange(n, dtype=np.int64), np.zeros(n, np.int64), None)
        gone = table[2 * n : 3 * n] != 0 if res[3 * n] else none
        if self.out is None:
            memory = ffi.buffer(ffi.gc(ffi.cast("char *", arena[0]), lib.lsio_small_free),
                                total)
            return Results([memory], zeros, table[:n], table[n : 2 * n], gone)
        return Results(list(self.out), index, table[:n], table[n : 2 * n], gone)

    def close(self) -> None:
        lib.lsio_small_close(self.nfiles, self.files)


def _flat(plain: tuple[list[str], list[int], list[int]]) -> tuple[list[str], list[int]]:
    """The distinct paths, and per request its file index, offset and length (-1: to the
    end) in one flat list."""
    ids: dict[str, int] = {}
    flat: list[int] = []
    for path, offset, length in zip(*plain, strict=True):
        file = ids.get(path)
        if file is None:
            file = ids[path] = len(ids)
        flat += (file, offset, length)
    return list(ids), flat


def _blob(paths: list[str]) -> bytes | None:
    """The paths, each NUL-terminated, for ``lsio_small_open``; ``None`` for paths this
    path leaves to the bulk road (URLs, ``file://``, NULs, empty, not encodable)."""
    joined = "\n".join(paths)
    if "://" in joined or "\0" in joined or not all(paths):
        return None
    try:
        return "\0".join([*paths, ""]).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _destinations(out: Sequence[Any]) -> tuple[list[int], list[int], list[Any]] | None:
    """Address and size of each of the caller's buffers (checked by ``lsio._call``), and
    the cffi views that pin them."""
    addresses, caps, views = [], [], []
    for buf in out:
        try:
            view = ffi.from_buffer(buf, require_writable=True)
        except (TypeError, ValueError, BufferError):
            return None
        views.append(view)
        addresses.append(int(ffi.cast("uintptr_t", view)))
        caps.append(len(view))
    return addresses, caps, views


def open_call(call: Call, *, wait: bool = False) -> SmallCall | None:
    """The call with its files open (sizes taken from the descriptors), or ``None``: the
    bulk road must serve it (odd requests, a lookup not in memory, an error, not a regular
    file). ``wait``: lookups and reads may wait for the disk (off the event loop)."""
    if lib is None or call.plain is None or not len(call):
        return None
    paths, flat = _flat(call.plain)
    return _open(paths, flat, call, wait)


def _open(paths: list[str], flat: Any, call: Call, wait: bool) -> SmallCall | None:
    """:func:`open_call` once the requests are flat (a list, or a pinned cffi array)."""
    blob = _blob(paths)
    if blob is None:
        return None
    dest: Any = ffi.NULL
    caps: Any = ffi.NULL
    pinned: Any = None
    if call.out is not None:
        found = _destinations(call.out)
        if found is None:
            return None
        dest, caps, pinned = found
    nf = len(paths)
    files = ffi.new("long long[]", 2 * nf)
    if not lib.lsio_small_open(nf, blob, call.missing_ok, wait, files):
        return None
    return SmallCall(len(call), flat, dest, caps, pinned, call.out, nf, files, wait)


def read_now(call: Call, limit: int, *, wait: bool = False) -> Results | None:
    """The call served on this thread within ``limit`` bytes (``wait``: from the disk too),
    or ``None``. For engine code that runs on worker threads (``lsio._each``)."""
    small = open_call(call, wait=wait)
    return None if small is None else small.serve(limit)


def _open_long(call: Call, strategy: Strategy) -> SmallCall | None:
    """A long list of requests (no plain parse: the arrays are built here; ~0.2 us a
    request) of at most ``strategy.split_files`` files, with its files open, or ``None``:
    the bulk road reads it (also a bad request, which the bulk road's parse names)."""
    if lib is None:
        return None
    try:
        reqs = call.reqs()
    except (TypeError, ValueError):
        return None
    if len(reqs.paths) > strategy.split_files or not len(reqs) or reqs.has_urls():
        return None
    flat = np.empty((len(reqs), 3), np.int64)
    flat[:, 0], flat[:, 1], flat[:, 2] = reqs.file, reqs.offset, reqs.length
    return _open(reqs.paths, ffi.from_buffer("long long[]", flat), call, False)


def _copiers(small: SmallCall, *, wait: bool) -> tuple[int, int]:
    """How a call's copy is shared out: a long list (pinned arrays, not a plain parse)
    copies on up to one thread per usable core and, on a thread that may block (``wait``:
    not the event loop's), reads up to ``SMALL_SPLIT_MISSES`` evicted pages by waiting; a
    short list on the calling thread alone."""
    if isinstance(small.flat, list):
        return 1, 0
    return usable_cpus(), SMALL_SPLIT_MISSES if wait else 0


def _cold(call: Call, limit: int) -> Results | None:
    """A call that missed the page cache, read by plain blocking calls on this thread
    (never the event loop's): ~1 ms for a cold 256 KiB file here, where io_uring takes
    3-6 ms (its open, statx and read each wait for the kernel's workers in turn)."""
    return read_now(call, limit, wait=True)


def _serve_or_cold(small: SmallCall, call: Call, strategy: Strategy) -> Results | None:
    """A medium call on a worker thread: from the page cache, else (a miss) from disk."""
    got = small.serve(strategy.thread_bytes, False,
                                      *_copiers(small, wait=True))
    if got is None and not small.total and strategy.cold:
        return _cold(call, strategy.thread_bytes)
    return got


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread; a cancelled wait returns once the thread is done
    (it may be writing into the caller's buffers)."""
    job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await uncancellable(job)  # the thread may be writing into the caller's buffers
        raise
