"""An obspec store on lsio: what obstore's callers (VirtualiZarr's registry and parsers,
zarr's ``ObjectStore``, obspec-utils' readers) ask for, served by lsio's reader.

Every ``_async`` method is the store; its blocking twin runs it on lsio's private loop
thread (``lsio._sync``), except ``get_range`` and ``get_ranges``, which are one
``read_many_sync`` call (a small local read is then served on the calling thread).
Concurrent ``get_range_async`` and ``get_async`` calls made in one turn of an event loop
(``asyncio.gather`` over chunks, as VirtualiZarr's ``ManifestStore`` does) become one planned
``read_many`` call (:class:`lsio._gather.Gatherer`); ``get_ranges`` is one call of its own.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._redact import redacting
from .._url import redact
from ._paths import Root, root_of
from ._result import GetResult

if TYPE_CHECKING:
    from obspec import GetOptions, ListResult, ObjectMeta

    from .._gather import Gatherer
    from .._objects import ObjectInfo
    from .._readahead import ReadAhead
    from .._reader import Reader

__all__ = ["Store"]

_UNSUPPORTED = ("if_match", "if_none_match", "if_modified_since", "if_unmodified_since",
                "version")
"""``GetOptions`` lsio cannot honour: it sends no conditional or versioned requests."""


class Store:
    """An obspec store over a URL prefix or a local directory, read with lsio.

    Parameters
    ----------
    prefix
        ``s3://bucket/dir``, ``gs://bucket``, ``az://container/dir``, ``https://host/path``,
        a local directory or a ``file://`` URL. The paths given to the methods are relative
        to it (``"a/b.nc"``); a path that leaves it (``..``, absolute) is a ``ValueError``.
    reader
        The :class:`lsio.Reader` to read with; or give its keyword arguments as
        ``settings`` (``preset=``, ``http=lsio.HttpOptions(...)``...), and the store makes
        its reader on first use.

    The store pickles (its prefix and settings; secrets given in the settings travel in the
    pickle), so it can be handed to Dask workers.
    """

    def __init__(self, prefix: str | os.PathLike[str], *, reader: Reader | None = None,
                 **settings: Any) -> None:
        if reader is not None and settings:
            raise ValueError("lsio: give lsio.obspec.Store either reader= or the Reader's "
                             f"settings, not both (got {sorted(settings)})")
        self._given = os.fspath(prefix)
        self._root: Root = root_of(prefix)
        self._settings = settings
        self._reader = reader
        self._given_reader = reader
        """The reader given (it pickles with the store), or ``None``: the store's own, made
        from ``settings`` on first use (the settings pickle, and it is made again)."""
        self._gatherer: Gatherer | None = None
        self._ahead: ReadAhead | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._given, self._given_reader, self._settings))

    def __repr__(self) -> str:
        return f"lsio.obspec.Store({redact(repr(self._root.url))})"

    @property
    def prefix(self) -> str:
        """The root's path as obstore's stores give it: inside the bucket or host for a URL
        (``"dir"`` for ``s3://bucket/dir``), the absolute directory for a local root."""
        return self._root.prefix

    @property
    def url(self) -> str:
        """The root as a URL (``file://...`` for a local directory)."""
        return self._root.url

    @property
    def reader(self) -> Reader:
        """The :class:`lsio.Reader` this store reads with (made on first use)."""
        if self._reader is None:
            from .._reader import Reader

            self._reader = Reader(**self._settings)
        return self._reader

    def _gather(self) -> Gatherer:
        if self._gatherer is None:
            from .._gather import Gatherer

            self._gatherer = Gatherer(lambda: self.reader)
        return self._gatherer

    def _read_ahead(self) -> ReadAhead:
        """Ranges read one at a time, with sequential read-ahead (:mod:`lsio._readahead`)."""
        if self._ahead is None:
            from .._readahead import ReadAhead

            self._ahead = ReadAhead(self._gather())
        return self._ahead

    # -- get_range, get_ranges ---------------------------------------------------------------
    @redacting
    async def get_range_async(self, path: str, *, start: int, end: int | None = None,
                              length: int | None = None) -> memoryview:
        """The bytes of ``path`` from ``start`` (``end`` exclusive, or ``length`` bytes;
        exactly one of them): a read-only memoryview, shorter if the object ends first.
        Concurrent calls of one loop turn are read as one planned call."""
        full, start, n = self._range(path, start, end, length)
        view = await self._read_ahead().read(full, start, n)
        assert view is not None
        return _in_object(view, full, start, n)

    @redacting
    def get_range(self, path: str, *, start: int, end: int | None = None,
                  length: int | None = None) -> memoryview:
        """Blocking :meth:`get_range_async`."""
        full, start, n = self._range(path, start, end, length)
        view = self.reader.read_many_sync([(full, start, n)])[0]
        return _in_object(view, full, start, n)

    @redacting
    async def get_ranges_async(self, path: str, *, starts: Sequence[int],
                               ends: Sequence[int] | None = None,
                               lengths: Sequence[int] | None = None) -> list[memoryview]:
        """The bytes of ``path`` in each range (as :meth:`get_range_async`), read as one
        planned ``read_many`` call (near ranges merged, far ones in parallel)."""
        full, reqs = self._ranges(path, starts, ends, lengths)
        got = await self.reader.read_many(reqs)
        return [_in_object(v, full, s, n) for v, (_, s, n) in zip(got, reqs, strict=True)]

    @redacting
    def get_ranges(self, path: str, *, starts: Sequence[int],
                   ends: Sequence[int] | None = None,
                   lengths: Sequence[int] | None = None) -> list[memoryview]:
        """Blocking :meth:`get_ranges_async`."""
        full, reqs = self._ranges(path, starts, ends, lengths)
        got = self.reader.read_many_sync(reqs)
        return [_in_object(v, full, s, n) for v, (_, s, n) in zip(got, reqs, strict=True)]

    def _range(self, path: str, start: int, end: int | None, length: int | None
               ) -> tuple[str, int, int]:
        """The full path, start and length of a range (:func:`_span`)."""
        return (self._root.join(path), *_span(path, start, end, length))

    def _ranges(self, path: str, starts: Sequence[int], ends: Sequence[int] | None,
                lengths: Sequence[int] | None) -> tuple[str, list[tuple[str, int, int]]]:
        if (ends is None) == (lengths is None):
            raise ValueError(f"lsio: get_ranges of {redact(repr(path))}: give exactly one "
                             "of ends= and lengths=")
        other = list(ends if ends is not None else lengths)  # type: ignore[arg-type]
        if len(other) != len(starts):
            raise ValueError(f"lsio: get_ranges of {redact(repr(path))}: {len(starts)} "
                             f"starts but {len(other)} {'ends' if ends is not None else 'lengths'}")
        reqs = []
        full = self._root.join(path)
        for s, o in zip(starts, other, strict=True):
            first, n = _span(path, s, o, None) if ends is not None else _span(path, s, None, o)
            reqs.append((full, first, n))
        return full, reqs

    # -- get, head -----------------------------------------------------------------------------
    @redacting
    async def get_async(self, path: str, *, options: GetOptions | None = None) -> GetResult:
        """The object at ``path`` (or the ``range`` of ``options``; ``head=True``: its
        metadata only) with its metadata, attributes and the range returned. Conditional
        and versioned gets (``if_match``...) are not supported: ``NotImplementedError``."""
        import asyncio

        full = self._root.join(path)
        request, head_only = _get_request(full, path, options or {})
        if head_only:
            info = await self._info(full)
            return GetResult(memoryview(b""), _meta(path, info), (0, info.size),
                             info.attributes)
        view, info = await asyncio.gather(self._gather().read(request), self._info(full))
        assert view is not None
        start = request[1]
        if start < 0:  # a suffix
            start = info.size - len(view)
        elif start >= info.size and start > 0:
            raise _past_end(full, start, info.size)
        return GetResult(view, _meta(path, info), (start, start + len(view)), info.attributes)

    def get(self, path: str, *, options: GetOptions | None = None) -> GetResult:
        """Blocking :meth:`get_async`."""
        from .._sync import run_sync

        return run_sync(self.get_async(path, options=options))

    @redacting
    async def head_async(self, path: str) -> ObjectMeta:
        """The metadata of the object at ``path``: ``path``, ``size``, ``last_modified``
        (UTC), ``e_tag`` and ``version``; ``FileNotFoundError`` if there is none."""
        return _meta(path, await self._info(self._root.join(path)))

    def head(self, path: str) -> ObjectMeta:
        """Blocking :meth:`head_async`."""
        from .._sync import run_sync

        return run_sync(self.head_async(path))

    async def _info(self, full: str) -> ObjectInfo:
        from .._objects import object_info

        return await object_info(self.reader, full)

    # -- list ----------------------------------------------------------------------------------
    def list_async(self, prefix: str | None = None, *, offset: str | None = None
                   ) -> AsyncIterator[list[ObjectMeta]]:
        """The objects under ``prefix`` (whole segments; recursive) whose path is after
        ``offset``, in chunks of up to 1000 (an object store's listing page). Local
        directories and object stores list; plain HTTP(S) raises ``NotImplementedError``."""
        from ._list import list_chunks

        return list_chunks(self.reader, self._root, prefix, offset)

    def list(self, prefix: str | None = None, *, offset: str | None = None
             ) -> Iterator[list[ObjectMeta]]:
        """Blocking :meth:`list_async`: each chunk is fetched as the iteration reaches it."""
        from .._sync import run_sync

        chunks = self.list_async(prefix, offset=offset)
        try:
            while True:
                try:
                    yield run_sync(anext(chunks))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            run_sync(chunks.aclose())  # type: ignore[attr-defined]

    @redacting
    async def list_with_delimiter_async(self, prefix: str | None = None
                                        ) -> ListResult[Sequence[ObjectMeta]]:
        """The objects directly under ``prefix`` and the common prefixes one level below
        it (``"a/b"``, no trailing ``/``); paths keep ``prefix``."""
        from ._list import list_level

        prefixes, objects = await list_level(self.reader, self._root, prefix)
        return {"common_prefixes": prefixes, "objects": objects}

    def list_with_delimiter(self, prefix: str | None = None) -> ListResult[Sequence[ObjectMeta]]:
        """Blocking :meth:`list_with_delimiter_async`."""
        from .._sync import run_sync

        return run_sync(self.list_with_delimiter_async(prefix))


def _rebuild(prefix: str, reader: Reader | None, settings: dict[str, Any]) -> Store:
    """A pickled :class:`Store`, made again (its reader from its settings)."""
    return Store(prefix, reader=reader, **settings)


def _span(path: str, start: int, end: int | None, length: int | None) -> tuple[int, int]:
    """A range's ``(start, length)`` as Python ints (numpy integers are welcome: parsers
    take offsets from numpy arrays); ``ValueError`` naming ``path`` for a range that is not
    one (negative, empty, not integers, both or neither of ``end`` and ``length``)."""
    if (end is None) == (length is None):
        raise ValueError(f"lsio: range of {redact(repr(path))}: give exactly one of end= and "
                         f"length= (got end={end!r}, length={length!r})")
    try:
        if any(isinstance(v, bool) for v in (start, end, length)):
            raise TypeError
        first = operator.index(start)
        n = operator.index(end) - first if end is not None else operator.index(length or 0)
    except TypeError:
        first = n = -1
    if first < 0:
        raise ValueError(f"lsio: range of {redact(repr(path))}: start, end and length must "
                         f"be ints, start >= 0 (got start={start!r}, end={end!r}, "
                         f"length={length!r})")
    if n <= 0:
        raise ValueError(f"lsio: range of {redact(repr(path))}: start={first}, "
                         f"end={first + n} is empty")
    return first, n


def _is_int(value: object) -> bool:
    return hasattr(value, "__index__") and not isinstance(value, bool)


def _past_end(full: str, start: int, size: int | None) -> OSError:
    told = "" if size is None else f" ({size} bytes)"
    return OSError(errno.EINVAL, f"range starts at {start}, at or past the end of the "
                   f"object{told}", full)


def _in_object(view: memoryview | None, full: str, start: int, n: int) -> memoryview:
    """A range's bytes; an empty answer to a range that is not empty started at or past the
    object's end: an error, as obstore's."""
    assert view is not None
    if len(view) == 0 and n > 0:
        raise _past_end(full, start, None)
    return view


def _get_request(full: str, path: str, options: GetOptions) -> tuple[tuple[str, int, int | None],
                                                                     bool]:
    """The read ``options`` ask for (``(full, start, length or None)``; a negative start:
    a suffix) and whether they ask for the metadata only."""
    unknown = set(options) - {"range", "head", *_UNSUPPORTED}
    if unknown:
        raise ValueError(f"lsio: get of {redact(repr(path))}: unknown options {sorted(unknown)}")
    for name in _UNSUPPORTED:
        if options.get(name) is not None:
            raise NotImplementedError(f"lsio: get of {redact(repr(path))}: option {name!r} "
                                      "is not supported (lsio sends no conditional or "
                                      "versioned requests)")
    head_only = bool(options.get("head", False))
    rng: Any = options.get("range")
    if rng is None:
        return (full, 0, None), head_only
    if isinstance(rng, dict):
        if set(rng) == {"offset"} and _is_int(rng["offset"]) and rng["offset"] >= 0:
            return (full, operator.index(rng["offset"]), None), head_only
        if set(rng) == {"suffix"} and _is_int(rng["suffix"]) and rng["suffix"] > 0:
            return (full, -operator.index(rng["suffix"]), None), head_only
    elif isinstance(rng, Sequence) and len(rng) == 2:
        start, end = rng
        return (full, *_span(path, start, end, None)), head_only
    raise ValueError(f"lsio: get of {redact(repr(path))}: range {rng!r} is not (start, end), "
                     "{'offset': n} or {'suffix': n}")


def _meta(path: str, info: ObjectInfo) -> ObjectMeta:
    return {"path": path, "last_modified": info.last_modified, "size": info.size,
            "e_tag": info.etag, "version": info.version}
