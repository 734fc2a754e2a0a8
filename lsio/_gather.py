"""Reads that arrive together, read together.

fsspec's and obspec's callers ask for one range at a time and run many such calls at once
(zarr's ``FsspecStore.get``, VirtualiZarr's ``ManifestStore.get``, ``asyncio.gather`` over
chunks). Each :meth:`Gatherer.read` made during one turn of an event loop joins a batch; the
batch is read as one planned ``read_many`` call, flushed by ``loop.call_soon`` at the end of
that turn (never by a timer: a lone read waits for nothing). Every read gets its own chunk or
its own exception: the batch runs with ``on_error="return"``, and a call that fails as a whole
(a bad request among good ones) is read again one request at a time, so no read pays for
another's mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["Gatherer"]


class _Batch:
    __slots__ = ("requests", "waiters")

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.waiters: list[asyncio.Future[memoryview | None]] = []


class Gatherer:
    """Joins the reads of one event-loop turn into one ``read_many`` call of the reader
    ``reader()`` returns (called at the first flush, so the engine is imported on first use)."""

    __slots__ = ("_reader", "_batches", "_running", "_warm")

    def __init__(self, reader: Callable[[], Reader]) -> None:
        self._reader = reader
        self._batches: dict[tuple[asyncio.AbstractEventLoop, bool], _Batch] = {}
        """The batch each loop is filling this turn (with or without ``missing_ok``); an
        entry lives from a turn's first read to the end of that turn."""
        self._running: set[asyncio.Task[None]] = set()  # the event loop keeps weak refs only
        self._warm = False
        """Whether the engine is loaded: the first call makes the reader (importing lsio's
        engine) and imports the HTTP client on a worker thread, not on the event loop
        (~0.2-0.5 s of imports the loop would otherwise be held for)."""

    async def read(self, request: Any, *, missing_ok: bool = False) -> memoryview | None:
        """The chunk of ``request`` (a path, or ``(path, offset, length)``): a read-only
        memoryview, ``None`` for a missing file with ``missing_ok``; or that request's own
        exception."""
        loop = asyncio.get_running_loop()
        key = (loop, missing_ok)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch()
            loop.call_soon(self._flush, key)
        waiter: asyncio.Future[memoryview | None] = loop.create_future()
        batch.requests.append(request)
        batch.waiters.append(waiter)
        return await waiter

    def _flush(self, key: tuple[asyncio.AbstractEventLoop, bool]) -> None:
        batch = self._batches.pop(key)
        task = key[0].create_task(self._serve(batch, key[1]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _serve(self, batch: _Batch, missing_ok: bool) -> None:
        try:
            await self._read(batch.requests, batch.waiters, missing_ok)
        except Exception as exc:  # the whole call failed (a deadline): every read has its error
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:  # cancelled with its loop: nobody waits forever
            for waiter in batch.waiters:
                waiter.cancel()  # a no-op on a done future

    async def _read(self, requests: list[Any], waiters: list[asyncio.Future[memoryview | None]],
                    missing_ok: bool) -> None:
        if not self._warm:
            if _unloaded(requests):
                await asyncio.to_thread(_load, self._reader, requests)
            self._warm = True
        reader = self._reader()
        try:
            results = await reader.read_many(requests, missing_ok=missing_ok, on_error="return")
        except (ValueError, TypeError) as exc:
            if len(requests) == 1:
                if not waiters[0].done():
                    waiters[0].set_exception(exc)
                return
            # one bad request refused the whole call: each request on its own
            await asyncio.gather(*(self._read([r], [w], missing_ok)
                                   for r, w in zip(requests, waiters, strict=True)))
            return
        errors = results.errors
        for i, waiter in enumerate(waiters):
            if waiter.done():  # its caller was cancelled
                continue
            if errors[i]:
                waiter.set_exception(results[i])
            else:
                waiter.set_result(results[i])


_HTTP = ("lsio.backends.http._backend", "lsio.backends.cloud")


def _urls(requests: list[Any]) -> bool:
    from ._url import is_url

    return any(is_url(r if isinstance(r, str) else r[0]) for r in requests
               if isinstance(r, str) or (isinstance(r, tuple) and r and isinstance(r[0], str)))


def _unloaded(requests: list[Any]) -> bool:
    """Whether reading ``requests`` would import something first (lsio's engine, or the
    HTTP client for URLs): then that is done off the loop."""
    import sys

    if "lsio._reader" not in sys.modules:
        return True
    return any(m not in sys.modules for m in _HTTP) and _urls(requests)


def _load(reader: Callable[[], Reader], requests: list[Any]) -> None:
    """Make the reader and import what reading ``requests`` needs (on a worker thread)."""
    reader()
    if _urls(requests):
        import importlib

        for module in _HTTP:
            importlib.import_module(module)
