"""The C HTTP transport (``lsio/backends/http/_curl.py`` over ``lsio/_c/curl.c``): it really
serves calls, a short body is an error, a cancelled batch writes nothing more, a forked
child gets a transport of its own, and a proxied URL never takes it. (Its HTTPS checks are
in ``test_http_transport_tls.py``, hostile answers in ``test_http_transport_fuzz.py``.)

:class:`RawServer` answers with any bytes at all (a truncated body, a trickle), where
aiohttp's server only sends well-formed HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import check_ok, random_bytes, run_python
from servers import Nginx, free_port

import lsio
from lsio.backends.http import _curl

REQUIRED = os.environ.get("LSIO_REQUIRE_URING") == "1"
"""``make test`` on Linux: the C transport must be built (its tests fail, never skip)."""

pytestmark = pytest.mark.skipif(not _curl.AVAILABLE and not REQUIRED,
                                 reason="lsio built without libcurl")

CONNECTIONS = lsio.HttpOptions().connections_per_host
"""The transport a default reader uses is the one of this many connections per host."""

Answer = Callable[[bytes], Iterable[bytes | float]]


class RawServer:
    """A loopback TCP server that answers each connection's first request with what
    ``answer(request head)`` yields (bytes to send; a float: seconds to wait), then closes
    it. ``hung_up`` is set when a send fails: the client closed the connection."""

    def __init__(self) -> None:
        self.answer: Answer = lambda head: [b""]
        self.hung_up = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, name="raw-server", daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def reset(self, answer: Answer) -> None:
        self.answer = answer
        self.hung_up.clear()

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not)
        except OSError:
            pass
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    more = conn.recv(65536)
                    if not more:
                        return
                    head += more
            except OSError:
                return
            try:
                for piece in self.answer(head):
                    if self._stop.is_set():
                        return
                    if isinstance(piece, float):
                        time.sleep(piece)
                    else:
                        conn.sendall(piece)
            except OSError:
                self.hung_up.set()
                return
            try:
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1)
                while conn.recv(65536):  # to the client's close: closing with unread
                    pass  # bytes would reset the connection under the answer
            except OSError:
                pass


def asked(head: bytes) -> tuple[int, int]:
    """The (start, length) of the request's ``Range: bytes=a-b``."""
    m = re.search(rb"\r\nRange: bytes=(\d+)-(\d+)\r\n", head, re.IGNORECASE)
    assert m is not None, head
    return int(m[1]), int(m[2]) - int(m[1]) + 1


def partial(start: int, length: int, total: int) -> bytes:
    """A 206's head for ``length`` bytes from ``start`` of a ``total``-byte object."""
    return (f"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-"
            f"{start + length - 1}/{total}\r\nContent-Length: {length}\r\n\r\n").encode()


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    server = RawServer()
    try:
        yield server
    finally:
        server.close()


def batch(ranges: list[tuple[int, int, int]], dests: list[memoryview | None]
          ) -> npt.NDArray[Any]:
    """A transport batch: per request (url index, start, length) and its destination."""
    reqs = np.zeros(len(ranges), _curl.REQ)
    reqs["url"], reqs["start"], reqs["length"] = (list(c) for c in zip(*ranges, strict=True))
    reqs["headers"] = -1
    reqs["dest"] = [0 if d is None else _curl.address(d) for d in dests]
    return reqs


async def run(transport: _curl.Transport, reqs: npt.NDArray[Any], urls: list[str],
              tls: _curl.Tls | None = None) -> dict[int, memoryview]:
    """Run a batch; the memory the transport allocated, by request index."""
    bodies: dict[int, memoryview] = {}
    await transport.run(reqs, [u.encode() for u in urls], [], tls or _curl.Tls(), (20.0, 10.0),
                        8, lambda _done, got: bodies.update(got))
    return bodies


def ok(reqs: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return np.asarray((reqs["flags"] & _curl.OK) != 0)


# -- nginx: the transport serves calls ------------------------------------------------------

@pytest.fixture(scope="module")
def objects(nginx: Nginx) -> tuple[Nginx, dict[str, bytes]]:
    """40 objects under the session's nginx, by name."""
    (nginx.root / "transport").mkdir()
    (nginx.root / "transport").chmod(0o755)
    data = {f"transport/o{i}.bin": random_bytes(20_000 + 97 * i, seed=300 + i)
            for i in range(40)}
    for name, content in data.items():
        (nginx.root / name).write_bytes(content)
    return nginx, data


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
async def test_the_c_transport_serves_calls(objects: tuple[Nginx, dict[str, bytes]],
                                            transport: str) -> None:
    """Every range of a default call is one request of the C transport; ``aiohttp`` sends
    none through it. Whole objects (a size probe each, then the rest) take it too. (40 ranges:
    a call of 64 or more on a host not measured yet first times one read through aiohttp,
    ``_backend.CALIBRATE_MIN_RANGES``.)"""
    nginx, data = objects
    names = list(data)
    reqs = [(nginx.url(n), 100 + i, 5000 + i) for i, n in enumerate(names)]
    reader = lsio.Reader(http=lsio.HttpOptions(transport=transport))
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    got = await reader.read_many(reqs)
    assert [bytes(g) for g in got] == [data[n][100 + i:5100 + 2 * i] for i, n in enumerate(names)]
    assert t.sent - before == (len(reqs) if transport == "auto" else 0)
    before = t.sent
    whole = await reader.read_many([(nginx.url(n),) for n in names])
    assert [bytes(g) for g in whole] == [data[n] for n in names]
    assert (t.sent - before >= len(names)) if transport == "auto" else t.sent == before


async def test_concurrent_calls_count_their_own_requests(
        objects: tuple[Nginx, dict[str, bytes]]) -> None:
    """Calls on one loop share its transport; each call's ``stats.operations`` counts the
    requests it sent, not the other's sent meanwhile."""
    nginx, data = objects
    names = list(data)
    reader = lsio.Reader(http=lsio.HttpOptions(multi_range=False, max_transfer_ratio=1.0))
    a = [(nginx.url(n), 10, 100) for n in names[:30]]
    b = [(nginx.url(n), 500, 100) for n in names[10:]]
    got_a, got_b = await asyncio.gather(reader.read_many(a), reader.read_many(b))
    assert [bytes(g) for g in got_a] == [data[n][10:110] for n in names[:30]]
    assert [bytes(g) for g in got_b] == [data[n][500:600] for n in names[10:]]
    assert got_a.stats.transport == got_b.stats.transport == "curl"
    assert (got_a.stats.operations, got_b.stats.operations) == (len(a), len(b))


async def test_big_bodies_never_hold_the_loop(nginx: Nginx) -> None:
    """libcurl drains a busy socket in one call: 16 connections streaming 8 MiB ranges into
    fresh memory held the loop for the whole 128 MiB (~0.1-0.6 s). The transport pauses a
    body when its call's time is up and lands the rest on the next loop turn."""
    path = nginx.root / "transport-big.bin"
    content = random_bytes(128 << 20, seed=17)
    path.write_bytes(content)
    stall = [0.0]

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall[0] = max(stall[0], now - last - 0.001)
            last = now

    reader = lsio.Reader(max_read=8 << 20, http=lsio.HttpOptions(concurrency=16))
    beat = asyncio.ensure_future(heartbeat())
    try:
        results = await reader.read_many([(nginx.url(path.name), 0, None)])
    finally:
        beat.cancel()
    assert bytes(results[0]) == content
    assert results.stats.transport in ("curl", "mixed"), results.stats
    assert stall[0] < 0.05, stall[0]


async def test_bodies_without_a_destination_share_arenas(nginx: Nginx) -> None:
    """Bodies the transport allocates: small ones packed in shared arenas (many per arena,
    several arenas), a big one in memory of its own, a failed request between them taking
    nothing; every body is the source's bytes, also after the batch is freed and collected."""
    path = nginx.root / "transport-arenas.bin"
    content = random_bytes(4 << 20, seed=23)
    path.write_bytes(content)
    arena, big = _curl.lib.LSIO_HTTP_ARENA, _curl.lib.LSIO_HTTP_ARENA_BODY
    ranges = [(0, 4096 * i + i, 4096 + 7 * i) for i in range(600)]  # > 2 arenas of them
    ranges += [(0, 100, big + 1), (1, 0, 10), (0, 3 << 20, 65_536)]
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    reqs = batch(ranges, [None] * len(ranges))
    bodies = await run(t, reqs, [nginx.url(path.name), nginx.url("transport-missing.bin")])
    assert ok(reqs).tolist() == [True] * 601 + [False, True]
    assert sorted(bodies) == [i for i in range(len(ranges)) if i != 601]
    owners = {id(bodies[i].obj) for i in range(600)}
    assert 2 < len(owners) <= -(-sum(4096 + 7 * i + 63 for i in range(600)) // arena) + 1
    assert reqs["arena"][600] == -1 and id(bodies[600].obj) not in owners
    del reqs
    gc.collect()
    for i, (_, start, length) in enumerate(ranges):
        if i != 601:
            assert bytes(bodies[i]) == content[start:start + length], i


async def test_arenas_are_not_held_past_their_bodies(nginx: Nginx) -> None:
    """A batch holds an arena only while bodies may still land in it: with its bodies
    dropped as they come (a sparse read keeps only its pieces), a long batch holds a
    few arenas at a time, not all it filled."""
    path = nginx.root / "transport-arenas-held.bin"
    content = random_bytes(4 << 20, seed=29)
    path.write_bytes(content)
    ranges = [(0, 4096 * i, 4096 + i) for i in range(900)]  # ~4 arenas of bodies
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    reqs = batch(ranges, [None] * len(ranges))
    held: list[int] = []
    arenas: set[int] = set()

    def finished(done: Any, got: dict[int, memoryview]) -> None:
        arenas.update(reqs["arena"][done].tolist())  # (cleared when the batch is freed)
        for i, body in got.items():  # what a sparse read does: copy, then let go
            _, start, length = ranges[i]
            assert bytes(body) == content[start:start + length]
        (w,) = t._waiting.values()
        held.append(sum(a is not None for a in w.arenas))

    await t.run(reqs, [nginx.url(path.name).encode()], [], _curl.Tls(), (20.0, 10.0), 8,
                finished)
    assert ok(reqs).all()
    assert len(arenas - {-1}) >= 4, arenas
    assert max(held) <= 2, held


# -- a body shorter than announced -------------------------------------------------------------

def truncated(head: bytes) -> Iterable[bytes]:
    """A 206 announcing the asked range, then half its body, then the connection's end."""
    start, length = asked(head)
    return [partial(start, length, 1 << 20) + b"x" * (length // 2)]


async def test_eof_before_content_length_is_not_ok(raw: RawServer) -> None:
    raw.reset(truncated)
    bufs = [np.zeros(1000, np.uint8) for _ in range(2)]
    reqs = batch([(0, 0, 1000), (1, 5000, 1000)], [memoryview(b) for b in bufs])
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    await run(t, reqs, [raw.url("a"), raw.url("b")])
    assert not ok(reqs).any() and (reqs["status"] == 206).all()
    assert (reqs["code"] != 0).all() and (reqs["got"] == 500).all()
    assert all(b[500:].tobytes() == bytes(500) for b in bufs)  # nothing past what came


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
async def test_eof_before_content_length_is_an_error(raw: RawServer, transport: str) -> None:
    raw.reset(truncated)
    urls = [raw.url("a.bin"), raw.url("b.bin")]
    reader = lsio.Reader(route="bulk", http=lsio.HttpOptions(retries=0, transport=transport))
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    with pytest.raises(OSError) as info:
        await reader.read_many([(u, 0, 1000) for u in urls])
    assert info.value.filename in urls and info.value.filename in str(info.value)
    assert (t.sent > before) == (transport == "auto")


# -- cancellation --------------------------------------------------------------------------------

def trickle(head: bytes) -> Iterator[bytes | float]:
    """A 206's head, then its body 256 bytes every 10 ms (40 s for 1 MiB)."""
    start, length = asked(head)
    yield partial(start, length, 1 << 30)
    for _ in range(length // 256):
        yield b"\x07" * 256
        yield 0.01


async def test_a_cancelled_call_writes_nothing_more(raw: RawServer,
                                                   objects: tuple[Nginx, dict[str, bytes]]
                                                   ) -> None:
    raw.reset(trickle)
    out = [np.zeros(1 << 20, np.uint8) for _ in range(2)]
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    task = asyncio.ensure_future(lsio.Reader(route="bulk").read_many(
        [(raw.url("a.bin"), 0, 1 << 20), (raw.url("b.bin"), 0, 1 << 20)], out=out))
    deadline = time.monotonic() + 20
    while not all(o.any() for o in out):  # both bodies are landing, straight in `out`
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.01)
    assert t.sent - before == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = [o.copy() for o in out]
    await asyncio.sleep(0.5)  # the server would have sent 12 KiB more by now
    assert all(np.array_equal(o, s) for o, s in zip(out, seen, strict=True))
    assert await asyncio.to_thread(raw.hung_up.wait, 10), "the transfers were not stopped"
    nginx, data = objects
    names = list(data)[:8]
    reqs = batch([(i, 10, 1000) for i in range(8)], [None] * 8)
    bodies = await run(t, reqs, [nginx.url(n) for n in names])
    assert ok(reqs).all()
    assert [bytes(bodies[i]) for i in range(8)] == [data[n][10:1010] for n in names]


# -- fork ------------------------------------------------------------------------------------

FORK = r'''
import asyncio, os, sys, time, traceback, warnings
# 3.12+ warns when a process with threads forks: forking after lsio ran is this test
warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
import numpy as np
import lsio
from lsio.backends.http import _curl

URLS = [sys.argv[1] + name for name in sys.argv[2:]]
WANT = [bytes([i + 1]) * 3000 for i in range(len(URLS))]


async def check(fresh):
    """A call and a batch of its own through this loop's transport: new if ``fresh``."""
    t = _curl.transport_for(lsio.HttpOptions().connections_per_host)
    before = t.sent
    assert (before == 0) == fresh, before
    got = await lsio.read_many([(u, 10, 3000) for u in URLS])
    assert [bytes(g) for g in got] == WANT
    assert t.sent - before == len(URLS), (before, t.sent)
    reqs = np.zeros(len(URLS), _curl.REQ)
    reqs["url"], reqs["start"], reqs["length"], reqs["headers"] = range(len(URLS)), 10, 3000, -1
    bodies = {}
    await t.run(reqs, [u.encode() for u in URLS], [], _curl.Tls(), (20.0, 10.0), 8,
                lambda done, b: bodies.update(b))
    assert ((reqs["flags"] & _curl.OK) != 0).all(), reqs
    assert [bytes(bodies[i]) for i in range(len(URLS))] == WANT


runner = asyncio.Runner()  # the parent keeps its loop, and so its transport
runner.run(check(True))
pid = os.fork()
if pid == 0:
    code = 1
    try:
        asyncio.run(check(True))  # a new loop: a new transport
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)  # a normal exit: finalizers and atexit hooks run in the child
deadline = time.monotonic() + 60
while not (done := os.waitpid(pid, os.WNOHANG))[0]:
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        raise AssertionError("the forked child hung")
    time.sleep(0.02)
assert os.waitstatus_to_exitcode(done[1]) == 0, "the forked child failed"
runner.run(check(False))  # the parent's transport, its keep-alive connections still its own
runner.close()
print("ok")
'''


def test_a_forked_child_has_its_own_transport(nginx: Nginx) -> None:
    names = [f"transport-fork-{i}.bin" for i in range(12)]
    for i, name in enumerate(names):
        (nginx.root / name).write_bytes(bytes([i + 1]) * 5000)
    out = check_ok(run_python(FORK, nginx.url(""), *names))
    assert out.strip().endswith("ok")


# -- proxies ---------------------------------------------------------------------------------

async def test_a_proxied_url_never_takes_the_c_transport(
        objects: tuple[Nginx, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` at a closed port: the call goes through aiohttp (and fails there, as
    it always did); with ``trust_env=False`` the C transport serves it. libcurl itself never
    reads the proxy variables."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy",
                "NO_PROXY", "all_proxy", "ALL_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(var, raising=False)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)  # libcurl reads only the lowercase one for http
    nginx, data = objects
    names = list(data)[:8]
    reqs = [(nginx.url(n), 7, 2000) for n in names]
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    with pytest.raises(OSError) as info:
        await lsio.Reader(route="bulk", http=lsio.HttpOptions(retries=0)).read_many(reqs)
    assert info.value.filename in [u for u, _, _ in reqs]
    assert t.sent == before
    direct = lsio.Reader(route="bulk", http=lsio.HttpOptions(trust_env=False))
    got = await direct.read_many(reqs)
    assert [bytes(g) for g in got] == [data[n][7:2007] for n in names]
    assert t.sent - before == len(reqs)
    batch_reqs = batch([(i, 7, 2000) for i in range(8)], [None] * 8)
    bodies = await run(t, batch_reqs, [nginx.url(n) for n in names])
    assert ok(batch_reqs).all() and bytes(bodies[3]) == data[names[3]][7:2007]



def test_the_c_transport_is_built_where_the_suite_requires_it() -> None:
    """Under ``make test`` on Linux (``LSIO_REQUIRE_URING=1``) the system's libcurl and
    OpenSSL headers are installed: a build that left the transport out fails here."""
    if REQUIRED:
        assert _curl.AVAILABLE, "lsio._curl was not built: see lsio/_build.json"
