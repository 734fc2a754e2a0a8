"""Servers for the remote tests: an in-process aiohttp range server with fault injection,
and a moto S3 server in a subprocess.

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
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from benchmarks.nginx import free_port, terminate

__all__ = ["FaultServer", "MotoServer"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


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
