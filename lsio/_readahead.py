"""Read-ahead for callers that ask one range at a time.

zarr caps the reads it has in flight (``async.concurrency``, 10), and each one that finishes
lets the next one start alone, so gathering the reads of one event-loop turn
(:mod:`lsio._gather`) sees batches of one after the first turn. What these callers read
is mostly sequential, though: zarr walks chunks in order, HDF5 and GRIB files store them in
order. So, as a kernel's page cache does for a file read sequentially, a read that continues
where the last read of its path ended starts a *window*: one planned read of the bytes from
there on, doubling from :data:`READAHEAD_FIRST` to :data:`READAHEAD_MAX`; the reads that fall
inside it are sliced out of it (no copy), and once a read passes a window's middle the next
window is asked for, so the pipe stays full. A read that does not continue a stream goes to
the gatherer as it is, and reads nothing extra.

A window serves the bytes the file had when it was read, for at most
:data:`READAHEAD_TTL` seconds and only while its stream goes on; the windows of one
filesystem or store hold at most :data:`READAHEAD_BUDGET` bytes (the oldest go first).
A window that fails costs nothing: each read it would have served is read on its own and
gets its own result or error.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ._defaults import (
    READAHEAD_BUDGET,
    READAHEAD_FIRST,
    READAHEAD_GAP,
    READAHEAD_MAX,
    READAHEAD_TTL,
)

if TYPE_CHECKING:
    from ._gather import Gatherer

__all__ = ["ReadAhead"]


class _Window:
    __slots__ = ("path", "start", "length", "born", "data")

    def __init__(self, path: str, start: int, length: int,
                 data: asyncio.Future[memoryview | None]) -> None:
        self.path, self.start, self.length = path, start, length
        self.born = time.monotonic()
        self.data = data

    @property
    def end(self) -> int:
        return self.start + self.length


class _Stream:
    """One path's sequential reading: where its reads have got to, and its window size."""

    __slots__ = ("reached", "size", "windows")

    def __init__(self, reached: int) -> None:
        self.reached = reached  # the furthest end of a read or window
        self.size = READAHEAD_FIRST // 2  # doubled before the first window
        self.windows: list[_Window] = []


class ReadAhead:
    """Sequential read-ahead over a :class:`Gatherer`; :meth:`read` is its door."""

    __slots__ = ("_gatherer", "_streams", "_held", "_bytes", "_running")

    def __init__(self, gatherer: Gatherer) -> None:
        self._gatherer = gatherer
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._held: OrderedDict[int, _Window] = OrderedDict()
        """Every live window, oldest first (by ``id``), for the byte budget."""
        self._bytes = 0
        self._running: set[asyncio.Future[memoryview | None]] = set()

    async def read(self, path: str, offset: int, length: int | None) -> memoryview | None:
        """The bytes ``[offset, offset + length)`` of ``path`` (fewer past its end; ``None``:
        to its end), as :meth:`Gatherer.read` gives them."""
        if length is None or offset < 0 or length <= 0 or length >= READAHEAD_MAX:
            return await self._gatherer.read((path, offset, length))
        stream = self._streams.get(path)
        if stream is not None:
            window = self._covering(stream, offset, length)
            if window is not None:
                try:
                    data = await asyncio.shield(window.data)
                except Exception:  # the window failed: this read is its own
                    self._drop(stream, window)
                    return await self._gatherer.read((path, offset, length))
                self._ahead(path, stream, window, offset + length, data)
                if data is None:
                    return None
                return data[offset - window.start:offset - window.start + length]
            self._streams.move_to_end(path)
            if stream.reached <= offset <= stream.reached + READAHEAD_GAP:
                window = self._open(path, stream, offset, length)
                return await self.read(path, offset, length) if window else None
            if offset > stream.reached or offset + length < stream.reached - 2 * READAHEAD_MAX:
                self._forget(path)  # a jump: this is not the stream (any more)
                stream = None
            # else just behind the stream (a read that was already on its way): as it is
        if stream is None:
            self._streams[path] = _Stream(offset + length)
            while len(self._streams) > 64:
                self._forget(next(iter(self._streams)))
        return await self._gatherer.read((path, offset, length))

    def _covering(self, stream: _Stream, offset: int, length: int) -> _Window | None:
        now = time.monotonic()
        for window in stream.windows:
            if now - window.born > READAHEAD_TTL:
                continue
            if window.start <= offset and offset + length <= window.end:
                return window
        return None

    def _open(self, path: str, stream: _Stream, start: int, at_least: int) -> _Window:
        stream.size = min(stream.size * 2, READAHEAD_MAX)
        length = max(stream.size, at_least)
        data = asyncio.ensure_future(self._gatherer.read((path, start, length)))
        self._running.add(data)
        data.add_done_callback(self._running.discard)
        window = _Window(path, start, length, data)
        stream.windows.append(window)
        stream.reached = max(stream.reached, window.end)
        self._held[id(window)] = window
        self._bytes += length
        while self._bytes > READAHEAD_BUDGET and len(self._held) > 1:
            old = next(iter(self._held.values()))
            self._drop(self._streams.get(old.path), old)
        return window

    def _ahead(self, path: str, stream: _Stream, window: _Window, end: int,
               data: memoryview | None) -> None:
        """After a read that ended at ``end`` inside ``window``: past its middle, ask for
        the next window (unless the file ended in this one, or it is asked already);
        windows wholly behind ``end``'s window are done with."""
        for old in [w for w in stream.windows if w.end <= window.start]:
            self._drop(stream, old)
        if data is None or len(data) < window.length:  # the file ends inside it
            return
        if end - window.start < window.length // 2 or stream.reached > window.end:
            return
        self._open(path, stream, window.end, 0)

    def _drop(self, stream: _Stream | None, window: _Window) -> None:
        if self._held.pop(id(window), None) is not None:
            self._bytes -= window.length
        if stream is not None and window in stream.windows:
            stream.windows.remove(window)

    def _forget(self, path: str) -> None:
        stream = self._streams.pop(path)
        for window in list(stream.windows):
            self._drop(stream, window)
