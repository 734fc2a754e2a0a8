"""What lsio keeps between calls, and the rules that keep it from ever going stale.

Repeated small reads of one array pay the same set-up every call: parsing its metadata,
building its decode chain, working out the C jobs of a selection, reading a shard's
index. Each cache here keeps one of those, bounded (sizes in ``lsio/_defaults.py``), by
one of three kinds of key:

* **the bytes or values it was made from** (:class:`Lru`): a ``zarr.json``'s text, the
  codecs, a selection over a chunk layout. No file state enters, so nothing can make such
  an entry stale: whoever reads the same bytes again finds the same answer.
* **the identity of the file it stands for** (:class:`FileCache`, for a file's content such
  as a shard's index): locally :func:`local_identity` of the descriptor the bytes were read
  from, ``(dev, inode, size, mtime_ns, ctime_ns)``, or :func:`file_identity` of a path
  taken both before and after the read (an open and ``fstat``, so NFS revalidates): equal
  identities prove the bytes came from that version, since renaming, linking or writing a
  file changes its ``ctime_ns`` and a replace changes the inode; remotely a strong ETag
  only (:func:`remote_identity`; a weak ETag or none: no entry). A version younger than
  ``FILE_SETTLED`` is not kept: file times tick with the kernel's coarse clock, so a
  rewrite of the same size within one tick would keep its identity. The caller checks
  what it can before it puts an entry (a shard index's crc32c).
* entries of a path are also dropped when lsio itself writes it (:func:`invalidate`, from
  ``LsioStore.set`` and ``delete``), so a writer in this process never depends on the
  timestamps' granularity.

Every cache is forgotten in a forked child (``_fork.forget_in_child``) and by
``lsio.clear_caches()`` (:func:`clear_all`). The caches are thread-safe: the codec pipeline
runs on zarr's loop thread, ``read_sync`` on lsio's, the fast path on the caller's.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from . import _fork
from ._defaults import FILE_CACHE, FILE_CACHE_BYTES, FILE_SETTLED

# remote_identity joins __all__ with its first user (remote shard indexes): __all__ lists
# what other modules import (tests/test_api.py)
__all__ = ["SHARD_INDEXES", "Lru", "clear_all", "file_identity", "invalidate", "on_clear"]

V = TypeVar("V")

Identity = tuple[Any, ...]
"""What names one version of a file: ``("local", dev, inode, size, mtime_ns, ctime_ns)`` or
``("etag", strong_etag)``."""

_clears: list[Callable[[], None]] = []
_files: list[FileCache[Any]] = []


class Lru(Generic[V]):
    """A least-recently-used map bounded by ``entries`` and by ``max_bytes`` in all (each
    entry's weight given on :meth:`put`), cleared by :func:`clear_all` and in a forked
    child. Keyed on what the value was made from, so an entry is never stale."""

    def __init__(self, name: str, *, entries: int, max_bytes: int | None = None) -> None:
        self.name = name
        self.entries, self.max_bytes = entries, max_bytes
        self._map: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = _fork.lock()
        _clears.append(self.clear)

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            hit = self._map.get(key)
            if hit is None:
                return None
            self._map.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: V, nbytes: int = 0) -> V:
        """Keep ``value`` under ``key`` (``nbytes``: its weight); one heavier than the whole
        budget is not kept. Returns ``value``."""
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return value
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._map[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._map) > self.entries or (
                    self.max_bytes is not None and self._bytes > self.max_bytes):
                _, (_, weight) = self._map.popitem(last=False)
                self._bytes -= weight
        return value

    def _drop(self, keep: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._map if not keep(k)]:
                self._bytes -= self._map.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._map.clear()
            self._bytes = 0


class FileCache(Lru[tuple[Identity, V]]):
    """What a file holds (a shard's index), keyed on the file's path or URL and valid for
    one identity of it (:func:`local_identity`, :func:`remote_identity`); an entry of
    another identity is a miss (and is dropped). :func:`invalidate` drops a path's
    entries."""

    def __init__(self, name: str, *, entries: int, max_bytes: int | None = None) -> None:
        super().__init__(name, entries=entries, max_bytes=max_bytes)
        _files.append(self)

    def lookup(self, path: str, identity: Identity | None) -> V | None:
        """The value kept for ``path`` at ``identity`` (None: unknown, no hit)."""
        if identity is None:
            return None
        hit = self.get(path)
        if hit is None:
            return None
        if hit[0] != identity:  # another version of the file: never the old bytes
            self._drop(lambda k: k != path)
            return None
        return hit[1]

    def keep(self, path: str, identity: Identity | None, value: V, nbytes: int = 0) -> V:
        """Keep ``value`` for ``path`` at ``identity``; without an identity (a weak ETag or
        none) nothing is kept. Returns ``value``."""
        if identity is not None and _settled(identity):
            self.put(path, (identity, value), nbytes)
        return value

    def forget(self, path: str) -> None:
        """Drop ``path``'s entry and those of every path under it (a directory deleted)."""
        under = path.rstrip("/") + "/"
        self._drop(lambda k: not (k == path or (isinstance(k, str) and k.startswith(under))))


SHARD_INDEXES: FileCache[Any] = FileCache("zarr shard indexes", entries=FILE_CACHE,
                                          max_bytes=FILE_CACHE_BYTES)
"""Decoded shard indexes by the shard's path or URL and identity: ``lookup(path, identity)``
before reading an index, ``keep(path, identity, index, index.nbytes)`` once it decoded
(its crc32c checked, where the index codecs have one)."""


def local_identity(fd: int) -> Identity:
    """The identity of the file open at ``fd``, from that descriptor (``fstat``)."""
    st = os.fstat(fd)
    return ("local", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_identity(path: str) -> Identity | None:
    """The identity of the file at ``path`` now (opened and ``fstat``-ed, as a read of it
    would see it); None where it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return local_identity(fd)
    finally:
        os.close(fd)


def _settled(identity: Identity) -> bool:
    """A local version whose times are older than ``FILE_SETTLED`` (an ETag: always)."""
    if identity[0] != "local":
        return True
    return bool(time.time_ns() - max(identity[4], identity[5]) > FILE_SETTLED * 1e9)


def remote_identity(etag: str | None) -> Identity | None:
    """The identity of an object version by its ETag: strong ETags only (a weak one, ``W/``,
    promises equivalent content, not the same bytes); None (do not cache) otherwise."""
    if not etag or etag.startswith(("W/", "w/")):
        return None
    return ("etag", etag)


def invalidate(path: str) -> None:
    """lsio wrote or deleted ``path`` (a file or a directory): every :class:`FileCache`
    forgets it and what lies under it."""
    for cache in _files:
        cache.forget(path)


def on_clear(fn: Callable[[], None]) -> None:
    """``fn`` (another cache's clear, such as an ``lru_cache``'s) runs on :func:`clear_all`
    and in a forked child."""
    _clears.append(fn)


@_fork.forget_in_child
def clear_all() -> None:
    """Forget every cache (``lsio.clear_caches()``; in a forked child, after the fork)."""
    for clear in list(_clears):
        clear()
