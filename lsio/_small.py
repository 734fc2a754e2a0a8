"""The small-call path: a call of a few requests whose data is in the page cache.

zarr-python asks its store for one chunk at a time, a notebook cell reads a handful of
files: for such calls the bulk path's fixed cost (normalize, stat through the ring, plan,
two event-loop round trips: ~0.5-1 ms) dwarfs the copy. Here the call is served on the
caller's thread in two C calls (``lsio/_c/small.h``): open every file and take its size from
the descriptor (so a file replaced meanwhile cannot tear a request), then copy with reads
that never wait for the disk (``RWF_NOWAIT``); calls of 2-4 MiB make the second call on a
worker thread. No numpy planner, no cache sample, no await.

Anything unusual (a URL, an odd request, an error, a path lookup or a page not in memory, a
file that changed) returns ``None`` before any result is handed out, and the caller sends
the whole call to the bulk path unchanged: errors are raised in one place, by the bulk
path, and cold data is read through io_uring and the event loop as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._aio import uncancellable
from ._defaults import SMALL_BYTES, SMALL_COLD_REQUESTS, SMALL_OFF_LOOP_BYTES, SMALL_REQUESTS
from ._outcheck import holds_pointers
from ._request import plain_requests
from ._results import Results, shared_columns

try:
    from ._uring import ffi, lib
except ImportError:  # pragma: no cover - depends on the build
    ffi = lib = None

__all__ = ["read", "read_async", "read_cold"]

served = [0]
"""Calls this path served (the tests check that it did)."""

_INT64 = 1 << 63


def _parse(requests: list[Any] | tuple[Any, ...]) -> tuple[list[str], list[int]] | None:
    """The distinct paths, and per request its file index, offset and length (-1: to the
    end) in one flat list; ``None`` for requests not of the plain shapes."""
    plain = plain_requests(requests)
    if plain is None:
        return None
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
    path leaves to the bulk one (URLs, ``file://``, NULs, empty, not encodable)."""
    joined = "\n".join(paths)
    if "://" in joined or "\0" in joined or not all(paths):
        return None
    try:
        return "\0".join([*paths, ""]).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _destinations(out: Sequence[Any]) -> tuple[list[int], list[int], list[Any]] | None:
    """Address and size of each writable, C-contiguous buffer of ``out`` (and the cffi
    views that pin them); ``None`` if one is not (the bulk path names it)."""
    addresses, caps, views = [], [], []
    for buf in out:
        try:
            view = ffi.from_buffer(buf, require_writable=True)
            if holds_pointers(buf, memoryview(buf)):
                return None
        except (TypeError, ValueError, BufferError):
            return None
        views.append(view)
        addresses.append(int(ffi.cast("uintptr_t", view)))
        caps.append(len(view))
    return addresses, caps, views


class Call:
    """A small call whose files are open: :meth:`serve` reads it, once, on any thread (the
    C call releases the GIL) and closes the files whatever happens."""

    __slots__ = ("n", "flat", "dest", "caps", "pinned", "out", "nfiles", "files", "total",
                 "wait")

    def __init__(self, n: int, flat: list[int], dest: Any, caps: Any, pinned: Any,
                 out: Sequence[Any] | None, nfiles: int, files: Any, wait: bool) -> None:
        self.n, self.flat, self.dest, self.caps, self.pinned = n, flat, dest, caps, pinned
        self.out, self.nfiles, self.files, self.wait = out, nfiles, files, wait
        self.total = 0
        """Bytes the call returns, once :meth:`serve` found it over its limit."""

    def serve(self, limit: int, *, keep_open: bool = False) -> Results | None:
        """The results; ``None`` if the bulk path must read the call (a page not in memory,
        a change), or if it returns more than ``limit`` bytes (then ``total`` says how many,
        and with ``keep_open`` the files stay open for another try)."""
        n = self.n
        res = ffi.new("long long[]", 3 * n + 2)
        arena = ffi.new("void **")
        total = lib.lsio_small_serve(n, self.flat, self.dest, self.caps, limit, self.nfiles,
                                     self.files, keep_open, self.wait, res, arena)
        if total < 0:
            self.total = res[3 * n + 1] if total == lib.LSIO_SMALL_BIG else 0
            return None
        served[0] += 1
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


def prepare(requests: Any, out: Sequence[Any] | None, missing_ok: bool, *,
            force: bool = False, wait: bool = False) -> Call | None:
    """The call with its files open (sizes taken from the descriptors), or ``None``: the
    bulk path must serve it (odd requests, a lookup not in memory, an error, not a regular
    file). ``force`` (the tests' knob): whatever the number of requests. ``wait``: lookups
    and reads may wait for the disk (the cold path, off the event loop)."""
    if lib is None or type(requests) not in (list, tuple):
        return None
    n = len(requests)
    if not n or (n > SMALL_REQUESTS and not force) or (out is not None and len(out) != n):
        return None
    parsed = _parse(requests)
    if parsed is None:
        return None
    paths, flat = parsed
    blob = _blob(paths)
    if blob is None:
        return None
    dest: Any = ffi.NULL
    caps: Any = ffi.NULL
    pinned: Any = None
    if out is not None:
        found = _destinations(out)
        if found is None:
            return None
        dest, caps, pinned = found
    nf = len(paths)
    files = ffi.new("long long[]", 2 * nf)
    if not lib.lsio_small_open(nf, blob, missing_ok, wait, files):
        return None
    return Call(n, flat, dest, caps, pinned, out, nf, files, wait)


def read(requests: Any, out: Sequence[Any] | None, missing_ok: bool, *, force: bool = False,
         limit: int = SMALL_BYTES, wait: bool = False) -> Results | None:
    """The call's results, served on this thread within ``limit`` bytes, or ``None``. With
    ``wait`` (a blocking caller), a call of up to ``SMALL_COLD_REQUESTS`` requests that
    misses the page cache is read again, waiting for the disk (see :func:`read_cold`)."""
    call = prepare(requests, out, missing_ok, force=force)
    got = None if call is None else call.serve(_INT64 - 1 if force else limit)
    if got is None and wait and not force and (call is None or not call.total):
        return read_cold(requests, out, missing_ok, limit)
    return got


def read_cold(requests: Any, out: Sequence[Any] | None, missing_ok: bool,
              limit: int = SMALL_OFF_LOOP_BYTES) -> Results | None:
    """A call of up to ``SMALL_COLD_REQUESTS`` requests that missed the page cache, read by
    plain blocking calls on this thread (never the event loop's): ~1 ms for a cold 256 KiB
    file here, where io_uring takes 3-6 ms (its open, statx and read each wait for the
    kernel's workers in turn). ``None`` for anything else: an error, a bigger call (the
    bulk path reads those, in parallel)."""
    if type(requests) not in (list, tuple) or len(requests) > SMALL_COLD_REQUESTS:
        return None
    call = prepare(requests, out, missing_ok, wait=True)
    return None if call is None else call.serve(limit)


async def read_async(requests: Any, out: Sequence[Any] | None, missing_ok: bool, *,
                     force: bool = False) -> Results | None:
    """:func:`read` for a caller on the event loop: a call within ``SMALL_BYTES`` is served
    at once; one within ``SMALL_OFF_LOOP_BYTES`` on a worker thread (its copy would hold the
    loop over ~2 ms; a thread hop costs ~0.1 ms, the bulk path's fixed cost ~1-3 ms). A
    cancelled wait returns once the thread is done with the caller's buffers."""
    call = prepare(requests, out, missing_ok, force=force)
    if force:
        return None if call is None else call.serve(_INT64 - 1)
    got = None if call is None else call.serve(SMALL_BYTES, keep_open=True)
    if got is not None:
        return got
    if call is not None and call.total:
        if not call.total <= SMALL_OFF_LOOP_BYTES:
            call.close()  # over both limits: the bulk path reads it
            return None
        return await _off_loop(_serve_or_cold, call, requests, out, missing_ok)
    if type(requests) not in (list, tuple) or len(requests) > SMALL_COLD_REQUESTS:
        return None
    return await _off_loop(read_cold, requests, out, missing_ok)


def _serve_or_cold(call: Call, requests: Any, out: Sequence[Any] | None, missing_ok: bool
                   ) -> Results | None:
    """A medium call on a worker thread: from the page cache, else (a miss) from disk."""
    got = call.serve(SMALL_OFF_LOOP_BYTES)
    if got is None and not call.total:
        return read_cold(requests, out, missing_ok)
    return got


async def _off_loop(fn: Any, *args: Any) -> Results | None:
    """``fn(*args)`` on a worker thread; a cancelled wait returns once the thread is done
    (it may be writing into the caller's buffers)."""
    job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await uncancellable(job)  # the thread may be writing into the caller's buffers
        raise
