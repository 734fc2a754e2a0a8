"""The batched C path: many chunks decoded and placed per GIL-free call.

For chunks the C decoder handles (blosc, zstd or no compression; either byte order, any
transpose) and blocks given by ints and slices with positive steps: one C ``lsio_chunk`` per
chunk says where its block starts in the decoded chunk, its shape and strides, and where it
goes in the output. :func:`batch_plan` works out a basic selection's jobs with numpy arrays
up front (the fast path over a whole chunk grid); :func:`block_job` one chunk's, from the
selections zarr's indexers give (the codec pipeline, sharded inner chunks). Then each window
of chunks is read with one ``read_many`` and decoded by the pinned workers straight into the
output.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._defaults import (
    BATCH_WINDOW,
    BATCH_WINDOWS_MIN,
    SMALL_BYTES,
    SMALL_COLD_REQUESTS,
    SMALL_REQUESTS,
)
from .._progress import make_progress
from .._reader import Reader
from ._chain import Chain

__all__ = ["Decoder", "batch_plan", "block_job", "c_decoder", "codecs_lib", "extent", "jobs_of",
           "read_batched", "slice_jobs"]


READ_AHEAD = 3
"""Windows of chunks read at once on the ring path (at most ``BATCH_WINDOW`` chunks each):
cold 64x64 chunks (1 824 files) took 0.27 s one window at a time here, against 0.09-0.13 s
for the ring reading them all in one call."""

INLINE_DECODE_BYTES = 512 << 10
"""Cached chunks decoding to at most this many bytes in all are read and decoded on the
caller's thread (the event loop's, under ~1 ms here: blosc-zstd decodes 256 KiB in
~0.4 ms) instead of the workers': a thread hop and wake-up cost 0.3-0.5 ms on this VM,
as much as the decode of one 256x256 float32 chunk. One such chunk through zarr: 0.90 ms
against 1.53 ms on the workers (zarrs 1.00, zarr's own pipeline 1.96); four (1 MiB) were
faster on the two workers (zarr arrays read one chunk at a time, Dask tasks of one
chunk)."""

PART_BYTES = 4 << 20
"""Decoded bytes of the chunks one worker reads and decodes per small-path call (at most
``SMALL_REQUESTS`` chunks): 16 chunks of 256x256 float32, so their stored bytes are still
in the CPU's cache when decoded; the parts are then evened out over the workers."""

WORKER_READ_BYTES = 64 << 20
"""Most bytes one worker part reads at once (up to ``SMALL_REQUESTS`` chunks); bigger
parts go through the ring."""

POPULATE = True
"""Fault in fresh output memory ahead of the C calls (``_populate``); a switch for A/B runs."""

POPULATE_MIN = 16 << 20
"""Outputs from this size on are populated ahead; below it the page faults cost little."""


def codecs_lib() -> Any:
    try:
        from .. import _codecs  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _codecs


@functools.cache
def _chunk_dtype(ffi: Any) -> np.dtype[Any]:
    """numpy twin of the C ``lsio_chunk`` struct, read from the compiled struct itself
    (field offsets and size from cffi), so the struct is written once, in codecs.h."""
    fields = [("src", "<u8"), ("srclen", "<u8"), ("dst", "<u8"), ("src_offset", "<i8"),
              ("shape", ("<i8", 8)), ("src_strides", ("<i8", 8)), ("dst_strides", ("<i8", 8)),
              ("out", "<u8"), ("outlen", "<u8")]
    return np.dtype({"names": [n for n, _ in fields], "formats": [f for _, f in fields],
                     "offsets": [ffi.offsetof("lsio_chunk", n) for n, _ in fields],
                     "itemsize": ffi.sizeof("lsio_chunk")})


@dataclass(frozen=True)
class Decoder:
    """How the C decoder handles the chunks of one array into one output dtype."""

    lib: Any
    """The compiled ``lsio._codecs`` module (its ``lib`` and ``ffi``)."""
    codec: int
    """How every chunk is stored: ``LSIO_CODEC_RAW``, ``LSIO_CODEC_BLOSC`` or
    ``LSIO_CODEC_ZSTD``."""
    ndim: int
    shape: tuple[int, ...]
    """Shape of a decoded chunk, in the array's dimension order: every job's block must lie
    inside it (the C calls copy from a scratch buffer of ``chunk_bytes``)."""
    chunk_bytes: int
    """Decoded size of a chunk."""
    itemsize: int
    swap: bool
    """Stored in the other byte order than the output: each element's bytes reversed."""
    strides: tuple[int, ...]
    """Byte strides of the decoded chunk in the array's dimension order (a transpose
    codec permutes the stored C-order strides)."""

    def jobs(self, n: int) -> npt.NDArray[Any]:
        return np.zeros(n, _chunk_dtype(self.lib.ffi))


def c_decoder(decode: Chain, out_dtype: np.dtype[Any]) -> Decoder | None:
    """The C decoder for chunks decoded by ``decode`` into an output of ``out_dtype``, or
    None where it does not apply (other codecs, other dtype, more than 8 dimensions)."""
    lib = codecs_lib()
    if lib is None:
        return None
    names = tuple(type(c).__name__ for c in decode.byte_codecs)
    codec: int | None = {(): lib.lib.LSIO_CODEC_RAW, ("Blosc",): lib.lib.LSIO_CODEC_BLOSC,
                         ("Zstd",): lib.lib.LSIO_CODEC_ZSTD}.get(names)
    stored, ndim = decode.dtype, len(decode.shape)
    same = stored == out_dtype
    swapped = (not same and stored.kind in "iuf" and stored.itemsize > 1
               and stored.newbyteorder("=") == out_dtype.newbyteorder("="))
    if (codec is None or not (same or swapped) or ndim == 0 or ndim > lib.lib.LSIO_MAX_DIM
            or stored.hasobject or out_dtype.hasobject):
        return None
    item = stored.itemsize
    cstrides = [item] * ndim
    for k in range(ndim - 2, -1, -1):
        cstrides[k] = cstrides[k + 1] * decode.stored_shape[k + 1]
    if decode.order is not None:  # array dim k is stored as dim inverse[k]
        inverse = np.argsort(decode.order).tolist()
        cstrides = [cstrides[inverse[k]] for k in range(ndim)]
    return Decoder(lib=lib, codec=codec, ndim=ndim, shape=tuple(decode.shape),
                   chunk_bytes=decode.nbytes,
                   itemsize=item, swap=swapped, strides=tuple(cstrides))


@dataclass(frozen=True)
class BatchPlan:
    """The chunk grid work of a basic selection, as arrays, for the C path: one row per
    chunk the selection touches (none for an empty selection), in C order of the grid."""

    decoder: Decoder
    coords: npt.NDArray[np.int64]
    """Grid coordinates of each chunk (its key is ``c/i/j/...``), shape (chunks, ndim)."""
    jobs: npt.NDArray[Any]
    """One C ``lsio_chunk`` per chunk: where its selected block starts in the decoded chunk,
    its shape and strides, and its address and strides in the output; ``src`` and
    ``srclen`` are set per window, once the chunks are read."""
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
    def nothing(cls, decoder: Decoder) -> BatchPlan:
        """The plan of an empty selection."""
        return cls(decoder=decoder, coords=np.zeros((0, decoder.ndim), np.int64),
                   jobs=decoder.jobs(0), ostarts=np.zeros((0, decoder.ndim), np.int64),
                   kept=())

    def fill_missing(self, out: npt.NDArray[Any], fill: Any) -> Callable[[Sequence[int]],
                                                                             None]:
        """Sets the blocks of the chunks at the given plan rows to ``fill``."""
        def fill_rows(rows: Sequence[int]) -> None:
            for k in rows:
                region = tuple(slice(int(o), int(o + n)) for o, n, kept in zip(
                    self.ostarts[k], self.jobs["shape"][k], self.kept, strict=False) if kept)
                out[region] = fill
        return fill_rows


def batch_plan(decode: Chain, selection: Any, meta: Any, out: npt.NDArray[Any]
               ) -> BatchPlan | None:
    """The chunk grid work of a basic selection, as arrays, when the C path applies: the
    C decoder handles the codecs, ints and slices with positive steps, default chunk keys."""
    decoder = c_decoder(decode, out.dtype)
    enc = meta.chunk_key_encoding
    if (decoder is None or getattr(enc, "name", "") != "default"
            or getattr(enc, "separator", "") != "/"):
        return None
    shape, chunks = tuple(meta.shape), decode.shape
    if max(shape + chunks, default=0) >= 2**62:  # its int64 arithmetic could wrap: the
        return None  # per-chunk path works with Python ints
    sel = _full_selection(selection, len(shape))
    if sel is None:
        return None
    # per array dim: (chunk index, start in chunk, length, start in out, step) arrays
    per_dim: list[tuple[npt.NDArray[np.int64], ...]] = []
    out_dim = 0
    out_strides, dims_kept = [], []
    for n, c, x in zip(shape, chunks, sel, strict=True):
        span = _span(n, x)
        if span is None:
            return None
        lo, count, step, kept = span
        if count <= 0:
            return BatchPlan.nothing(decoder)
        per_dim.append(_dim_blocks(lo, count, step, c))
        if kept:
            out_strides.append(out.strides[out_dim])
            out_dim += 1
        else:
            out_strides.append(0)
        dims_kept.append(kept)
    return _grid_jobs(decoder, out, per_dim, out_strides, dims_kept)


def _dim_blocks(lo: int, count: int, step: int, c: int) -> tuple[npt.NDArray[np.int64], ...]:
    """One dimension's selection (``count`` elements from ``lo`` every ``step``) cut by
    chunks of ``c``: (chunk index, first element in the chunk, elements, first position in
    the output, step) per chunk holding at least one element."""
    last = lo + (count - 1) * step
    idx = np.arange(lo // c, last // c + 1, dtype=np.int64)
    begin = idx * c
    first = np.where(begin > lo, lo + -(-(begin - lo) // step) * step, lo)
    end = np.minimum(begin + c, last + 1)
    n = np.where(first < end, (end - 1 - first) // step + 1, 0)
    some = n > 0
    idx, first, n = idx[some], first[some], n[some]
    return idx, first - idx * c, n, (first - lo) // step, np.full(len(idx), step, np.int64)


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


def _span(n: int, x: Any) -> tuple[int, int, int, bool] | None:
    """(first, count, step, kept) of one dimension's selection of ``n``: an int (not kept
    in the output) or a slice with a positive step (kept); None for anything else."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        i = int(x) + n if x < 0 else int(x)
        return (i, 1, 1, False) if 0 <= i < n else None
    if isinstance(x, slice) and (x.step is None or (isinstance(x.step, (int, np.integer))
                                                    and x.step > 0)):
        lo, hi, step = x.indices(n)
        return lo, len(range(lo, hi, step)), step, True
    return None


def _grid_jobs(decoder: Decoder, out: npt.NDArray[Any],
               per_dim: list[tuple[npt.NDArray[np.int64], ...]], out_strides: list[int],
               dims_kept: list[bool]) -> BatchPlan:
    """Every combination of the dimensions' chunks, as a plan: the grid coordinates, and
    each block's shape, offset and strides in its decoded chunk, and address and strides
    in ``out``."""
    grids = np.meshgrid(*[np.arange(len(d[0])) for d in per_dim], indexing="ij")
    picks = [g.ravel() for g in grids]
    ndim = len(per_dim)
    coords = np.stack([per_dim[k][0][picks[k]] for k in range(ndim)], axis=1)
    jobs = decoder.jobs(len(coords))
    ostarts = np.zeros((len(coords), ndim), np.int64)
    for k in range(ndim):
        idx, start, length, ostart, step = (a[picks[k]] for a in per_dim[k])
        jobs["shape"][:, k] = length
        jobs["src_offset"] += start * decoder.strides[k]
        jobs["src_strides"][:, k] = step * decoder.strides[k]
        jobs["dst"] += (ostart * out_strides[k]).astype(np.uint64)
        jobs["dst_strides"][:, k] = out_strides[k]
        ostarts[:, k] = ostart
    jobs["dst"] += np.uint64(out.ctypes.data)
    jobs["out"], jobs["outlen"] = extent(out)
    return BatchPlan(decoder=decoder, coords=coords, jobs=jobs, ostarts=ostarts,
                     kept=tuple(dims_kept))


Row = tuple[int, list[int], list[int], int, list[int], tuple[int, int]]
"""A :func:`block_job`: (offset in the decoded chunk, shape, source strides, output address,
output strides, the output's :func:`extent`)."""


def extent(out: npt.NDArray[Any]) -> tuple[int, int]:
    """(lowest address, bytes) of the memory an array's elements span: the C decoder
    refuses a job whose block reaches outside it."""
    base = out.__array_interface__["data"][0]
    if out.size == 0:
        return base, 0
    lo = hi = base
    for n, stride in zip(out.shape, out.strides, strict=True):
        span = (n - 1) * stride
        if span < 0:
            lo += span
        else:
            hi += span
    return lo, hi - lo + out.itemsize


def block_job(decoder: Decoder, chunk_sel: Any, out_sel: Any, out: npt.NDArray[Any],
              base: int, span: tuple[int, int] | None = None) -> Row | None:
    """One chunk's C job from zarr's selections, or None where the C path does not apply:
    ``chunk_sel`` has an int or a positive-step slice per chunk dimension, ``out_sel`` a
    slice of the same length per dimension of ``out`` (at address ``base``, its memory
    ``span``: :func:`extent` of ``out``, worked out here if not given)."""
    if not isinstance(chunk_sel, tuple) or len(chunk_sel) != decoder.ndim:
        return None
    if not isinstance(out_sel, tuple):
        out_sel = (out_sel,)
    offset, dst, o = 0, base, 0
    shape, sstrides, dstrides = [], [], []
    for k, cs in enumerate(chunk_sel):
        stride = decoder.strides[k]
        if isinstance(cs, (int, np.integer)) and not isinstance(cs, bool):
            if not 0 <= cs < decoder.shape[k]:
                return None
            offset += int(cs) * stride
            shape.append(1)
            sstrides.append(0)
            dstrides.append(0)
            continue
        if not isinstance(cs, slice) or o >= len(out_sel):
            return None
        os_ = out_sel[o]
        o += 1
        if not isinstance(os_, slice):
            return None
        start, step = cs.start or 0, cs.step or 1
        ostart, ostep = os_.start or 0, os_.step or 1
        if cs.stop is None or os_.stop is None or step <= 0 or ostep <= 0:
            return None
        n = len(range(start, cs.stop, step))
        if n != len(range(ostart, os_.stop, ostep)):
            return None
        if n and not (0 <= start and start + (n - 1) * step < decoder.shape[k]
                      and 0 <= ostart and ostart + (n - 1) * ostep < out.shape[o - 1]):
            return None  # outside the chunk or the output: never a C copy
        offset += start * stride
        shape.append(n)
        sstrides.append(step * stride)
        ostride = out.strides[o - 1]
        dst += ostart * ostride
        dstrides.append(ostep * ostride)
    if o != out.ndim or o != len(out_sel):
        return None
    return offset, shape, sstrides, dst, dstrides, span or extent(out)


def slice_jobs(decoder: Decoder, chunk_sels: Sequence[Any], out_sels: Sequence[Any],
               out: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
    """The C jobs of many chunks at once, when every selection is a tuple of slices (one per
    dimension, the same number on both sides): :func:`block_job` done with numpy arrays,
    ~1 us a chunk instead of ~8. None when any selection is something else."""
    nd, n = decoder.ndim, len(chunk_sels)
    if not all(type(sel) is tuple for sel in chunk_sels) or not all(
            type(sel) is tuple for sel in out_sels):
        return None
    flat_c = [x for sel in chunk_sels for x in sel]
    flat_o = [x for sel in out_sels for x in sel]
    if (out.ndim != nd or len(flat_c) != n * nd or len(flat_o) != n * nd
            or not all(type(x) is slice for x in flat_c)
            or not all(type(x) is slice for x in flat_o)):
        return None
    try:
        cs = np.array([(x.start or 0, x.stop, x.step or 1) for x in flat_c], np.int64)
        os_ = np.array([(x.start or 0, x.stop, x.step or 1) for x in flat_o], np.int64)
    except (TypeError, ValueError, OverflowError):  # a None stop, a non-int
        return None
    cs, os_ = cs.reshape(n, nd, 3), os_.reshape(n, nd, 3)
    if (cs[..., 2] <= 0).any() or (os_[..., 2] <= 0).any():
        return None
    counts = np.maximum(0, (cs[..., 1] - cs[..., 0] + cs[..., 2] - 1) // cs[..., 2])
    ocounts = np.maximum(0, (os_[..., 1] - os_[..., 0] + os_[..., 2] - 1) // os_[..., 2])
    if not np.array_equal(counts, ocounts):
        return None
    last = np.maximum(counts - 1, 0)
    some = counts > 0
    inside = ((cs[..., 0] >= 0) & (cs[..., 0] + last * cs[..., 2] < np.array(decoder.shape))
              & (os_[..., 0] >= 0) & (os_[..., 0] + last * os_[..., 2] < np.array(out.shape)))
    if not (inside | ~some).all():
        return None  # a block outside the chunk or the output: never a C copy
    strides = np.array(decoder.strides, np.int64)
    ostrides = np.array(out.strides, np.int64)
    jobs = decoder.jobs(n)
    jobs["src_offset"] = (cs[..., 0] * strides).sum(axis=1)
    jobs["shape"][:, :nd] = counts
    jobs["src_strides"][:, :nd] = cs[..., 2] * strides
    base = out.__array_interface__["data"][0]
    jobs["dst"] = ((os_[..., 0] * ostrides).sum(axis=1) + base).astype(np.uint64)
    jobs["dst_strides"][:, :nd] = os_[..., 2] * ostrides
    jobs["out"], jobs["outlen"] = extent(out)
    return jobs


def jobs_of(decoder: Decoder, rows: Sequence[Row]) -> npt.NDArray[Any]:
    """The C jobs of :func:`block_job` rows."""
    jobs = decoder.jobs(len(rows))
    if rows:
        offsets, shapes, sstrides, dsts, dstrides, spans = zip(*rows, strict=True)
        nd = decoder.ndim
        jobs["src_offset"] = offsets
        jobs["shape"][:, :nd] = shapes
        jobs["src_strides"][:, :nd] = sstrides
        jobs["dst"] = np.array(dsts, np.uint64)
        jobs["dst_strides"][:, :nd] = dstrides
        jobs["out"], jobs["outlen"] = np.array(spans, np.uint64).T
    return jobs


async def read_batched(reader: Reader, requests: Sequence[tuple[str, int, int | None]],
                       jobs: npt.NDArray[Any], decoder: Decoder,
                       on_missing: Callable[[Sequence[int]], None], keep: Any, where: str,
                       progress: Any = False, missing_ok: bool = True) -> None:
    """Read the chunks (``requests[i]`` holds the chunk of ``jobs[i]``) window by window;
    each window is decoded by the pinned workers in GIL-free C calls while the next window
    is read. ``on_missing`` gets the indexes of missing chunks (their blocks are never
    written); ``keep`` (the output) is held until every C call that writes into it ended;
    ``where`` names the array in errors; without ``missing_ok`` a missing chunk raises."""
    from .._pipeline import worker_count, worker_pool

    if not len(requests):
        return
    loop = asyncio.get_running_loop()
    pool = worker_pool()
    workers = worker_count()
    pending: list[asyncio.Future[None]] = []
    running: list[Any] = []  # concurrent futures: C calls write into the output until done
    reads: list[asyncio.Task[Any]] = []
    size = min(BATCH_WINDOW, max(64, -(-len(requests) // BATCH_WINDOWS_MIN)))
    stop = _populate(pool, workers, keep, running) if POPULATE else None
    bar = make_progress(progress)  # one bar (or callback) for all the windows
    if bar is not None:
        bar.start(len(requests))
    try:
        spans = [(0, len(requests))]
        warm = bar is None and _warm_path(reader, requests)
        everything = _Namer(where, requests, np.arange(len(requests)))
        if (warm and len(requests) <= SMALL_REQUESTS
                and len(requests) * decoder.chunk_bytes <= INLINE_DECODE_BYTES
                and _read_decode(decoder, everything, requests, jobs, 0, on_missing, keep,
                                 missing_ok, limit=SMALL_BYTES)):
            return  # a few cached chunks: read and decoded here, no thread hop
        if warm and len(requests) <= SMALL_COLD_REQUESTS:
            # one cold chunk (a Dask task's): read from disk and decoded on a worker,
            # ~1 ms, where the ring's punted open, statx and read take 3-6 ms here
            job = pool.submit(_read_decode, decoder, everything, requests, jobs, 0,
                              on_missing, keep, missing_ok, True)
            running.append(job)
            if await asyncio.wrap_future(job, loop=loop):
                return
        if warm:
            spans = await _read_decode_on_workers(loop, pool, workers, requests, jobs,
                                                  decoder, on_missing, keep, where,
                                                  missing_ok, running)
        windows = [(lo, min(lo + size, end)) for start, end in spans
                   for lo in range(start, end, size)]
        # READ_AHEAD windows are read at once (cold data: the disk sees more requests);
        # each is decoded as soon as it is in, in order
        for k in range(min(READ_AHEAD, len(windows))):
            reads.append(loop.create_task(reader.read_many(
                requests[windows[k][0]:windows[k][1]], missing_ok=missing_ok)))
        for k, (lo, hi) in enumerate(windows):
            results = await reads[k]
            if k + READ_AHEAD < len(windows):
                nlo, nhi = windows[k + READ_AHEAD]
                reads.append(loop.create_task(reader.read_many(requests[nlo:nhi],
                                                               missing_ok=missing_ok)))
            if bar is not None:
                bar(np.arange(lo, hi), results, np.arange(hi - lo))
            window = jobs[lo:hi].copy()
            window["src"], window["srclen"] = results.addresses()
            missing = results.missing
            rows = np.arange(lo, hi)
            if missing.any():
                on_missing(rows[missing].tolist())
                window, rows = window[~missing], rows[~missing]
            for part, part_rows in zip(np.array_split(window, workers),
                                       np.array_split(rows, workers), strict=True):
                if len(part):
                    name = _Namer(where, requests, part_rows)
                    cf = pool.submit(_decode_scatter, decoder, name, part, (results, keep))
                    running.append(cf)
                    pending.append(asyncio.wrap_future(cf, loop=loop))
            if len(pending) > 2 * workers:  # at most two windows in flight
                done, rest = pending[:-workers], pending[-workers:]
                await asyncio.gather(*done)
                pending = rest
        await asyncio.gather(*pending)
    finally:
        for task in reads:  # failed or cancelled: the windows still being read
            if not task.done():
                task.cancel()
        for task in reads:
            if not task.done():
                await asyncio.gather(task, return_exceptions=True)
            elif not task.cancelled():
                task.exception()  # retrieved: the first failure was raised already
        if stop is not None:
            stop[0] = 1  # done or failed: the populating ends at its next step
        # cancelled or failed: the C calls already running still write into the output,
        # whose memory returns to the pool once the caller lets go; wait for them to end
        for cf in running:
            if not cf.done() and not cf.cancel():
                await asyncio.shield(asyncio.wrap_future(cf, loop=loop))
        if bar is not None:
            bar.close()


def _warm_path(reader: Reader, requests: Sequence[tuple[str, int, int | None]]) -> bool:
    """Whether the chunks may be read on the workers themselves (local files, the
    small-call path allowed)."""
    return reader._small_allowed and "://" not in requests[0][0]


async def _read_decode_on_workers(loop: asyncio.AbstractEventLoop, pool: Any, workers: int,
                                  requests: Sequence[tuple[str, int, int | None]],
                                  jobs: npt.NDArray[Any], decoder: Decoder,
                                  on_missing: Callable[[Sequence[int]], None], keep: Any,
                                  where: str, missing_ok: bool, running: list[Any]
                                  ) -> list[tuple[int, int]]:
    """Read and decode the chunks on the pinned workers, in parts of up to
    ``SMALL_REQUESTS``: each worker reads its part's page-cache data with one small-path C
    call (no event loop, no ring) and decodes it right away, while it is in the CPU's
    cache; so both the reads and the decodes spread over every core (the ring path reads
    on the loop's thread). Returns the spans of rows whose data was not all in the page
    cache (or went wrong): the ring path reads those."""
    n = len(requests)
    step = max(1, min(SMALL_REQUESTS, PART_BYTES // max(1, decoder.chunk_bytes)))
    parts = -(-n // step)
    parts = -(-parts // workers) * workers  # as many parts per worker: balanced
    step = max(1, -(-n // parts))
    spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    # a few jobs per worker, each running its parts in turn: 256 parts submitted one by
    # one held the loop ~25 ms
    groups = np.array_split(np.arange(len(spans)), min(len(spans), 2 * workers))
    futures = []
    for group in groups:
        cf = pool.submit(_read_decode_parts, decoder, where, requests, jobs,
                         [spans[i] for i in group.tolist()], on_missing, keep, missing_ok)
        running.append(cf)
        futures.append(asyncio.wrap_future(cf, loop=loop))
    served = [ok for part in await asyncio.gather(*futures) for ok in part]
    missed: list[tuple[int, int]] = []
    for (lo, hi), ok in zip(spans, served, strict=True):
        if ok:
            continue
        if missed and missed[-1][1] == lo:  # adjacent: one span, so few big windows
            missed[-1] = (missed[-1][0], hi)
        else:
            missed.append((lo, hi))
    return missed


def _read_decode_parts(decoder: Decoder, where: str,
                       requests: Sequence[tuple[str, int, int | None]], jobs: npt.NDArray[Any],
                       spans: list[tuple[int, int]],
                       on_missing: Callable[[Sequence[int]], None], keep: Any,
                       missing_ok: bool) -> list[bool]:
    """On a worker: :func:`_read_decode` for each part in turn; whether each was served."""
    return [_read_decode(decoder, _Namer(where, requests, np.arange(lo, hi)),
                         requests[lo:hi], jobs[lo:hi], lo, on_missing, keep, missing_ok)
            for lo, hi in spans]


def _read_decode(decoder: Decoder, name: _Namer, requests: Sequence[tuple[str, int, int | None]],
                 jobs: npt.NDArray[Any], lo: int, on_missing: Callable[[Sequence[int]], None],
                 keep: Any, missing_ok: bool, wait: bool = False,
                 limit: int = WORKER_READ_BYTES) -> bool:
    """On a worker: one part's chunks from the page cache (``wait``: from the disk too, for
    a single request), decoded into place; False (and nothing written) when the small path
    cannot serve them, or they hold more than ``limit`` stored bytes (on the event loop's
    thread: ``SMALL_BYTES``, so an oversized file never holds the loop)."""
    from .. import _small

    got = _small.read(list(requests), None, missing_ok, limit=limit, wait=wait)
    if got is None:
        return False
    window = jobs.copy()
    window["src"], window["srclen"] = got.addresses()
    missing = got.missing
    if missing.any():
        on_missing((np.flatnonzero(missing) + lo).tolist())
        window = window[~missing]
        name = _Namer(name.where, name.requests, name.rows[~missing])
    if len(window):
        _decode_scatter(decoder, name, window, (got, keep))
    return True




def _populate(pool: Any, workers: int, keep: Any, running: list[Any]) -> Any:
    """Fault in the output's memory ahead of the C calls, in big steps on the workers
    (``MADV_POPULATE_WRITE``): zarr hands over fresh ``np.empty`` memory, whose first
    touches otherwise fault one 4 KiB page at a time inside the decode calls. The stop flag
    (set once the read ends) stops it early."""
    outs = keep if isinstance(keep, list) else [keep]
    spans = {}
    for o in outs:
        if isinstance(o, np.ndarray) and o.nbytes >= POPULATE_MIN:
            base = o.__array_interface__["data"][0]
            spans[base] = o.nbytes if o.flags.c_contiguous or o.flags.f_contiguous else 0
    spans = {b: n for b, n in spans.items() if n}
    if not spans:
        return None
    try:
        from .._uring import ffi, lib
    except ImportError:
        return None
    stop = ffi.new("int[1]")
    for base, n in spans.items():
        step = -(-n // workers)
        for at in range(0, n, step):
            running.append(pool.submit(lib.lsio_populate, base + at, min(step, n - at), stop))
    return stop


@dataclass(frozen=True)
class _Namer:
    """Names the chunk at a batch row in errors: the array and the request."""

    where: str
    requests: Sequence[tuple[str, int, int | None]]
    rows: npt.NDArray[np.intp]

    def __call__(self, i: int) -> str:
        path, offset, length = self.requests[int(self.rows[i])]
        part = "" if (offset, length) == (0, None) else f" (bytes {offset}+{length})"
        return f"the chunk {path}{part}"


def _decode_scatter(decoder: Decoder, name: _Namer, batch: npt.NDArray[Any], keep: Any
                    ) -> None:
    """Decode the chunks of ``batch`` and place their blocks in the output, in one GIL-free
    C call (on a pipeline worker); ``keep`` holds the chunks' and output's memory meanwhile."""
    lib, ffi = decoder.lib.lib, decoder.lib.ffi
    nbytes = decoder.chunk_bytes
    failed = ffi.new("int *")
    # no scratch passed: the C call allocates it once a chunk's header says it decodes to
    # nbytes (untrusted metadata may claim terabytes for a 4-byte file)
    ret = lib.lsio_decode_scatter(
        decoder.codec, ffi.cast("lsio_chunk *", batch.ctypes.data), len(batch), decoder.ndim,
        nbytes, decoder.itemsize, int(decoder.swap), ffi.NULL, 0, failed)
    i = failed[0]
    what = name(i) if 0 <= i < len(batch) else f"a chunk of {name.where!r}"
    if ret == lib.LSIO_DECODE_NOMEM:
        raise MemoryError(f"lsio.zarr: no memory to decode {what} ({nbytes} bytes)")
    if ret == lib.LSIO_DECODE_CORRUPT:
        raise ValueError(f"lsio.zarr: {what} is corrupt or does not decode to "
                         f"{nbytes} bytes")
    if ret != lib.LSIO_DECODE_OK:  # a plan lsio got wrong: refused before any copy
        raise ValueError(f"lsio.zarr: refused to decode {what}: its block does not fit "
                         f"in the chunk of {nbytes} bytes or in the output (C decoder "
                         f"result {ret})")
    del keep
