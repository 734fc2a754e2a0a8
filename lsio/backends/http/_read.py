"""A planned read in flight (:class:`Read`), what credentials are bound to (:func:`origin`),
and the workers that run a call's requests (:func:`workers`)."""

from __future__ import annotations

import asyncio
import errno
import itertools
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from yarl import URL

from ._protocol import HttpError, Retry

__all__ = ["Read", "origin", "workers"]


def origin(url: URL) -> tuple[str, str | None, int | None]:
    """What credentials are bound to: scheme, host and port."""
    return (url.scheme, url.host, url.port)


@dataclass(slots=True)
class Read:
    """One planned read (or size probe) in flight: file range [start, start + length)."""

    op: int
    file: int
    start: int
    length: int
    dest: memoryview | None
    """Where the bytes go; ``None`` for a size probe, whose buffer is sized by the answer
    (and for a sparse read, whose bytes go to ``pieces``)."""
    got: int = -1
    """Bytes read once served by another answer (multipart, or a whole body streamed for
    the call's reads); -1 until then."""
    pieces: list[tuple[int, memoryview]] | None = None
    """Sparse reads: (position in the read, memory) of each run of requested bytes, by
    position; the bytes between them are received and dropped."""
    starts: list[int] | None = None
    """Sparse reads: each piece's position (for bisection)."""
    failed: HttpError | Retry | None = None
    """How the C transport's attempt at it failed (:mod:`._batch`): :meth:`HttpClient.get`
    raises an error at once and retries a ``Retry`` as its first failed attempt."""

    def put(self, at: int, data: memoryview | bytes) -> None:
        """Keep the bytes at positions ``[at, at + len(data))`` of the read."""
        if self.pieces is None:
            assert self.dest is not None
            self.dest[at:at + len(data)] = data
            return
        assert self.starts is not None
        end = at + len(data)
        k = max(bisect_right(self.starts, at) - 1, 0)
        for pos, mem in itertools.islice(self.pieces, k, None):
            if pos >= end:
                break
            lo, hi = max(pos, at), min(pos + len(mem), end)
            if lo < hi:
                mem[lo - pos:hi - pos] = data[lo - at:hi - at]


async def workers(todo: Sequence[int], fn: Callable[[int], Any], concurrency: int,
                  err: npt.NDArray[np.int32] | list[int], detail: dict[int, str],
                  missing_ok: bool = False, keep_going: bool = False) -> None:
    """Run ``fn(i)`` for each ``i`` of ``todo`` on up to ``concurrency`` coroutines (no more
    than there is work for; one runs inline, without a task). The first failure stops new
    work (fail fast), but for "not found" with ``missing_ok`` and for an object that changed
    while read (``._version``), and for any failure with ``keep_going`` (``on_error=
    "return"``); failures land in ``err``/``detail``."""
    stop = False
    work = iter(todo)

    async def worker() -> None:
        nonlocal stop
        for i in work:
            if stop:
                return
            try:
                await fn(i)
            except HttpError as exc:
                err[i] = exc.errno
                detail[i] = exc.detail
                # an object that changed is read again (by the caller): the rest goes on
                stop = stop or not (keep_going or (missing_ok and exc.errno == errno.ENOENT)
                                    or exc.errno == errno.ESTALE)

    count = min(max(1, concurrency), len(todo))
    if count <= 1:  # no task: it would cost loop turns for nothing to overlap
        await worker()
        return
    tasks = [asyncio.ensure_future(worker()) for _ in range(count)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
