"""A planned read in flight (:class:`Read`) and how a plan's reads are made
(:class:`PlanReads`), what credentials are bound to (:func:`origin`), and the workers that
run a call's requests (:func:`workers`)."""

from __future__ import annotations

import asyncio
import errno
import itertools
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from yarl import URL

from ._protocol import HttpError, Retry

if TYPE_CHECKING:
    from ..._plan import Plan

__all__ = ["PACE", "PlanReads", "Read", "origin", "workers"]

PACE = 1024
"""Reads a Python loop over a call's reads handles before it lets the event loop run (a
loop of 20 000 would hold it for tens of milliseconds)."""


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


class PlanReads:
    """The plan's reads as :class:`Read` objects into their destinations (``views``: the
    call's buffers), each made once: ``self(op)`` one, :meth:`many` many at once."""

    def __init__(self, p: Plan, views: list[memoryview]) -> None:
        self.p, self.views = p, views
        self.made: dict[int, Read] = {}

    def __call__(self, op: int) -> Read:
        r = self.made.get(op)
        if r is not None:
            return r
        p, views = self.p, self.views
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
        self.made[op] = r
        return r

    async def many(self, ops: Sequence[int]) -> AsyncIterator[Read]:
        """The reads of ``ops``, in order, a :data:`PACE` at a time with a loop turn
        between: each field read as an array for the lot (one op at a time costs ~3 us),
        a read that is one whole piece (most are) made here, the others by ``self(op)``."""
        p, views, made = self.p, self.views, self.made
        for k in range(0, len(ops), PACE):
            if k:
                await asyncio.sleep(0)
            some = np.asarray(ops[k:k + PACE], np.int64)
            at, length = p.op_buf[some], p.op_length[some]
            simple = np.ones(len(some), bool)
            if p.op_piece is not None:  # sparse: a read of one piece, all of it, is plain
                assert p.piece_offset is not None and p.piece_length is not None
                assert p.piece_buf is not None
                lo = p.op_piece[some]
                simple = p.op_piece[some + 1] - lo == 1
                one = np.where(simple, lo, 0)  # (a read of no piece indexes nothing)
                if len(p.piece_length):
                    simple &= ((p.piece_length[one] == length)
                               & (p.piece_offset[one] == p.op_offset[some]))
                    at = np.where(simple, p.piece_buf[one], at)
            for op, plain, f, start, n, base, a in zip(
                    some.tolist(), simple.tolist(), p.op_file[some].tolist(),
                    p.op_offset[some].tolist(), length.tolist(), p.op_base[some].tolist(),
                    at.tolist(), strict=True):
                r = made.get(op)
                if r is None:
                    if not plain:
                        r = self(op)
                    else:
                        r = made[op] = Read(op, f, start, n, views[base][a:a + n])
                yield r
