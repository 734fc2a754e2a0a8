"""The client: one call's requests to its objects. It resolves URLs, signs and sends GETs
(following redirects by hand so credentials never leave the URL's origin), checks every
answer with the protocol module, and retries what may pass in one retry loop.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import random
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
from yarl import URL

from ..._defaults import BYTEARRAY_BELOW, REDIRECTS, RETRY_STATUS
from ..._url import HttpOptions, Target, resolve_http, unsupported
from ..cloud._types import Auth, Provider, Providers
from ._cost import cost_of
from ._protocol import (
    UNKNOWN_SIZE,
    HttpError,
    Retry,
    backoff_delay,
    content_range,
    multipart_boundary,
    parse_multipart,
    range_header,
    retry_after,
    status_error,
)
from ._session import (
    Proxies,
    aiohttp_error,
    read_body,
    session_for,
    session_now,
    stream_into,
    stream_tail,
    stream_through,
)
from ._version import Versions

__all__ = ["HttpClient", "NotMulti", "Read", "origin", "workers"]

T = TypeVar("T")


class NotMulti(Exception):
    """The server answered a multi-range request without multipart ranges."""


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


@functools.lru_cache(maxsize=4096)
def _http_target(path: str) -> tuple[Target, URL]:
    """An ``http(s)://`` URL's target and parsed URL: a pure function of the text, kept for
    the URLs used again (~5 us a call to make, and aiohttp finds a reused ``URL``'s parts
    already computed)."""
    target = resolve_http(path)
    return target, URL(target.url, encoded=False)

_UNRESOLVED = Target("", "http")
_NO_URL = URL("http://unresolved.invalid/")
_NO_HEADERS: Mapping[str, str] = {}
_EMPTY = memoryview(b"")
"""Placeholders of paths :meth:`HttpClient.start` resolves."""

Credentials = dict[tuple[str, str], Auth | None]
"""Credentials found, by (``Target.kind``, the provider's ``auth_key``): per backend."""


@functools.lru_cache(maxsize=16)
def _timeout(request_timeout: float, connect_timeout: float) -> aiohttp.ClientTimeout:
    """The per-request deadline: headers and body (aiohttp's total timeout runs until the
    response is released). Made once per value (an attrs instance costs ~2 us)."""
    return aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)


class HttpClient:
    """One ``read_many`` call's remote part: its URLs, what was learned, and the I/O."""

    def __init__(self, paths: list[str], options: HttpOptions, auths: Credentials,
                 providers: Providers) -> None:
        self.paths = paths
        self.options = options
        self.targets: list[Target] = []
        self.urls: list[URL] = []
        self.auths: list[Auth | None] = []
        self.headers: list[Mapping[str, str]] = []
        """Headers of each path's service (its provider's)."""
        self._auth_cache = auths
        self._providers = providers
        self.pending = False
        """Some paths wait for :meth:`start`: finding their region or credentials may block
        (botocore's session, credential files, a metadata server), so it runs in a thread."""
        configs: dict[str, Any] = {}
        for p in paths:
            target, url, auth, headers = self._resolve(p, configs, False)
            self.targets.append(target)
            self.urls.append(url)
            self.auths.append(auth)
            self.headers.append(headers)
        self.prefetch: dict[int, tuple[int, memoryview]] = {}
        """(first offset, bytes) of objects, from the size probe: the head, or for objects
        asked only for suffixes, the tail."""
        self.whole: dict[int, asyncio.Future[memoryview]] = {}
        """Whole bodies of objects whose server ignored ``Range`` (size probes)."""
        self.file_reads: Callable[[int], list[Read]] | None = None
        """A call's reads of each object, when it has a plan: a body sent whole (``Range``
        ignored) is then streamed through them (:meth:`_stream_whole`), not kept."""
        self.streamed: dict[int, asyncio.Future[None]] = {}
        """Objects whose whole body is streaming (or streamed) into the call's reads."""
        self.sizes = [UNKNOWN_SIZE] * len(paths)
        """Each object's size, once an answer told it."""
        self.session = session_now(options.connections_per_host)
        """This loop's session, once :meth:`start` found or made it."""
        self._proxy = Proxies(options.trust_env)
        self.timeout = _timeout(options.request_timeout, options.connect_timeout)
        self.versions = Versions(paths)
        """Each object's first answer: later requests of the call must get the same
        version (:mod:`._version`)."""

    async def start(self) -> None:
        if self.pending:
            await asyncio.to_thread(self._resolve_all)
            self.pending = False
        if self.session is None:
            limit = self.options.connections_per_host
            self.session = session_now(limit) or await session_for(limit)

    def _resolve_all(self) -> None:
        """Targets, URLs and credentials of every remote path (in a worker thread: the
        first S3 region or credential lookup of a process can take 0.1-0.5 s)."""
        configs: dict[str, Any] = {}
        for i, p in enumerate(self.paths):
            if p[:4].lower() != "http":
                self.targets[i], self.urls[i], self.auths[i], self.headers[i] = (
                    self._resolve(p, configs, True))

    def _resolve(self, path: str, configs: dict[str, Any], block: bool
                 ) -> tuple[Target, URL, Auth | None, Mapping[str, str]]:
        """``path``'s target, URL, credentials and service headers; without ``block``, a
        path whose provider would block is left for :meth:`start` (:attr:`pending`).
        ``configs``: each provider's call-wide settings, found once."""
        if path[:4].lower() == "http":  # http:// or https://: no other scheme starts so
            target, url = _http_target(path)
            return target, url, None, _NO_HEADERS
        if self.pending and not block:
            return _UNRESOLVED, _NO_URL, None, _NO_HEADERS
        provider = self._provider(path)
        config = configs.get(provider.KIND)
        if config is None:
            config = configs[provider.KIND] = provider.config(self.options, block)
        if config is None:
            self.pending = True  # resolved in start()
            return _UNRESOLVED, _NO_URL, None, _NO_HEADERS
        target = provider.resolve(path, self.options, config)
        url = URL(target.url, encoded=True)
        key = (target.kind, provider.auth_key(target))
        if key not in self._auth_cache:
            if not block:
                self.pending = True
                return target, url, None, provider.HEADERS
            try:
                self._auth_cache[key] = provider.find_auth(target, self.options)
            except OSError as exc:  # credentials that cannot be used: name the object
                exc.filename = path
                raise
        return target, url, self._auth_cache[key], provider.HEADERS

    def _provider(self, path: str) -> Provider:
        provider = self._providers.get(path.split("://", 1)[0].lower())
        if provider is None:
            raise unsupported(path)
        return provider

    # -- one request ---------------------------------------------------------------------
    def _headers(self, file: int, url: URL, rng: str | None, pin: str | None = None
                 ) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        if rng is not None:
            headers["Range"] = rng
        if pin is not None:  # the version the call's first answer was (signed with it)
            headers["If-Match"] = pin
        home = self.urls[file]
        if url is not home and origin(url) != origin(home):
            return headers  # redirected elsewhere: no credentials
        if self.options.headers:
            headers.update(self.options.headers)
        headers.update(self.headers[file])
        auth = self.auths[file]
        if auth is not None:
            headers = auth.headers("GET", str(url), headers)
        return headers

    async def _open(self, file: int, rng: str | None, url: URL | None = None
                    ) -> aiohttp.ClientResponse:
        """Send the GET of ``file`` (or of ``url``, on the same origin as ``file``'s URL,
        with its credentials), following redirects; the caller releases the response.
        A GET of ``file`` itself asks for the version of the call's first answer for it,
        and raises ``VersionChanged`` if the answer is another (:mod:`._version`)."""
        assert self.session is not None
        pin = None
        if url is None:
            url = self.urls[file]
            pin = self.versions.if_match(file)
        elif url is not self.urls[file]:  # another resource (a listing page)
            return await self._follow(file, rng, url, None)
        resp = await self._follow(file, rng, url, pin)
        try:
            self.versions.check(file, self.urls[file], resp.status, resp.headers, pin)
        except BaseException:
            resp.release()
            raise
        return resp

    async def _follow(self, file: int, rng: str | None, url: URL, pin: str | None
                      ) -> aiohttp.ClientResponse:
        """The GET of ``url`` for ``file``, following redirects."""
        assert self.session is not None
        auth = self.auths[file]
        if auth is not None:
            try:
                await auth.ready()
            except OSError as exc:  # credentials that cannot be used: name the object
                if exc.filename is None:
                    exc.filename = self.paths[file]
                raise
        for _ in range(REDIRECTS + 1):
            try:
                resp = await self.session.get(url, headers=self._headers(file, url, rng, pin),
                                              allow_redirects=False, timeout=self.timeout,
                                              ssl=True if self.options.ssl is None
                                              else self.options.ssl,
                                              proxy=self._proxy(url))
            except Exception as exc:
                mapped = aiohttp_error(exc, url, self.options.request_timeout)
                if mapped is None:
                    raise
                raise mapped from None
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                try:
                    location = url.join(URL(resp.headers["Location"]))
                except ValueError:
                    resp.release()
                    raise HttpError(errno.EIO, f"{url} redirected to an invalid location "
                                    f"{resp.headers['Location']!r}") from None
                resp.release()
                if location.scheme not in ("http", "https"):  # file://, ftp://, s3://...
                    raise HttpError(errno.EIO, f"{url} redirected to {location.scheme}:// "
                                    "(only http:// and https:// are followed); refused")
                url = location
                continue
            return resp
        raise HttpError(errno.ELOOP, f"more than {REDIRECTS} redirects from {self.urls[file]}")

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
                    err = status_error(resp.status, resp.reason, str(resp.url))
                    resp.release()
                    raise err
            body = await read_body(resp, str(self.urls[file]))
        except BaseException as exc:
            del self.whole[file]
            # waiters see the same failure (a Retry makes each retry on its own)
            fut.set_exception(exc if isinstance(exc, (HttpError, Retry)) else Retry(
                HttpError(errno.EIO, f"download of {self.urls[file]} was interrupted")))
            fut.exception()  # mark retrieved
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
            probe = r.dest is None and r.pieces is None  # sized by the answer: keep it all
            if resp.status == 200 and self.file_reads is not None and not probe:
                # Range ignored: the body is the whole object; keep only what the call's
                # reads want while it streams by
                await self._stream_whole(r.file, resp)
                if r.got < 0:
                    raise HttpError(errno.EIO, f"{resp.url} ignored Range and its body did "
                                    f"not serve bytes {start}-{start + want - 1}")
                return r.got - got, True
            if resp.status == 200 and suffix:  # Range ignored: keep only the tail
                size, tail = await stream_tail(resp, want, str(resp.url))
                self.sizes[r.file] = size
                r.start, r.length, r.dest = size - len(tail), len(tail), tail
                return len(tail), True
            if resp.status == 200:  # Range ignored: the body is the whole object
                body = await self._whole_body(r.file, resp)
                if suffix:
                    r.start = start = max(len(body) - want, 0)
                return self._put(r, got, body[start:start + want]), True
            if resp.status == 416:  # starts at or past the end
                total = (content_range(resp.headers.get("Content-Range")) or (0, 0, None))[2]
                if total is not None:
                    self.sizes[r.file] = total
                return 0, True
            if resp.status != 206:
                err = status_error(resp.status, resp.reason, str(resp.url))
                if isinstance(err, Retry):
                    err.after = retry_after(resp.headers.get("Retry-After"))
                raise err
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
                return self._body_end(resp, added, n, clean, cr, t1 - t0, t1)
            if r.dest is None:  # a size probe: memory sized by the answer
                r.length = min(r.length, cr[2]) if cr[2] is not None else n
                r.dest = (memoryview(bytearray(r.length)) if r.length < BYTEARRAY_BELOW else
                          memoryview(np.empty(r.length, np.uint8).data).cast("B"))
            added, clean = await stream_into(resp, r.dest[got:got + n])
            return self._body_end(resp, added, n, clean, cr, t1 - t0, t1)
        finally:
            resp.release()

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
            fut.set_exception(exc if isinstance(exc, (HttpError, Retry)) else Retry(
                HttpError(errno.EIO, f"download of {self.urls[file]} was interrupted")))
            fut.exception()  # mark retrieved
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
                err = status_error(resp.status, resp.reason, str(resp.url))
                if isinstance(err, Retry):
                    err.after = retry_after(resp.headers.get("Retry-After"))
                raise err
            if total is None:
                raise HttpError(errno.EIO, f"{resp.url} did not tell the blob's size")
        finally:
            resp.release()
        self.sizes[file] = total
        return total

    # -- the retry loop -----------------------------------------------------------------
    async def retrying(self, step: Callable[[], Awaitable[T]],
                       exhausted: Callable[[Retry | TimeoutError, int], Exception],
                       failed: Retry | TimeoutError | None = None) -> T:
        """``await step()`` until it works, retrying what may pass (``Retry``, timeouts)
        up to ``HttpOptions.retries`` times with backoff; then ``exhausted(last failure,
        attempts)`` is raised. ``failed``: the first attempt was made by the caller and
        failed so. The only retry loop of the HTTP backend."""
        attempt = 0
        while True:
            if failed is None:
                try:
                    return await step()
                except (Retry, TimeoutError) as exc:
                    failed = exc
            if attempt >= self.options.retries:
                raise exhausted(failed, attempt + 1) from None
            o = self.options
            await asyncio.sleep(backoff_delay(
                attempt, o.backoff, o.backoff_max,
                failed.after if isinstance(failed, Retry) else None, random.uniform))
            attempt += 1
            failed = None

    def _gave_up(self, url: URL) -> Callable[[Retry | TimeoutError, int], Exception]:
        """The error once the retries for ``url`` ran out."""
        def exhausted(exc: Retry | TimeoutError, attempts: int) -> Exception:
            if isinstance(exc, Retry):
                return HttpError(exc.final.errno, f"{exc.final.detail} (after {attempts} "
                                 "attempts)")
            return HttpError(errno.ETIMEDOUT, f"{url}: no complete answer within "
                             f"{self.options.request_timeout} s (after {attempts} attempts)")
        return exhausted

    async def get(self, r: Read) -> int:
        """Read ``r`` completely (short only at the object's end), retrying what may pass
        and resuming after the bytes already received."""
        got = 0
        if self.whole or self.prefetch:
            served = self._from_memory(r)
            if served is not None:
                return served
            got = self._head_from_memory(r)  # the rest is asked for after it

        async def step() -> tuple[int, bool]:
            nonlocal got
            try:
                return await self._attempt(r, got)
            except Retry as exc:
                got += exc.progress
                raise

        while got < r.length:
            try:  # the first attempt without the retry loop's frames: most need no retry
                added, eof = await self._attempt(r, got)
            except (Retry, TimeoutError) as exc:
                if isinstance(exc, Retry):
                    got += exc.progress
                added, eof = await self.retrying(step, self._gave_up(self.urls[r.file]), exc)
            if added == 0 and not eof:
                raise HttpError(errno.EIO, f"{self.urls[r.file]} returned no bytes")
            got += added
            if eof:
                break
        return got

    async def document(self, file: int, url: URL) -> memoryview:
        """The whole body of a GET of ``url`` (a listing page on ``file``'s service, with
        its credentials), retried like a read; a status other than 200 raises."""
        async def step() -> memoryview:
            resp = await self._open(file, None, url)
            try:
                if resp.status != 200:
                    err = status_error(resp.status, resp.reason, str(url))
                    if isinstance(err, Retry):
                        err.after = retry_after(resp.headers.get("Retry-After"))
                    raise err
                return await read_body(resp, str(url))
            finally:
                resp.release()

        return await self.retrying(step, self._gave_up(url))

    # -- multi-range requests --------------------------------------------------------------
    async def get_multi(self, reads: list[Read]) -> list[Read]:
        """Ask for all ``reads`` (one file) in one request; returns the reads it did not
        serve (for single requests). Raises NotMulti if the server does not do this."""
        file = reads[0].file
        spec = ",".join(f"{r.start}-{r.start + r.length - 1}" for r in reads)
        resp = await self._open(file, f"bytes={spec}")
        try:
            parts, total = await self._multi_parts(resp)
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

    async def _multi_parts(self, resp: aiohttp.ClientResponse
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
        err = status_error(resp.status, resp.reason, str(resp.url))
        if resp.status in RETRY_STATUS:
            assert isinstance(err, Retry)
            err.after = retry_after(resp.headers.get("Retry-After"))
            raise err
        raise err if isinstance(err, HttpError) else err.final


class _NoneSatisfiable(Exception):
    """416 to a multi-range request: no range of it starts before the end."""


async def workers(todo: Sequence[int], fn: Callable[[int], Any], concurrency: int,
                  err: npt.NDArray[np.int32] | list[int], detail: dict[int, str],
                  missing_ok: bool = False) -> None:
    """Run ``fn(i)`` for each ``i`` of ``todo`` on up to ``concurrency`` coroutines (no more
    than there is work for; one runs inline, without a task). The first failure stops new
    work (fail fast), but for "not found" with ``missing_ok`` and for an object that changed
    while read (``._version``); failures land in
    ``err``/``detail``."""
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
                stop = stop or not ((missing_ok and exc.errno == errno.ENOENT)
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
