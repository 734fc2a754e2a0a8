"""Multi-range requests: several ranges of one object in one GET, answered with a
``multipart/byteranges`` body (RFC 9110 14.6), or merged into one range by the server."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import aiohttp

from ._protocol import (
    HttpError,
    Retry,
    content_range,
    multipart_boundary,
    parse_multipart,
    status_error,
)
from ._read import Read
from ._session import read_body

if TYPE_CHECKING:
    from ._client import HttpClient

__all__ = ["NotMulti", "get_multi"]


class NotMulti(Exception):
    """The server answered a multi-range request without multipart ranges."""


async def get_multi(client: HttpClient, reads: list[Read]) -> list[Read]:
    """Ask for all ``reads`` (one file) in one request; returns the reads it did not
    serve (for single requests). Raises NotMulti if the server does not do this."""
    file = reads[0].file
    spec = ",".join(f"{r.start}-{r.start + r.length - 1}" for r in reads)
    resp = await client._open(file, f"bytes={spec}")
    try:
        parts, total = await _multi_parts(resp)
    except _NoneSatisfiable:  # single requests report the ends
        return list(reads)
    finally:
        resp.close() if resp.status == 200 else resp.release()
    left = []
    for r in reads:
        for start, end, data in parts:
            if start <= r.start < end:
                piece = data[r.start - start:r.start - start + r.length]
                if len(piece) == r.length or (total is not None and end >= total):
                    r.put(0, piece)
                    r.got = len(piece)
                break
        if r.got < 0:
            left.append(r)
    return left


async def _multi_parts(resp: aiohttp.ClientResponse
                       ) -> tuple[list[tuple[int, int, memoryview]], int | None]:
    """The parts of a multi-range answer (one part if the server merged them)."""
    boundary = multipart_boundary(resp.headers.get("Content-Type", ""))
    if resp.status == 206 and boundary is not None:
        body = await read_body(resp, str(resp.url))
        try:
            return parse_multipart(body, boundary)
        except ValueError as exc:
            raise Retry(HttpError(errno.EIO, f"bad multipart body from {resp.url}: "
                                  f"{exc}")) from None
    if resp.status == 206:  # the server merged the ranges into one
        cr = content_range(resp.headers.get("Content-Range"))
        if cr is None or cr[0] < 0:
            raise NotMulti()
        body = await read_body(resp, str(resp.url))
        if len(body) != cr[1] - cr[0]:
            raise Retry(HttpError(errno.EIO, f"body from {resp.url} has {len(body)} "
                                  f"bytes for Content-Range {cr[0]}-{cr[1] - 1}"))
        return [(cr[0], cr[1], body)], cr[2]
    if resp.status == 416:
        raise _NoneSatisfiable()
    if resp.status == 200:
        raise NotMulti()
    raise status_error(resp.status, resp.reason, str(resp.url), resp.headers)


class _NoneSatisfiable(Exception):
    """416 to a multi-range request: no range of it starts before the end."""
