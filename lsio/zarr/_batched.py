"""The batched C path: many chunks decoded and placed per GIL-free call.

For chunks the C decoder handles (blosc, zstd, zlib or none, each maybe under a byte
shuffle as HDF5 writes; either byte order, any transpose) and blocks given by ints and
slices with positive steps: one C ``lsio_chunk`` per chunk says where its block starts in
the decoded chunk, its shape and strides, and where it goes in the output.
``_grid.batch_plan`` works out a basic selection's jobs with numpy arrays up front (the fast
path over a whole chunk grid); :func:`block_job` one chunk's, from the selections zarr's
indexers give (the codec pipeline, sharded inner chunks). Then the chunks are read through
the engine's per-chunk hook (``read_each``), each decoded by a pinned worker straight into
the output as it lands.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._buildinfo import warn_absent
from .._each import prefault
from .._reader import Reader
from .._results import Results
from ._chain import Chain

__all__ = ["Decoder", "block_job", "c_decoder", "codecs_lib", "decode_scatter", "extent",
           "jobs_of", "read_batched", "slice_jobs"]


POPULATE = True
"""Fault in fresh output memory ahead of the C calls (``prefault``); a switch for A/B runs."""


_C_CODECS = {(): "LSIO_CODEC_RAW", ("Blosc",): "LSIO_CODEC_BLOSC", ("Zstd",): "LSIO_CODEC_ZSTD",
             ("Zlib",): "LSIO_CODEC_ZLIB"}
"""The byte codec chains (by class name, in decode order) the C decoder handles, and its
constant for each; any of them may be followed by a numcodecs ``Shuffle`` (kerchunk's and
VirtualiZarr's HDF5 shuffle filter), which the C call undoes after decompressing."""


def codecs_lib(warn: bool = False) -> Any:
    """The compiled C decoder, or None; ``warn``: say once why it is absent."""
    try:
        from .. import _codecs  # type: ignore[attr-defined]
    except ImportError as exc:
        if warn:
            warn_absent("lsio._codecs", "its C chunk decoder", exc,
                        "zarr chunks are decoded through numcodecs (slower)")
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
    """How every chunk is stored: ``LSIO_CODEC_RAW``, ``LSIO_CODEC_BLOSC``,
    ``LSIO_CODEC_ZSTD`` or ``LSIO_CODEC_ZLIB``."""
    shuffle: int
    """Element size of the byte shuffle undone after decompression (0: none)."""
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
    names = tuple(type(c).__name__ for c in decode.byte_codecs)
    shuffle = 0
    if names and names[-1] == "Shuffle":
        # numcodecs refuses a chunk that is not whole elements; the C call too
        size = decode.byte_codecs[-1].elementsize
        if not isinstance(size, int) or size < 1 or decode.nbytes % size:
            return None
        names, shuffle = names[:-1], size if size > 1 else 0
    lib = codecs_lib(warn=names in _C_CODECS)
    if lib is None:
        return None
    codec: int | None = getattr(lib.lib, _C_CODECS[names]) if names in _C_CODECS else None
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
    return Decoder(lib=lib, codec=codec, shuffle=shuffle, ndim=ndim,
                   shape=tuple(decode.shape), chunk_bytes=decode.nbytes, itemsize=item,
                   swap=swapped, strides=tuple(cstrides))


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
    ~1-2 us a chunk instead of ~8. None when any selection is something else."""
    nd, n = decoder.ndim, len(chunk_sels)
    if not n:
        return decoder.jobs(0)
    # the types checked by sets of them (C loops): a generator per item took ~2 us a chunk
    if {*map(type, chunk_sels), *map(type, out_sels)} != {tuple}:
        return None
    flat_c = list(itertools.chain.from_iterable(chunk_sels))
    flat_o = list(itertools.chain.from_iterable(out_sels))
    if (out.ndim != nd or len(flat_c) != n * nd or len(flat_o) != n * nd
            or {*map(type, flat_c), *map(type, flat_o)} != {slice}):
        return None
    cs: npt.NDArray[np.int64]
    os_: npt.NDArray[np.int64]
    try:  # flat ints through fromiter: numpy reads a list of tuples ~5x slower
        cs = np.fromiter([v for x in flat_c for v in (x.start or 0, x.stop, x.step or 1)],
                         np.int64, 3 * len(flat_c))
        os_ = np.fromiter([v for x in flat_o for v in (x.start or 0, x.stop, x.step or 1)],
                          np.int64, 3 * len(flat_o))
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
                       progress: Any = False, missing_ok: bool = True,
                       keys: Sequence[str] | None = None) -> None:
    """Read the chunks (``requests[i]`` holds the chunk of ``jobs[i]``) through the engine's
    per-chunk hook (``read_each``, its batch form), each run of landed chunks decoded into
    the output by one GIL-free C call, on the engine's pinned workers. ``on_missing`` gets
    the indexes of missing chunks (their blocks are never written); ``keep`` (the output)
    is held until every C call that writes into it ended; ``where`` names the array in
    errors, with ``keys[i]`` the store key of ``requests[i]`` when given; without
    ``missing_ok`` a missing chunk raises."""
    if not len(requests):
        return
    decode = _ChunkDecoder(decoder, jobs, _Namer(where, requests, keys), on_missing)
    async with prefault(keep if POPULATE else []):
        await reader.read_each(requests, on_chunks=decode, missing_ok=missing_ok,
                               progress=progress, threads=True,
                               work_bytes=decoder.chunk_bytes)
    del keep  # held until here: no C call writes into it any more


@dataclass(frozen=True)
class _Namer:
    """Names the chunk of a request in errors: the request, and its store key when known
    and the file is not the key's own (references put many keys' chunks in one file)."""

    where: str
    requests: Sequence[tuple[str, int, int | None]]
    keys: Sequence[str] | None = None

    def __call__(self, i: int) -> str:
        path, offset, length = self.requests[i]
        part = "" if (offset, length) == (0, None) else f" (bytes {offset}+{length})"
        key = None if self.keys is None else self.keys[i]
        if key is None or (not part and path.endswith(key)):  # the key's own file
            return f"the chunk {path}{part}"
        return f"the chunk {key!r} in {self.where} ({path}{part})"


class _ChunkDecoder:
    """The hook's batch callback: decodes a run of landed chunks (``jobs[start + k]`` says
    where chunk ``k``'s block goes) and places their blocks in the output in one GIL-free C
    call, on whichever thread the engine calls it; missing chunks go to ``on_missing``."""

    def __init__(self, decoder: Decoder, jobs: npt.NDArray[Any], name: _Namer,
                 on_missing: Callable[[Sequence[int]], None]) -> None:
        self.decoder, self.jobs, self.name, self.on_missing = decoder, jobs, name, on_missing

    def __call__(self, start: int, results: Results) -> None:
        n = len(results)
        window = self.jobs[start:start + n].copy()
        window["src"], window["srclen"] = results.addresses()
        rows = np.arange(start, start + n)
        missing = results.missing
        if missing.any():
            self.on_missing(rows[missing].tolist())
            window, rows = window[~missing], rows[~missing]
        if len(window):
            ffi = self.decoder.lib.ffi
            _decode_scatter(self.decoder, lambda k: self.name(int(rows[k])),
                            ffi.cast("lsio_chunk *", window.ctypes.data), len(window))
        del results  # held until here: the C call read the chunks


def decode_scatter(decoder: Decoder, name: Callable[[int], str],
                   jobs: npt.NDArray[Any]) -> None:
    """Decode the chunks of ``jobs`` (``src`` and ``srclen`` set, those bytes alive
    meanwhile) and place their blocks in the output, in one GIL-free C call; ``name(k)``
    names job ``k`` in errors."""
    if len(jobs):
        _decode_scatter(decoder, name, decoder.lib.ffi.cast("lsio_chunk *", jobs.ctypes.data),
                        len(jobs))


def _decode_scatter(decoder: Decoder, name: Callable[[int], str], jobs: Any, n: int) -> None:
    """Decode ``n`` chunks (C jobs at ``jobs``, whose sources are alive meanwhile) and place
    their blocks in the output, in one GIL-free C call; ``name(k)`` names job ``k``."""
    lib, ffi = decoder.lib.lib, decoder.lib.ffi
    nbytes = decoder.chunk_bytes
    failed = ffi.new("int *")
    # no scratch passed: the C call allocates it once a chunk's header says it decodes to
    # nbytes (untrusted metadata may claim terabytes for a 4-byte file)
    ret = lib.lsio_decode_scatter(decoder.codec, decoder.shuffle, jobs, n, decoder.ndim,
                                  nbytes, decoder.itemsize, int(decoder.swap), ffi.NULL, 0,
                                  failed)
    i = failed[0]
    what = name(i) if 0 <= i < n else "a chunk"
    if ret == lib.LSIO_DECODE_NOMEM:
        raise MemoryError(f"lsio.zarr: no memory to decode {what} ({nbytes} bytes)")
    if ret == lib.LSIO_DECODE_CORRUPT:
        raise ValueError(f"lsio.zarr: {what} is corrupt or does not decode to "
                         f"{nbytes} bytes")
    if ret != lib.LSIO_DECODE_OK:  # a plan lsio got wrong: refused before any copy
        raise ValueError(f"lsio.zarr: refused to decode {what}: its block does not fit "
                         f"in the chunk of {nbytes} bytes or in the output (C decoder "
                         f"result {ret})")
