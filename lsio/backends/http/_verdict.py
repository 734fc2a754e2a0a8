"""Whether a server answers multi-range requests with ``multipart/byteranges`` bodies: the
verdict, learned once per origin and process, and the reads of one file served by multipart
requests where the verdict allows (falling back to one range per request).

How one multi-range request is sent and its answer parsed is :mod:`._multi`'s; this module
decides when to send one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._request import Requests
from ._client import HttpClient
from ._multi import NotMulti
from ._protocol import HttpError, Retry
from ._read import Read, origin

__all__ = ["multi_files", "probe", "serve_multi"]

MULTI_OK: dict[Any, bool] = {}
"""Per origin: whether it answers multi-range requests with multipart bodies (learned once
per process)."""


class _NoVerdict(Exception):
    """Multi-range requests kept failing for other reasons: no answer on multipart."""


async def probe(client: HttpClient, reqs: Requests) -> bool:
    """Whether every plain-HTTP server of this call answers multipart ranges. Servers
    not yet known are asked once per process, with two 1-byte ranges of the call's own
    requests (``bytes=a-a,b-b``)."""
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
        pair = [Read(-1, f, a, 1, memoryview(bytearray(1))),
                Read(-1, f, b, 1, memoryview(bytearray(1)))]
        try:
            if await client.get_multi(pair):  # no range satisfiable (416) or parts
                continue  # missing: ask again later
            verdict = True
        except NotMulti:
            verdict = False
        except (HttpError, Retry):
            continue  # the reads themselves will report what is wrong
        MULTI_OK[where] = verdict
        verdicts.append(verdict)
    return bool(verdicts) and all(verdicts)


def multi_files(client: HttpClient) -> npt.NDArray[np.bool_]:
    """Files whose small reads may share a multipart request."""
    return np.array([t.kind == "http" and f not in client.prefetch
                     and MULTI_OK.get(origin(client.urls[f])) is not False
                     for f, t in enumerate(client.targets)], bool)


async def serve_multi(client: HttpClient, probing: dict[Any, asyncio.Lock],
                      reads: list[Read]) -> list[Read]:
    """Serve ``reads`` (one file) with multipart requests where the server takes them;
    the first one to a server not known yet goes alone and gives the verdict (``probing``:
    the call's lock per origin). Returns the reads left to read one by one."""
    where = origin(client.urls[reads[0].file])
    left = reads
    if MULTI_OK.get(where) is None:
        async with probing.setdefault(where, asyncio.Lock()):
            if MULTI_OK.get(where) is None:
                try:
                    left = await _with_retries(client, reads)
                    MULTI_OK[where] = True
                except NotMulti:
                    MULTI_OK[where] = False
                except _NoVerdict:
                    left = list(reads)
    if left is reads and MULTI_OK.get(where):
        try:
            left = await _with_retries(client, reads)
        except (NotMulti, _NoVerdict):
            left = list(reads)
    return left


async def _with_retries(client: HttpClient, reads: list[Read]) -> list[Read]:
    return await client.retrying(lambda: client.get_multi(reads),
                                 lambda exc, attempts: _NoVerdict())
