"""A call's plain range GETs through the C transport (:mod:`._curl`), in batches.

The backend hands :func:`get_many` the reads it would send one coroutine each: range reads
into their destinations, and size probes (``dest`` ``None``: memory sized by the answer).
Those of objects the C transport may serve (``http``/``https`` without a proxy, TLS settings
it can take, headers without line breaks) go in one batch: one C call starts them and the
event loop wakes once per ready socket batch, not once per request. Each answer that is a
``206`` with the ``Content-Range`` asked, a body of the announced length and the call's
version (:mod:`._version`) is done here, exactly as :meth:`HttpClient.get` would have done
it; every other read (another status, a redirect, a reset, a timeout, a changed version) is
returned to the caller, which sends it again through :meth:`HttpClient.get`: its retries,
redirects, errors and messages are the backend's one definition of them.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..._defaults import RATE_MIN_BYTES
from ._cost import cost_of
from ._curl import (
    AVAILABLE,
    BAD_RANGE,
    CANCELLED,
    LONG_VALUE,
    NOMEM,
    OK,
    OVERFLOW,
    REQ,
    SKIPPED,
    Sign,
    Tls,
    address,
    ca_locations,
    strerror,
    transport_for,
)
from ._protocol import HttpError, Retry, range_header, status_error
from ._read import Read, origin
from ._version import Validators, VersionChanged

if TYPE_CHECKING:
    from ..._url import HttpOptions
    from ._client import HttpClient

__all__ = ["eligible", "get_many", "paced", "plain", "probe_many"]

T = TypeVar("T")

TTFB_SAMPLES = 8
"""Small answers per wake-up whose time to first byte goes to their host's record (it keeps
a window of the latest; every answer's would cost a Python call each)."""

PACE = 1024
"""Requests a Python loop of a batch handles before it lets the event loop run (a loop of
20 000 would hold it for tens of milliseconds)."""

MIN_BATCH = 2
"""Fewer reads than this go the coroutine way: a batch's fixed cost (arrays, a C call, a
future) is worth it from two requests on."""


async def paced(items: Iterable[T]) -> AsyncIterator[T]:
    """``items``, with a turn of the event loop every :data:`PACE` of them."""
    for k, item in enumerate(items):
        if k % PACE == PACE - 1:
            await asyncio.sleep(0)
        yield item


def eligible(client: HttpClient, file: int) -> bool:
    """Whether the C transport may send ``file``'s GETs: an ``http(s)`` URL with no proxy,
    TLS it can take (the default verification, or none; a Python ``SSLContext`` holds a CA
    store only aiohttp can use), headers with no line break, and the transport wanted."""
    ok = client.c_files
    if ok is None:
        ok = client.c_files = [False] * len(client.paths)
        if AVAILABLE and client.options.transport != "aiohttp":
            for f, url in enumerate(client.urls):
                o = client.file_options[f]
                ok[f] = (url.scheme in ("http", "https") and client.proxy(url) is None
                         and (o.ssl is None or o.ssl is False)
                         and not any(_unsafe(k) or _unsafe(v) for k, v in o.headers.items()))
    return ok[file]


def _unsafe(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text


def _block(headers: dict[str, str]) -> bytes | None:
    """Header lines for libcurl (``name: value`` joined by ``\\n``), ``None`` if a value
    would break a line (aiohttp then refuses it with its own error)."""
    lines = [f"{k}: {v}" for k, v in headers.items()]
    text = "\n".join(lines)
    if "\r" in text or "\0" in text or text.count("\n") != len(lines) - 1:
        return None
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return None


async def get_many(client: HttpClient, reads: Sequence[Read], concurrency: int,
                   served: Served | None = None) -> list[Read]:
    """Serve what the C transport can of ``reads`` (each of an eligible file, ``start >=
    0``, nothing of it served yet); returns the reads left for
    :meth:`HttpClient.get`. A served read has ``got`` set (a probe also ``dest`` and
    ``length``; a sparse read's pieces their bytes), and what its answer told (the
    object's size) is recorded in ``client``; ``served(reads)`` is told of them as they
    land (progress, deadlines)."""
    if len(reads) < MIN_BATCH:
        return list(reads)
    transport = transport_for(client.options.connections_per_host)
    assert transport is not None
    groups: dict[tuple[Tls, float, float], list[Read]] = {}
    keys: dict[int, tuple[Tls, float, float]] = {}  # by the options' identity
    for r in reads:
        o = client.file_options[r.file]
        key = keys.get(id(o))
        if key is None:
            key = keys[id(o)] = (_tls(o), o.request_timeout, o.connect_timeout)
        groups.setdefault(key, []).append(r)
    left: list[Read] = []
    for key, group in groups.items():  # one after another: the call's cap holds across them
        await _run(client, transport, group, key, concurrency, served, left)
    return left


Served = Callable[[list[Read]], None]


async def probe_many(client: HttpClient, files: list[int], probe_size: int,
                     concurrency: int) -> dict[int, Read | None]:
    """Head probes (``Range: bytes=0-(probe_size-1)``, as ``HttpBackend.stat`` sends) of
    ``files`` through the C transport where it may; the probes it served are kept by the
    client (:meth:`HttpClient.keep_probe`). Returns the files whose probe is still to be
    sent, with the probe the transport tried (its ``failed`` says how that went), if any."""
    probes = [Read(-1, f, 0, probe_size, None) async for f in paced(files)
              if eligible(client, f)]
    left = await get_many(client, probes, concurrency)
    todo: dict[int, Read | None] = dict.fromkeys(files)
    for r in left:
        todo[r.file] = r
    async for r in paced(probes):
        if r.got < 0:
            continue
        try:
            client.keep_probe(r, r.got, probe_size, 0)
        except HttpError:  # no size told: the coroutine path says so
            continue
        del todo[r.file]
    return todo


def plain(client: HttpClient, r: Read) -> bool:
    """A planned read the C transport may serve: of an eligible object not sent whole, not
    served yet, not starting in the bytes its size probe holds (:meth:`HttpClient.get`
    copies those first)."""
    if r.got >= 0 or r.file in client.whole or not eligible(client, r.file):
        return False
    pre = client.prefetch.get(r.file)
    return pre is None or not pre[0] <= r.start < pre[0] + len(pre[1])


def _tls(o: HttpOptions) -> Tls:
    """The C transport's TLS settings for options ``o``."""
    if o.ssl is False:
        return Tls(verify=False)
    if o.ca is not None:
        isdir = os.path.isdir(o.ca)
        cafile, capath = (None, o.ca) if isdir else (o.ca, None)
    else:
        cafile, capath = ca_locations()
    return Tls(True, cafile, capath, o.client_cert, o.client_key)


async def _run(client: HttpClient, transport: Any, reads: list[Read],
               key: tuple[Tls, float, float], concurrency: int, served: Served | None,
               left: list[Read]) -> None:
    """One batch: the reads of one TLS setting and deadline pair; those it does not serve
    are appended to ``left``."""
    n = len(reads)
    files = np.fromiter((r.file for r in reads), np.int64, n)
    uniq, url_index = np.unique(files, return_inverse=True)
    urls = [str(client.urls[f]).encode() for f in uniq.tolist()]
    reqs = np.zeros(n, REQ)
    reqs["start"] = np.fromiter((r.start for r in reads), np.int64, n)
    reqs["length"] = np.fromiter((r.length for r in reads), np.int64, n)
    reqs["url"] = url_index
    reqs["dest"] = [0 if r.dest is None else address(r.dest) async for r in paced(reads)]
    pins = [client.versions.if_match(f) for f in uniq.tolist()]
    blocks, signs = await _headers(client, reads, reqs, url_index, pins)
    tls, request_timeout, connect_timeout = key
    sent = [0]
    final: dict[int, HttpError] = {}  # an object's error that its other requests share

    def finished(idx: Any, bodies: dict[int, memoryview]) -> None:
        done = _settle(client, reads, reqs, idx, bodies, url_index, pins, left, final)
        if served is not None and done:
            served(done)

    try:
        await transport.run(reqs, urls, blocks, tls, (request_timeout, connect_timeout),
                            concurrency, finished, signs if any(signs) else (), sent)
    finally:  # this batch's own: other calls on the loop share the transport
        client.requests += sent[0]
        client.c_requests += sent[0]


async def _headers(client: HttpClient, reads: list[Read], reqs: Any, url_index: Any,
                   pins: list[str | None]) -> tuple[list[bytes], list[Sign | None]]:
    """Each request's header block (``reqs["headers"]``, ``reqs["own_range"]``) and the
    blocks' signing parts: one block per object (shared by objects whose headers are the
    same), signed in C per range for S3 (:func:`._sigv4.parts`), carrying a bearer token
    as is; one per request where the signature covers it otherwise (Azure's shared key),
    with the ``Range`` it signs. A request whose headers libcurl cannot take gets length 0,
    which the transport refuses: it is left for the coroutine path."""
    n = len(reads)
    blocks: list[bytes] = []
    signs: list[Sign | None] = []
    head = np.full(n, -1, np.int32)
    own = np.zeros(n, np.int32)
    shared: dict[int, int] = {}  # by object
    same: dict[bytes, int] = {}  # by content (never for signed blocks)
    plain: dict[tuple[int, int, str | None], bytes | None] = {}  # unsigned, by what makes it
    i = -1
    async for r in paced(reads):
        i += 1
        f = r.file
        k = shared.get(f)
        if k is None:
            auth, url, pin = client.auths[f], client.urls[f], pins[int(url_index[i])]
            if auth is not None:
                await auth.ready()
            sign: Sign | None = None
            if auth is None:  # the options' and the service's headers, and the pin
                what = (id(client.file_options[f]), id(client.headers[f]), pin)
                if what not in plain:
                    plain[what] = _block(client.headers_for(f, url, None, pin))
                block = plain[what]
            elif hasattr(auth, "sigv4") or getattr(auth, "BEARER", False):
                block, sign = _object_block(client, f, pin)
            else:  # signed with its range, here
                block = _block(client.headers_for(f, url, range_header(r.start, r.length), pin))
                own[i] = 1
                if block is not None:
                    head[i] = len(blocks)
                    blocks.append(block)
                    signs.append(None)
                else:
                    head[i] = -2
                continue
            if block is None:
                k = -2
            elif sign is None and block in same:
                k = same[block]
            else:
                k = len(blocks)
                blocks.append(block)
                signs.append(sign)
                if sign is None:
                    same[block] = k
            shared[f] = k
        head[i] = k
    usable = head != -2
    reqs["headers"] = np.where(usable, head, -1)
    reqs["own_range"] = own
    reqs["length"] = np.where(usable, reqs["length"], 0)
    return blocks, signs


def _timed(client: HttpClient, reads: list[Read], idx: Any, sel: Any, ok: list[bool]) -> None:
    """What the served answers tell their host's record (:mod:`._cost`: time to first byte,
    and the stream rate of bodies worth timing), as the aiohttp road's answers do: every
    big body, and a few small ones per wake-up (their times to first byte)."""
    served = np.asarray(ok)
    big = served & (sel["got"] >= RATE_MIN_BYTES)
    some = np.flatnonzero(served & ~big)[:TTFB_SAMPLES]
    for k in sorted(np.flatnonzero(big).tolist() + some.tolist()):
        r = reads[int(idx[k])]
        ttfb, total = int(sel["ttfb_us"][k]) / 1e6, int(sel["total_us"][k]) / 1e6
        if 0 < ttfb <= total:
            cost_of(origin(client.urls[r.file])).answer(ttfb, int(sel["got"][k]),
                                                         total - ttfb)


def _object_block(client: HttpClient, f: int, pin: str | None
                  ) -> tuple[bytes | None, Sign | None]:
    """The header block of object ``f``'s requests, and how C signs each range of it (S3;
    ``None``: a bearer token, the same for every request)."""
    auth, url = client.auths[f], client.urls[f]
    if getattr(auth, "BEARER", False):
        return _block(client.headers_for(f, url, None, pin)), None
    p = auth.sigv4("GET", str(url),  # type: ignore[union-attr]
                   client.headers_for(f, url, None, pin, sign=False))
    return _block(p.headers), Sign(p.key, p.sts_prefix, p.pre, p.post(True),
                                   p.auth_prefix(True))


def _settle(client: HttpClient, reads: list[Read], reqs: Any, idx: Any,
            bodies: dict[int, memoryview], url_index: Any, pins: list[str | None],
            left: list[Read], final: dict[int, HttpError]) -> list[Read]:
    """Record what the finished requests ``idx`` told; those not served go to ``left``,
    with how they failed. A request not sent because another of its object was answered
    otherwise gets that answer's error when it is final (a missing object, a changed
    version), else is sent again. Returns the served reads."""
    done: list[Read] = []
    sel = reqs[idx]
    ok = ((sel["flags"] & OK) != 0).tolist()
    got, total = sel["got"].tolist(), sel["total"].tolist()
    _timed(client, reads, idx, sel, ok)
    etag, modified = sel["etag"].tolist(), sel["modified"].tolist()
    for k, i in enumerate(idx.tolist()):
        r = reads[i]
        if not ok[k]:
            r.failed = (final.get(r.file) if int(sel["flags"][k]) & SKIPPED else
                        _failure(client, r, sel[k], pins[int(url_index[i])]))
            if isinstance(r.failed, HttpError):
                final.setdefault(r.file, r.failed)
            left.append(r)
            continue
        f = r.file
        seen = Validators(etag[k].decode("latin-1") or None,
                          modified[k].decode("latin-1") or None,
                          None if total[k] < 0 else total[k])
        try:
            client.versions.check_seen(f, client.urls[f], seen)
        except VersionChanged as exc:
            r.failed = final.setdefault(f, exc)
            left.append(r)
            continue
        if total[k] >= 0:
            client.sizes[f] = total[k]
        if r.pieces is not None:  # sparse: its pieces keep their bytes, the gaps go
            r.put(0, bodies[i])
        elif r.dest is None:  # a size probe: the memory the answer sized
            r.dest = bodies[i]
            r.length = min(r.length, total[k]) if total[k] >= 0 else got[k]
        r.got = got[k]
        done.append(r)
    return done


_TRANSIENT = {7: errno.ECONNREFUSED, 18: errno.EIO, 28: errno.ETIMEDOUT, 52: errno.ECONNRESET,
              55: errno.ECONNRESET, 56: errno.ECONNRESET}
"""libcurl's failures that may pass (``CURLcode``: couldn't connect, partial file, timed
out, got nothing, send and receive errors), as the errno reported if the retries run out:
aiohttp's resets and timeouts are retried alike (``_session.aiohttp_error``)."""

_RESENT = SKIPPED | CANCELLED | BAD_RANGE | OVERFLOW | LONG_VALUE | NOMEM
"""Requests sent again through aiohttp, which gives their answer its full treatment."""


def _failure(client: HttpClient, r: Read, rec: Any, pin: str | None
             ) -> HttpError | Retry | None:
    """What the C transport's attempt at ``r`` (its record ``rec``) means to
    :meth:`HttpClient.get`: an error (a status that is one, a changed version), a first
    failed attempt to retry, or ``None``: send it again (a redirect, ``Range`` ignored, a
    416, an answer the C parser refused, a TLS failure: aiohttp's path says what they are)."""
    flags, status, code = int(rec["flags"]), int(rec["status"]), int(rec["code"])
    if flags & _RESENT:
        return None
    url = client.urls[r.file]
    if status == 412 and pin is not None:
        try:
            client.versions.check(r.file, url, 412, {}, pin)
        except VersionChanged as exc:
            return exc
    if status >= 400 and status not in (412, 416):
        after = rec["retry_after"].decode("latin-1")
        return status_error(status, _phrase(status), str(url),
                            {"Retry-After": after} if after else None)
    if code in _TRANSIENT and status in (0, 206):
        return Retry(HttpError(_TRANSIENT[code], f"{url}: {strerror(code)}"))
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
