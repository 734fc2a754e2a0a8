"""A TCP proxy that waits ``delay`` seconds before each answer: what a bucket's round trip
looks like, on loopback, without ``netem`` (this kernel has none).

Each connection forwards the client's bytes at once; the first upstream bytes after a
client's request are held ``delay`` seconds, the rest of that answer flows as it comes.
It runs in a process of its own: a bucket does not share the client's interpreter, and a
proxy thread in the benchmark's process took the GIL from the contenders while it copied
every answer (lsio's decoding workers waited on it: 96 HRRR-size GRIB2 fields took 0.6 s
longer behind the proxy than on loopback). Any client (sync or async) can use it:

    with LatencyProxy("127.0.0.1", nginx.port, delay=0.030) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/file"
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent


class LatencyProxy:
    """The proxy's process: ``start`` launches it and learns its port, ``stop`` ends it."""

    def __init__(self, host: str, port: int, *, delay: float = 0.030) -> None:
        self.upstream = (host, port)
        self.delay = delay
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> LatencyProxy:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
            str(_ROOT), os.environ.get("PYTHONPATH")])))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency_proxy", self.upstream[0],
             str(self.upstream[1]), repr(self.delay)], stdout=subprocess.PIPE, text=True,
            env=env, cwd=_ROOT)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Server:
    """The proxy itself, in the child process."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.upstream = (host, port)
        self.delay = delay
        self._tasks: set[asyncio.Future[None]] = set()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        asked = asyncio.Event()  # set by a request, cleared once its answer started
        tasks = [asyncio.ensure_future(self._up(reader, up_w, asked)),
                 asyncio.ensure_future(self._down(up_r, writer, asked))]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
            for w in (writer, up_w):
                w.close()

    async def _up(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                  asked: asyncio.Event) -> None:
        while data := await src.read(1 << 16):
            asked.set()
            dst.write(data)
            await dst.drain()

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    asked: asyncio.Event) -> None:
        while data := await src.read(1 << 16):
            if asked.is_set():
                asked.clear()
                await asyncio.sleep(self.delay)
            dst.write(data)
            await dst.drain()


def main() -> None:
    host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(_Server(host, port, delay).serve())


if __name__ == "__main__":
    main()
