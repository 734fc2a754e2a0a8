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
import functools
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._curl import AVAILABLE, REQ, Sign, Tls, address, ca_locations, transport_for
from ._protocol import HttpError, range_header
from ._read import PACE, Read
from ._settle import settle

if TYPE_CHECKING:
    from yarl import URL

    from ..._url import HttpOptions
    from ._client import HttpClient

__all__ = ["MIN_BATCH", "eligible", "get_many", "plain", "probe_many"]

T = TypeVar("T")

MIN_BATCH = 2
"""Fewer reads than this go the coroutine way: a batch's fixed cost (arrays, a C call, a
future) is worth it from two requests on. (A call of one 4 KiB range on loopback costs
~300 us of CPU through aiohttp and ~450 us as a batch of one, nearly all of it numpy's
per-operation cost on one-element arrays.) The tests set it to 1 to run everything the C
transport can serve through it."""


async def slices(items: Sequence[T]) -> AsyncIterator[Sequence[T]]:
    """``items`` in slices of :data:`PACE`, with a turn of the event loop between them."""
    for k in range(0, len(items), PACE):
        if k:
            await asyncio.sleep(0)
        yield items[k:k + PACE]


def eligible(client: HttpClient, file: int) -> bool:
    """Whether the C transport may send ``file``'s GETs: an ``http(s)`` URL with no proxy,
    TLS it can take (the default verification, or none; a Python ``SSLContext`` holds a CA
    store only aiohttp can use), headers with no line break, and the transport wanted."""
    ok = client.c_files
    return (_eligible_files(client) if ok is None else ok)[file]


def _eligible_files(client: HttpClient) -> list[bool]:
    """:func:`eligible` of every file of ``client`` (decided once per options and origin:
    a call's thousands of URLs are mostly of one host)."""
    ok = client.c_files = [False] * len(client.paths)
    if not AVAILABLE or client.options.transport == "aiohttp":
        return ok
    seen: dict[tuple[int, str, str | None, int | None], bool] = {}
    for f, url in enumerate(client.urls):
        o = client.file_options[f]
        key = (id(o), url.scheme, url.host, url.port)
        yes = seen.get(key)
        if yes is None:
            yes = seen[key] = (url.scheme in ("http", "https") and client.proxy(url) is None
                               and (o.ssl is None or o.ssl is False)
                               and not any(_unsafe(k) or _unsafe(v)
                                           for k, v in o.headers.items()))
        ok[f] = yes
    return ok


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
    o = client.options
    if all(f is o for f in client.file_options):  # one options for all: one group
        groups[(_tls(o), o.request_timeout, o.connect_timeout)] = list(reads)
    else:
        async for some in slices(reads):
            for r in some:
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
    ok = client.c_files
    if ok is None:
        ok = _eligible_files(client)
        await asyncio.sleep(0)
    probes: list[Read] = []
    async for some in slices(files):
        probes += [Read(-1, f, 0, probe_size, None) for f in some if ok[f]]
    left = await get_many(client, probes, concurrency)
    todo: dict[int, Read | None] = dict.fromkeys(files)
    for r in left:
        todo[r.file] = r
    async for part in slices(probes):
        for r in part:
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


@functools.lru_cache(maxsize=1 << 16)
def _encoded(url: URL) -> bytes:
    """A URL as the C transport takes it (kept: ~0.5 us to make, and calls read the same
    objects again)."""
    return str(url).encode()


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
    tables = [np.zeros((0, 4), np.int64)]  # file, start, length, destination
    async for part in slices(reads):
        tables.append(np.array([(r.file, r.start, r.length,
                                 0 if r.dest is None else address(r.dest)) for r in part],
                               np.int64).reshape(-1, 4))
    table = np.concatenate(tables)
    uniq, url_index = np.unique(table[:, 0], return_inverse=True)
    objects = uniq.tolist()
    urls = [_encoded(client.urls[f]) for f in objects]
    reqs = np.zeros(len(reads), REQ)
    reqs["start"], reqs["length"], reqs["dest"] = table[:, 1], table[:, 2], table[:, 3]
    reqs["url"] = url_index
    pins = [client.versions.if_match(f) for f in objects]
    await asyncio.sleep(0)  # (the batch's arrays take milliseconds for 20 000 requests)
    blocks, signs = await _headers(client, reads, reqs, objects, url_index, pins)
    tls, request_timeout, connect_timeout = key
    sent = [0]
    final: dict[int, HttpError] = {}  # an object's error that its other requests share

    def finished(idx: Any, bodies: dict[int, memoryview]) -> None:
        done = settle(client, reads, reqs, idx, bodies, url_index, pins, left, final)
        if served is not None and done:
            served(done)

    try:
        await transport.run(reqs, urls, blocks, tls, (request_timeout, connect_timeout),
                            concurrency, finished, signs if any(signs) else (), sent)
    finally:  # this batch's own: other calls on the loop share the transport
        client.requests += sent[0]
        client.c_requests += sent[0]


async def _headers(client: HttpClient, reads: list[Read], reqs: Any, objects: list[int],
                   url_index: Any, pins: list[str | None]
                   ) -> tuple[list[bytes], list[Sign | None]]:
    """Each request's header block (``reqs["headers"]``, ``reqs["own_range"]``) and the
    blocks' signing parts: one block per object (``objects``, each request's in
    ``url_index``; shared by objects whose headers are the same), signed in C per range
    for S3 (:func:`._sigv4.parts`), carrying a bearer token as is; one per request where
    the signature covers it otherwise (Azure's shared key), with the ``Range`` it signs. A
    request whose headers libcurl cannot take gets length 0, which the transport refuses:
    it is left for the coroutine path."""
    blocks: list[bytes] = []
    signs: list[Sign | None] = []
    of_object = np.full(len(objects), -1, np.int32)  # -2: none usable, -3: one per range
    same: dict[bytes, int] = {}  # by content (never for signed blocks)
    plain: dict[tuple[int, int, str | None], bytes | None] = {}  # unsigned, by what makes it
    unready: set[int] = set()  # credentials whose refresh failed: not asked again here
    async for part in slices(range(len(objects))):
        for j in part:
            f = objects[j]
            auth, url, pin = client.auths[f], client.urls[f], pins[j]
            if auth is not None and id(auth) in unready:
                of_object[j] = -2
                continue
            if auth is not None:
                try:
                    await auth.ready()
                except Exception:  # noqa: BLE001 - HttpClient.get asks again, and says why
                    unready.add(id(auth))  # (retried if it may pass, named if not)
                    of_object[j] = -2
                    continue
            sign: Sign | None = None
            if auth is None:  # the options' and the service's headers, and the pin
                what = (id(client.file_options[f]), id(client.headers[f]), pin)
                if what not in plain:
                    plain[what] = _block(client.headers_for(f, url, None, pin))
                block = plain[what]
            elif hasattr(auth, "sigv4") or getattr(auth, "BEARER", False):
                block, sign = _object_block(client, f, pin)
            else:  # signed with each range, below
                of_object[j] = -3
                continue
            if block is None:
                of_object[j] = -2
            elif sign is None and block in same:
                of_object[j] = same[block]
            else:
                of_object[j] = len(blocks)
                blocks.append(block)
                signs.append(sign)
                if sign is None:
                    same[block] = len(blocks) - 1
    head = of_object[url_index]
    own = (head == -3).astype(np.int32)
    await _signed_each(client, reads, np.flatnonzero(own).tolist(), head,
                       [pins[j] for j in url_index[own != 0].tolist()], blocks, signs)
    usable = head != -2
    reqs["headers"] = np.where(usable, head, -1)
    reqs["own_range"] = own
    reqs["length"] = np.where(usable, reqs["length"], 0)
    return blocks, signs


async def _signed_each(client: HttpClient, reads: list[Read], each: list[int], head: Any,
                       pins: list[str | None], blocks: list[bytes],
                       signs: list[Sign | None]) -> None:
    """A header block of its own for each request ``each`` (its signature covers its
    ``Range``: Azure's shared key; ``pins``: each one's version pin), appended to
    ``blocks``; ``head`` says which (-2: none libcurl can take)."""
    k = -1
    async for part in slices(each):
        for i in part:
            r, k = reads[i], k + 1
            block = _block(client.headers_for(r.file, client.urls[r.file],
                                              range_header(r.start, r.length), pins[k]))
            head[i] = -2 if block is None else len(blocks)
            if block is not None:
                blocks.append(block)
                signs.append(None)


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


