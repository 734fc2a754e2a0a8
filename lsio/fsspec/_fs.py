"""``LsioFileSystem``: fsspec's async filesystem over lsio (read-only)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
from typing import TYPE_CHECKING, Any

from fsspec.asyn import AsyncFileSystem
from fsspec.spec import AbstractBufferedFile

from .._defaults import FSSPEC_BLOCK_SIZE, FSSPEC_CACHE, FSSPEC_GET_PIECE
from .._url import is_url
from . import _listing, _paths
from ._calls import read_return
from ._ranges import Want, finish, sized, want, widen

if TYPE_CHECKING:
    from .._reader import Reader

__all__ = ["LsioFile", "LsioFileSystem"]

READER_OPTIONS = ("preset", "queue_depth", "coalesce", "max_gap", "max_read", "direct",
                  "backend", "max_open_files", "threads", "http", "route")
"""The :class:`lsio.Reader` keyword arguments a filesystem takes as storage options."""

FSSPEC_OPTIONS = ("asynchronous", "loop", "batch_size", "use_listings_cache",
                  "listings_expiry_time", "max_paths")
"""fsspec's own options every async filesystem takes (its loop, its listings cache)."""


def _read_only(what: str) -> NotImplementedError:
    return NotImplementedError(f"lsio: the lsio filesystem is read-only ({what})")


class _Cached(type(AsyncFileSystem)):  # type: ignore[misc]
    """fsspec caches instances by the ``str`` of their arguments. A reader's or
    ``HttpOptions``' repr leaves out (or redacts) settings, so two filesystems with other
    headers or credentials would share one instance: their pickled form is hashed into
    the arguments (``settings``) instead."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("reader") is not None or kwargs.get("http") is not None:
            blob = pickle.dumps((kwargs.get("reader"), kwargs.get("http")))
            kwargs.setdefault("settings", hashlib.sha256(blob).hexdigest()[:32])
        return super().__call__(*args, **kwargs)


class LsioFileSystem(AsyncFileSystem, metaclass=_Cached):  # type: ignore[misc]
    """Read-only fsspec filesystem reading through lsio (protocol ``"lsio"``).

    Paths are local paths and URLs of every scheme lsio reads (see :mod:`lsio.fsspec` for
    the table). Storage options are :class:`lsio.Reader`'s keyword arguments, or
    ``reader=`` an existing reader. ``cat_ranges`` and ``cat`` are one planned lsio call
    each; ``cat_file`` calls made in one event-loop turn are gathered into one call.
    """

    protocol = "lsio"
    root_marker = "/"
    async_impl = True

    def __init__(self, *args: Any, reader: Reader | None = None, settings: str | None = None,
                 **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in READER_OPTIONS if k in kwargs}
        unknown = sorted(set(kwargs) - set(FSSPEC_OPTIONS))
        if unknown:  # another filesystem's options (s3fs' key=, anon=...): never ignored
            raise TypeError(f"lsio: unknown storage option(s) {', '.join(unknown)}; the lsio "
                            f"filesystem takes reader= or {', '.join(READER_OPTIONS)}")
        if reader is not None and options:
            raise TypeError(f"lsio: give reader= or the Reader's options "
                            f"({', '.join(options)}), not both")
        super().__init__(*args, **kwargs)
        self._options = options
        self._given = reader
        self._readers: dict[int | None, Reader] = {}
        self._gatherer: Any = None
        self._ahead: Any = None

    # -- the reader and the gatherer, made on first use --------------------------------
    def reader(self, max_gap: int | None = None) -> Reader:
        """The :class:`lsio.Reader` this filesystem reads with; with ``max_gap``, one like
        it merging through gaps up to ``max_gap`` bytes (kept for the next call)."""
        got = self._readers.get(max_gap)
        if got is None:
            from .._reader import Reader, default_reader

            if max_gap is None:
                got = self._given or (Reader(**self._options) if self._options
                                      else default_reader())
            else:
                base = self._given  # a reader pickles as its settings: one like it
                settings = dict(base.__reduce__()[1][0]) if base else dict(self._options)
                settings.update(max_gap=max_gap, coalesce=True)
                got = (type(base) if base else Reader)(**settings)
            self._readers[max_gap] = got
        return got

    def _gather(self) -> Any:
        """The reads of one event-loop turn in one call."""
        if self._gatherer is None:
            from .._gather import Gatherer

            self._gatherer = Gatherer(self.reader)
        return self._gatherer

    def _read_ahead(self) -> Any:
        """Ranges asked one at a time, with sequential read-ahead (:mod:`lsio._readahead`)."""
        if self._ahead is None:
            from .._readahead import ReadAhead

            self._ahead = ReadAhead(self._gather())
        return self._ahead

    # -- paths --------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [_paths.strip(p) for p in path]
        return _paths.strip(path)

    @classmethod
    def _parent(cls, path: str) -> str:
        return _paths.parent(path)

    def unstrip_protocol(self, name: str) -> str:
        return _paths.unstrip(name)

    # -- reading --------------------------------------------------------------------------
    async def _size(self, path: str) -> int:
        return int((await self._info(path))["size"])

    async def _want(self, path: str, start: int | None, end: int | None) -> Want:
        got = want(start, end)
        return got if got is not None else sized(start, end, await self._size(path))

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        path = _paths.strip(path)
        offset, length, cut = await self._want(path, start, end)
        view = await self._read_ahead().read(path, offset, length)
        return finish(view, cut)

    async def _cat_ranges(self, paths: list[Any], starts: Any, ends: Any,
                          max_gap: int | None = None, batch_size: int | None = None,
                          on_error: str = "return", **kwargs: Any) -> list[Any]:
        """The ranges, read by one planned lsio call (``batch_size`` is not used: lsio
        keeps its own reads in flight); ``max_gap``: merge reads through gaps up to that
        many bytes."""
        s, e = widen(paths, starts, ends)
        inner = [_strip_or_error(p) for p in paths]
        need = sorted({p for p, a, b in zip(inner, s, e, strict=True)
                       if isinstance(p, str) and want(a, b) is None})
        got = await asyncio.gather(*map(self._size, need), return_exceptions=True)
        sizes = dict(zip(need, got, strict=True))
        slots: list[int | BaseException] = []
        requests: list[tuple[str, int, int | None]] = []
        cuts: list[int] = []
        for p, a, b in zip(inner, s, e, strict=True):
            w = _resolve(p, a, b, sizes)
            if isinstance(w, BaseException):
                slots.append(w)
                continue
            slots.append(len(requests))
            requests.append((p, w[0], w[1]))  # type: ignore[arg-type]
            cuts.append(w[2])
        outs = await read_return(self.reader(max_gap), requests) if requests else []
        result = [x if isinstance(x, BaseException) else _finished(outs[x], cuts[x])
                  for x in slots]
        if on_error != "return":
            _raise_first(result)
        return result

    async def _cat(self, path: Any, recursive: bool = False, on_error: str = "raise",
                   batch_size: int | None = None, **kwargs: Any) -> Any:
        """Whole files, read by one planned lsio call; ``on_error``: ``"raise"`` the first
        failure, ``"omit"`` failed files, or ``"return"`` their exceptions."""
        paths = await self._expand_path(path, recursive=recursive)
        outs = await read_return(self.reader(), [(p, 0, None) for p in paths])
        data = [o if isinstance(o, BaseException) else finish(o, 0) for o in outs]
        if on_error == "raise":
            _raise_first(data)
        if len(paths) > 1 or isinstance(path, list) or paths[0] != _paths.strip(path):
            return {p: d for p, d in zip(paths, data, strict=True)
                    if on_error != "omit" or not isinstance(d, BaseException)}
        return data[0]

    # -- what is where --------------------------------------------------------------------
    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return await _listing.info(self.reader(), _paths.strip(path))

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return await _listing.ls(self.reader(), _paths.strip(path), detail)

    async def _find(self, path: str, maxdepth: int | None = None, withdirs: bool = False,
                    detail: bool = False, **kwargs: Any) -> Any:
        found = await _listing.find(self.reader(), _paths.strip(path), maxdepth, withdirs)
        return found if detail else list(found)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        """Whether ``path`` names a file or directory (``False`` also for a path below a
        file); other errors (permissions, a server's refusal) are raised."""
        try:
            await self._info(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        """Copy ``rpath`` to the local file ``lpath``, read in pieces of
        :data:`lsio._defaults.FSSPEC_GET_PIECE` bytes."""
        if os.path.isdir(lpath):
            return
        rpath = _paths.strip(rpath)
        size = await self._size(rpath)
        with open(lpath, "wb") as out:
            for offset in range(0, max(size, 1), FSSPEC_GET_PIECE):
                view = await self._gather().read((rpath, offset, FSSPEC_GET_PIECE))
                await asyncio.to_thread(out.write, view)

    # -- files ------------------------------------------------------------------------------
    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              cache_type: str = FSSPEC_CACHE, size: int | None = None,
              **kwargs: Any) -> LsioFile:
        if mode != "rb":
            raise _read_only(f"open mode {mode!r}")
        path = _paths.strip(path)
        if size is None:
            size = self._size_sync(path)
        return LsioFile(self, path, mode, block_size=block_size or FSSPEC_BLOCK_SIZE,
                        cache_type=cache_type, cache_options=cache_options, size=size)

    def _size_sync(self, path: str) -> int:
        if not is_url(path):
            return os.stat(path).st_size
        from .._sync import run_sync

        return int(run_sync(_listing.info(self.reader(), path))["size"])

    def _read_sync(self, path: str, start: int, end: int) -> bytes:
        """``data[start:end]`` of ``path``, read on the calling thread's terms (lsio's
        blocking door)."""
        (view,) = self.reader().read_many_sync([(path, start, max(end - start, 0))])
        return finish(view, 0)

    # -- writes: none ---------------------------------------------------------------------
    async def _pipe_file(self, path: str, value: Any, *args: Any, **kwargs: Any) -> None:
        raise _read_only("pipe")

    async def _put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        raise _read_only("put")

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        raise _read_only("rm")

    async def _rm(self, path: Any, *args: Any, **kwargs: Any) -> None:
        raise _read_only("rm")

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise _read_only("copy")

    async def _mkdir(self, path: str, *args: Any, **kwargs: Any) -> None:
        raise _read_only("mkdir")

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise _read_only("makedirs")

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        raise _read_only("touch")


def _resolve(path: str | ValueError, start: Any, end: Any,
             sizes: dict[str, int | BaseException]) -> Want | BaseException:
    """A range's lsio request, or why it has none (its path refused, its size unknown)."""
    if isinstance(path, ValueError):
        return path
    got = want(start, end)
    if got is not None:
        return got
    size = sizes[path]
    return size if isinstance(size, BaseException) else sized(start, end, size)


def _finished(out: Any, cut: int) -> Any:
    return out if isinstance(out, BaseException) else finish(out, cut)


def _strip_or_error(path: Any) -> str | ValueError:
    try:
        return _paths.strip(path)
    except ValueError as exc:  # that range's own failure
        return exc


def _raise_first(outs: list[Any]) -> None:
    for out in outs:
        if isinstance(out, BaseException):
            raise out


class LsioFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only buffered file of :class:`LsioFileSystem`: every read and read-ahead
    is one lsio read of ``[start, end)``."""

    DEFAULT_BLOCK_SIZE = FSSPEC_BLOCK_SIZE

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs._read_sync(self.path, start, end)  # type: ignore[no-any-return]
