"""Requests: what the user asks for, checked early and turned into arrays.

This is the first stage of the data flow (request -> plan -> backend -> result). Everything
after it works on numpy arrays, never on per-request Python objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from ._url import file_url_problem, is_url, local_path, scheme_problem

if TYPE_CHECKING:  # annotations only; numpy.typing would add ~1 ms to ``import lsio``
    import numpy.typing as npt

__all__ = ["Chunk", "Requests", "normalize", "paths_ok", "plain_requests"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk to read: a whole file or a byte range of it."""

    path: str | os.PathLike[str]
    """Local path (``str`` or ``os.PathLike``)."""

    offset: int = 0
    """First byte to read. Negative counts from the end of the file, like HTTP ``bytes=-N``:
    ``offset=-100`` with ``length=None`` reads the last 100 bytes."""

    length: int | None = None
    """Bytes to read, or ``None`` to read to the end of the file. A range that runs past the
    end of the file returns the bytes that exist (possibly none)."""


@dataclass(frozen=True, slots=True)
class Requests:
    """A request list as arrays; ``file`` indexes ``paths``."""

    paths: list[str]
    """Distinct paths, in order of first appearance."""

    file: npt.NDArray[np.int64]
    """File index of each request."""

    offset: npt.NDArray[np.int64]
    """Requested offset (negative: from the end)."""

    length: npt.NDArray[np.int64]
    """Requested length, ``-1`` for "to the end of the file"."""

    number: npt.NDArray[np.int64] | None = None
    """Each request's index in the caller's list, when this is a part of it."""

    def __len__(self) -> int:
        return len(self.file)

    def caller_index(self, index: int) -> int:
        """Index of request ``index`` in the caller's list."""
        return index if self.number is None else int(self.number[index])

    def describe(self, index: int) -> str:
        """Human text for request ``index``, for error messages."""
        length = int(self.length[index])
        return (
            f"request #{self.caller_index(index)} (path={self.paths[int(self.file[index])]!r}, "
            f"offset={int(self.offset[index])}, length={None if length < 0 else length})"
        )

    def part(self, files: npt.NDArray[np.bool_]) -> Requests:
        """The requests of the files ``files`` selects, as a list of their own."""
        keep = files[self.file]
        number = np.flatnonzero(keep)
        remap = np.cumsum(files) - 1
        return Requests([p for p, k in zip(self.paths, files, strict=True) if k],
                        remap[self.file[keep]], self.offset[keep], self.length[keep],
                        number if self.number is None else self.number[number])

    def select(self, keep: npt.NDArray[np.bool_]) -> Requests:
        """The requests ``keep`` selects (same paths), as a list of their own."""
        number = np.flatnonzero(keep)
        return Requests(self.paths, self.file[keep], self.offset[keep], self.length[keep],
                        number if self.number is None else self.number[number])

    def window(self, lo: int, hi: int) -> Requests:
        """Requests ``lo:hi`` as a list of their own, with only the paths they name (a
        window must not stat or resolve every path of the whole list)."""
        from ._plan import distinct  # the planner loads with the engine, not with ``lsio.Chunk``

        files, local = distinct(self.file[lo:hi])
        number = np.arange(lo, hi, dtype=np.int64)
        return Requests([self.paths[int(f)] for f in files], local.astype(np.int64),
                        self.offset[lo:hi], self.length[lo:hi],
                        number if self.number is None else self.number[lo:hi])

    def has_urls(self) -> bool:
        """Whether any request names a URL (one C-speed scan of the joined paths first)."""
        if "://" not in "\n".join(self.paths):
            return False
        return any(map(is_url, self.paths))

    def with_paths(self, paths: list[str]) -> Requests:
        return Requests(paths, self.file, self.offset, self.length, self.number)


_INT64 = 1 << 63


def plain_requests(requests: list[Any] | tuple[Any, ...]
                   ) -> tuple[list[str], list[int], list[int]] | None:
    """For the small-call paths: each request's path, offset and length (-1: to the end),
    for a short list whose requests all have the plain shapes (``(path, offset, length)``,
    ``(path,)``, a path, a ``Chunk``) with values :func:`normalize` takes; ``None`` for
    anything else (the bulk path serves it, or names what is wrong). Exact types: a bool is
    an int that :func:`normalize` refuses."""
    paths: list[str] = []
    offsets: list[int] = []
    lengths: list[int] = []
    for item in requests:
        kind = type(item)
        if kind is tuple:
            if len(item) == 3:
                path, offset, length = item
            elif len(item) == 1:
                path, offset, length = item[0], 0, None
            else:
                return None
        elif kind is Chunk:
            path, offset, length = item.path, item.offset, item.length
        elif kind is str:
            path, offset, length = item, 0, None
        else:
            return None
        if type(path) is not str:
            if not isinstance(path, os.PathLike):
                return None
            path = os.fspath(path)
            if type(path) is not str:
                return None
        if type(offset) is not int or not -_INT64 <= offset < _INT64:
            return None
        if length is None:
            length = -1
        elif type(length) is not int or not 0 <= length < _INT64:
            return None
        if "://" in path and scheme_problem(path) is not None:
            return None  # normalize names it
        paths.append(path)
        offsets.append(offset)
        lengths.append(length)
    return paths, offsets, lengths


def _bad(index: int, item: Any, why: str, exc: type[Exception] = ValueError) -> Exception:
    return exc(f"lsio: request #{index} {item!r}: {why}")


def normalize(requests: Iterable[Any]) -> Requests:
    """Check every request and return them as arrays.

    Raises ``TypeError`` or ``ValueError`` naming the first bad request; nothing is read
    before the whole list is valid.
    """
    if isinstance(requests, (str, bytes, os.PathLike)):
        raise TypeError(
            "lsio: read_many takes a list of requests, not a single path; "
            "wrap it: read_many([path])"
        )
    items = requests if isinstance(requests, (list, tuple)) else list(requests)
    fast = _normalize_uniform(items)
    return fast if fast is not None else _normalize_each(items)


def _normalize_uniform(items: list[Any] | tuple[Any, ...]) -> Requests | None:
    """Fast path for the common shapes: all ``(str, int, int|None)`` tuples, all ``Chunk``,
    or all ``str`` (whole files).

    The checks run as C-speed passes over whole columns (``map``, ``dict.fromkeys``, numpy
    type inference), about 0.1 us per request. Anything irregular returns ``None`` and the
    per-item path finds and names the bad request.
    """
    if not items:
        return None
    first = type(items[0])
    if first is str:
        return _whole_files(items)
    if first is Chunk:
        if set(map(type, items)) != {Chunk}:
            return None
        paths = [c.path for c in items]
        offs = [c.offset for c in items]
        lens = [c.length for c in items]
    elif first is tuple:
        if set(map(type, items)) != {tuple} or set(map(len, items)) != {3}:
            return None
        # itemgetter columns: zip(*items) is ~10x slower on long lists
        paths, offs, lens = (list(map(itemgetter(k), items)) for k in range(3))
    else:
        return None
    try:
        ids = {p: i for i, p in enumerate(dict.fromkeys(paths))}
    except TypeError:  # an unhashable "path"
        return None
    if any(type(p) is not str for p in ids) or not paths_ok(list(ids)):
        return None
    # exact types: bool is an int subclass that numpy would silently accept
    len_types = set(map(type, lens))
    if set(map(type, offs)) != {int} or not len_types <= {int, type(None)}:
        return None
    try:  # fromiter: one typed pass; an int beyond 64 bits overflows
        offset = np.fromiter(offs, np.int64, len(offs))
        some_none = type(None) in len_types
        known = np.fromiter([n for n in lens if n is not None] if some_none else lens,
                            np.int64)
    except OverflowError:
        return None
    if np.any(known < 0):
        return None
    if some_none:
        length = np.full(len(lens), -1, np.int64)
        length[np.fromiter(map(_is_not_none, lens), bool, len(lens))] = known
    else:
        length = known
    if len(ids) == 1:
        file = np.zeros(len(paths), np.int64)
    else:
        file = np.fromiter(map(ids.__getitem__, paths), np.int64, len(paths))
    return Requests(list(ids), file, offset, length)


def _whole_files(items: list[Any] | tuple[Any, ...]) -> Requests | None:
    """:func:`_normalize_uniform` of plain path strings (whole files)."""
    if set(map(type, items)) != {str}:
        return None
    ids = {p: i for i, p in enumerate(dict.fromkeys(items))}
    if not paths_ok(list(ids)):
        return None
    n = len(items)
    file = (np.arange(n, dtype=np.int64) if len(ids) == n else
            np.fromiter(map(ids.__getitem__, items), np.int64, n))
    return Requests(list(ids), file, np.zeros(n, np.int64), np.full(n, -1, np.int64))


def paths_ok(paths: list[str]) -> bool:
    """Whether every path passes :func:`_path_problem`, checked with C-speed scans of the
    joined paths (the per-item path finds and names a bad one)."""
    joined = "\n".join(paths)
    if "\0" in joined or not all(paths):
        return False
    try:
        joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    if "://" in joined and any(map(scheme_problem, paths)):  # s3x://: no local path
        return False
    if "file:" in joined.lower():  # rare: check what each URL decodes to
        return all(_path_problem(p) is None for p in paths)
    return True


def _path_problem(path: str) -> str | None:
    """Why ``path`` cannot be read, or ``None``. Checked after every transformation lsio
    applies (``file://`` URLs are percent-decoded), so the C engine, which receives paths as
    NUL-terminated byte strings, never sees a NUL inside one."""
    problem = file_url_problem(path) or scheme_problem(path)
    if problem is not None:
        return problem
    local = local_path(path)
    url = local is not path
    if not path or not local:
        return "file:// URL has an empty path" if url else "path is empty"
    for text in (path, local) if url else (path,):
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            what = "file:// URL decodes to a path that" if text is local and url else "path"
            return f"{what} cannot be encoded for the OS ({exc.reason} at {exc.start})"
    if "\0" in local:
        return ("file:// URL decodes to a path with a NUL byte (%00)" if url
                else "path contains a NUL byte")
    return None


def _is_not_none(x: object) -> bool:
    return x is not None


def _normalize_each(items: list[Any] | tuple[Any, ...]) -> Requests:
    ids: dict[str, int] = {}
    paths: list[str] = []
    files: list[int] = []
    offsets: list[int] = []
    lengths: list[int] = []
    for index, item in enumerate(items):
        if isinstance(item, Chunk):
            path, offset, length = item.path, item.offset, item.length
        elif isinstance(item, tuple) and len(item) in (1, 3):
            path, offset, length = (item[0], 0, None) if len(item) == 1 else item
        elif isinstance(item, (str, os.PathLike)):
            path, offset, length = item, 0, None
        else:
            raise _bad(
                index, item,
                "expected lsio.Chunk(path, offset, length), (path,) or (path, offset, length)",
                TypeError,
            )
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            raise _bad(index, item, f"path must be str or os.PathLike, not {type(path).__name__}",
                       TypeError)
        why = _path_problem(path)
        if why is not None:
            raise _bad(index, item, why)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
            raise _bad(index, item, f"offset must be an int, not {type(offset).__name__}",
                       TypeError)
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
                raise _bad(index, item, f"length must be an int or None, not "
                           f"{type(length).__name__}", TypeError)
            if length < 0:
                raise _bad(index, item, f"length must be >= 0 (got {length}); use None to "
                           "read to the end of the file")
        if not -(2**63) <= offset < 2**63 or (length is not None and length >= 2**63):
            raise _bad(index, item, "offset or length does not fit in 64 bits")
        file = ids.get(path)
        if file is None:
            file = ids[path] = len(paths)
            paths.append(path)
        files.append(file)
        offsets.append(int(offset))
        lengths.append(-1 if length is None else int(length))
    try:
        offset_arr = np.array(offsets, dtype=np.int64)
        length_arr = np.array(lengths, dtype=np.int64)
    except OverflowError as exc:
        raise ValueError(f"lsio: an offset or length does not fit in 64 bits: {exc}") from None
    return Requests(paths, np.array(files, dtype=np.int64), offset_arr, length_arr)
