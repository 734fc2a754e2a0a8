"""fsspec's byte ranges as lsio requests.

fsspec's ``(start, end)`` means the file's bytes ``data[start:end]`` with Python's slice
rules (``None``: the file's start or end; negative: counted from the end; ``end`` past
the end: up to it; ``end <= start``: nothing). lsio's ``(offset, length)`` already reads
suffixes (negative ``offset``) and clamps at the end, so only two shapes need the file's
size first: a negative ``end`` after a non-negative ``start``, and a negative ``start``
before a non-negative ``end``. A negative ``end`` after a negative ``start`` is the suffix
less its last ``-end`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Want", "finish", "sized", "want", "widen"]

Want = tuple[int, int | None, int]
"""An lsio ``(offset, length)`` and how many bytes to cut off the end of what it reads."""


def want(start: int | None, end: int | None) -> Want | None:
    """``data[start:end]`` as ``(offset, length, cut)``, or ``None`` when the file's size
    is needed (then :func:`sized`)."""
    s = 0 if start is None else int(start)
    e = None if end is None else int(end)
    if s >= 0:
        if e is None:
            return (s, None, 0)
        return (s, max(e - s, 0), 0) if e >= 0 else None
    if e is None:
        return (s, None, 0)
    return (s, None, -e) if e < 0 else None


def sized(start: int | None, end: int | None, size: int) -> Want:
    """``data[start:end]`` of a file of ``size`` bytes as ``(offset, length, 0)``."""
    a, b, _ = slice(start, end).indices(size)
    return (a, max(b - a, 0), 0)


def finish(view: Any, cut: int) -> bytes:
    """The bytes fsspec returns: what was read, less ``cut`` bytes at its end."""
    mv = memoryview(view)
    return bytes(mv[:max(len(mv) - cut, 0)]) if cut else bytes(mv)


def widen(paths: Sequence[Any], starts: Any, ends: Any) -> tuple[list[Any], list[Any]]:
    """fsspec's ``cat_ranges`` arguments: one ``start``/``end`` for every path, or one
    each; ``TypeError``/``ValueError`` for anything else."""
    if not isinstance(paths, list):
        raise TypeError(f"lsio: cat_ranges takes a list of paths, not {type(paths).__name__}")
    s = list(starts) if isinstance(starts, Iterable) else [starts] * len(paths)
    e = list(ends) if isinstance(ends, Iterable) else [ends] * len(paths)
    if len(s) != len(paths) or len(e) != len(paths):
        raise ValueError(f"lsio: cat_ranges got {len(paths)} paths, {len(s)} starts and "
                         f"{len(e)} ends")
    return s, e
