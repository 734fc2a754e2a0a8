"""What ``get`` returns: the bytes lsio read (zero-copy), the object's metadata, the range
the bytes are, and the object's attributes; iterable synchronously and asynchronously."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING

from .._defaults import STREAM_CHUNK

if TYPE_CHECKING:
    from obspec import ObjectMeta

__all__ = ["GetResult"]


class GetResult:
    """The answer of :meth:`lsio.obspec.Store.get` (and ``get_async``): obspec's
    ``GetResult`` and ``GetResultAsync`` at once. The data is in memory already:
    :meth:`buffer` is the read-only memoryview lsio read into, iteration hands it over in
    pieces of at most 10 MiB."""

    __slots__ = ("_attributes", "_data", "_meta", "_range")

    def __init__(self, data: memoryview, meta: ObjectMeta, range: tuple[int, int],
                 attributes: Mapping[str, str]) -> None:
        self._data = data
        self._meta = meta
        self._range = range
        self._attributes = dict(attributes)

    def __repr__(self) -> str:
        return f"lsio.obspec.GetResult(path={self._meta['path']!r}, range={self._range})"

    @property
    def attributes(self) -> dict[str, str]:
        """The object's attributes its store sent (``Content-Type``...); none for files."""
        return self._attributes

    @property
    def meta(self) -> ObjectMeta:
        """The object's metadata (as :meth:`lsio.obspec.Store.head` gives it)."""
        return self._meta

    @property
    def range(self) -> tuple[int, int]:
        """``(start, stop)`` of the bytes returned in the object (``stop`` exclusive)."""
        return self._range

    def buffer(self) -> memoryview:
        """The bytes: the read-only memoryview lsio read them into (no copy)."""
        return self._data

    async def buffer_async(self) -> memoryview:
        """:meth:`buffer` (the bytes are in memory already)."""
        return self._data

    def __iter__(self) -> Iterator[memoryview]:
        data = self._data
        for start in range(0, len(data), STREAM_CHUNK):
            yield data[start:start + STREAM_CHUNK]

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        for piece in self:
            yield piece
