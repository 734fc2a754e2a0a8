"""Requests served from bytes already in memory, for the bulk road: the bodies of HTTP size
probes (a small object read whole costs one GET), and the last resort for local files that
kept changing while they were read (each read to its end through one descriptor)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._outcome import Outcome
from ._plan import resolve_ranges
from ._request import Requests
from ._results import Results
from ._types import Bodies
from .backends.local import special_detail

__all__ = ["caller", "read_to_end", "serve_from_memory", "too_small"]


def caller(reqs: Requests, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Indices in the caller's list of requests ``idx`` of ``reqs``."""
    return idx if reqs.number is None else reqs.number[idx]


def too_small(reqs: Requests, i: int, cap: int, length: int) -> ValueError:
    """The error for an ``out=`` buffer that cannot hold its request's bytes."""
    return ValueError(f"lsio: out[{reqs.caller_index(i)}] holds {cap} bytes but "
                      f"{reqs.describe(i)} returns {length}")


def _slurp(path: str) -> bytes:
    """The whole file, read to its end through one descriptor (one version of it, whatever
    size it reports: ``/proc`` files report 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, special_detail(path), path)
        pieces = []
        step = max(st.st_size + 1, 1 << 16)
        while piece := os.read(fd, step):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


async def read_to_end(reqs: Requests, out: Sequence[Any] | None, caps: npt.NDArray[np.int64],
                      outcome: Outcome) -> Results:
    """The last resort for files that kept changing while they were read: each is read to
    its end in a thread, and its requests are served from those bytes."""
    bodies: list[memoryview] = []
    size = np.zeros(len(reqs.paths), np.int64)
    gone = np.zeros(len(reqs.paths), bool)
    for f, path in enumerate(reqs.paths):
        try:
            body = await asyncio.to_thread(_slurp, path)
        except OSError as exc:
            first = np.flatnonzero(reqs.file == f)
            code = exc.errno or errno.EIO
            detail = {0: exc.strerror} if exc.errno == errno.EINVAL and exc.strerror else None
            if not outcome.fail(caller(reqs, first[:1]), np.array([code]), detail)[0]:
                outcome.raise_first()
            gone[f] = True
            body = b""
        bodies.append(memoryview(body))
        size[f] = len(body)
    n = len(reqs.paths)
    first_byte, index = np.zeros(n, np.int64), np.arange(n, dtype=np.int64)
    have: npt.NDArray[np.int64] = np.where(gone, -1, size)
    served = serve_from_memory((first_byte, have, index, bodies), reqs, size, out, caps,
                               outcome, ~gone[reqs.file])
    parts: list[tuple[Results, npt.NDArray[np.int64]]] = []
    if served is not None:
        done, early = served
        parts.append((early, np.flatnonzero(done)))
    lost = np.flatnonzero(gone[reqs.file])
    if len(lost):
        absent = Results.absent(len(lost))
        parts.append((absent, lost))
        outcome.report(caller(reqs, lost), absent, np.arange(len(lost), dtype=np.int64))
    return Results.merge(len(reqs), parts)


def serve_from_memory(bodies: Bodies, reqs: Requests, size: npt.NDArray[np.int64],
                      out: Sequence[Any] | None, caps: npt.NDArray[np.int64], outcome: Outcome,
                      left: npt.NDArray[np.bool_]
                      ) -> tuple[npt.NDArray[np.bool_], Results] | None:
    """Requests whose bytes are already in memory: their results are views of those
    bodies, or copied into ``out``."""
    first, have, index, buffers = bodies
    if not buffers:
        return None
    f = reqs.file
    start, end = resolve_ranges(f, reqs.offset, reqs.length, size)
    done = left & (have[f] >= 0) & (start >= first[f]) & (end <= first[f] + have[f])
    if not done.any():
        return None
    idx = np.flatnonzero(done)
    lengths = end[idx] - start[idx]
    if out is not None:
        small = np.flatnonzero(caps[idx] < lengths)
        if len(small):
            i = int(idx[small[0]])
            raise too_small(reqs, i, int(caps[i]), int(end[i] - start[i]))
        for k, i in enumerate(idx.tolist()):
            body = buffers[int(index[f[i]])]
            at = int(start[i] - first[f[i]])
            memoryview(out[i]).cast("B")[:lengths[k]] = body[at:at + int(lengths[k])]
        early = Results(list(out), idx, np.zeros(len(idx), np.int64), lengths)
    else:
        early = Results(buffers, index[f[idx]], start[idx] - first[f[idx]], lengths)
    outcome.report(caller(reqs, idx), early, np.arange(len(idx), dtype=np.int64))
    return done, early
