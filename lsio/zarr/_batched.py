"""The batched C path: many chunks decoded and placed per GIL-free call.

For unsharded arrays whose chunks the C decoder handles (blosc, zstd or no compression, native
byte order, no transpose) and basic selections of ints and unit-step slices: the chunk grid
work is done with numpy arrays up front, then each window of chunks is read with one
``read_many`` and decoded by the pinned workers straight into the output.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._defaults import BATCH_WINDOW, BATCH_WINDOWS_MIN
from .._progress import make_progress
from .._reader import Reader
from ._chain import Chain
from ._store import join

__all__ = ["batch_plan", "codecs_lib", "read_batched"]


def codecs_lib() -> Any:
    try:
        from .. import _codecs  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _codecs


def _chunk_dtype(ffi: Any) -> np.dtype[Any]:
    """numpy twin of the C ``lsio_chunk`` struct, read from the compiled struct itself
    (field offsets and size from cffi), so the struct is written once, in codecs.h."""
    fields = [("src", "<u8"), ("srclen", "<u8"), ("dst", "<u8"), ("src_offset", "<i8"),
              ("shape", ("<i8", 8)), ("dst_strides", ("<i8", 8))]
    return np.dtype({"names": [n for n, _ in fields], "formats": [f for _, f in fields],
                     "offsets": [ffi.offsetof("lsio_chunk", n) for n, _ in fields],
                     "itemsize": ffi.sizeof("lsio_chunk")})


@dataclass(frozen=True)
class BatchPlan:
    """The chunk grid work of a basic selection, as arrays, for the C path: one row per
    chunk the selection touches (none for an empty selection), in C order of the grid."""

    lib: Any
    """The compiled ``lsio._codecs`` module (its ``lib`` and ``ffi``)."""
    codec: int
    """How every chunk is stored: ``LSIO_CODEC_RAW``, ``LSIO_CODEC_BLOSC`` or
    ``LSIO_CODEC_ZSTD``."""
    coords: npt.NDArray[np.int64]
    """Grid coordinates of each chunk (its key is ``c/i/j/...``), shape (chunks, ndim)."""
    jobs: npt.NDArray[Any]
    """One C ``lsio_chunk`` per chunk: where its selected block starts in the decoded chunk,
    its shape, and its address and strides in the output; ``src`` and ``srclen`` are set per
    window, once the chunks are read."""
    ostarts: npt.NDArray[np.int64]
    """Where each chunk's block starts in the output, per array dimension (missing chunks
    fill their block from it)."""
    kept: tuple[bool, ...]
    """Per array dimension: whether it is a dimension of the output (a slice) or dropped
    (an int); empty for an empty selection."""

    @property
    def empty(self) -> bool:
        """Nothing selected: no chunk to read."""
        return len(self.jobs) == 0

    @classmethod
    def nothing(cls, lib: Any, codec: int, ndim: int) -> BatchPlan:
        """The plan of an empty selection."""
        return cls(lib=lib, codec=codec, coords=np.zeros((0, ndim), np.int64),
                   jobs=np.zeros(0, _chunk_dtype(lib.ffi)),
                   ostarts=np.zeros((0, ndim), np.int64), kept=())


def batch_plan(decode: Chain, selection: Any, meta: Any, out: npt.NDArray[Any]
               ) -> BatchPlan | None:
    """The chunk grid work of a basic selection, as arrays, when the C path applies: native
    byte order, no transpose, blosc / zstd / no compression, ints and unit-step slices,
    default chunk keys."""
    lib = codecs_lib()
    if lib is None:
        return None
    codec = _codec(lib, decode, meta, out)
    shape, chunks = tuple(meta.shape), decode.shape
    sel = None if codec is None else _full_selection(selection, len(shape))
    if codec is None or sel is None:
        return None
    # per array dim: (chunk index, start in chunk, length, start in out) arrays
    per_dim: list[tuple[npt.NDArray[np.int64], ...]] = []
    out_dim = 0
    out_strides, dims_kept = [], []
    for n, c, x in zip(shape, chunks, sel, strict=True):
        span = _span(n, x)
        if span is None:
            return None
        lo, hi, kept = span
        if lo >= hi:
            return BatchPlan.nothing(lib, codec, len(shape))
        first, last = lo // c, (hi - 1) // c
        idx = np.arange(first, last + 1, dtype=np.int64)
        start = np.maximum(lo - idx * c, 0)
        stop = np.minimum(hi - idx * c, c)
        per_dim.append((idx, start, stop - start, idx * c + start - lo))
        if kept:
            out_strides.append(out.strides[out_dim])
            out_dim += 1
        else:
            out_strides.append(0)
        dims_kept.append(kept)
    return _grid_jobs(lib, codec, decode, out, per_dim, out_strides, dims_kept)


def _codec(lib: Any, decode: Chain, meta: Any, out: npt.NDArray[Any]) -> int | None:
    """The C codec of the array's chunks, or None where the C path does not apply."""
    names = [type(c).__name__ for c in decode.byte_codecs]
    codec: int | None = {(): lib.lib.LSIO_CODEC_RAW, ("Blosc",): lib.lib.LSIO_CODEC_BLOSC,
                         ("Zstd",): lib.lib.LSIO_CODEC_ZSTD}.get(tuple(names))
    shape = tuple(meta.shape)
    enc = meta.chunk_key_encoding
    if (codec is None or decode.order is not None or len(shape) > lib.lib.LSIO_MAX_DIM
            or len(shape) == 0 or not decode.dtype.isnative or decode.dtype != out.dtype
            or getattr(enc, "name", "") != "default" or getattr(enc, "separator", "") != "/"):
        return None
    return codec


def _full_selection(selection: Any, ndim: int) -> tuple[Any, ...] | None:
    """The selection with one entry per dimension (``...`` and the trailing dimensions as
    whole slices), or None if it has more entries than dimensions or several ``...``."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    if sum(x is Ellipsis for x in sel) > 1:
        return None
    if Ellipsis in sel:
        k = sel.index(Ellipsis)
        sel = sel[:k] + (slice(None),) * (ndim - len(sel) + 1) + sel[k + 1:]
    sel = sel + (slice(None),) * (ndim - len(sel))
    if len(sel) != ndim:
        return None
    return sel


def _span(n: int, x: Any) -> tuple[int, int, bool] | None:
    """(first, end, kept) of one dimension's selection of ``n``: an int (not kept in the
    output) or a unit-step slice (kept); None for anything else."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        i = int(x) + n if x < 0 else int(x)
        return i, i + 1, False
    if isinstance(x, slice) and x.step in (None, 1):
        lo, hi, _ = x.indices(n)
        return lo, max(hi, lo), True
    return None


def _grid_jobs(lib: Any, codec: int, decode: Chain, out: npt.NDArray[Any],
               per_dim: list[tuple[npt.NDArray[np.int64], ...]], out_strides: list[int],
               dims_kept: list[bool]) -> BatchPlan:
    """Every combination of the dimensions' chunks, as a plan: the grid coordinates, and
    each block's shape, offset in its decoded chunk, and address and strides in ``out``."""
    grids = np.meshgrid(*[np.arange(len(d[0])) for d in per_dim], indexing="ij")
    picks = [g.ravel() for g in grids]
    ndim = len(per_dim)
    chunks = decode.shape
    coords = np.stack([per_dim[k][0][picks[k]] for k in range(ndim)], axis=1)
    jobs = np.zeros(len(coords), _chunk_dtype(lib.ffi))
    ostarts = np.zeros((len(coords), ndim), np.int64)
    item = decode.dtype.itemsize
    cstrides = np.cumprod((chunks[1:] + (1,))[::-1])[::-1] * item
    for k in range(ndim):
        idx, start, length, ostart = (a[picks[k]] for a in per_dim[k])
        jobs["shape"][:, k] = length
        jobs["src_offset"] += start * int(cstrides[k])
        jobs["dst"] += (ostart * out_strides[k]).astype(np.uint64)
        jobs["dst_strides"][:, k] = out_strides[k]
        ostarts[:, k] = ostart
    jobs["dst"] += np.uint64(out.ctypes.data)
    return BatchPlan(lib=lib, codec=codec, coords=coords, jobs=jobs, ostarts=ostarts,
                     kept=tuple(dims_kept))


async def read_batched(reader: Reader, root: str, plan: BatchPlan, decode: Chain,
                       out: npt.NDArray[Any], fill: Any, progress: Any) -> None:
    """Read the chunks window by window; each window is decoded by the pinned workers in
    two GIL-free C calls while the next window is read."""
    from .._pipeline import worker_count, worker_pool

    if plan.empty:
        return
    keys = ["c/" + "/".join(map(str, c)) for c in plan.coords.tolist()]
    paths = [join(root, k) for k in keys]
    loop = asyncio.get_running_loop()
    pool = worker_pool()
    workers = worker_count()
    chunk_shape = np.array(decode.shape, np.int64)
    pending: list[asyncio.Future[None]] = []

    running: list[Any] = []  # concurrent futures: C calls write into `out` until done

    size = min(BATCH_WINDOW, max(64, -(-len(paths) // BATCH_WINDOWS_MIN)))
    bar = make_progress(progress)  # one bar (or callback) for all the windows
    if bar is not None:
        bar.start(len(paths))
    try:
        for lo in range(0, len(paths), size):
            hi = min(lo + size, len(paths))
            results = await reader.read_many([(p, 0, None) for p in paths[lo:hi]],
                                             missing_ok=True)
            if bar is not None:
                bar(np.arange(lo, hi), results, np.arange(hi - lo))
            window = plan.jobs[lo:hi].copy()
            window["src"], window["srclen"] = results.addresses()
            found = ~results.missing
            _fill_missing(plan, lo, window, results.missing, out, fill)
            window = window[found]
            for part in np.array_split(window, workers):
                if len(part):
                    cf = pool.submit(_decode_scatter, plan, chunk_shape, decode, root, part,
                                     (results, out))
                    running.append(cf)
                    pending.append(asyncio.wrap_future(cf, loop=loop))
            if len(pending) > 2 * workers:  # at most two windows in flight
                done, rest = pending[:-workers], pending[-workers:]
                await asyncio.gather(*done)
                pending = rest
        await asyncio.gather(*pending)
    finally:
        # cancelled or failed: the C calls already running still write into `out`, whose
        # memory returns to the pool once the caller lets go; wait for them to end
        for cf in running:
            if not cf.done() and not cf.cancel():
                await asyncio.shield(asyncio.wrap_future(cf, loop=loop))
        if bar is not None:
            bar.close()


def _fill_missing(plan: BatchPlan, lo: int, window: npt.NDArray[Any],
                  missing: npt.NDArray[np.bool_], out: npt.NDArray[Any], fill: Any) -> None:
    """Set the blocks of the window's missing chunks (from chunk ``lo`` on) to ``fill``."""
    for k in np.flatnonzero(missing).tolist():  # never written: fill
        region = tuple(slice(int(o), int(o + n)) for o, n, kept in zip(
            plan.ostarts[lo + k], window["shape"][k], plan.kept, strict=False)
            if kept)
        out[region] = fill


def _decode_scatter(plan: BatchPlan, chunk_shape: npt.NDArray[np.int64], decode: Chain,
                    root: str, batch: npt.NDArray[Any], keep: Any) -> None:
    """Decode the chunks of ``batch`` and place their blocks in the output, in one GIL-free
    C call (on a pipeline worker); ``keep`` holds the chunks' and output's memory meanwhile."""
    lib, ffi = plan.lib.lib, plan.lib.ffi
    nbytes = decode.nbytes
    scratch = np.empty(nbytes, np.uint8)
    ret = lib.lsio_decode_scatter(
        plan.codec, ffi.cast("lsio_chunk *", batch.ctypes.data), len(batch),
        len(chunk_shape), ffi.cast("int64_t *", chunk_shape.ctypes.data),
        decode.dtype.itemsize, ffi.cast("char *", scratch.ctypes.data), nbytes)
    if ret == lib.LSIO_DECODE_NOMEM:
        raise MemoryError("lsio.zarr.read: no memory for a zstd decompression context")
    if ret < 0:
        bad = int(batch["src"][-1 - ret]) if -1 - ret < len(batch) else 0
        raise ValueError(f"lsio.zarr.read: a chunk of {root!r} is corrupt or has the "
                         f"wrong size (stored chunk at 0x{bad:x})")
    del keep
