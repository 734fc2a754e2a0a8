"""Small asyncio helpers for waits that must outlast a cancellation (the kernel or a
thread may still write into memory the caller owns)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["uncancellable"]


async def uncancellable(fut: asyncio.Future[Any]) -> None:
    """Wait for ``fut`` however often the waiting task is cancelled again meanwhile."""
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                continue
    consume(fut)


def consume(fut: asyncio.Future[Any]) -> None:
    """Mark ``fut``'s outcome as seen (asyncio logs exceptions nobody retrieved)."""
    if not fut.cancelled():
        fut.exception()
