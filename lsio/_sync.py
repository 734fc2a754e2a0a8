"""The blocking twins run their coroutine on one private daemon event-loop thread.

This works from plain scripts and from inside a running loop (a Jupyter cell): the caller's
thread blocks on a ``concurrent.futures.Future`` while lsio's own loop does the work, as
zarr and fsspec do. No ``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _fork

__all__ = ["on_loop_thread", "run_sync"]

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
        if _loop is None or _loop.is_closed():
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
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # e.g. KeyboardInterrupt: stop the work (its buffers stay safe)
        raise
