"""The HTTP engine: the one module that touches aiohttp.

One :class:`aiohttp.ClientSession` per event loop (like the ring: a session belongs to the loop
it was made on), closed when that loop shuts down its async generators (``asyncio.run``,
``asyncio.Runner``, ``uvloop.run`` and pytest-asyncio all do). Keep-alive connections are
pooled per host.

A call runs in two steps, as the local engine does:

1. *Size* (:meth:`HttpCall.stat`): files whose requests need the object's size (whole-object
   reads, suffixes) are fetched with ``Range: bytes=0-(max_read-1)``; the answer's
   ``Content-Range`` gives the size and its body is kept, so an object smaller than
   ``max_read`` costs exactly one request. Other files are never asked for their size: a
   range past the end simply comes back short.
2. *Read* (:meth:`HttpCall.read`): the planner's reads become range GETs, a fixed number of
   worker coroutines (the concurrency cap) taking them in plan order. On plain HTTP servers,
   small reads of one file are asked for together in one ``multipart/byteranges`` request
   once the server showed it supports them.

Bodies stream straight into the destination buffers. Every answer is checked: status,
``Content-Range`` against the asked range, length against ``Content-Length``. Failures that
may pass (429, 5xx, resets, timeouts, truncated bodies) are retried with exponential backoff
and full jitter, resuming after the bytes already received; a server that ignores ``Range``
(200) is handled by fetching that object's whole body once and slicing it for every read.
Redirects are followed by hand so credentials (signatures, ``HttpOptions.headers``) are only
ever sent to the URL's own origin.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import random
import re
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
from yarl import URL

from .._defaults import MULTI_MAX_PART, MULTI_MAX_RANGES, REDIRECTS, RETRY_STATUS
from .._plan import Plan
from .._types import ProgressFn, StatResult
from .._url import HttpOptions, Target, resolve, s3_region
from ._base import ReadResult
from ._sign import S3Signer, find_s3_signer

__all__ = ["HttpCall"]

UNKNOWN_SIZE = 1 << 62
"""Size the planner sees for objects nobody asked the size of (nothing is clamped)."""

AZURE_API_VERSION = "2021-08-06"
"""``x-ms-version`` sent to Azure Blob storage (ranges need 2011-08-18 or later)."""

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.I)


class HttpError(Exception):
    """A final failure of one request: errno for the OSError, and what happened."""

    def __init__(self, err: int, detail: str) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail


class _Retry(Exception):
    """A failure that may pass; ``final`` is what to raise when retries run out."""

    def __init__(self, final: HttpError, *, progress: int = 0, after: float | None = None
                 ) -> None:
        super().__init__(final.detail)
        self.final = final
        self.progress = progress
        self.after = after


class _NotMulti(Exception):
    """The server answered a multi-range request without multipart ranges."""


class _NoVerdict(Exception):
    """Multi-range requests kept failing for other reasons: no answer on multipart."""


# -- sessions: one per event loop -------------------------------------------------------------

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]] = (
    weakref.WeakKeyDictionary())


async def _closer(session: aiohttp.ClientSession, key: Any) -> AsyncGenerator[None, None]:
    """An async generator the loop finalises at shutdown: it closes the session and forgets
    it (the entry refers to the loop, so the weak mapping alone would keep both alive)."""
    try:
        yield
    finally:
        await session.close()
        loop = asyncio.get_running_loop()
        per_loop = _sessions.get(loop)
        if per_loop is not None and per_loop.get(key, (None,))[0] is session:
            del per_loop[key]
            if not per_loop:
                del _sessions[loop]


async def session_for(limit_per_host: int) -> aiohttp.ClientSession:
    """This loop's session with ``limit_per_host`` connections per host."""
    loop = asyncio.get_running_loop()
    per_loop = _sessions.setdefault(loop, {})
    key = limit_per_host
    entry = per_loop.get(key)
    if entry is None or entry[0].closed:
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=limit_per_host,
                                           ttl_dns_cache=300),
            auto_decompress=False, read_bufsize=1 << 20,
            cookie_jar=aiohttp.DummyCookieJar(),  # bulk reads: no cookie bookkeeping
            timeout=aiohttp.ClientTimeout(total=None))
        keeper = _closer(fresh, key)
        await keeper.asend(None)  # registered with the loop's async-generator hooks
        entry = per_loop[key] = (fresh, keeper)
    session: aiohttp.ClientSession = entry[0]
    return session


def _close_at_exit() -> None:
    """Close sessions of loops still alive at exit (lsio's own sync-loop thread), so
    aiohttp has nothing to warn about."""
    for loop, per_loop in list(_sessions.items()):
        sessions = [entry[0] for entry in per_loop.values() if not entry[0].closed]
        if not sessions or loop.is_closed():
            continue

        async def close_all(sessions: list[aiohttp.ClientSession] = sessions) -> None:
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(close_all(), loop).result(2)
            else:
                loop.run_until_complete(close_all())
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


atexit.register(_close_at_exit)


# -- helpers ------------------------------------------------------------------------------------

def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host, url.port)


def _status_error(status: int, reason: str | None, url: str) -> HttpError | _Retry:
    detail = f"HTTP {status} {reason or ''}".rstrip() + f" from {url}"
    if status in (404, 410):
        return HttpError(errno.ENOENT, detail)
    if status in (401, 403):
        return HttpError(errno.EACCES, detail)
    if status in RETRY_STATUS:
        return _Retry(HttpError(errno.EIO, detail))
    return HttpError(errno.EIO, detail)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: use our own backoff
        return None


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` -> (a, b + 1, total or None); ``bytes */total`` -> (-1, -1, total)."""
    if not value:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    if m.group(1) is None:
        return (-1, -1, total)
    return (int(m.group(1)), int(m.group(2)) + 1, total)


async def _stream_into(resp: aiohttp.ClientResponse, dest: memoryview) -> tuple[int, bool]:
    """Copy the body into ``dest``; (bytes copied, whether the body ended cleanly).

    Raises HttpError if the body is longer than ``dest``."""
    pos, n = 0, len(dest)
    content = resp.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                return pos, True
            k = len(chunk)
            if pos + k > n:
                raise HttpError(errno.EIO, f"{resp.url} sent more bytes than its "
                                f"Content-Range/Content-Length announced ({n})")
            dest[pos:pos + k] = chunk
            pos += k
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError):
        return pos, False


async def _read_body(resp: aiohttp.ClientResponse, what: str) -> memoryview:
    """The whole body, into one buffer sized from ``Content-Length`` when given."""
    if resp.content_length is not None:
        buf = memoryview(bytearray(resp.content_length))
        got, clean = await _stream_into(resp, buf)
        if got != len(buf) or not clean:
            raise _Retry(HttpError(errno.EIO, f"body of {what} truncated at {got} of "
                                   f"{len(buf)} bytes"))
        return buf
    parts = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            parts += chunk
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError):
        raise _Retry(HttpError(errno.EIO, f"body of {what} truncated at {len(parts)} bytes")
                     ) from None
    return memoryview(parts)


def _parse_multipart(body: memoryview, boundary: bytes
                     ) -> tuple[list[tuple[int, int, memoryview]], int | None]:
    """Parts of a ``multipart/byteranges`` body, (start, end, bytes) each, and the object's
    size if the parts tell it."""
    data = body.obj if isinstance(body.obj, (bytes, bytearray)) else bytes(body)
    delim = b"--" + boundary
    parts = []
    total = None
    pos = data.find(delim)
    while pos >= 0:
        pos += len(delim)
        if data[pos:pos + 2] == b"--":
            break
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise ValueError("part headers do not end")
        rng = None
        for line in data[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-range":
                rng = _content_range(value.decode("latin-1"))
        if rng is None or rng[0] < 0:
            raise ValueError("part without a Content-Range")
        start, end, total = rng
        body_start = head_end + 4
        body_end = body_start + (end - start)
        if body_end > len(data):
            raise ValueError("part runs past the body")
        parts.append((start, end, body[body_start:body_end]))
        pos = data.find(delim, body_end)
    return parts, total


@dataclass(slots=True)
class _Read:
    """One planned read (or size probe) in flight: file range [start, start + length)."""

    op: int
    file: int
    start: int
    length: int
    dest: memoryview | None
    """Where the bytes go; ``None`` for a size probe, whose buffer is sized by the answer."""
    got: int = -1
    """Bytes read once served by a multipart answer; -1 until then."""


class HttpCall:
    """One ``read_many`` call's remote part: its URLs, what was learned, and the I/O."""

    def __init__(self, paths: list[str], options: HttpOptions,
                 signers: dict[str, S3Signer | None], *, concurrency: int, probe_size: int,
                 missing_ok: bool = False) -> None:
        self.paths = paths
        self.options = options
        region = s3_region(options) if any(p[:5].lower() == "s3://" for p in paths) else None
        self.targets: list[Target] = [resolve(p, options, region) for p in paths]
        self.urls = [URL(t.url, encoded=t.kind != "http") for t in self.targets]
        for t in self.targets:
            if t.kind == "s3" and t.region not in signers:
                signers[t.region] = find_s3_signer(t.region, options.anonymous)
        self.signers = [signers[t.region] if t.kind == "s3" else None for t in self.targets]
        self.concurrency = concurrency
        self.probe_size = probe_size
        self.missing_ok = missing_ok
        """A 404 is an answer (the object is missing), not a reason to stop the call."""
        self.prefetch: dict[int, tuple[int, memoryview]] = {}
        """(first offset, bytes) of objects, from the size probe: the head, or for objects
        asked only for suffixes, the tail."""
        self.whole: dict[int, asyncio.Future[memoryview]] = {}
        """Whole bodies of objects whose server ignored ``Range``."""
        self.sizes = np.full(len(paths), UNKNOWN_SIZE, np.int64)
        self.session: aiohttp.ClientSession | None = None
        self._probing: dict[Any, asyncio.Lock] = {}
        self._proxies: dict[Any, str | None] = {}
        # the per-request deadline covers headers and body (aiohttp's total timeout runs
        # until the response is released)
        self.timeout = aiohttp.ClientTimeout(total=options.request_timeout,
                                             sock_connect=options.connect_timeout)

    # -- one request ---------------------------------------------------------------------
    def _proxy(self, url: URL) -> str | None:
        """The proxy for ``url`` from ``HTTP(S)_PROXY``/``NO_PROXY``, looked up once per
        host and call (aiohttp's own ``trust_env`` re-reads the environment and ~/.netrc on
        every request: 5x the CPU of the request itself here)."""
        if not self.options.trust_env:
            return None
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = urllib.request.getproxies().get(url.scheme)
            if proxy and url.host and urllib.request.proxy_bypass(url.host):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    def _headers(self, file: int, url: URL, rng: str | None) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        if rng is not None:
            headers["Range"] = rng
        target = self.targets[file]
        if _origin(url) != _origin(self.urls[file]):
            return headers  # redirected elsewhere: no credentials
        headers.update(self.options.headers)
        if target.kind == "az":
            headers["x-ms-version"] = AZURE_API_VERSION
        signer = self.signers[file]
        if signer is not None:
            headers = signer.headers("GET", str(url), headers)
        return headers

    async def _open(self, file: int, rng: str | None) -> aiohttp.ClientResponse:
        """Send the GET, following redirects; the caller releases the response."""
        assert self.session is not None
        url = self.urls[file]
        for _ in range(REDIRECTS + 1):
            try:
                resp = await self.session.get(url, headers=self._headers(file, url, rng),
                                              allow_redirects=False, timeout=self.timeout,
                                              ssl=True if self.options.ssl is None
                                              else self.options.ssl,
                                              proxy=self._proxy(url))
            except aiohttp.ClientConnectorCertificateError as exc:
                raise HttpError(errno.EACCES, f"TLS certificate of {url.host} not trusted: "
                                f"{exc.certificate_error}; pass HttpOptions(ssl=context) "
                                "with its CA") from None
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                    aiohttp.ClientOSError, ConnectionError) as exc:
                code = getattr(exc, "errno", None)
                if not isinstance(code, int) or code <= 0:  # e.g. a DNS failure (EAI_*)
                    code = errno.ECONNRESET if isinstance(
                        exc, aiohttp.ServerDisconnectedError) else errno.EHOSTUNREACH
                raise _Retry(HttpError(code, f"{type(exc).__name__}: {exc}")) from None
            except (aiohttp.InvalidURL, ValueError) as exc:
                raise HttpError(errno.EINVAL, f"cannot request {url}: {exc}") from None
            except aiohttp.ClientError as exc:  # a malformed answer, and the like
                raise _Retry(HttpError(errno.EIO, f"{type(exc).__name__}: {exc}")) from None
            except TimeoutError:
                raise _Retry(HttpError(errno.ETIMEDOUT, f"no answer from {url} within "
                                       f"{self.options.request_timeout} s")) from None
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                try:
                    location = url.join(URL(resp.headers["Location"]))
                except ValueError:
                    resp.release()
                    raise HttpError(errno.EIO, f"{url} redirected to an invalid location "
                                    f"{resp.headers['Location']!r}") from None
                resp.release()
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
                    err = _status_error(resp.status, resp.reason, str(resp.url))
                    resp.release()
                    raise err
            body = await _read_body(resp, str(self.urls[file]))
        except BaseException as exc:
            del self.whole[file]
            # waiters see the same failure (a _Retry makes each retry on its own)
            fut.set_exception(exc if isinstance(exc, (HttpError, _Retry)) else _Retry(
                HttpError(errno.EIO, f"download of {self.urls[file]} was interrupted")))
            fut.exception()  # mark retrieved
            raise
        finally:
            if resp is not None:
                resp.release()
        self.sizes[file] = len(body)
        fut.set_result(body)
        return body

    @staticmethod
    def _put(r: _Read, got: int, piece: memoryview) -> int:
        if r.dest is None:  # a probe answered with the whole body: keep a view of it
            r.dest = piece
        else:
            r.dest[got:got + len(piece)] = piece
        return len(piece)

    def _from_memory(self, r: _Read) -> int | None:
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

    async def _attempt(self, r: _Read, got: int) -> tuple[int, bool]:
        """One GET of the rest of ``r`` (from ``got``); (bytes added, reached EOF)."""
        start, want = r.start + got, r.length - got
        suffix = start < 0  # a size probe for the last `want` bytes (bytes=-N)
        fut = self.whole.get(r.file)
        if fut is not None:
            body = await asyncio.shield(fut)
            if suffix:
                r.start = start = max(len(body) - want, 0)
            return self._put(r, got, body[start:start + want]), True
        resp = await self._open(r.file, f"bytes=-{want}" if suffix
                                else f"bytes={start}-{start + want - 1}")
        try:
            if resp.status == 200:  # Range ignored: the body is the whole object
                body = await self._whole_body(r.file, resp)
                if suffix:
                    r.start = start = max(len(body) - want, 0)
                return self._put(r, got, body[start:start + want]), True
            if resp.status == 416:  # starts at or past the end
                total = (_content_range(resp.headers.get("Content-Range")) or (0, 0, None))[2]
                if total is not None:
                    self.sizes[r.file] = total
                return 0, True
            if resp.status != 206:
                err = _status_error(resp.status, resp.reason, str(resp.url))
                if isinstance(err, _Retry):
                    err.after = _retry_after(resp.headers)
                raise err
            cr = _content_range(resp.headers.get("Content-Range"))
            if suffix and cr is not None and cr[2] is not None:
                # the total is known now: the tail is [total - want, total); the server may
                # send it all or (capping range sizes) only its first part
                r.start = start = max(cr[2] - want, 0)
                r.length = want = cr[2] - start
            if cr is None or cr[0] != start or cr[1] > start + want:
                raise HttpError(errno.EIO, f"{resp.url} answered Content-Range "
                                f"{resp.headers.get('Content-Range')!r} to Range "
                                + (f"bytes=-{want}" if suffix
                                   else f"bytes={start}-{start + want - 1}"))
            n = cr[1] - cr[0]
            if resp.content_length is not None and resp.content_length != n:
                raise _Retry(HttpError(errno.EIO, f"{resp.url}: Content-Length "
                                       f"{resp.content_length} disagrees with Content-Range "
                                       f"{resp.headers['Content-Range']}"))
            if cr[2] is not None:
                self.sizes[r.file] = cr[2]
            if r.dest is None:  # a size probe: memory sized by the answer
                r.length = min(r.length, cr[2]) if cr[2] is not None else n
                r.dest = memoryview(np.empty(r.length, np.uint8).data).cast("B")
            added, clean = await _stream_into(resp, r.dest[got:got + n])
            if added < n or not clean:
                raise _Retry(HttpError(errno.EIO, f"body from {resp.url} truncated at "
                                       f"{added} of {n} bytes"), progress=added)
            return n, cr[2] is not None and cr[1] >= cr[2]
        finally:
            resp.release()

    async def _backoff(self, attempt: int, after: float | None) -> None:
        o = self.options
        delay = random.uniform(0, min(o.backoff_max, o.backoff * 2 ** attempt))
        if after is not None:
            delay = max(delay, min(after, o.backoff_max))
        await asyncio.sleep(delay)

    async def _get(self, r: _Read) -> int:
        """Read ``r`` completely (short only at the object's end), retrying what may pass."""
        served = self._from_memory(r)
        if served is not None:
            return served
        got, attempt = 0, 0
        while got < r.length:
            try:
                added, eof = await self._attempt(r, got)
            except _Retry as exc:
                got += exc.progress
                if attempt >= self.options.retries:
                    raise HttpError(exc.final.errno, f"{exc.final.detail} (after "
                                    f"{attempt + 1} attempts)") from None
                await self._backoff(attempt, exc.after)
                attempt += 1
                continue
            except TimeoutError:
                if attempt >= self.options.retries:
                    raise HttpError(errno.ETIMEDOUT, f"{self.urls[r.file]}: no complete "
                                    f"answer within {self.options.request_timeout} s "
                                    f"(after {attempt + 1} attempts)") from None
                await self._backoff(attempt, None)
                attempt += 1
                continue
            if added == 0 and not eof:
                raise HttpError(errno.EIO, f"{self.urls[r.file]} returned no bytes")
            got += added
            if eof:
                break
        return got

    # -- multi-range requests --------------------------------------------------------------
    async def _get_multi(self, reads: list[_Read]) -> list[_Read]:
        """Ask for all ``reads`` (one file) in one request; returns the reads it did not
        serve (for single requests). Raises _NotMulti if the server does not do this."""
        file = reads[0].file
        spec = ",".join(f"{r.start}-{r.start + r.length - 1}" for r in reads)
        resp = await self._open(file, f"bytes={spec}")
        try:
            ctype = resp.headers.get("Content-Type", "")
            if resp.status == 206 and ctype.lower().startswith("multipart/byteranges"):
                m = re.search(r'boundary="?([^";]+)"?', ctype)
                if m is None:
                    raise _NotMulti()
                body = await _read_body(resp, str(resp.url))
                try:
                    parts, total = _parse_multipart(body, m.group(1).encode("latin-1"))
                except ValueError as exc:
                    raise _Retry(HttpError(errno.EIO, f"bad multipart body from {resp.url}: "
                                           f"{exc}")) from None
            elif resp.status == 206:  # the server merged the ranges into one
                cr = _content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] < 0:
                    raise _NotMulti()
                body = await _read_body(resp, str(resp.url))
                if len(body) != cr[1] - cr[0]:
                    raise _Retry(HttpError(errno.EIO, f"body from {resp.url} has {len(body)} "
                                           f"bytes for Content-Range {cr[0]}-{cr[1] - 1}"))
                parts, total = [(cr[0], cr[1], body)], cr[2]
            elif resp.status == 416:  # no range satisfiable: single requests report the ends
                return list(reads)
            elif resp.status in RETRY_STATUS:
                err = _status_error(resp.status, resp.reason, str(resp.url))
                assert isinstance(err, _Retry)
                err.after = _retry_after(resp.headers)
                raise err
            elif resp.status == 200:
                raise _NotMulti()
            else:
                err = _status_error(resp.status, resp.reason, str(resp.url))
                raise err if isinstance(err, HttpError) else err.final
        finally:
            resp.close() if resp.status == 200 else resp.release()
        left = []
        for r in reads:
            for start, end, data in parts:
                if start <= r.start < end:
                    piece = data[r.start - start:r.start - start + r.length]
                    if len(piece) == r.length or (total is not None and end >= total):
                        assert r.dest is not None
                        r.dest[:len(piece)] = piece
                        r.got = len(piece)
                    break
            if r.got < 0:
                left.append(r)
        return left

    # -- the two steps ---------------------------------------------------------------------
    async def _start(self) -> None:
        if self.session is None:
            self.session = await session_for(self.options.connections_per_host)

    async def probe_multipart(self, file: npt.NDArray[np.int64], offset: npt.NDArray[np.int64],
                              length: npt.NDArray[np.int64]) -> bool:
        """Whether every plain-HTTP server of this call answers multipart ranges. Servers
        not yet known are asked once per process, with two 1-byte ranges of the call's own
        requests (``bytes=a-a,b-b``)."""
        await self._start()
        if not self.options.multi_range:
            return False
        verdicts = []
        asked: set[Any] = set()
        ok = (offset >= 0) & (length > 0)
        # each file's sorted starts, once (a scan per file would be quadratic in big calls)
        order = np.lexsort((offset[ok], file[ok]))
        f_sorted, o_sorted = file[ok][order], offset[ok][order]
        files, first = np.unique(f_sorted, return_index=True)
        bounds = np.append(first, len(f_sorted))
        seen: set[Any] = set()
        for k, f in enumerate(files.tolist()):
            if self.targets[f].kind != "http":
                continue
            origin = _origin(self.urls[f])
            if origin in _MULTI_OK:
                if origin not in seen:
                    seen.add(origin)
                    verdicts.append(_MULTI_OK[origin])
                continue
            if origin in asked or bounds[k + 1] - bounds[k] < 2:
                continue
            starts = o_sorted[bounds[k]:bounds[k + 1]]
            far = np.flatnonzero(starts >= starts[0] + 2)
            if not len(far):
                continue
            asked.add(origin)
            a, b = int(starts[0]), int(starts[far[0]])
            probe = [_Read(-1, f, a, 1, memoryview(bytearray(1))),
                     _Read(-1, f, b, 1, memoryview(bytearray(1)))]
            try:
                left = await self._get_multi(probe)
                if left:  # no range satisfiable (416), or parts missing: ask again later
                    continue
                verdict = True
            except _NotMulti:
                verdict = False
            except (HttpError, _Retry):
                continue  # the reads themselves will report what is wrong
            _MULTI_OK[origin] = verdict
            verdicts.append(verdict)
        return bool(verdicts) and all(verdicts)

    async def stat(self, need: npt.NDArray[np.bool_], suffix: npt.NDArray[np.int64] | None = None
                   ) -> tuple[StatResult, dict[int, str]]:
        """Size of each object that ``need``s one (others: :data:`UNKNOWN_SIZE`); errors
        as errno per file, with what happened. Objects with ``suffix[f] > 0`` are only
        asked for their last bytes: they are probed with ``bytes=-suffix[f]`` (a shard
        index, say) instead of their first ``probe_size`` bytes."""
        await self._start()
        n = len(self.paths)
        err = np.zeros(n, np.int32)
        detail: dict[int, str] = {}
        todo = iter(np.flatnonzero(need).tolist())

        async def probe(file: int) -> None:
            tail = int(suffix[file]) if suffix is not None else 0
            r = _Read(-1, file, -tail, tail, None) if tail else _Read(
                -1, file, 0, self.probe_size, None)
            got = await self._get(r)
            if file in self.whole:  # the server sent it whole
                return
            if self.sizes[file] == UNKNOWN_SIZE and got < self.probe_size and not tail:
                self.sizes[file] = got  # no total given: the body ended at the object's end
            elif self.sizes[file] == UNKNOWN_SIZE:
                raise HttpError(errno.EIO, f"{self.urls[file]} did not tell the object's "
                                "size (Content-Range: bytes a-b/*)")
            if r.dest is None:  # nothing came (an empty object)
                self.prefetch[file] = (0, memoryview(b""))
            else:
                self.prefetch[file] = (max(r.start, 0), r.dest[:got])

        await _workers(todo, probe, self.concurrency, err, detail, self.missing_ok)
        size = np.where(err == 0, self.sizes, 0)
        return StatResult(size, np.ones(n, np.int64), err), detail

    def bodies(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                              npt.NDArray[np.int64], list[memoryview]]:
        """What the size probes left in memory: file ``f``'s bytes from offset ``first[f]``,
        ``have[f]`` of them (-1: none), are ``buffers[index[f]]``."""
        first = np.zeros(len(self.paths), np.int64)
        have = np.full(len(self.paths), -1, np.int64)
        buffers: list[memoryview] = []
        index = np.zeros(len(self.paths), np.int64)
        for file, (start, body) in self.prefetch.items():
            first[file], have[file], index[file] = start, len(body), len(buffers)
            buffers.append(body)
        for file, fut in self.whole.items():
            if fut.done() and fut.exception() is None:
                first[file], have[file], index[file] = 0, len(fut.result()), len(buffers)
                buffers.append(fut.result())
        return first, have, index, buffers

    async def read(self, plan: Plan, buffers: list[Any], on_progress: ProgressFn | None
                   ) -> tuple[ReadResult, dict[int, str]]:
        """Execute ``plan`` (destinations as for the local engines)."""
        await self._start()
        p = plan
        done = np.zeros(p.nops, np.int64)
        err = np.zeros(p.nops, np.int32)
        views = [memoryview(b).cast("B") for b in buffers]
        pending: list[int] = []
        loop = asyncio.get_running_loop()

        def flush() -> None:
            ops = np.array(pending, np.int64)
            pending.clear()
            assert on_progress is not None
            on_progress(ops, done, err)

        def finished(ops: list[int]) -> None:
            if on_progress is None:
                return
            if not pending:
                loop.call_soon(flush)
            pending.extend(ops)

        def make(op: int) -> _Read:
            length = int(p.op_length[op])
            base, at = int(p.op_base[op]), int(p.op_buf[op])
            return _Read(op, int(p.op_file[op]), int(p.op_offset[op]), length,
                         views[base][at:at + length])

        async def single(op: int) -> None:
            done[op] = await self._get(make(op))
            finished([op])

        async def multi(ops: list[int]) -> None:
            reads = [make(op) for op in ops]
            left = reads
            origin = _origin(self.urls[reads[0].file])
            if _MULTI_OK.get(origin) is None:  # first multipart request to it: alone
                async with self._probing.setdefault(origin, asyncio.Lock()):
                    if _MULTI_OK.get(origin) is None:
                        try:
                            left = await self._multi_with_retries(reads)
                            _MULTI_OK[origin] = True
                        except _NotMulti:
                            _MULTI_OK[origin] = False
                        except _NoVerdict:
                            left = list(reads)
            if left is reads and _MULTI_OK.get(origin):
                try:
                    left = await self._multi_with_retries(reads)
                except (_NotMulti, _NoVerdict):
                    left = list(reads)
            for r in left:  # what no multipart answer served goes one by one
                r.got = await self._get(r)
            for r in reads:
                done[r.op] = r.got
            finished(ops)

        jobs = self._jobs(p)
        job_errs: dict[int, str] = {}
        job_err = np.zeros(len(jobs), np.int32)

        async def run(j: int) -> None:
            job = jobs[j]
            if isinstance(job, int):
                await single(job)
            else:
                await multi(job)

        await _workers(iter(range(len(jobs))), run, self.concurrency, job_err, job_errs,
                       self.missing_ok)
        detail: dict[int, str] = {}
        for j in np.flatnonzero(job_err).tolist():
            job = jobs[j]
            ops = [job] if isinstance(job, int) else job
            for op in ops:
                err[op] = job_err[j]
                detail[op] = job_errs[j]
        return ReadResult(done, err, np.zeros(len(self.paths), np.int32)), detail

    async def _multi_with_retries(self, reads: list[_Read]) -> list[_Read]:
        attempt = 0
        while True:
            try:
                return await self._get_multi(reads)
            except (TimeoutError, _Retry) as exc:
                if attempt >= self.options.retries:
                    raise _NoVerdict() from None  # single requests try (and report) them
                await self._backoff(attempt, exc.after if isinstance(exc, _Retry) else None)
                attempt += 1

    def _jobs(self, p: Plan) -> list[int | list[int]]:
        """Plan reads as jobs: single reads, or batches of small reads of one file for a
        multipart request (plain HTTP servers not known to refuse them)."""
        if not self.options.multi_range:
            return list(range(p.nops))
        small = p.op_length <= MULTI_MAX_PART
        jobs: list[int | list[int]] = []
        batch: list[int] = []
        for op in range(p.nops):
            file = int(p.op_file[op])
            ok = (bool(small[op]) and self.targets[file].kind == "http"
                  and file not in self.prefetch
                  and _MULTI_OK.get(_origin(self.urls[file])) is not False)
            if batch and (not ok or int(p.op_file[batch[0]]) != file
                          or len(batch) >= MULTI_MAX_RANGES):
                jobs.append(batch if len(batch) > 1 else batch[0])
                batch = []
            if ok:
                batch.append(op)
            else:
                jobs.append(op)
        if batch:
            jobs.append(batch if len(batch) > 1 else batch[0])
        return jobs


_MULTI_OK: dict[Any, bool] = {}
"""Per origin: whether it answers multi-range requests with multipart bodies."""


async def _workers(todo: Any, fn: Callable[[int], Any], concurrency: int,
                   err: npt.NDArray[np.int32], detail: dict[int, str],
                   missing_ok: bool = False) -> None:
    """Run ``fn(i)`` for each ``i`` of ``todo`` on ``concurrency`` coroutines. The first
    failure stops new work (fail fast), but for "not found" with ``missing_ok``; failures
    land in ``err``/``detail``."""
    stop = False

    async def worker() -> None:
        nonlocal stop
        for i in todo:
            if stop:
                return
            try:
                await fn(i)
            except HttpError as exc:
                err[i] = exc.errno
                detail[i] = exc.detail
                stop = stop or not (missing_ok and exc.errno == errno.ENOENT)

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
