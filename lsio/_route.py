"""Which road a call takes: the only place the small-call thresholds are compared.

A call (:class:`lsio._call.Call`) goes to one backend (the local one, or HTTP for URLs, or
both for a mixed call) by one of two roads:

- **small**: the backend's small path (``Backend.read_small``). Locally: a few requests
  whose data is in the page cache, copied on the calling thread in two C calls (no planner,
  no event-loop round trip), or on a worker thread for a bigger copy, or read by blocking
  calls off the loop for one cold request. Remotely: a few URLs, each its own object, one
  GET each. The small path may decline a call (data not cached, an unusual request, an
  error, a file that changed): it does so before handing anything out, and the call takes
  the bulk road unchanged, so its errors are the bulk road's.
- **bulk**: stat, plan (``lsio._plan``), the backend's batched reads (io_uring, threads,
  HTTP with coalescing, splitting and multipart), with progress, pipelines, deadlines and
  re-reads of changed files.

:func:`route` returns a :class:`Strategy` saying which, with the byte limits the small path
applies where it runs (the copy is sized only once the files are open). ``Reader(route=)``
forces a road (tests, measurements).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._call import Call
from ._defaults import (
    OFF_LOOP_REQUESTS,
    SMALL_BYTES,
    SMALL_COLD_REQUESTS,
    SMALL_OFF_LOOP_BYTES,
    SMALL_REQUESTS,
    SMALL_SPLIT_BYTES,
    SMALL_SPLIT_FILES,
    SMALL_SPLIT_MAX,
    SMALL_URLS,
)
from ._url import is_url

__all__ = ["Strategy", "declined", "plain_limit", "route"]

UNLIMITED = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Strategy:
    """How a call is served."""

    small: bool
    """Try the backend's small path first (else the bulk road at once)."""

    remote: bool = False
    """The small path is the HTTP backend's (every request a URL of its own object)."""

    inline_bytes: int = 0
    """Small path: most bytes it may copy on the calling thread."""

    thread_bytes: int = 0
    """Small path: most bytes it may copy on a worker thread (0: none)."""

    cold: bool = False
    """Small path: a request missing the page cache may be read by blocking calls on a
    thread that is not the event loop's."""

    off_loop: bool = False
    """Bulk road: check and plan the requests on a worker thread."""

    split_files: int = 0
    """Small path of a long request list, if its requests name at most this many files
    (0: not this way): parsed into arrays, opened, and copied (within ``inline_bytes`` on
    the calling thread, else ``thread_bytes`` on a worker) on up to one thread per usable
    core."""


# The strategies, made once (a small call costs ~20 us: no allocation per call here)
_BULK = Strategy(small=False)
_BULK_OFF_LOOP = Strategy(small=False, off_loop=True)
_URLS = Strategy(small=True, remote=True)
_FORCED = Strategy(small=True, inline_bytes=UNLIMITED)
_ON_LOOP = {cold: Strategy(small=True, inline_bytes=SMALL_BYTES,
                           thread_bytes=SMALL_OFF_LOOP_BYTES, cold=cold)
            for cold in (False, True)}
_BLOCKING = {cold: Strategy(small=True, inline_bytes=SMALL_OFF_LOOP_BYTES, cold=cold)
             for cold in (False, True)}
_SPLIT = Strategy(small=True, inline_bytes=SMALL_BYTES, thread_bytes=SMALL_SPLIT_BYTES,
                  off_loop=True, split_files=SMALL_SPLIT_FILES)


def declined(call: Call) -> Strategy:
    """The bulk road for a call its small path declined: a long list is still checked and
    planned off the loop."""
    return _BULK_OFF_LOOP if len(call.items) >= OFF_LOOP_REQUESTS else _BULK


def plain_limit(force: bool | None) -> int:
    """Longest request list worth the one-pass plain parse the small paths read: no small
    path serves more than ``SMALL_REQUESTS`` (``SMALL_URLS`` for URLs) unless forced; longer
    lists go to ``normalize``, whose column passes are faster per request."""
    if force is False:
        return 0
    return UNLIMITED if force else max(SMALL_REQUESTS, SMALL_URLS)


def route(call: Call, force: bool | None, direct: bool | None) -> Strategy:
    """The road for ``call``. ``force``: ``Reader(route=)`` (``True`` small whenever the
    small path can serve, ``False`` never, ``None`` by size); ``direct``: the reader's
    O_DIRECT setting (``True`` bypasses the page cache, which the local small path reads)."""
    plain = call.plain
    n = len(call.items)
    if force is False or call.pipeline:
        return _BULK_OFF_LOOP if n >= OFF_LOOP_REQUESTS else _BULK
    if plain is None:  # a long list (or an odd one, which the bulk road names)
        if n <= SMALL_REQUESTS or n > SMALL_SPLIT_MAX or direct is True:
            return _BULK_OFF_LOOP if n >= OFF_LOOP_REQUESTS else _BULK
        return _SPLIT  # its files counted and URLs turned away once parsed, off the loop
    if n and "://" in plain[0][0]:  # URLs (a file:// one: the bulk road decodes it)
        if n <= SMALL_URLS and _distinct_urls(call):
            return _URLS
        return _BULK
    if direct is True or not n or (n > SMALL_REQUESTS and force is not True):
        return _BULK_OFF_LOOP if n >= OFF_LOOP_REQUESTS else _BULK
    if force:
        return _FORCED
    # the caller's thread waits either way when it blocks: the bigger copies there too
    return (_BLOCKING if call.sync else _ON_LOOP)[n <= SMALL_COLD_REQUESTS]


def _distinct_urls(call: Call) -> bool:
    """Every request a URL, each of its own object (the planner merges an object asked for
    twice), with paths the C-free URL road can send."""
    assert call.plain is not None
    paths = call.plain[0]
    if len(set(paths)) != len(paths) or not all(map(is_url, paths)):
        return False
    joined = "\n".join(paths)
    if "\0" in joined:
        return False
    try:
        joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True
