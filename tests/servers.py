"""Servers for the remote tests (and the HTTP benchmark): a real nginx on loopback serving a
directory, an in-process aiohttp range server with fault injection, and a moto S3 server in a
subprocess.

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
- ``status<C>``: always answers status C.
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

__all__ = ["Azurite", "FaultServer", "MotoServer", "Nginx", "free_port", "nginx_binary",
           "terminate"]

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
                 tls: tuple[str, str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.workers = workers
        self.tls = tls
        """(certificate, key) PEM files: serve HTTPS instead of HTTP."""
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
                        f"        ssl_certificate_key {self.tls[1]}" if self.tls else "")))
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
        if kind == "slow" and first_n:
            await asyncio.sleep(2)
        if kind == "hold":
            await asyncio.sleep(0.02)
        data = self.files.get(name)
        if data is None:
            return web.Response(status=404, text="no such file")
        size = len(data)
        rng = request.headers.get("Range")
        m = _RANGE.match(rng) if rng else None
        if kind == "norange" or m is None or (not m.group(1) and not m.group(2)):
            return web.Response(body=data, status=200)
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
        headers = {"Content-Range": f"bytes {start}-{end - 1}/{size}"}
        if kind in ("reset", "badlen") and first_n:
            resp = web.StreamResponse(status=206, headers=headers)
            resp.content_length = len(body) + (10 if kind == "badlen" else 0)
            await resp.prepare(request)
            await resp.write(body if kind == "badlen" else body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=body, status=206, headers=headers)


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
        for _attempt in range(3):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}/{self.account}"
            self._proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--location", self.location, "--silent", "--skipApiVersionCheck", "--loose",
                 "--disableTelemetry"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return self
            self._kill()
        raise RuntimeError("azurite did not start")

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

        from lsio.backends._sharedkey import SharedKey

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

        from lsio.backends._sharedkey import sign

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
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def stop(self) -> None:
        self._kill()
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = ""

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
