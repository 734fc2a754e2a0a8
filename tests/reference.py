"""The reference every read is checked against: ``os.pread`` of the documented range.

Standard library only: the benchmarks import it too (``tests.reference``), to check what the
contenders return.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

__all__ = ["expected_bytes"]


def expected_bytes(path: str | os.PathLike[str], offset: int = 0,
                   length: int | None = None) -> bytes:
    """The bytes lsio must return for ``(path, offset, length)``: ``os.pread`` of the
    documented range (``file://`` URLs decoded; a negative ``offset`` counts from the end;
    ``None`` or a length past the end means "to the end")."""
    if isinstance(path, str) and path.startswith("file://"):
        path = unquote(path[7:])
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        start = max(size + offset, 0) if offset < 0 else offset
        count = size if length is None else min(length, max(size - start, 0))
        return os.pread(fd, count, start) if count else b""
    finally:
        os.close(fd)
