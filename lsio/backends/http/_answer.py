"""Answers: what the client makes of the response to a GET (a range, an ignored ``Range``,
a probe sized by the answer), and the bodies it keeps for the call (size probes, whole
objects).

:class:`Answers` is the part of :class:`~._client.HttpClient` that reads responses; the
client sends the requests (:meth:`Answers._open`) and retries.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from yarl import URL

from ..._defaults import BYTEARRAY_BELOW
from ..._url import Target
from ._cost import cost_of
from ._protocol import (
    UNKNOWN_SIZE,
    HttpError,
    Retry,
    content_range,
    range_header,
    status_error,
)
from ._read import Read, origin
from ._session import read_body, stream_into, stream_tail, stream_through

__all__ = ["Answers"]

_EMPTY = memoryview(b"")


class Answers:
    """The client's answers and what it learned of its objects."""

    urls: list[URL]
    targets: list[Target]
    prefetch: dict[int, tuple[int, memoryview]]
    """(first offset, bytes) of objects, from the size probe: the head, or for objects
    asked only for suffixes, the tail."""
    whole: dict[int, asyncio.Future[memoryview]]
    """Whole bodies of objects whose server ignored ``Range`` (size probes)."""
    file_reads: Callable[[int], list[Read]] | None
    """A call's reads of each object, when it has a plan: a body sent whole (``Range``
    ignored) is then streamed through them (:meth:`_stream_whole`), not kept."""
    streamed: dict[int, asyncio.Future[None]]
    """Objects whose whole body is streaming (or streamed) into the call's reads."""
    sizes: list[int]
    """Each object's size, once an answer told it."""

    async def _open(self, file: int, rng: str | None, url: URL | None = None
                    ) -> aiohttp.ClientResponse:
        raise NotImplementedError  # the client's

    async def _whole_body(self, file: int, resp: aiohttp.ClientResponse | None
                          ) -> memoryview:
        """The object's full body, fetched once per call however many reads want it."""
        fut = self.whole.get(file)
        if fut is not None:
            if resp is not None:
                resp.close()  # another read is already downloading it
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self.whole[file] = fut
        try:
            if resp is None:
                resp = await self._open(file, None)
                if resp.status != 200:
                    err = status_error(resp.status, resp.reason, str(resp.url), resp.headers)
                    resp.release()
                    raise err
            body = await read_body(resp, str(self.urls[file]))
        except BaseException as exc:
            del self.whole[file]
            self._failed(fut, exc, file)
            raise
        finally:
            if resp is not None:
                resp.release()
        self.sizes[file] = len(body)
        fut.set_result(body)
        return body

    def keep_probe(self, r: Read, got: int, probe_size: int, tail: int
                   ) -> tuple[int, memoryview]:
        """After the size probe ``r`` of a file (``tail``: the bytes of a tail probe, 0
        for a head probe of ``probe_size`` bytes) brought ``got`` bytes: the object's size
        is known (an answer without a total ending before ``probe_size`` ended at the
        object's end; else ``HttpError``), and the probe's (first offset, bytes) are kept
        for later reads of the file (:attr:`prefetch`) and returned."""
        file = r.file
        if self.sizes[file] == UNKNOWN_SIZE and got < probe_size and not tail:
            self.sizes[file] = got  # no total given: the body ended at the object's end
        elif self.sizes[file] == UNKNOWN_SIZE:
            raise HttpError(errno.EIO, f"{self.urls[file]} did not tell the object's "
                            "size (Content-Range: bytes a-b/*)")
        kept = (max(r.start, 0), _EMPTY if r.dest is None else r.dest[:got])
        self.prefetch[file] = kept
        return kept

    @staticmethod
    def _put(r: Read, got: int, piece: memoryview) -> int:
        if r.dest is None and r.pieces is None:  # a probe answered with the whole body
            r.dest = piece  # keep a view of it
        else:
            r.put(got, piece)
        return len(piece)

    def _from_memory(self, r: Read) -> int | None:
        """Serve ``r`` from a probe prefix or a whole body if they hold it; bytes copied."""
        fut = self.whole.get(r.file)
        body: memoryview | None
        if fut is not None and fut.done() and fut.exception() is None:
            body = fut.result()
            if r.start < 0:  # a suffix probe
                r.start = max(len(body) - r.length, 0)
            return self._put(r, 0, body[r.start:r.start + r.length])
        pre = self.prefetch.get(r.file)
        if pre is None or r.start < pre[0]:
            return None
        first, body = pre
        to_end = first + len(body) == self.sizes[r.file]
        if r.start + r.length > first + len(body) and not to_end:
            return None
        return self._put(r, 0, body[r.start - first:r.start - first + r.length])

    def _head_from_memory(self, r: Read) -> int:
        """Copy the part of ``r``'s head that a size probe holds (a read starting inside
        it and running past it: the first part of an object split after its probe); the
        bytes copied, 0 if none."""
        pre = self.prefetch.get(r.file)
        if pre is None or r.start < 0 or (r.dest is None and r.pieces is None):
            return 0
        first, body = pre
        if not first <= r.start < first + len(body):
            return 0
        head = body[r.start - first:r.start - first + r.length]
        r.put(0, head)
        return len(head)

    async def _attempt(self, r: Read, got: int) -> tuple[int, bool]:
        """One GET of the rest of ``r`` (from ``got``); (bytes added, reached EOF)."""
        start, want = r.start + got, r.length - got
        suffix = start < 0  # a size probe for the last `want` bytes (bytes=-N)
        fut = self.whole.get(r.file)
        if fut is not None:
            body = await asyncio.shield(fut)
            if suffix:
                r.start = start = max(len(body) - want, 0)
            return self._put(r, got, body[start:start + want]), True
        streamed = self.streamed.get(r.file)
        if streamed is not None:  # a whole body is being streamed into the call's reads
            await asyncio.shield(streamed)
            if r.got >= 0:
                return r.got - got, True
        if suffix and self.targets[r.file].kind == "az":
            # Azure Blob has no suffix ranges (bytes=-N; Azurite answers 500): the size first
            size = await self._azure_size(r.file)
            r.start = start = max(size - want, 0)
            r.length = want = size - start
            suffix = False
            if want == 0:
                return 0, True
        t0 = time.perf_counter()
        resp = await self._open(r.file, range_header(start, want))
        t1 = time.perf_counter()
        try:
            if resp.status == 200:  # Range ignored: the body is the whole object
                return await self._ignored_range(r, got, resp, start, want, suffix)
            if resp.status == 416:  # starts at or past the end
                total = (content_range(resp.headers.get("Content-Range")) or (0, 0, None))[2]
                if total is not None:
                    self.sizes[r.file] = total
                return 0, True
            if resp.status != 206:
                raise status_error(resp.status, resp.reason, str(resp.url), resp.headers)
            return await self._partial(r, got, resp, (start, want, suffix), t1 - t0, t1)
        finally:
            resp.release()

    async def _ignored_range(self, r: Read, got: int, resp: aiohttp.ClientResponse,
                             start: int, want: int, suffix: bool) -> tuple[int, bool]:
        """A 200 answer to the range GET of ``r``: the body is the whole object."""
        probe = r.dest is None and r.pieces is None  # sized by the answer: keep it all
        if self.file_reads is not None and not probe:
            # keep only what the call's reads want while it streams by
            await self._stream_whole(r.file, resp)
            if r.got < 0:
                raise HttpError(errno.EIO, f"{resp.url} ignored Range and its body did "
                                f"not serve bytes {start}-{start + want - 1}")
            return r.got - got, True
        if suffix:  # keep only the tail
            size, tail = await stream_tail(resp, want, str(resp.url))
            self.sizes[r.file] = size
            r.start, r.length, r.dest = size - len(tail), len(tail), tail
            return len(tail), True
        body = await self._whole_body(r.file, resp)
        return self._put(r, got, body[start:start + want]), True

    async def _partial(self, r: Read, got: int, resp: aiohttp.ClientResponse,
                       asked: tuple[int, int, bool], ttfb: float, headers_at: float
                       ) -> tuple[int, bool]:
        """A 206 answer to the GET of ``asked`` = (start, length, suffix) of ``r``: its
        ``Content-Range`` checked, its body streamed into the read."""
        start, want, suffix = asked
        cr = content_range(resp.headers.get("Content-Range"))
        if cr == (0, 0, 0):  # an empty object ("bytes 0--1/0"): any range of it is b""
            self.sizes[r.file] = 0
            return 0, True
        if suffix and cr is not None and cr[2] is not None:
            # the total is known now: the tail is [total - want, total); the server may
            # send it all or (capping range sizes) only its first part
            r.start = start = max(cr[2] - want, 0)
            r.length = want = cr[2] - start
        if cr is None or cr[0] != start or cr[1] > start + want:
            raise HttpError(errno.EIO, f"{resp.url} answered Content-Range "
                            f"{resp.headers.get('Content-Range')!r} to Range "
                            + range_header(-1 if suffix else start, want))
        n = cr[1] - cr[0]
        announced = resp.content_length  # parsed from the header at each access
        if announced is not None and announced != n:
            raise Retry(HttpError(errno.EIO, f"{resp.url}: Content-Length "
                                  f"{announced} disagrees with Content-Range "
                                  f"{resp.headers['Content-Range']}"))
        if cr[2] is not None:
            self.sizes[r.file] = cr[2]
        if r.pieces is not None:
            added, clean = await stream_into(resp, None, read=r, at=got, n=n)
            return self._body_end(resp, added, n, clean, cr, ttfb, headers_at)
        if r.dest is None:  # a size probe: memory sized by the answer
            r.length = min(r.length, cr[2]) if cr[2] is not None else n
            r.dest = (memoryview(bytearray(r.length)) if r.length < BYTEARRAY_BELOW else
                      memoryview(np.empty(r.length, np.uint8).data).cast("B"))
        added, clean = await stream_into(resp, r.dest[got:got + n])
        return self._body_end(resp, added, n, clean, cr, ttfb, headers_at)

    @staticmethod
    def _body_end(resp: aiohttp.ClientResponse, added: int, n: int, clean: bool,
                  cr: tuple[int, int, int | None], ttfb: float, headers_at: float
                  ) -> tuple[int, bool]:
        """(bytes added, reached EOF) of a 206 body of ``n`` bytes that streamed ``added``;
        a body cut short is retried from where it stopped. A complete answer's timing goes
        to its host's record (:mod:`._cost`)."""
        if added < n or not clean:
            raise Retry(HttpError(errno.EIO, f"body from {resp.url} truncated at "
                                  f"{added} of {n} bytes"), progress=added)
        cost_of(origin(resp.url)).answer(ttfb, n, time.perf_counter() - headers_at)
        return n, cr[2] is not None and cr[1] >= cr[2]

    async def _stream_whole(self, file: int, resp: aiohttp.ClientResponse) -> None:
        """A 200 answer (the server ignored ``Range``) streamed once for every read of the
        call on ``file`` (:attr:`file_reads`): each keeps its own bytes as they pass and is
        marked served (``Read.got``); nothing else of the body is kept. Reads of the file
        that ask meanwhile wait for it."""
        fut = self.streamed.get(file)
        if fut is not None:  # another read is streaming it already
            resp.close()
            await asyncio.shield(fut)
            return
        assert self.file_reads is not None
        reads = sorted((r for r in self.file_reads(file) if r.got < 0), key=lambda r: r.start)
        fut = asyncio.get_running_loop().create_future()
        self.streamed[file] = fut
        try:
            pos, whole = await stream_through(resp, reads)
        except BaseException as exc:
            del self.streamed[file]
            self._failed(fut, exc, file)
            raise
        if whole:
            self.sizes[file] = pos
        else:  # every read is served: the rest of the body is not worth downloading
            resp.close()
        for r in reads:
            r.got = min(max(pos - r.start, 0), r.length)
        fut.set_result(None)

    async def _azure_size(self, file: int) -> int:
        """An Azure blob's size, from a one-byte range's ``Content-Range`` (a HEAD would
        tell it too, but the client's one request path is a GET)."""
        if self.sizes[file] != UNKNOWN_SIZE:
            return self.sizes[file]
        resp = await self._open(file, "bytes=0-0")
        try:
            if resp.status in (206, 416):  # 416: an empty blob has no byte 0
                # only the total matters (Azurite answers "bytes 0--1/0" for an empty blob)
                cr = content_range(resp.headers.get("Content-Range"))
                total = None if cr is None else cr[2]
            elif resp.status == 200:
                total = resp.content_length
                if total is not None and total >= UNKNOWN_SIZE:
                    total = None
            else:
                raise status_error(resp.status, resp.reason, str(resp.url), resp.headers)
            if total is None:
                raise HttpError(errno.EIO, f"{resp.url} did not tell the blob's size")
        finally:
            resp.release()
        self.sizes[file] = total
        return total

    def _failed(self, fut: asyncio.Future[Any], exc: BaseException, file: int) -> None:
        """A shared download of ``file`` failed with ``exc``: the reads waiting for it see
        the same failure (a Retry makes each retry on its own)."""
        fut.set_exception(exc if isinstance(exc, (HttpError, Retry)) else Retry(
            HttpError(errno.EIO, f"download of {self.urls[file]} was interrupted")))
        fut.exception()  # mark retrieved
