"""The transport: one aiohttp session per event loop, proxies, bodies streamed into memory,
and the one place aiohttp's errors become lsio's (``HttpError`` / ``Retry``).

A session belongs to the loop it was made on (like the ring), and is closed when that loop
shuts down its async generators (``asyncio.run``, ``asyncio.Runner``, ``uvloop.run`` and
pytest-asyncio all do). Keep-alive connections are pooled per host.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import itertools
import urllib.request
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from yarl import URL

from ... import _fork
from ..._defaults import PREALLOCATE
from ..cloud._types import getenv
from ._protocol import HttpError, Retry

__all__ = ["Proxies", "aiohttp_error", "read_body", "session_for", "session_now",
           "stream_into", "stream_tail", "stream_through"]

BODY_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError)
"""What a body cut short raises while it streams (a resumable failure)."""

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]] = (
    weakref.WeakKeyDictionary())


@_fork.forget_in_child
def _forget() -> None:
    """A forked child opens sessions of its own: the parent's keep-alive connections are
    sockets it shares with the parent, never to be used or closed here."""
    global _sessions
    _fork.keep(*_sessions.items())
    _sessions = weakref.WeakKeyDictionary()


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


def session_now(limit_per_host: int) -> aiohttp.ClientSession | None:
    """This loop's session with ``limit_per_host`` connections per host, if it has one
    open (no await: :func:`session_for` makes one)."""
    per_loop = _sessions.get(asyncio.get_running_loop())
    entry = None if per_loop is None else per_loop.get(limit_per_host)
    if entry is None or entry[0].closed:
        return None
    session: aiohttp.ClientSession = entry[0]
    return session


async def session_for(limit_per_host: int) -> aiohttp.ClientSession:
    """This loop's session with ``limit_per_host`` connections per host."""
    loop = asyncio.get_running_loop()
    per_loop = _sessions.get(loop)
    if per_loop is None:
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


class Proxies:
    """The proxy for each URL from ``HTTP(S)_PROXY``/``NO_PROXY``, looked up once per host
    and call (aiohttp's own ``trust_env`` re-reads the environment and ~/.netrc on every
    request: 5x the CPU of the request itself here).

    Only the variables that matter are read (:func:`env_proxy`): ``urllib.request``'s
    ``getproxies()`` decodes the whole environment, twice (~0.1 ms, a third of a loopback
    GET)."""

    def __init__(self, trust_env: bool) -> None:
        self.trust_env = trust_env
        self._cache: dict[Any, str | None] = {}

    def __call__(self, url: URL) -> str | None:
        if not self.trust_env:
            return None
        key = (url.scheme, url.host)
        if key not in self._cache:
            if _ENV_ONLY:
                proxy = env_proxy(url.scheme)
                if proxy and url.host:
                    no_proxy = env_proxy("no")
                    if no_proxy and _bypass(url.host, {"no": no_proxy}):
                        proxy = None
            else:  # macOS, Windows: urllib also reads the system's proxy settings
                proxy = urllib.request.getproxies().get(url.scheme)
                if proxy and url.host and urllib.request.proxy_bypass(url.host):
                    proxy = None
            self._cache[key] = proxy
        return self._cache[key]


_ENV_ONLY = urllib.request.getproxies is urllib.request.getproxies_environment
"""urllib takes proxies from the environment alone (Linux and other POSIX but macOS)."""

_bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
"""``urllib.request.proxy_bypass`` there, given the ``no`` entry (not in typeshed)."""


def env_proxy(name: str) -> str | None:
    """``urllib.request.getproxies_environment().get(name)`` for the usual spellings
    (``name_proxy``, ``NAME_PROXY``): the lowercase variable wins, even set empty, and
    ``HTTP_PROXY`` is ignored in a CGI script (``REQUEST_METHOD`` set; CVE-2016-1000110).
    Mixed-case spellings (``Http_Proxy``) are not looked for, as curl does not."""
    low = getenv(f"{name}_proxy")
    if low is not None:
        return low or None
    high = getenv(f"{name.upper()}_PROXY")
    if not high or (name == "http" and getenv("REQUEST_METHOD") is not None):
        return None
    return high


"""What ``os.environ`` encodes names and values with on POSIX (fixed at startup)."""


def aiohttp_error(exc: BaseException, url: URL, request_timeout: float
                  ) -> HttpError | Retry | None:
    """An aiohttp (or socket) failure as lsio's, ``None`` for others (raise them as they
    are): an untrusted certificate is a permission error, a bad URL an invalid argument,
    resets, timeouts and malformed answers are retried with the errno to report if the
    retries run out. (Called in an ``except`` only: nothing per request that works.)"""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return HttpError(errno.EACCES, f"TLS certificate of {url.host} not trusted: "
                         f"{exc.certificate_error}; pass HttpOptions(ssl=context) with its CA")
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientOSError, ConnectionError)):
        code = getattr(exc, "errno", None)
        if not isinstance(code, int) or code <= 0:  # e.g. a DNS failure (EAI_*)
            code = errno.ECONNRESET if isinstance(
                exc, aiohttp.ServerDisconnectedError) else errno.EHOSTUNREACH
        return Retry(HttpError(code, f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
        return HttpError(errno.EINVAL, f"cannot request {url}: {exc}")
    if isinstance(exc, aiohttp.ClientError):  # a malformed answer, and the like
        return Retry(HttpError(errno.EIO, f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, TimeoutError):
        return Retry(HttpError(errno.ETIMEDOUT, f"no answer from {url} within "
                               f"{request_timeout} s"))
    return None


async def stream_into(resp: aiohttp.ClientResponse, dest: memoryview | None, *,
                      read: Any = None, at: int = 0, n: int | None = None
                      ) -> tuple[int, bool]:
    """Copy the body into ``dest``; (bytes copied, whether the body ended cleanly). For a
    sparse read (``read``, an ``lsio.backends.http._client.Read`` whose body of ``n`` bytes
    starts at its position ``at``), the bytes its pieces want are kept and the rest dropped
    as they pass: they never reach the result memory.

    Raises HttpError if the body is longer than ``dest`` (or ``n``)."""
    pos = 0
    if n is None:
        assert dest is not None
        n = len(dest)
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
            if dest is not None:
                dest[pos:pos + k] = chunk
            else:
                read.put(at + pos, chunk)
            pos += k
            if pos == n and content.at_eof():  # all there: no await for the end
                return pos, True
    except BODY_ERRORS:
        return pos, False


async def stream_through(resp: aiohttp.ClientResponse, reads: list[Any]
                         ) -> tuple[int, bool]:
    """Stream a whole body (a 200 answer) past ``reads`` (``Read``s of that object, sorted
    by start; they may overlap): each keeps the bytes of its range. Stops once the body is
    past the last read's end (the rest is not downloaded: close the response); returns
    (bytes streamed, whether that was the whole body). A body cut short raises ``Retry``
    (a retry streams it again)."""
    pos = 0
    k = 0  # reads before k ended before pos (a long read keeps k at itself)
    last = max((r.start + r.length for r in reads), default=0)
    content = resp.content
    try:
        while pos < last:
            chunk = await content.readany()
            if not chunk:
                break
            end = pos + len(chunk)
            while k < len(reads) and reads[k].start + reads[k].length <= pos:
                k += 1
            for r in itertools.islice(reads, k, None):
                if r.start >= end:
                    break
                lo, hi = max(r.start, pos), min(r.start + r.length, end)
                if lo < hi:  # a read that ended already (one overlapping a longer one)
                    r.put(lo - r.start, memoryview(chunk)[lo - pos:hi - pos])
            pos = end
    except BODY_ERRORS:
        raise Retry(HttpError(errno.EIO, f"body of {resp.url} truncated at {pos} bytes")
                    ) from None
    if pos >= last and not content.at_eof():
        return pos, False
    announced = resp.content_length
    if announced is not None and pos != announced:
        raise Retry(HttpError(errno.EIO, f"body of {resp.url} truncated at {pos} of "
                              f"{announced} bytes"))
    return pos, True


async def read_body(resp: aiohttp.ClientResponse, what: str) -> memoryview:
    """The whole body: into one buffer sized from ``Content-Length`` when it is given and
    small, else grown as the bytes arrive (never more than they are). A body longer than
    its ``Content-Length`` raises HttpError, a shorter one Retry, memory that cannot be had
    an HttpError (``ENOMEM``) naming ``what``."""
    announced = resp.content_length
    try:
        if announced is not None and announced <= PREALLOCATE:
            buf = memoryview(bytearray(announced))
            got, clean = await stream_into(resp, buf)
            if got != len(buf) or not clean:
                raise Retry(HttpError(errno.EIO, f"body of {what} truncated at {got} of "
                                      f"{len(buf)} bytes"))
            return buf
        parts = bytearray()
        try:
            async for chunk in resp.content.iter_any():
                parts += chunk
                if announced is not None and len(parts) > announced:
                    raise HttpError(errno.EIO, f"{what} sent more bytes than its "
                                    f"Content-Length announced ({announced})")
        except BODY_ERRORS:
            raise Retry(HttpError(errno.EIO, f"body of {what} truncated at {len(parts)} "
                                  "bytes")) from None
        if announced is not None and len(parts) != announced:
            raise Retry(HttpError(errno.EIO, f"body of {what} truncated at {len(parts)} of "
                                  f"{announced} bytes"))
        return memoryview(parts)
    except MemoryError:
        raise HttpError(errno.ENOMEM, f"out of memory for the body of {what} "
                        f"(Content-Length {announced})") from None


async def stream_tail(resp: aiohttp.ClientResponse, want: int, what: str
                      ) -> tuple[int, memoryview]:
    """The last ``want`` bytes of a whole body (a suffix read the server answered with the
    whole object) and the body's length; only about ``2 * want`` bytes (plus a chunk) are
    held at any time. A body cut short raises Retry."""
    announced = resp.content_length
    keep = bytearray()
    pos = 0
    try:
        async for chunk in resp.content.iter_any():
            pos += len(chunk)
            if announced is not None and pos > announced:
                raise HttpError(errno.EIO, f"{what} sent more bytes than its "
                                f"Content-Length announced ({announced})")
            keep += chunk[-want:] if want else b""
            if len(keep) > 2 * want:
                del keep[:len(keep) - want]
    except BODY_ERRORS:
        raise Retry(HttpError(errno.EIO, f"body of {what} truncated at {pos} bytes"),
                    ) from None
    if announced is not None and pos != announced:
        raise Retry(HttpError(errno.EIO, f"body of {what} truncated at {pos} of "
                              f"{announced} bytes"))
    return pos, memoryview(keep)[len(keep) - min(want, len(keep)):]
