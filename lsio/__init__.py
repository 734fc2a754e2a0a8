"""lsio: Light Speed IO. Read many chunks of data as fast as the hardware allows.

The data flow: requests (``_request``) -> plan (``_plan``) -> backend (``backends``: io_uring
in ``_ring``, or a thread pool) -> results (``_results``).

>>> results = await lsio.read_many([("data.bin", 0, 4096), lsio.Chunk("other.bin")])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from ._errors import BackendWarning as BackendWarning
from ._progress import ProgressArg
from ._reader import Reader as Reader
from ._reader import backend_name as backend_name
from ._reader import default_reader
from ._request import Chunk as Chunk
from ._results import Results as Results
from ._url import HttpOptions as HttpOptions

__all__ = [
    "BackendWarning",
    "Chunk",
    "HttpOptions",
    "Reader",
    "Results",
    "backend_name",
    "iter_many",
    "read_many",
    "read_many_sync",
]

__version__ = "0.1.0"


async def read_many(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                    progress: ProgressArg = False) -> Results:
    """Read many chunks in one call with the default :class:`Reader`.

    Parameters
    ----------
    requests
        ``lsio.Chunk(path, offset=0, length=None)`` or tuples ``(path,)`` /
        ``(path, offset, length)``. ``length=None`` reads to the end of the file; a negative
        ``offset`` counts from the end.
    out
        Optional destination buffers, one writable buffer per request; each request's bytes
        land at the start of its buffer with no extra copy.
    progress
        ``True`` shows a ``tqdm`` progress bar (chunks, with bytes alongside; a widget in
        Jupyter); a callable is called as ``fn(chunks_done, chunks_total, bytes_done)``.

    Returns
    -------
    Results
        A sequence, in request order, of ``memoryview`` chunks.
    """
    return await default_reader().read_many(requests, out=out, progress=progress)


def read_many_sync(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                   progress: ProgressArg = False) -> Results:
    """Blocking :func:`read_many`; works inside a running event loop (e.g. Jupyter)."""
    return default_reader().read_many_sync(requests, out=out, progress=progress)


def iter_many(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
              progress: ProgressArg = False) -> AsyncIterator[tuple[int, memoryview]]:
    """``async for index, chunk in lsio.iter_many(requests)``: chunks in completion order."""
    return default_reader().iter_many(requests, out=out, progress=progress)
