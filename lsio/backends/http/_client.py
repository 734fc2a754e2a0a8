"""The client: one call's requests to its objects. It resolves URLs (through the cloud
providers' registry its backend hands it), signs and sends GETs (following redirects by hand
so credentials never leave the URL's origin), and retries what may pass in one retry loop;
what it makes of each answer is :mod:`._answer`'s, multi-range requests :mod:`._multi`'s.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from yarl import URL

from ..._defaults import REDIRECTS
from ..._redact import redact
from ..._url import HttpOptions, Target, resolve_http, tls_context, unsupported

if TYPE_CHECKING:
    from ..._prefix import Prefixes
from ..cloud._types import AZURE_BLOB_HOST, Auth, Provider, Providers, WouldBlock
from ._answer import Answers
from ._multi import get_multi
from ._protocol import UNKNOWN_SIZE, HttpError, Retry, backoff_delay, status_error
from ._read import Read, origin
from ._session import Proxies, aiohttp_error, read_body, session_for, session_now
from ._version import Versions

log = logging.getLogger("lsio")

__all__ = ["Credentials", "HttpClient"]

T = TypeVar("T")


@functools.lru_cache(maxsize=1 << 16)
def _http_target(path: str) -> tuple[Target, URL, bool]:
    """An ``http(s)://`` URL's target and parsed URL, and whether it is Azure Blob storage's
    without a SAS (it may get configured Azure credentials): a pure function of the text,
    kept for the URLs used again (~5 us a call to make, and aiohttp finds a reused ``URL``'s
    parts already computed)."""
    target = resolve_http(path)
    url = URL(target.url, encoded=False)
    blob = ((url.host or "").endswith(AZURE_BLOB_HOST) and url.scheme == "https"
            and "sig" not in url.query)
    return target, url, blob

_UNRESOLVED = Target("", "http")
_NO_URL = URL("http://unresolved.invalid/")
_NO_HEADERS: Mapping[str, str] = {}
"""Placeholders of paths :meth:`HttpClient.start` resolves."""

Credentials = dict[tuple[str, str, int], Auth | None]
"""Credentials found, by (``Target.kind``, the provider's ``auth_key``, the ``id`` of the
options they were found with: each prefix's own, kept alive by the backend): per backend."""


def _ssl(o: HttpOptions) -> Any:
    """aiohttp's ``ssl=`` for options ``o`` (:func:`lsio._url.tls_context`)."""
    ctx = tls_context(o)
    return True if ctx is None else ctx


@functools.lru_cache(maxsize=16)
def _timeout(request_timeout: float, connect_timeout: float) -> aiohttp.ClientTimeout:
    """The per-request deadline: headers and body (aiohttp's total timeout runs until the
    response is released). Made once per value (an attrs instance costs ~2 us)."""
    return aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)


class HttpClient(Answers):
    """One ``read_many`` call's remote part: its URLs, what was learned, and the I/O."""

    def __init__(self, paths: list[str], options: HttpOptions, auths: Credentials,
                 providers: Providers, prefixes: Prefixes | None = None) -> None:
        self.paths = paths
        self.options = options
        """The Reader's options: call-wide fields (retries, pool, proxies) come from here."""
        self.file_options = ([options] * len(paths) if prefixes is None
                             else list(map(prefixes.options_for, paths)))
        """Each path's options (``Reader(http={prefix: ...})``): what a request to it sends
        (headers, TLS, timeouts) and how it is resolved and signed."""
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
            target, url, auth, headers = self._resolve(p, configs, False, len(self.targets))
            self.targets.append(target)
            self.urls.append(url)
            self.auths.append(auth)
            self.headers.append(headers)
        self.prefetch = {}
        self.whole = {}
        self.file_reads = None
        self.streamed = {}
        self.sizes = [UNKNOWN_SIZE] * len(paths)
        self.session = session_now(options.connections_per_host)
        """This loop's session, once :meth:`start` found or made it."""
        self.proxy = Proxies(options.trust_env)
        """The proxy of each URL (``None``: none)."""
        self.timeout = _timeout(options.request_timeout, options.connect_timeout)
        self.versions = Versions(paths)
        """Each object's first answer: later requests of the call must get the same
        version (:mod:`._version`)."""
        self.c_files: list[bool] | None = None
        """Whether the C transport may send each path's GETs (:func:`._batch.eligible`)."""
        self.c_requests = 0
        """Of :attr:`requests`, those the C transport sent."""
        self.requests = 0
        """HTTP requests sent (size probes, redirects followed and retries included)."""
        self.retries = 0
        """Requests sent again after a failure that may pass (a 503, a timeout, a reset)."""

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
            if self.targets[i] is _UNRESOLVED or self.targets[i].kind != "http":
                self.targets[i], self.urls[i], self.auths[i], self.headers[i] = (
                    self._resolve(p, configs, True, i))

    def _resolve(self, path: str, configs: dict[Any, Any], block: bool, file: int
                 ) -> tuple[Target, URL, Auth | None, Mapping[str, str]]:
        """``path``'s target, URL, credentials and service headers; without ``block``, a
        path whose provider would block is left for :meth:`start` (:attr:`pending`).
        ``configs``: each provider's settings per options, found once per call."""
        options = self.file_options[file]
        if path[:4].lower() == "http":  # http:// or https://: no other scheme starts so
            target, url, blob = _http_target(path)
            if not blob:
                return target, url, None, _NO_HEADERS
            provider = self._providers["az"]  # Azure's host without a SAS: its credentials?
            found = provider.https_target(path, options)  # type: ignore[attr-defined]
            if found is None:
                return target, url, None, _NO_HEADERS
            return self._signed(path, found, provider, options, block)
        if self.pending and not block:
            return _UNRESOLVED, _NO_URL, None, _NO_HEADERS
        provider = self._provider(path)
        key = (provider.KIND, id(options))
        config = configs.get(key)
        if config is None:
            config = configs[key] = provider.config(options, block)
        if config is None:
            self.pending = True  # resolved in start()
            return _UNRESOLVED, _NO_URL, None, _NO_HEADERS
        try:
            target = provider.resolve(path, options, config)
        except WouldBlock:
            self.pending = True
            return _UNRESOLVED, _NO_URL, None, _NO_HEADERS
        return self._signed(path, target, provider, options, block)

    def _signed(self, path: str, target: Target, provider: Provider, options: HttpOptions,
                block: bool) -> tuple[Target, URL, Auth | None, Mapping[str, str]]:
        """``target``'s URL, credentials (found once per service and options) and service
        headers."""
        url = URL(target.url, encoded=True)
        headers = provider.request_headers(options)
        key = (target.kind, provider.auth_key(target), id(options))
        if key not in self._auth_cache:
            if not block:
                self.pending = True
                return target, url, None, headers
            try:
                self._auth_cache[key] = provider.find_auth(target, options)
            except OSError as exc:  # credentials that cannot be used: name the object
                exc.filename = path
                raise
        return target, url, self._auth_cache[key], headers

    def _provider(self, path: str) -> Provider:
        provider = self._providers.get(path.split("://", 1)[0].lower())
        if provider is None:
            raise unsupported(path)
        return provider

    # -- one request ---------------------------------------------------------------------
    def headers_for(self, file: int, url: URL, rng: str | None, pin: str | None = None,
                    *, sign: bool = True) -> dict[str, str]:
        """The headers of a GET of ``url`` for ``file`` (``sign=False``: without the
        credentials' own, for a signer that signs elsewhere)."""
        headers = {"Accept-Encoding": "identity"}
        if rng is not None:
            headers["Range"] = rng
        if pin is not None:  # the version the call's first answer was (signed with it)
            headers["If-Match"] = pin
        home = self.urls[file]
        if url is not home and origin(url) != origin(home):
            return headers  # redirected elsewhere: no credentials
        own = self.file_options[file].headers  # only the prefix's they were set for
        if own:
            headers.update(own)
        service = self.headers[file]
        if service:
            headers.update(service)
        auth = self.auths[file]
        if auth is not None and sign:
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
        o = self.file_options[file]
        timeout = self.timeout if o is self.options else _timeout(o.request_timeout,
                                                                   o.connect_timeout)
        for _ in range(REDIRECTS + 1):
            self.requests += 1
            try:
                resp = await self.session.get(url, headers=self.headers_for(file, url, rng, pin),
                                              allow_redirects=False, timeout=timeout,
                                              ssl=_ssl(o),
                                              proxy=self.proxy(url))
            except Exception as exc:
                mapped = aiohttp_error(exc, url, o.request_timeout)
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
            self.retries += 1
            if log.isEnabledFor(logging.INFO):
                log.info("lsio: retry %d of %d: %s", attempt, self.options.retries,
                         redact(str(failed)))
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

        failed, r.failed = r.failed, None
        if isinstance(failed, HttpError):  # the C transport's answer: final
            raise failed
        while got < r.length:
            try:  # the first attempt without the retry loop's frames: most need no retry
                if failed is not None:  # the C transport's attempt, which may pass
                    first, failed = failed, None
                    raise first
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
                    raise status_error(resp.status, resp.reason, str(url), resp.headers)
                return await read_body(resp, str(url))
            finally:
                resp.release()

        return await self.retrying(step, self._gave_up(url))

    # -- multi-range requests --------------------------------------------------------------
    # -- multi-range requests --------------------------------------------------------------
    async def get_multi(self, reads: list[Read]) -> list[Read]:
        """Ask for all ``reads`` (one file) in one request (:mod:`._multi`); returns the
        reads it did not serve. Raises ``NotMulti`` if the server does not do this."""
        return await get_multi(self, reads)
