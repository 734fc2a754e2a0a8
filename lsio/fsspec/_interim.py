"""Gathering until :mod:`lsio._gather` is in: the same contract, kept minimal.

``Gatherer(reader_factory)``; ``await gatherer.read(request, missing_ok=False)``: every
read of one event-loop turn becomes one :func:`lsio.fsspec._calls.read_return` call,
flushed by ``loop.call_soon`` at the end of the turn (per loop, never a timer); each
caller gets its chunk, ``None`` (missing, with ``missing_ok``) or its own exception.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._calls import read_return

if TYPE_CHECKING:
    from .._reader import Reader

__all__ = ["Gatherer"]


class Gatherer:
    def __init__(self, reader_factory: Callable[[], Reader]) -> None:
        self._factory = reader_factory
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[
            bool, list[tuple[Any, asyncio.Future[Any]]]]] = weakref.WeakKeyDictionary()

    async def read(self, request: Any, missing_ok: bool = False) -> memoryview | None:
        loop = asyncio.get_running_loop()
        turn = self._pending.get(loop)
        if turn is None:
            turn = self._pending[loop] = {}
            loop.call_soon(self._flush, loop)
        future: asyncio.Future[Any] = loop.create_future()
        turn.setdefault(missing_ok, []).append((request, future))
        return await future  # type: ignore[no-any-return]

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._pending.pop(loop, {})
        for missing_ok, waiting in turn.items():
            task = loop.create_task(self._serve(waiting, missing_ok))
            task.add_done_callback(_retrieve)

    async def _serve(self, waiting: list[tuple[Any, asyncio.Future[Any]]],
                     missing_ok: bool) -> None:
        requests = [r if isinstance(r, tuple) else (r, 0, None) for r, _ in waiting]
        try:
            outs = await read_return(self._factory(), requests, missing_ok)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        for (_, future), out in zip(waiting, outs, strict=True):
            if future.done():
                continue
            if isinstance(out, BaseException):
                future.set_exception(out)
            else:
                future.set_result(out)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
