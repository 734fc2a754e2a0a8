"""A TCP proxy that waits ``delay`` seconds before each answer: what a bucket's round trip
looks like, on loopback, without ``netem`` (this kernel has none).

Each connection forwards the client's bytes at once; the first upstream bytes after a
client's request are held ``delay`` seconds, the rest of that answer flows as it comes.
Runs its own event loop on a daemon thread, so any client (sync or async) can use it:

    with LatencyProxy("127.0.0.1", nginx.port, delay=0.030) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/file"
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LatencyProxy:
    def __init__(self, host: str, port: int, *, delay: float = 0.030) -> None:
        self.upstream = (host, port)
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="latency-proxy")

    def start(self) -> LatencyProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        fut.result(timeout=10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

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

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0.01)  # the connection handlers finish their cleanup

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
