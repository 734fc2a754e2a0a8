"""A call, parsed once: the first stage of every road (call -> route -> backend -> outcome).

``read_many`` and its twins turn their arguments into one :class:`Call` before anything else
happens. A short list of plain requests (``(path, offset, length)`` tuples, ``(path,)``,
paths, ``Chunk``) is parsed by one pass over it (:func:`lsio._request.plain_requests`); the
small-call paths read that parse, and the bulk path's arrays (:class:`lsio._request.Requests`)
are built from it without a second look at the list. Any other list goes through
:func:`lsio._request.normalize`, which names the first bad request. ``out=`` is checked here,
once, for every road.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._outcheck import holds_pointers
from ._request import Requests, normalize, paths_ok, plain_requests

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._progress import Progress

__all__ = ["Call", "parse"]

@dataclass(slots=True)
class Call:
    """One ``read_many`` call, parsed once."""

    items: list[Any] | tuple[Any, ...]
    """The requests as given (a generator is listed first)."""

    out: Sequence[Any] | None
    """The caller's buffers, checked (:func:`_check_out`), or ``None``."""

    caps: npt.NDArray[np.int64] | None
    """Bytes each ``out`` buffer holds."""

    missing_ok: bool
    """A file or object that does not exist gives ``None``."""

    plain: tuple[list[str], list[int], list[int]] | None
    """Per request: path, offset, length (-1: to the end), for a short list of plain
    requests; ``None`` otherwise."""

    progress: Progress | None = None
    """Told of every finished request (``progress=``), or ``None``."""

    pipeline: bool = False
    """Steps run on each chunk (``pipeline=``)."""

    sync: bool = False
    """The caller's thread blocks until the call ends (``read_many_sync``, not on a loop)."""

    _reqs: Requests | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def remote(self) -> bool:
        """Whether the first request names a URL (a hint for the route; the bulk path
        splits a mixed call by each path)."""
        if self.plain is not None:
            return bool(self.plain[0]) and "://" in self.plain[0][0]
        return self.reqs().has_urls()

    def reqs(self) -> Requests:
        """The requests as arrays (built from the plain parse when there is one)."""
        if self._reqs is None:
            self._reqs = _from_plain(self.plain) if self.plain is not None else None
            if self._reqs is None:
                self._reqs = normalize(self.items)
        return self._reqs

    def known_paths(self) -> list[str]:
        """The paths parsed so far (for ``Stats.files`` of a call that failed early)."""
        if self.plain is not None:
            return self.plain[0]
        return self._reqs.paths if self._reqs is not None else []

    def describe(self, index: int) -> str:
        """Human text for request ``index``, for error messages."""
        return self.reqs().describe(index)


def parse(requests: Iterable[Any], out: Sequence[Any] | None, missing_ok: bool, *,
          plain_max: int, progress: Progress | None = None, pipeline: bool = False,
          sync: bool = False) -> Call:
    """The call, parsed: ``TypeError``/``ValueError`` for a lone path or bad ``out=``; a bad
    request is named when its arrays are first needed (:meth:`Call.reqs`), before any I/O.
    Lists of up to ``plain_max`` requests get the one-pass plain parse the small paths
    read (``lsio._route.plain_limit``)."""
    items: list[Any] | tuple[Any, ...]
    if type(requests) is list or type(requests) is tuple:
        items = requests
    else:
        if isinstance(requests, (str, bytes, os.PathLike)):
            normalize(requests)  # raises, naming the mistake
        items = requests if isinstance(requests, (list, tuple)) else list(requests)
    caps = None if out is None else _check_out(out, len(items))
    plain = plain_requests(items) if len(items) <= plain_max else None
    return Call(items, out, caps, missing_ok, plain, progress, pipeline, sync)


def _from_plain(plain: tuple[list[str], list[int], list[int]]) -> Requests | None:
    """:class:`Requests` from the plain parse; ``None`` if a path needs ``normalize`` to
    name what is wrong with it (empty, a NUL, not encodable, a bad ``file://`` URL)."""
    paths, offsets, lengths = plain
    if not paths:
        return None
    ids = {p: i for i, p in enumerate(dict.fromkeys(paths))}
    distinct = list(ids)
    if not paths_ok(distinct):
        return None
    file = (np.zeros(len(paths), np.int64) if len(distinct) == 1 else
            np.fromiter(map(ids.__getitem__, paths), np.int64, len(paths)))
    return Requests(distinct, file, np.array(offsets, np.int64), np.array(lengths, np.int64))


def _check_out(out: Sequence[Any], n: int) -> npt.NDArray[np.int64]:
    """Bytes each of the caller's buffers holds; ``ValueError``/``TypeError`` naming
    ``out[i]`` for one that cannot take file bytes."""
    if len(out) != n:
        raise ValueError(f"lsio: out has {len(out)} buffers for {n} requests")
    caps = np.zeros(n, np.int64)
    for i, buf in enumerate(out):
        try:
            view = memoryview(buf)
        except TypeError:
            raise TypeError(f"lsio: out[{i}] ({type(buf).__name__}) does not support the "
                            "buffer protocol") from None
        if view.readonly:
            raise TypeError(f"lsio: out[{i}] is read-only")
        if holds_pointers(buf, view):
            raise TypeError(f"lsio: out[{i}] holds Python objects or pointers (format "
                            f"{view.format!r}): file bytes cannot be written over them")
        if not view.c_contiguous:
            raise ValueError(f"lsio: out[{i}] is not C-contiguous")
        caps[i] = view.nbytes
    return caps
