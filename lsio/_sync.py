"""The blocking twins run their coroutine on one private daemon event-loop thread.

This works from plain scripts and from inside a running loop (a Jupyter cell): the caller's
thread blocks on a ``concurrent.futures.Future`` while lsio's own loop does the work, as
zarr and fsspec do. No ``nest_asyncio``.

The call's outcome is handed over as is: the very exception object the coroutine raised
(``asyncio.run_coroutine_threadsafe`` rebuilds a ``TimeoutError`` from its args, losing its
``filename``, ``request_index`` and notes). A ``KeyboardInterrupt`` (or any exception a
signal handler raises) in the waiting thread cancels the call and waits, up to
:data:`SETTLE_SECONDS`, for it to end: a cancelled read returns only once nothing writes
into the caller's buffers any more, so ``out=`` is quiet when the interrupt is raised. A
second interrupt during that wait raises at once; the cancelled reads keep the buffers
referenced until their completions land.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _fork
from ._defaults import SETTLE_SECONDS

__all__ = ["Escaped", "boxed", "on_loop_thread", "run_sync"]

T = TypeVar("T")


_lock = _fork.lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


@_fork.forget_in_child
def _forget() -> None:
    """A forked child makes its own loop thread: the parent's one does not run there."""
    global _loop, _thread
    _fork.keep(_loop, _thread)
    _loop = _thread = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="lsio-sync-loop",
                                      daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def on_loop_thread() -> bool:
    """Whether the caller is lsio's private loop thread (where blocking would deadlock)."""
    return _thread is not None and threading.current_thread() is _thread


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on lsio's private loop thread and return its result."""
    loop = _get_loop()
    if on_loop_thread():
        coro.close()
        raise RuntimeError("lsio: a *_sync function was called from lsio's own loop thread; "
                           "await the async function instead")
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    ended = threading.Event()  # (a cancelled Future wakes no concurrent.futures.wait)
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(boxed(coro))
        tasks.append(task)
        task.add_done_callback(lambda t: _hand_over(t, outcome, ended))

    def cancel() -> None:  # runs after start(): the loop runs its callbacks in order
        tasks[0].cancel()

    loop.call_soon_threadsafe(start)
    try:
        return outcome.result()
    except BaseException:
        if outcome.done():
            raise  # the call's own outcome
        # e.g. KeyboardInterrupt: stop the work, and give the reads in flight a moment
        # to land (a second Ctrl-C ends this wait at once)
        loop.call_soon_threadsafe(cancel)
        ended.wait(SETTLE_SECONDS)
        raise


async def boxed(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, with a ``KeyboardInterrupt`` or ``SystemExit`` (a user's callback may raise
    one on the loop thread) handed over as its outcome: asyncio re-raises those out of
    ``run_forever``, which would end the loop thread before the waiting caller hears of it
    (and leave it waiting for ever)."""
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise Escaped(exc) from None


class Escaped(Exception):
    """Carries a ``KeyboardInterrupt``/``SystemExit`` out of a task as an ordinary error."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


def _hand_over(task: asyncio.Task[T], outcome: concurrent.futures.Future[T],
               ended: threading.Event) -> None:
    """Hand the finished ``task``'s outcome to the waiting thread, exceptions unchanged."""
    ended.set()
    if task.cancelled():
        outcome.cancel()
        return
    exc = task.exception()
    if isinstance(exc, Escaped):
        outcome.set_exception(exc.exc)
    elif exc is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())
