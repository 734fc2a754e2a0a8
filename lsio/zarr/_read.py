"""Reading the chunks a selection touches, for the fast path and the codec pipeline alike.

Both hand over what zarr's indexers give: per chunk (or shard), its key, the selection within
it and where that goes in the output. Chunks are fetched in one planned ``read_many`` (a
local root or an :class:`LsioStore`) or through a store's own ``get`` (any other store), and
decoded on the pinned pipeline workers straight into the output: by the batched C decoder
where it applies (:mod:`._batched`), else one numcodecs chain per chunk (:mod:`._chain`).
Sharded arrays read every shard's index first (one suffix read each, in one call), then only
the inner chunks the selection touches (one call, coalesced by the planner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cache import Lru
from .._defaults import CHAIN_CACHE, SLICE_JOBS_MIN
from . import _compat
from ._batched import block_job, c_decoder, extent, jobs_of, read_batched, slice_jobs
from ._chain import Chain
from ._locate import Located
from ._shards import MAX_UINT64, ShardFormat, read_sharded
from ._sizes import MAX_BYTES, check_layout

__all__ = ["Layout", "Source", "read_items"]

Request = tuple[str, int, "int | None"]


class Source:
    """Where chunks come from: a store's ``locate`` (files and byte ranges read by an lsio
    :class:`Reader`, see :mod:`._locate`), else the store's own ``get``."""

    def __init__(self, *, locate: Callable[[Sequence[str]], Located] | None = None,
                 store: Any = None, where: str = "") -> None:
        self.locate = locate
        self.store = store
        self.where = where

    @property
    def direct(self) -> bool:
        """Read by lsio itself (the C decoder reads the chunks from lsio's result memory)."""
        return self.locate is not None

    async def fetch(self, requests: Sequence[tuple[str, int, int | None]],
                    steps: Sequence[Callable[[Any], Any]] | None = None, *,
                    missing_ok: bool = True, progress: Any = False) -> list[Any]:
        """Each request's bytes (``(key, offset, length)``; a negative offset reads a
        suffix), or what its step returned; None where a key is missing."""
        if self.locate is None:
            return await self._fetch_store(requests, steps, missing_ok)
        located = self.locate([k for k, _, _ in requests])
        parts = [located.part(i, off, n) for i, (_, off, n) in enumerate(requests)]
        rows = [i for i, p in enumerate(parts) if isinstance(p, tuple)]
        pipeline = [[steps[i]] for i in rows] if steps is not None else None
        got = await located.reader.read_many(
            [parts[i] for i in rows], pipeline=pipeline,
            missing_ok=missing_ok and located.files_may_be_missing, progress=progress)
        out: list[Any] = [None] * len(parts)
        for i, value in zip(rows, got, strict=True):
            out[i] = value
        for i, p in enumerate(parts):
            if p is None and not missing_ok:
                raise FileNotFoundError(f"lsio.zarr: {requests[i][0]!r} is missing from "
                                        f"{located.where or self.where}")
            if isinstance(p, bytes):  # held by the store: decoded here (small values)
                out[i] = p if steps is None else steps[i](p)
        return out
    async def _fetch_store(self, requests: Sequence[tuple[str, int, int | None]],
                           steps: Sequence[Callable[[Any], Any]] | None,
                           missing_ok: bool) -> list[Any]:
        from zarr import config
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest
        from zarr.buffer import default_buffer_prototype

        from .._pipeline import worker_pool

        prototype = default_buffer_prototype()
        limit = asyncio.Semaphore(int(config.get("async.concurrency")) or 1)

        async def one(key: str, off: int, n: int | None) -> Any:
            rng = (None if (off, n) == (0, None) else SuffixByteRequest(-off) if off < 0
                   else RangeByteRequest(off, off + n) if n is not None else None)
            async with limit:
                buf = await self.store.get(key, prototype=prototype, byte_range=rng)
            if buf is None and not missing_ok:
                raise FileNotFoundError(f"lsio.zarr: {key!r} is missing from {self.store}")
            return None if buf is None else buf.as_numpy_array()

        raw = await asyncio.gather(*(one(*r) for r in requests))
        if steps is None:
            return list(raw)
        loop = asyncio.get_running_loop()
        return list(await loop.run_in_executor(worker_pool(), _apply, steps, raw))


def _apply(steps: Sequence[Callable[[Any], Any]], raw: Sequence[Any]) -> list[Any]:
    return [None if b is None else step(b) for step, b in zip(steps, raw, strict=True)]


@dataclass(frozen=True)
class Layout:
    """How one array's chunks are stored: the codecs, the chunk shape and dtype (a shard's,
    for sharded arrays) and the output dtype."""

    codecs: tuple[Any, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    order: str = "C"
    """Memory order of zarr v2 chunks."""

    @property
    def sharding(self) -> Any:
        c = self.codecs
        return c[0] if len(c) == 1 and type(c[0]).__name__ == "ShardingCodec" else None


async def read_items(source: Source, layout: Layout, keys: list[str], chunk_sels: list[Any],
                     out_sels: list[Any], out: npt.NDArray[Any], fill: Any,
                     drop_axes: tuple[int, ...] = (), progress: Any = False,
                     missing: set[int] | None = None) -> None:
    """Read chunks (or shards) of one array into ``out``: for each key,
    ``out[out_sel] = chunk[chunk_sel]`` (``drop_axes`` squeezed), missing chunks as
    ``fill`` (their indexes added to ``missing``, if given). Raises NotImplementedError for
    codecs lsio does not decode, ValueError for chunk sizes that do not fit (before
    reading anything)."""
    check_layout(layout, source.where)
    sharding = layout.sharding
    if sharding is None:
        decode = chain_of(layout)
        blocks = _Blocks([(k, 0, None) for k in keys], chunk_sels, out_sels, out)
        await _read_blocks(source, decode, blocks, fill, drop_axes, missing_ok=True,
                           progress=progress, missing=missing)
        return
    await read_sharded(source, layout, sharding, keys, chunk_sels, out_sels, out, fill,
                       drop_axes, progress, missing, chain_of=chain_of,
                       per_shard=_per_shard, per_block=_per_block)


def chain_of(layout: Layout) -> Chain:
    """The decode chain of an unsharded layout, built once (~100 us) per layout: by the
    codecs' values (frozen dataclasses, new ones per opened array; equal ones decode alike)
    or, where one holds a dict, by identity, the entry holding them so no id is reused."""
    key: Any = layout
    try:
        hash(layout)
    except TypeError:
        key = (tuple(map(id, layout.codecs)), layout.chunk_shape, layout.dtype, layout.order)
    hit = _CHAINS.get(key)
    if hit is not None:
        return hit[1]
    chain = Chain(list(layout.codecs), layout.chunk_shape, layout.dtype, layout.order)
    return _CHAINS.put(key, (layout.codecs, chain))[1]


_CHAINS: Lru[tuple[tuple[Any, ...], Chain]] = Lru("zarr decode chains", entries=CHAIN_CACHE)


@dataclass
class _Blocks:
    """Chunks' bytes (requests of keys) and where each one's selected block goes: in
    ``targets`` (one array for all, or one per block), as columns."""

    requests: list[tuple[str, int, int | None]] = field(default_factory=list)
    chunk_sels: list[Any] = field(default_factory=list)
    out_sels: list[Any] = field(default_factory=list)
    targets: npt.NDArray[Any] | list[npt.NDArray[Any]] = field(default_factory=list)

    def target(self, i: int) -> npt.NDArray[Any]:
        t = self.targets
        return t[i] if isinstance(t, list) else t

    def append(self, request: tuple[str, int, int | None], chunk_sel: Any, out_sel: Any,
               target: npt.NDArray[Any]) -> None:
        assert isinstance(self.targets, list)
        self.requests.append(request)
        self.chunk_sels.append(chunk_sel)
        self.out_sels.append(out_sel)
        self.targets.append(target)


async def _read_blocks(source: Source, decode: Chain, blocks: _Blocks, fill: Any,
                       drop_axes: tuple[int, ...], *, missing_ok: bool,
                       progress: Any = False, missing: set[int] | None = None) -> None:
    """Read and decode ``blocks`` (a missing chunk's block filled, its index put in ``missing``):
    the C decoder where it can place a block, else one numcodecs chain per chunk."""
    n = len(blocks.requests)
    if not n:
        return
    decoder = None
    if source.direct and not drop_axes:
        dtype = blocks.target(0).dtype
        if dtype not in decode.c_decoders:
            decode.c_decoders[dtype] = c_decoder(decode, dtype)
        decoder = decode.c_decoders[dtype]
    fast: list[int] = []
    slow: list[int] = []
    jobs = None
    if decoder is not None and not isinstance(blocks.targets, list) and n > SLICE_JOBS_MIN:
        jobs = slice_jobs(decoder, blocks.chunk_sels, blocks.out_sels, blocks.targets)
        if jobs is not None:
            fast = list(range(n))
    if decoder is not None and jobs is None:
        rows: list[Any] = []
        bases: dict[int, tuple[int, tuple[int, int]]] = {}
        for i in range(n):
            t = blocks.target(i)
            known = bases.get(id(t))
            if known is None:
                known = bases[id(t)] = (t.__array_interface__["data"][0], extent(t))
            row = block_job(decoder, blocks.chunk_sels[i], blocks.out_sels[i], t, *known)
            if row is None:
                slow.append(i)
            else:
                fast.append(i)
                rows.append(row)
        jobs = jobs_of(decoder, rows)
    elif decoder is None:
        slow = list(range(n))

    def fill_blocks(indexes: Sequence[int]) -> None:
        for i in indexes:
            blocks.target(i)[blocks.out_sels[i]] = fill
        if missing is not None:
            missing.update(indexes)

    if fast:
        assert decoder is not None and jobs is not None
        slow = await _read_direct(source, blocks, fast, slow, jobs, decoder, fill_blocks,
                                  progress, missing_ok)
    if slow:
        steps = [_sink(decode, blocks.target(i), blocks.chunk_sels[i], blocks.out_sels[i],
                       drop_axes, f"{blocks.requests[i][0]!r} in {source.where}")
                 for i in slow]
        got = await source.fetch([blocks.requests[i] for i in slow], steps,
                                 missing_ok=missing_ok, progress=progress)
        fill_blocks([i for i, ok in zip(slow, got, strict=True) if ok is None])


async def _read_direct(source: Source, blocks: _Blocks, fast: list[int], slow: list[int],
                       jobs: npt.NDArray[Any], decoder: Any,
                       fill_blocks: Callable[[Sequence[int]], None], progress: Any,
                       missing_ok: bool) -> list[int]:
    """Read the ``fast`` blocks' chunks (``jobs``: their C jobs) and decode them by the C
    decoder; returns ``slow`` with the blocks the C decoder cannot read added (values held
    by the store, keys known missing)."""
    assert source.locate is not None
    reqs = blocks.requests
    located = source.locate([reqs[i][0] for i in fast])
    if located.plain and all(reqs[i][1:] == (0, None) for i in fast):
        paths = located.requests()  # (whole values: no per-row arithmetic)
    else:  # values held by the store, or known missing: read like the slow ones
        parts = [located.part(k, reqs[i][1], reqs[i][2]) for k, i in enumerate(fast)]
        direct = [k for k, p in enumerate(parts) if isinstance(p, tuple)]
        slow = sorted(slow + [fast[k] for k, p in enumerate(parts)
                              if not isinstance(p, tuple)])
        jobs, fast = jobs[direct], [fast[k] for k in direct]
        paths = [parts[k] for k in direct]  # type: ignore[misc]
    await read_batched(located.reader, paths, jobs, decoder,
                       lambda idx: fill_blocks([fast[i] for i in idx]),
                       blocks.targets, source.where, progress,
                       missing_ok and located.files_may_be_missing,
                       keys=[reqs[i][0] for i in fast])
    return slow


def _sink(decode: Chain, target: npt.NDArray[Any], chunk_sel: Any, out_sel: Any,
          drop_axes: tuple[int, ...], name: str) -> Callable[[Any], bool]:
    """A pipeline step: decode one chunk and put its selected block in place; a chunk that
    does not decode is a ValueError naming it (``name``)."""

    def put(buf: Any) -> bool:
        try:
            chunk = decode(buf)
        except MemoryError:
            raise
        except Exception as exc:  # numcodecs: RuntimeError for a bad checksum, zlib.error, ...
            raise ValueError(f"lsio.zarr: the chunk {name} does not decode: "
                             f"{type(exc).__name__}: {exc}") from exc
        value = chunk[chunk_sel]
        if drop_axes:
            value = value.squeeze(axis=drop_axes)
        target[out_sel] = value
        return True  # written (a missing chunk's result stays None)
    return put


async def _per_block(source: Source, decode: Chain, requests: list[Request],
                     sels: list[tuple[Any, Any]], out: npt.NDArray[Any], fill: Any,
                     progress: Any) -> None:
    """Inner chunks (``requests``: byte ranges of shards) each placed by its
    ``(chunk_sel, out_sel)``: the per-chunk road of :mod:`._shards`."""
    blocks = _Blocks(list(requests), [c for c, _ in sels], [o for _, o in sels], out)
    await _read_blocks(source, decode, blocks, fill, (), missing_ok=False, progress=progress)


async def _per_shard(source: Source, fmt: ShardFormat, keys: Sequence[str],
                     indexes: Sequence[npt.NDArray[np.uint64] | None],
                     chunk_sels: Sequence[Any], out_sels: Sequence[Any],
                     out: npt.NDArray[Any], fill: Any, drop_axes: tuple[int, ...],
                     progress: Any, missing: set[int] | None) -> None:
    """Selections of shards numpy arrays do not describe (``oindex``, ``vindex``, dropped
    axes): zarr's indexer over each shard's inner chunks, one block each."""
    blocks = _Blocks()
    staged: list[tuple[npt.NDArray[Any], Any, Any]] = []
    for n, (key, index) in enumerate(zip(keys, indexes, strict=True)):
        if index is None:  # the whole shard is missing
            out[out_sels[n]] = fill
            if missing is not None:
                missing.add(n)
            continue
        indexer = _compat.indexer("any", chunk_sels[n], fmt.shard_shape, fmt.inner_shape)
        target = _shard_target(out, out_sels[n], indexer, drop_axes)
        if target is None:  # a fancy selection: gathered, then placed like zarr does
            target = np.empty(indexer.shape, out.dtype)
            staged.append((target, indexer, out_sels[n]))
        entries = index.reshape(*fmt.per_shard, 2)
        for p in indexer:
            offset, nbytes = (int(v) for v in entries[p.chunk_coords])
            if offset == MAX_UINT64 and nbytes == MAX_UINT64:
                target[p.out_selection] = fill
                continue
            if offset + nbytes > MAX_BYTES:  # no file holds such bytes: the index is corrupt
                raise ValueError(
                    f"lsio.zarr: the shard index of {key!r} in {source.where} places inner "
                    f"chunk {tuple(p.chunk_coords)} at bytes {offset}+{nbytes}, beyond any "
                    f"file (2**63 - 1 bytes)")
            blocks.append((key, offset, nbytes), p.chunk_selection, p.out_selection,
                          target)
    await _read_blocks(source, fmt.decode, blocks, fill, (), missing_ok=False,
                       progress=progress)
    for target, indexer, out_sel in staged:
        value = target.reshape(indexer.sel_shape) if hasattr(indexer, "sel_shape") else target
        if drop_axes:
            value = value.squeeze(axis=drop_axes)
        out[out_sel] = value


def _shard_target(out: npt.NDArray[Any], out_sel: Any, indexer: Any,
                  drop_axes: tuple[int, ...]) -> npt.NDArray[Any] | None:
    """The view of ``out`` a shard's selection fills directly (basic selections), or None
    when its block must be gathered first."""
    sel = out_sel if isinstance(out_sel, tuple) else (out_sel,)
    if drop_axes or hasattr(indexer, "sel_shape") or not all(isinstance(s, slice)
                                                             for s in sel):
        return None
    view = out[sel] if sel else out[...]  # out[()] of a 0-d array is a scalar, not a view
    return view if view.shape == tuple(indexer.shape) else None
