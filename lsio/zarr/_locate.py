"""Where a store's values are: the one store method lsio's codec pipeline and fast path use.

A store that implements ``locate(keys) -> Located`` tells, for each key, the file (path or
URL) and the byte range holding its value, or the value itself (held in the store), or that
the key has none; and which :class:`lsio.Reader` reads those files. The pipeline and
:func:`lsio.zarr.read` then read every chunk a selection touches in one planned
``read_many`` (ranges of one file merged by its storage's rules) and decode each on the
pinned workers. :class:`LsioStore` locates whole files under its root;
:class:`lsio.virtual.ReferenceStore` locates byte ranges of other files. zarr's own
``LocalStore`` has no such method: :func:`locator` lends it one (its keys are files under
its root), the only place a store's type is looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from .._url import is_url

__all__ = ["Located", "check_key", "join", "locator", "paths_under", "where",
           "whole_files"]

Request = tuple[str, int, "int | None"]


@dataclass(frozen=True, slots=True)
class Located:
    """Where the values of some store keys are: row ``i`` answers ``keys[i]``."""

    paths: list[str]
    """The file (path or URL) holding each key's value; ``""`` where the value is
    ``inline`` or the key is ``missing``."""
    offsets: npt.NDArray[np.int64]
    """Where each value starts in its file."""
    lengths: npt.NDArray[np.int64]
    """Each value's length in bytes; ``-1``: to the end of the file (a whole file)."""
    reader: Any
    """The :class:`lsio.Reader` that reads ``paths``."""
    inline: dict[int, bytes] = field(default_factory=dict)
    """Values held by the store itself, by row."""
    missing: npt.NDArray[np.bool_] | None = None
    """True where the store knows the key has no value (None: no key known missing; a
    file that is not there still reads as missing)."""
    where: str = ""
    """Names the store in errors."""
    files_may_be_missing: bool = True
    """A file that is not there reads as a missing value (a directory of chunk files); False:
    it is an error naming the file (references name files that must exist)."""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def plain(self) -> bool:
        """Every row is a byte range of a file (nothing inline, nothing known missing)."""
        return not self.inline and (self.missing is None or not self.missing.any())

    def requests(self) -> list[Request]:
        """Each row's whole value as a ``read_many`` request (``plain`` rows only)."""
        if not self.offsets.any() and (self.lengths < 0).all():  # whole files
            return [(p, 0, None) for p in self.paths]
        lengths = [None if n < 0 else n for n in self.lengths.tolist()]
        return list(zip(self.paths, self.offsets.tolist(), lengths, strict=True))

    def part(self, i: int, offset: int, length: int | None) -> Request | bytes | None:
        """Bytes ``offset`` (negative: a suffix of that many) to ``offset + length`` (None:
        to the end) of row ``i``'s value: a ``read_many`` request, the bytes themselves
        (inline) or None (missing)."""
        if self.missing is not None and self.missing[i]:
            return None
        value = self.inline.get(i)
        if value is not None:
            start = max(0, len(value) + offset) if offset < 0 else offset
            return value[start:] if length is None else value[start:start + length]
        base, size = int(self.offsets[i]), int(self.lengths[i])
        if size < 0:  # a whole file from ``base``: the file's size bounds the read
            return (self.paths[i], offset if offset < 0 and base == 0 else
                    base + max(0, offset), length)
        if offset < 0:
            offset = max(0, size + offset)
            length = size - offset
        offset = min(offset, size)
        length = size - offset if length is None else min(length, size - offset)
        return (self.paths[i], base + offset, length)


def locator(store: Any) -> Callable[[Sequence[str]], Located] | None:
    """The store's ``locate`` method; zarr's ``LocalStore`` is lent one; None for any other
    store (the pipeline then reads through the store's own ``get``)."""
    locate = getattr(store, "locate", None)
    if callable(locate):
        return locate  # type: ignore[no-any-return]
    from zarr.storage import LocalStore

    if type(store) is LocalStore:  # (a subclass may store its keys elsewhere)
        root = os.fspath(store.root)
        return lambda keys: Located(*_whole(paths_under(root, keys, local=True)),
                                    reader=_default_reader(), where=root)
    return None


def where(store: Any) -> str:
    """How errors name a store: its root directory or URL if it has one."""
    root = getattr(store, "root", None)
    return os.fspath(root) if isinstance(root, (str, os.PathLike)) else str(store)


def _default_reader() -> Any:
    from .._reader import default_reader

    return default_reader()


def _whole(paths: list[str]) -> tuple[list[str], npt.NDArray[np.int64],
                                      npt.NDArray[np.int64]]:
    n = len(paths)
    return paths, np.zeros(n, np.int64), np.full(n, -1, np.int64)


def whole_files(paths: list[str], reader: Any, where: str) -> Located:
    """Each key's value is a whole file."""
    return Located(*_whole(paths), reader=reader, where=where)


_DOT_PART = re.compile(r"(?:^|/)\.\.?(?:/|$)")
"""A key component that is ``.`` or ``..`` (one regex search: ~0.4 us a key, where
splitting the key took ~2 us; the codec pipeline checks every chunk's key)."""
_UNQUOTED = re.compile(r"[^A-Za-z0-9_.~/\0-]")
"""A character ``quote(key, safe="/")`` would change."""


def check_key(key: str) -> str:
    """Keys are relative '/'-separated paths that stay inside the root.

    Listing prefixes follow the same rule (``""`` and a trailing ``/`` pass): a prefix
    that may not name a key may not be listed either, so one check guards both."""
    if not isinstance(key, str):
        raise TypeError(f"lsio: a store key must be str, not {type(key).__name__}")
    if key.startswith("/") or "\\" in key or "\0" in key or _DOT_PART.search(key):
        raise ValueError(f"lsio: store key {key!r} would leave the store's root")
    return key


def join(root: str, key: str) -> str:
    """The path or URL of ``key`` under ``root`` (a store's root or an array's)."""
    if root.lower().startswith(("http://", "https://")):
        return f"{root}/{quote(key, safe='/')}"
    return f"{root}/{key}" if is_url(root) else os.path.join(root, key)


def _bad_joined(joined: str) -> bool:
    """Whether any of the keys joined by NUL starts with ``/``, holds a backslash or has a
    ``.`` or ``..`` part (plain substring scans: a regex took ~1 us a key)."""
    if joined.startswith("/") or "\0/" in joined or "\\" in joined:
        return True
    parts = "/" + joined.replace("\0", "/") + "/"
    return "/./" in parts or "/../" in parts


def paths_under(root: str, keys: Sequence[str], *, local: bool) -> list[str]:
    """The path or URL of each key under ``root``, the keys checked (:func:`check_key`) by
    a few C-speed scans of all keys joined (16 384 chunk keys: ~3 ms where one check and
    join a key took ~25 ms)."""
    try:
        joined = "\0".join(keys)
    except TypeError:
        joined = None
    if joined is None or joined.count("\0") != len(keys) - 1 or _bad_joined(joined):
        for key in keys:
            check_key(key)  # names the bad key
    if local:
        prefix = root.rstrip("/") + "/"
        return [prefix + key for key in keys]
    if root.lower().startswith(("http://", "https://")) and _UNQUOTED.search(joined or ""):
        return [join(root, key) for key in keys]
    prefix = root + "/"
    return [prefix + key for key in keys]
