"""The zarr-python 3 store: :class:`LsioStore` over a local directory or a URL.

``get_partial_values`` and ``get_ranges`` (zarr 3.3+) are one ``read_many`` call each, and
concurrent ``get`` calls of one event-loop turn are gathered into one. Local roots can be
written; remote roots are read-only.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from .._cache import invalidate
from .._each import read_gets
from .._reader import Reader, default_reader
from .._redact import redact
from .._sync import run_sync
from .._url import is_url, listable, scheme_problem
from ._locate import Located, check_key, join, paths_under, whole_files

__all__ = ["LsioStore"]

_Batch = builtins.list[tuple[tuple[str, int, "int | None"], asyncio.Future[Any]]]
"""One event-loop turn's gets: each request and the future its ``get`` waits on."""


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # failures reach the waiting get() calls; nothing to log here


class LsioStore(Store):
    """A zarr-python store that reads through lsio.

    Parameters
    ----------
    root
        A local directory, or a URL (``http(s)://``, ``s3://``, ``gs://``, ``az://``).
        Object-store roots (S3, GCS, Azure) list their keys (``list``, ``list_prefix``,
        ``list_dir``), page after page; plain HTTP(S) roots cannot list.
    read_only
        Default: ``False`` for local roots, ``True`` (and only ``True``) for URLs.
    reader
        The :class:`lsio.Reader` to use (default: lsio's default reader).
    """

    supports_partial_writes = False

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool | None = None,
                 reader: Reader | None = None) -> None:
        root = os.fspath(root)
        problem = scheme_problem(root)
        if problem is not None:  # never a relative directory named "s3x:"
            raise ValueError(f"lsio: {redact(repr(root))}: {problem}")
        self.remote = is_url(root)
        if self.remote:
            if read_only is False:
                raise ValueError(f"lsio: {redact(repr(root))}: writes to remote roots are "
                                 "not supported")
            read_only = True
            root = root.rstrip("/")
        else:
            root = os.path.abspath(root)
        super().__init__(read_only=bool(read_only))
        self.root = root
        self._prefix = root.rstrip("/") + "/"  # a local root's paths: prefix + key
        self._reader = reader
        self._batches: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, builtins.list[Any]] = weakref.WeakKeyDictionary()

    # -- identity ------------------------------------------------------------------------
    @property
    def reader(self) -> Reader:
        return self._reader or default_reader()

    @property
    def supports_writes(self) -> bool:
        return not self.remote

    @property
    def supports_deletes(self) -> bool:
        return not self.remote

    @property
    def supports_listing(self) -> bool:
        return not self.remote or listable(self.root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.root == other.root

    def __hash__(self) -> int:
        return hash((type(self), self.root))

    def __repr__(self) -> str:
        return f"LsioStore({redact(repr(self.root))})"

    def __str__(self) -> str:
        # zarr shows it in reprs and errors (StorePath), never opens it
        return redact(self.root) if self.remote else f"file://{self.root}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # a reader pickles as its settings (Reader.__reduce__)
        del state["_batches"]  # pending reads belong to this process's loops
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batches = weakref.WeakKeyDictionary()

    def with_read_only(self, read_only: bool = False) -> LsioStore:
        return type(self)(self.root, read_only=read_only, reader=self._reader)

    def path_of(self, key: str) -> str:
        """The path or URL that holds ``key``."""
        check_key(key)
        return join(self.root, key) if self.remote else self._prefix + key

    def locate(self, keys: Sequence[str]) -> Located:
        """Where each key's value is: the whole file (path or URL) of that name under the
        root, read by this store's reader (see :class:`lsio.zarr.Located`)."""
        return whole_files(paths_under(self.root, keys, local=not self.remote),
                           self.reader, str(self))

    # -- reading -------------------------------------------------------------------------
    def _request(self, key: str, byte_range: ByteRequest | None) -> tuple[str, int, int | None]:
        path = self.path_of(key)
        if byte_range is None:
            return (path, 0, None)
        if isinstance(byte_range, RangeByteRequest):
            return (path, byte_range.start, max(0, byte_range.end - byte_range.start))
        if isinstance(byte_range, OffsetByteRequest):
            return (path, byte_range.offset, None)
        if isinstance(byte_range, SuffixByteRequest):
            if byte_range.suffix == 0:
                return (path, 0, 0)
            return (path, -byte_range.suffix, None)
        raise TypeError(f"Unexpected byte_range, got {byte_range}")

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        """One value. zarr-python asks for chunks with many concurrent ``get`` calls: the
        first of an event-loop turn yields once, the others of that turn join it, and it
        reads them all in one call (``read_gets``: cached data at once, with no further
        loop turn; a few cold ones each on a worker thread; else one ``read_many``)."""
        if not self._is_open:
            await self._open()
        request = self._request(key, byte_range)
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        fut: asyncio.Future[Any] = loop.create_future()
        if batch is not None:  # another get of this turn leads: join its batch
            batch.append((request, fut))
        else:
            batch = self._batches[loop] = [(request, fut)]
            await self._lead(loop, batch, fut)
        chunk = await fut
        return None if chunk is None else prototype.buffer.from_bytes(chunk)

    async def _lead(self, loop: asyncio.AbstractEventLoop, batch: _Batch,
                    fut: asyncio.Future[Any]) -> None:
        """The first get of a turn yields once (the turn's other gets join its batch), then
        reads the batch itself: served from the cache without suspending, no further loop
        turn. Cancelled (or interrupted), it leaves the others' gets to a task of their own."""
        try:
            try:
                await asyncio.sleep(0)
            finally:  # also when cancelled: the batch takes no more gets
                if self._batches.get(loop) is batch:
                    del self._batches[loop]
            await self._read_batch(batch, lead=True)
        except BaseException:
            fut.cancel()  # nobody waits for this get's value
            rest = [(r, f) for r, f in batch if not f.done()]
            if rest:  # no get of the batch may wait forever
                loop.create_task(self._read_batch(rest)).add_done_callback(_retrieve)
            raise

    async def _read_batch(self, batch: _Batch, lead: bool = False) -> None:
        """Read the batch and resolve its gets' futures (an error: each get raises it). The
        leader's own read, cancelled, leaves the futures to :meth:`_lead`."""
        try:
            results = await read_gets(self.reader, [r for r, _ in batch])
        except Exception as exc:
            results = [exc] * len(batch)
        except BaseException:
            if not lead:  # no get of the batch may wait forever
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(asyncio.CancelledError())
            raise
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, (IsADirectoryError, NotADirectoryError)):
                fut.set_result(None)  # a "directory" key holds no value
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> builtins.list[Buffer | None]:
        return await self._get_many_now(prototype, list(key_ranges))

    async def _get_many_now(self, prototype: BufferPrototype,
                            key_ranges: builtins.list[tuple[str, ByteRequest | None]]
                            ) -> builtins.list[Buffer | None]:
        if not key_ranges:
            return []
        requests = [self._request(k, r) for k, r in key_ranges]
        try:
            results = await self.reader.read_many(requests, missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            if len(requests) == 1:
                return [None]  # a "directory" key holds no value, as for LocalStore
            return [await self.get(k, prototype, r) for k, r in key_ranges]
        return [None if chunk is None else prototype.buffer.from_bytes(chunk)
                for chunk in results]

    async def get_ranges(self, key: str, byte_ranges: Sequence[ByteRequest | None], *,
                         prototype: BufferPrototype, max_concurrency: int = 10,
                         max_gap_bytes: int = 1 << 20, max_coalesced_bytes: int = 16 << 20
                         ) -> AsyncIterator[Sequence[tuple[int, Buffer | None]]]:
        """Many byte ranges of one key (zarr 3.3+ asks this for a shard's inner chunks): one
        planned ``read_many``, yielded as one batch of ``(input_index, Buffer)``. lsio's
        planner coalesces by its own rules; ``max_*`` (zarr's coalescer's knobs) are
        accepted and not used. A missing key, or a failed read, raises an ExceptionGroup
        (zarr's contract) holding the error, which names the key."""
        yield await self._ranges(key, byte_ranges, prototype)

    def get_ranges_sync(self, key: str, byte_ranges: Sequence[ByteRequest | None], *,
                        prototype: BufferPrototype, max_gap_bytes: int = 1 << 20,
                        max_coalesced_bytes: int = 16 << 20
                        ) -> Sequence[tuple[int, Buffer | None]]:
        """Blocking :meth:`get_ranges` (zarr 3.3+'s synchronous pipelines), one batch."""
        return run_sync(self._ranges(key, byte_ranges, prototype))

    async def _ranges(self, key: str, byte_ranges: Sequence[ByteRequest | None],
                      prototype: BufferPrototype) -> builtins.list[tuple[int, Buffer | None]]:
        if not byte_ranges:
            return []
        try:
            requests = [self._request(key, r) for r in byte_ranges]
            got = await self.reader.read_many(requests, missing_ok=True)
            if any(b is None for b in got):
                raise FileNotFoundError(f"lsio: {key!r} is missing from {self}")
        except (IsADirectoryError, NotADirectoryError):  # a "directory" key holds no value
            missing = FileNotFoundError(f"lsio: {key!r} is missing from {self}")
            raise ExceptionGroup(f"lsio: reading ranges of {key!r}", [missing]) from None
        except Exception as exc:
            raise ExceptionGroup(f"lsio: reading ranges of {key!r}", [exc]) from None
        return [(i, prototype.buffer.from_bytes(b)) for i, b in enumerate(got)]

    async def exists(self, key: str) -> bool:
        if not self.remote:
            return os.path.isfile(self.path_of(key))
        (found,) = await self.reader.read_many([(self.path_of(key), 0, 1)], missing_ok=True)
        return found is not None

    async def getsize(self, key: str) -> int:
        if self.remote:
            return await super().getsize(key)
        try:
            return os.path.getsize(self.path_of(key))
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(redact(self.path_of(key))) from None

    # zarr's optional synchronous protocol (run on lsio's own loop thread)
    def get_sync(self, key: str, *, prototype: BufferPrototype | None = None,
                 byte_range: ByteRequest | None = None) -> Buffer | None:
        from zarr.buffer import default_buffer_prototype

        return run_sync(self.get(key, prototype or default_buffer_prototype(), byte_range))

    def set_sync(self, key: str, value: Buffer) -> None:
        run_sync(self.set(key, value))

    def delete_sync(self, key: str) -> None:
        run_sync(self.delete(key))

    # -- writing (local roots) -----------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"lsio: LsioStore.set takes a zarr Buffer, not "
                            f"{type(value).__name__}")
        if not self._is_open:
            await self._open()
        path = self.path_of(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # write aside, then rename: readers never see a half-written chunk
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".lsio-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value.as_numpy_array().data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            invalidate(path)  # also after a failed replace: the file may have changed

    async def delete(self, key: str) -> None:
        self._check_writable()
        path = self.path_of(key)
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        finally:
            invalidate(path)  # the file and, for a directory, everything under it

    # -- listing (local roots, object stores) --------------------------------------------
    def _remote_keys(self, prefix: str, delimiter: str | None = None) -> AsyncIterator[str]:
        """Keys under an object-store root (S3, GCS, Azure list them); plain HTTP cannot."""
        return self.reader.list_keys(self.root, prefix, delimiter)

    async def list(self) -> AsyncIterator[str]:
        if self.remote:
            async for key in self._remote_keys(""):
                if not key.endswith("/"):  # a "folder" marker object is no key
                    yield key
            return
        for key in self._walk(self.root):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        check_key(prefix)  # "../" would walk the root's parent
        if self.remote:
            async for key in self._remote_keys(prefix):
                if not key.endswith("/"):
                    yield key
            return
        start = os.path.join(self.root, os.path.dirname(prefix))
        for key in self._walk(start):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        check_key(prefix)  # "../../etc" would list /etc
        if self.remote:
            base = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
            seen = set()  # "x" as an object and as a prefix ("x/y"), or on two pages
            async for key in self._remote_keys(base, "/"):
                name = key[len(base):].rstrip("/")
                if name and name not in seen:
                    seen.add(name)
                    yield name
            return
        base = os.path.join(self.root, prefix.rstrip("/"))
        try:
            with os.scandir(base) as entries:
                names = [e.name for e in entries if not e.name.startswith(".lsio-")]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            yield name

    def _walk(self, start: str) -> builtins.list[str]:
        keys = []
        for dirpath, _, files in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if not name.startswith(".lsio-"):
                    keys.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        return keys

