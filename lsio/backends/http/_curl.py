"""The C transport's event-loop side: one libcurl multi handle per event loop (``lsio/_c/curl.c``),
waited on through one epoll fd, and the batches of range GETs it runs.

The loop watches the transport's epoll fd (``loop.add_reader``); when a socket is ready,
:meth:`Transport._ready` lets C drive every ready socket, land bodies and start the next
requests in one call, then wakes the batches that finished. libcurl's own timer (connect
and request deadlines, retries of its state machine) is one ``loop.call_later``. Nothing runs
on another thread, so a batch cancelled in :meth:`Transport.run` writes nothing afterwards.

The transport is an optional extension module, ``lsio._curl``, built where libcurl's headers
exist; :data:`AVAILABLE` says whether this process has it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ... import _fork

try:
    from ..._curl import ffi, lib
except ImportError:  # built without libcurl's headers: aiohttp serves every request
    ffi = lib = None

__all__ = ["AVAILABLE", "BAD_RANGE", "CANCELLED", "LONG_VALUE", "NOMEM", "OK", "OVERFLOW",
           "REQ", "SKIPPED", "Sign", "Tls", "address", "ca_locations", "strerror",
           "transport_for"]

AVAILABLE = lib is not None and lib.lsio_http_global_init() == 0
"""This process has the C transport (its module was built and libcurl initialised)."""

DONE, OK, NOT_PARTIAL, BAD_RANGE, OVERFLOW, LONG_VALUE, NOMEM, CANCELLED, SKIPPED = (
    1, 2, 4, 8, 16, 32, 64, 128, 256)
"""``lsio_http_req.flags`` (``curl.h``)."""


def _request_dtype() -> np.dtype[Any]:
    """``lsio_http_req`` as a numpy record, its offsets taken from the compiled struct, so a
    batch is filled and read back with array operations."""
    fields = {"start": "i8", "length": "i8", "dest": "u8", "url": "i4", "headers": "i4",
              "flags": "i4", "status": "i4", "code": "i4", "own_range": "i4", "got": "i8",
              "total": "i8", "content_length": "i8", "body": "u8", "arena": "i4", "etag": "S96",
              "modified": "S96", "retry_after": "S32", "ttfb_us": "i8", "total_us": "i8"}
    if not AVAILABLE:
        return np.dtype([(k, v) for k, v in fields.items()])
    return np.dtype({"names": list(fields), "formats": list(fields.values()),
                     "offsets": [ffi.offsetof("lsio_http_req", k) for k in fields],
                     "itemsize": ffi.sizeof("lsio_http_req")})


REQ = _request_dtype()
"""One request of a batch (``lsio_http_req``)."""


def strerror(code: int) -> str:
    """libcurl's text for a ``CURLcode``."""
    return str(ffi.string(lib.lsio_http_strerror(code)).decode())


def address(mem: memoryview) -> int:
    """The address of writable memory (a batch's destination; the caller keeps it alive)."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(mem, require_writable=True)))


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS settings of a batch: verify or not, where the trusted CAs are, a client
    certificate. Hashable: one batch per distinct value."""

    verify: bool = True
    cafile: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None


_SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
                   "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
                   "/etc/ssl/ca-bundle.pem",  # openSUSE
                   "/etc/ssl/cert.pem")  # macOS, BSDs


def ca_locations() -> tuple[str | None, str | None]:
    """Where the trusted CAs are, as the C transport is told: ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` (what OpenSSL and Python's ``ssl`` honour), else OpenSSL's default
    paths where they exist, else the system bundles of common distributions, else certifi's
    bundle when installed; ``(None, None)`` leaves libcurl's built-in default."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return cafile or None, capath or None
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return paths.cafile, paths.capath if paths.capath and os.path.isdir(
            paths.capath) else None
    for bundle in _SYSTEM_BUNDLES:
        if os.path.isfile(bundle):
            return bundle, None
    try:
        import certifi
    except ImportError:
        return None, None
    return certifi.where(), None


class Transport:
    """One event loop's libcurl multi handle: keep-alive connections (``connections`` per
    host), TLS sessions and DNS answers shared by every batch run on that loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: int) -> None:
        assert AVAILABLE
        err = ffi.new("int *")
        h = lib.lsio_http_new(connections, err)
        if h == ffi.NULL:
            raise OSError(err[0], f"lsio: cannot start the C HTTP transport: "
                          f"{os.strerror(err[0])}")
        self._h = h
        self._loop = weakref.ref(loop)
        self._fd = lib.lsio_http_fd(h)
        self._gen = ffi.new("uint64_t *")
        self._seen = 0
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: dict[Any, _Waiter] = {}
        loop.add_reader(self._fd, self._ready)
        # freed with its loop (never at exit, where a daemon loop may still run it; never
        # in a forked child, whose sockets and TLS state are the parent's)
        self._finalizer = _fork.finalizer(loop, lib.lsio_http_free, h,
                                          in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child whose loop runs on: the sockets are the parent's, which still
        reads them; a wake-up here must never drive them (it would take the parent's
        answers). Kept for good, never used."""
        _fork.keep(self._h)
        self._h = None

    @property
    def sent(self) -> int:
        """Requests this transport has sent."""
        return int(lib.lsio_http_sent(self._h))

    def _ready(self) -> None:
        if self._h is None:  # the parent's, in a forked child
            return
        lib.lsio_http_drive(self._h)
        self._after()

    def _on_timer(self) -> None:
        self._timer = None
        if self._h is None:
            return
        lib.lsio_http_on_timer(self._h)
        self._after()

    def _after(self) -> None:
        """Hand each batch its newly finished requests, wake finished batches; follow
        libcurl's timer."""
        for b, waiter in list(self._waiting.items()):
            waiter.wake(b)
        ms = lib.lsio_http_timer(self._h, self._gen)
        if self._gen[0] == self._seen:
            return
        self._seen = self._gen[0]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms >= 0:
            loop = self._loop()
            if loop is not None:
                self._timer = loop.call_later(ms / 1000, self._on_timer)

    async def run(self, reqs: npt.NDArray[Any], urls: Sequence[bytes],
                  headers: Sequence[bytes], tls: Tls, timeouts: tuple[float, float],
                  concurrency: int, on_finished: Finished,
                  signs: Sequence[Sign | None] = (), sent: list[int] | None = None) -> None:
        """Run the requests ``reqs`` (a :data:`REQ` array, filled: ``url``/``headers``
        index ``urls``/``headers``; a header block is lines joined by ``\\n``); their results
        land in ``reqs``. ``signs``: per header block, the SigV4 parts its requests are
        signed with here (:class:`Sign`), or ``None``. ``on_finished(indices, bodies)`` is
        told of requests as they finish (on the loop, a few per socket wake-up), with the
        memory the transport allocated for those whose ``dest`` is 0 and that worked (by
        index); an error it raises stops the batch and is raised here. Cancelled, it stops
        every request of the batch before it returns: nothing lands afterwards. ``sent[0]``
        is set to the requests the batch sent, however it ends."""
        n = len(reqs)
        if n == 0:
            return
        url_mem, url_arr = _strings(urls)  # (one C string per URL cost ~0.3 us a request)
        c_heads = [ffi.new("char[]", h) for h in headers]
        head_arr = ffi.new("char *[]", c_heads) if c_heads else ffi.NULL
        keep = [ffi.new("char[]", s.encode()) if s else ffi.NULL
                for s in (tls.cafile, tls.capath, tls.cert, tls.key)]
        keep.append(url_mem)
        opts = ffi.new("lsio_http_opts *", {
            "verify": int(tls.verify), "cainfo": keep[0], "capath": keep[1],
            "cert": keep[2], "key": keep[3],
            "timeout_ms": max(1, int(timeouts[0] * 1000)),
            "connect_timeout_ms": max(1, int(timeouts[1] * 1000))})
        c_reqs = ffi.from_buffer("lsio_http_req[]", reqs, require_writable=True)
        c_signs = _signs(signs, len(c_heads), keep) if signs else ffi.NULL
        b = lib.lsio_http_batch_new(self._h, c_reqs, n, url_arr, len(urls), head_arr,
                                    len(c_heads), c_signs, opts, max(1, concurrency))
        if b == ffi.NULL:
            raise MemoryError("lsio: no memory for a batch of HTTP requests")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), reqs, on_finished)
        self._waiting[b] = waiter
        try:
            lib.lsio_http_batch_start(b)
            self._after()
            await waiter.future
        finally:
            del self._waiting[b]
            if sent is not None:
                sent[0] = int(lib.lsio_http_batch_sent(b))
            lib.lsio_http_batch_free(b)  # cancels what is still in flight


def _strings(texts: Sequence[bytes]) -> tuple[Any, Any]:
    """``texts`` as C strings: one buffer (keep it alive) and the array of pointers into it."""
    blob = ffi.from_buffer(b"\0".join(texts) + b"\0")
    if sum(t.count(b"\0") for t in texts):
        raise ValueError("lsio: a URL holds a NUL byte")
    sizes = np.fromiter(map(len, texts), np.uint64, len(texts)) + np.uint64(1)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.uint64)
    pointers = starts + np.uint64(int(ffi.cast("uintptr_t", blob)))
    return (blob, pointers), ffi.cast("char **", ffi.from_buffer(pointers))


class Sign(NamedTuple):
    """A header block's SigV4 parts (``lsio_http_sign``; see ``_sigv4.Parts``)."""

    key: bytes
    sts_prefix: str
    pre: str
    post: str
    auth_prefix: str


def _signs(signs: Sequence[Sign | None], n: int, keep: list[Any]) -> Any:
    """The C array of ``signs`` (``n`` blocks), its strings kept alive in ``keep``."""
    arr = ffi.new("lsio_http_sign[]", n)
    for k, s in enumerate(signs):
        if s is None:
            continue
        parts = [ffi.new("unsigned char[]", s.key)] + [
            ffi.new("char[]", t.encode()) for t in (s.sts_prefix, s.pre, s.post, s.auth_prefix)]
        keep.extend(parts)
        arr[k].key, arr[k].sts_prefix, arr[k].pre, arr[k].post, arr[k].auth_prefix = parts
    return arr


Finished = Callable[[npt.NDArray[np.int32], dict[int, memoryview]], None]
"""Told of a batch's requests as they finish (see :meth:`Transport.run`)."""


class _Waiter:
    """A running batch: its future, its requests, how many finished ones it was told, and
    the arenas its bodies are in (each held while C may still land bodies in it)."""

    __slots__ = ("arenas", "bases", "future", "held", "on_finished", "order", "reqs", "told")

    def __init__(self, future: asyncio.Future[None], reqs: npt.NDArray[Any],
                 on_finished: Finished) -> None:
        self.future = future
        self.reqs = reqs
        self.on_finished = on_finished
        self.told = 0
        self.order = ffi.new("int32_t **")
        self.arenas: list[memoryview | None] = []
        self.bases: list[int] = []
        self.held: list[int] = []
        """Arenas taken that C may still land bodies in (the others live on only through
        the views of their bodies: a long batch's bodies copied elsewhere, the pieces of
        sparse reads, are not all kept to its end)."""

    def wake(self, b: Any) -> None:
        if self.future.done():
            return
        done = lib.lsio_http_batch_finished(b, self.order)
        if done > self.told:
            idx = np.frombuffer(ffi.buffer(self.order[0], done * 4), np.int32)[
                self.told:done].copy()
            self.told = done
            try:
                self.on_finished(idx, self._bodies(b, idx))
            except BaseException as exc:  # noqa: BLE001 - raised in the batch's caller
                self.future.set_exception(exc)
                return
            self._let_go(b)
        if done == len(self.reqs):
            self.future.set_result(None)

    def _bodies(self, b: Any, idx: npt.NDArray[np.int32]) -> dict[int, memoryview]:
        """The bodies the transport allocated for the served requests of ``idx``: views of
        their arenas (taken on first use), or memory of their own."""
        reqs = self.reqs  # (field by field: a structured array's rows copy ~10x slower)
        mine = idx[(reqs["dest"][idx] == 0) & ((reqs["flags"][idx] & OK) != 0)]
        if not len(mine):
            return {}
        which, got = reqs["arena"][mine], reqs["got"][mine]
        for k in range(len(self.arenas), int(which.max()) + 1):  # in the order C made them
            self._take(b, k)
        at = np.zeros(len(mine), np.int64)
        if self.bases:
            inside = which >= 0
            at[inside] = (reqs["body"][mine][inside]
                          - np.array(self.bases, np.uint64)[which[inside]]).astype(np.int64)
        bodies: dict[int, memoryview] = {}
        arenas = self.arenas
        for i, k, a, n in zip(mine.tolist(), which.tolist(), at.tolist(), got.tolist(),
                              strict=True):
            if k >= 0:
                view = arenas[k]
                assert view is not None  # (held while bodies may land in it)
                bodies[i] = view[a:a + n]
                continue
            p = lib.lsio_http_take_body(b, i)
            if p != ffi.NULL:
                owned = ffi.gc(p, lib.lsio_http_free_body)
                bodies[i] = memoryview(ffi.buffer(owned, n)).cast("B")
        return bodies

    def _let_go(self, b: Any) -> None:
        """Stop holding the arenas no body will land in any more."""
        held = []
        for k in self.held:
            if lib.lsio_http_arena_busy(b, k):
                held.append(k)
            else:
                self.arenas[k] = None
        self.held = held

    def _take(self, b: Any, k: int) -> None:
        """Own arena ``k`` of batch ``b`` (the next not taken; freed when no view of it is
        left)."""
        size = ffi.new("int64_t *")
        p = lib.lsio_http_take_arena(b, k, size)
        if p == ffi.NULL:
            raise MemoryError("lsio: an HTTP body arena was lost")
        self.held.append(k)
        self.bases.append(int(ffi.cast("uintptr_t", p)))
        self.arenas.append(memoryview(ffi.buffer(ffi.gc(p, lib.lsio_http_free_body),
                                                 size[0])).cast("B"))


_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Transport]] = (
    weakref.WeakKeyDictionary())


@_fork.forget_in_child
def _forget() -> None:
    """A forked child makes transports of its own (the parent's are kept, never used)."""
    global _transports
    _fork.keep(*_transports.items())
    _transports = weakref.WeakKeyDictionary()


def transport_for(connections: int) -> Transport | None:
    """The running loop's transport with ``connections`` per host (made on first use);
    ``None`` where the C transport is not built."""
    if not AVAILABLE:
        return None
    loop = asyncio.get_running_loop()
    per_loop = _transports.setdefault(loop, {})
    t = per_loop.get(connections)
    if t is None:
        t = per_loop[connections] = Transport(loop, connections)
    return t
