"""lsio: Light Speed IO. Read many chunks of data as fast as the hardware allows.

The road of a call: call (``_call``: parsed once) -> route (``_route``: small or bulk) ->
backend (``backends``: the local one, io_uring or threads, or HTTP; each serves its small
path, and the bulk road's stat / plan / read) -> outcome (``_outcome``: missing files,
progress, the lowest-index error, stats) -> result (``_results``).

>>> results = await lsio.read_many([("data.bin", 0, 4096), lsio.Chunk("other.bin")])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import BackendWarning as BackendWarning
from ._request import Chunk as Chunk
from ._results import Results as Results
from ._url import HttpOptions as HttpOptions

if TYPE_CHECKING:
    from ._outcome import Stats as Stats
    from ._pipeline import PipelineArg
    from ._pipeline import copy_to as copy_to
    from ._progress import ProgressArg
    from ._reader import Reader as Reader
    from ._reader import backend_name as backend_name
    from ._types import OnError

__all__ = [
    "BackendWarning",
    "Chunk",
    "HttpOptions",
    "Reader",
    "Results",
    "Stats",
    "backend_name",
    "clear_caches",
    "copy_to",
    "iter_many",
    "read_many",
    "read_many_sync",
]

__version__ = "0.1.0"


def _engine(name: str) -> Any:
    """``Reader``, ``Stats``, ``backend_name`` and ``copy_to`` come with the engine
    (asyncio, io_uring, the planner, the backends, the thread pools), loaded on first use:
    ``import lsio`` costs little more than numpy, and ``from lsio import Reader`` works as
    usual (PEP 562)."""
    module: Any
    if name in ("Reader", "backend_name"):
        from . import _reader as module
    elif name == "copy_to":
        from . import _pipeline as module
    elif name == "Stats":
        from . import _outcome as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups find it without calling this
    return value


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all attribute
    __getattr__ = _engine


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_default: Callable[[], Reader] | None = None


def _default_reader() -> Reader:
    """The engine's default reader; the first call loads the engine. (Kept here once
    loaded: an import statement on every call would cost the small-call path ~1-3 us.)"""
    global _default
    if _default is None:
        from ._reader import default_reader

        _default = default_reader
    return _default()


async def _load_engine() -> None:
    """Import the engine on a worker thread: the first call of a process would otherwise
    hold the event loop ~40-110 ms importing it (the loop keeps running between the
    import's GIL slices)."""
    import asyncio
    import importlib

    try:
        await asyncio.to_thread(importlib.import_module, "lsio._reader")
    except RuntimeError:  # the loop's default executor is shut down: import here
        importlib.import_module("lsio._reader")


async def read_many(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                    progress: ProgressArg = False, missing_ok: bool = False,
                    pipeline: PipelineArg = None, on_error: OnError = "raise") -> Any:
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
    missing_ok
        A file or object that does not exist gives ``None`` instead of raising
        ``FileNotFoundError`` (e.g. Zarr chunks never written).
    pipeline
        Steps run on each chunk as soon as it arrives, all steps of a chunk back to back on
        one worker thread per core: a list of steps for every request, a list of step lists
        (one per request), or a function of the request index returning the steps. A step
        is a callable ``buffer -> buffer`` or a codec with ``.decode`` (numcodecs); a step
        returning ``None`` (such as :class:`lsio.copy_to`) ends the chain.
    on_error
        ``"raise"`` (default): the lowest failing request's ``OSError`` is raised.
        ``"return"``: the call reads every request it can; a failed request's item is its
        exception (the one ``"raise"`` would raise for it, naming its path), the
        result's ``errors`` array marks them, and a failed request's ``out`` buffer holds
        undefined bytes (see :meth:`Reader.read_many`).

    Returns
    -------
    Results
        A sequence, in request order, of ``memoryview`` chunks; with ``pipeline``, a list
        of each request's last step output.
    """
    if _default is None:
        await _load_engine()
    return await _default_reader().read_many(requests, out=out, progress=progress,
                                            missing_ok=missing_ok, pipeline=pipeline,
                                            on_error=on_error)


def read_many_sync(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                   progress: ProgressArg = False, missing_ok: bool = False,
                   pipeline: PipelineArg = None, on_error: OnError = "raise") -> Any:
    """Blocking :func:`read_many`; works inside a running event loop (e.g. Jupyter)."""
    return _default_reader().read_many_sync(requests, out=out, progress=progress,
                                           missing_ok=missing_ok, pipeline=pipeline,
                                           on_error=on_error)


def clear_caches() -> None:
    """Forget what lsio keeps between calls: parsed Zarr metadata, decode chains, the
    chunk jobs of selections, shard indexes.

    Never needed for correctness: every entry is keyed on the bytes it was made from or
    on the identity of the file it stands for (device, inode, size, modification and
    change times; a strong ETag remotely), and lsio's own writes (``LsioStore.set`` and
    ``delete``) drop the entries of what they write. Use it to give the memory back, or
    to time cold calls. A forked child starts with empty caches."""
    from ._cache import clear_all

    clear_all()


def iter_many(requests: Iterable[Any], *, out: Sequence[Any] | None = None,
              progress: ProgressArg = False, missing_ok: bool = False,
              on_error: OnError = "raise") -> AsyncIterator[tuple[int, memoryview]]:
    """``async for index, chunk in lsio.iter_many(requests)``: chunks in completion order;
    the iterator's ``stats`` tells what the call did once it is exhausted. With
    ``on_error="return"`` a failed request comes as ``(index, exception)``."""
    return _default_reader().iter_many(requests, out=out, progress=progress,
                                      missing_ok=missing_ok, on_error=on_error)
