"""The caller's callbacks (``progress=``, pipeline hand-offs, ``iter_many``'s queue) during a
call's I/O: one that raises ends the call, and the call raises its exception.

The backends call ``on_progress`` from wherever completions are processed: the ring's pump
(a plain event-loop callback, where an exception would only reach the loop's log and the
call would go on, or never finish), a thread backend's gather, the HTTP backend's batched
flush. So the callback never raises into the backend: :class:`Guard` keeps the first
exception and cancels the I/O it guards. Cancellation is the one way every backend stops a
read, and each waits there until nothing writes into the caller's buffers any more; only
then does the call raise the callback's exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["Guard"]

T = TypeVar("T")


class Guard:
    """Guards the I/O of one call (or one part of it) against its callbacks."""

    __slots__ = ("error", "_job")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        """The first exception a guarded callback raised."""
        self._job: asyncio.Future[Any] | None = None

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn``, which never raises: its exception ends the guarded I/O instead (and
        after one has, later calls are not made)."""
        def guarded(*args: Any) -> None:
            if self.error is not None:
                return
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - the caller's: raised by run()
                self.fail(exc)
        return guarded

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` (the first one wins) and cancel the guarded I/O."""
        if self.error is None:
            self.error = exc
        if self._job is not None:
            self._job.cancel()

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` (in a task of its own, so a callback may cancel it from
        anywhere); if a callback failed meanwhile, raise its exception once ``work`` has
        ended (it wins over the error that ending may cause). A cancellation of the caller
        stays a cancellation."""
        if self.error is not None:  # a callback failed before this I/O started
            if asyncio.iscoroutine(work):
                work.close()
            raise self.error
        job: asyncio.Future[T] = asyncio.ensure_future(work)
        self._job = job
        try:
            result = await job
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self.error is None or (me is not None and me.cancelling()):
                raise
        except BaseException:
            if self.error is None:
                raise  # the I/O's own failure; a callback's, which came first, wins
        finally:
            self._job = None
        if self.error is not None:
            raise self.error
        return result
