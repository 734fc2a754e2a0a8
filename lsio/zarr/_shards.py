"""Sharded arrays: the shard indexes and inner chunks a selection needs, in at most two
planned calls, each inner chunk decoded straight into the output.

A shard is one file (or byte range) holding inner chunks and an index of ``(offset, nbytes)``
per inner chunk (``2**64 - 1`` twice: empty), at its start or end, checked by its crc32c
when the index codecs have one. :func:`read_sharded` works out the inner chunks a basic
selection touches and their C jobs for all shards at once (:mod:`._inner`; no per-chunk
Python). Remote shards the selection covers whole (``WHOLE_SHARDS_MIN`` or more) are read in
one request each, index and inner chunks together (:mod:`._whole`). The others: the indexes
of all of them in one ``read_many`` (:func:`shard_indexes`; local ones kept between calls
while their files are unchanged), then every inner chunk needed in one more (ranges of one
shard file merged by the planner), each decoded on a pinned worker into its place.
Selections numpy arrays cannot describe (``oindex``, ``vindex``, axes dropped by zarr) take
the per-chunk road: zarr's indexer per shard.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cache import SHARD_INDEXES, file_identity
from .._defaults import WHOLE_SHARDS_MIN
from .._url import is_url
from ._batched import Decoder, c_decoder, read_batched
from ._chain import Chain
from ._inner import InnerRows, inner_rows
from ._sizes import MAX_BYTES
from ._whole import MAX_UINT64, read_whole

__all__ = ["MAX_UINT64", "ShardFormat", "read_sharded"]

WHOLE_SHARDS = "remote"
"""Which shards a selection covers whole are read in one request each (:mod:`._whole`):
``"remote"`` (URLs: a round trip fewer), ``"always"`` or ``"never"``. Local shards read
index first: on the 4096² array of 128² chunks in 1 024² shards (warm, 2 cores) that was
~10% faster than whole shards (124 against 140 ms, medians of 15 alternated reads), its
inner chunks decoded as each lands instead of a shard at a time."""



@dataclass(frozen=True)
class ShardFormat:
    """How the shards of one array are laid out (from its sharding codec)."""

    shard_shape: tuple[int, ...]
    inner_shape: tuple[int, ...]
    per_shard: tuple[int, ...]
    """Inner chunks per shard along each dimension."""
    index_bytes: int
    """Stored size of an index: 16 bytes per inner chunk, plus 4 for a crc32c."""
    at_end: bool
    """The index is the shard's last ``index_bytes`` (else its first)."""
    index_chain: Chain
    """Decodes an index's bytes (checks its crc32c) into ``(*per_shard, 2)`` uint64."""
    decode: Chain
    """Decodes an inner chunk."""

    def index_request(self, key: str) -> tuple[str, int, int | None]:
        return (key, -self.index_bytes, None) if self.at_end else (key, 0, self.index_bytes)

    def parse_index(self, raw: Any, key: str, where: str) -> npt.NDArray[np.uint64]:
        """An index's bytes as ``(offset, nbytes)`` rows, one per inner chunk in C order;
        a ValueError naming the shard for a wrong size or checksum."""
        if len(raw) != self.index_bytes:
            raise ValueError(f"lsio.zarr: the shard index of {key!r} in {where} has "
                             f"{len(raw)} bytes, expected {self.index_bytes}")
        try:
            index = self.index_chain(raw)
        except Exception as exc:  # numcodecs: RuntimeError for a bad checksum, ...
            raise ValueError(f"lsio.zarr: the shard index of {key!r} in {where} is "
                             f"corrupt: {exc}") from exc
        return np.array(index, np.uint64).reshape(-1, 2)  # (a copy: not the chain's scratch)


def shard_format(layout: Any, sharding: Any, chain_of: Any) -> ShardFormat:
    """The :class:`ShardFormat` of ``layout`` (sharded by ``sharding``); ``chain_of``
    builds (or reuses) decode chains. Raises NotImplementedError for codecs lsio does not
    decode."""
    shard_shape = tuple(layout.chunk_shape)
    inner = tuple(int(n) for n in sharding.chunk_shape)
    per_shard = tuple(s // c for s, c in zip(shard_shape, inner, strict=True))
    index_chain = chain_of(type(layout)(tuple(sharding.index_codecs), (*per_shard, 2),
                                        np.dtype("<u8")))
    decode = chain_of(type(layout)(tuple(sharding.codecs), inner, layout.dtype))
    crcs = sum(type(c).__name__ == "Crc32cCodec" for c in sharding.index_codecs)
    at_end = getattr(sharding.index_location, "value", sharding.index_location) == "end"
    return ShardFormat(shard_shape, inner, per_shard, 16 * math.prod(per_shard) + 4 * crcs,
                       at_end, index_chain, decode)


def _decoder(fmt: ShardFormat, dtype: np.dtype[Any]) -> Decoder | None:
    """The C decoder of the inner chunks into ``dtype``, worked out once per chain."""
    known = fmt.decode.c_decoders
    if dtype not in known:
        known[dtype] = c_decoder(fmt.decode, dtype)
    return known[dtype]  # type: ignore[no-any-return]


async def shard_indexes(source: Any, fmt: ShardFormat, keys: Sequence[str]
                        ) -> list[npt.NDArray[np.uint64] | None]:
    """The index of each shard (None: the shard is missing), all read in one call; the
    index of a local shard file unchanged since an earlier read comes from
    ``SHARD_INDEXES`` (its identity taken before the read and checked after it)."""
    files = _local_files(source, keys)
    before = [None if f is None else file_identity(f) for f in files]
    shape = (fmt.index_bytes, fmt.at_end)  # (the same file under another sharding codec)
    indexes: list[npt.NDArray[np.uint64] | None] = [None] * len(keys)
    for i, (f, b) in enumerate(zip(files, before, strict=True)):
        hit = SHARD_INDEXES.lookup(f, b) if f else None
        if hit is not None and hit[0] == shape:
            indexes[i] = hit[1]
    need = [i for i, x in enumerate(indexes) if x is None]
    raw = await source.fetch([fmt.index_request(keys[i]) for i in need]) if need else []
    for i, r in zip(need, raw, strict=True):
        if r is None:
            continue
        index = indexes[i] = fmt.parse_index(r, keys[i], source.where)
        f = files[i]
        if f is not None and before[i] is not None and file_identity(f) == before[i]:
            SHARD_INDEXES.keep(f, before[i], (shape, index), index.nbytes)
    return indexes


def _local_files(source: Any, keys: Sequence[str]) -> list[str | None]:
    """Each key's local file where its value is that whole file (its index may be cached);
    None for URLs, byte ranges of files, values the store holds and stores that cannot
    locate."""
    located = source.locate(list(keys)) if source.locate and keys else None
    if located is None or not located.plain:
        return [None] * len(keys)
    whole = (located.offsets == 0) & (located.lengths < 0)
    return [p if w and p and not is_url(p) else None
            for p, w in zip(located.paths, whole.tolist(), strict=True)]


async def read_sharded(source: Any, layout: Any, sharding: Any, keys: Sequence[str],
                       chunk_sels: Sequence[Any], out_sels: Sequence[Any],
                       out: npt.NDArray[Any], fill: Any, drop_axes: tuple[int, ...],
                       progress: Any, missing: set[int] | None, *, chain_of: Any,
                       per_shard: Any, per_block: Any) -> None:
    """Read shards ``keys`` into ``out`` (``out[out_sels[i]] = shard[chunk_sels[i]]``).
    Remote shards: both calls read one version of each shard (an index of one version
    locates garbage in another); a shard replaced between them is read again, up to
    ``READ_ATTEMPTS`` times. The per-chunk roads, given by the caller:
    ``per_shard(source, fmt, keys, indexes, chunk_sels, out_sels, out, fill, drop_axes,
    progress, missing)`` reads selections :func:`inner_rows` cannot describe;
    ``per_block(source, decode, requests, sels, out, fill, progress)`` reads inner
    chunks the C decoder cannot place (other codecs, values held by the store)."""
    fmt = shard_format(layout, sharding, chain_of)  # (raises before any read)
    args = (source, fmt, keys, chunk_sels, out_sels, out, fill, drop_axes, progress,
            missing, per_shard, per_block)
    located = source.locate(list(keys)) if source.locate and keys else None
    if located is None or not any(map(is_url, located.paths)):  # (file:// roots are local)
        await _read_shards(*args)
        return
    from .._defaults import READ_ATTEMPTS
    from ..backends.http._version import one_version

    for attempt in range(READ_ATTEMPTS):
        try:
            with one_version():
                await _read_shards(*args)
            return
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt + 1 == READ_ATTEMPTS:
                raise


async def _read_shards(source: Any, fmt: ShardFormat, keys: Sequence[str],
                       chunk_sels: Sequence[Any], out_sels: Sequence[Any],
                       out: npt.NDArray[Any], fill: Any, drop_axes: tuple[int, ...],
                       progress: Any, missing: set[int] | None, per_shard: Any,
                       per_block: Any) -> None:
    rows = None if drop_axes else inner_rows(fmt, chunk_sels, out_sels, out)
    if rows is None:
        indexes = await shard_indexes(source, fmt, keys)
        await per_shard(source, fmt, keys, indexes, chunk_sels, out_sels, out, fill,
                        drop_axes, progress, missing)
        return
    whole = await _read_whole_shards(source, fmt, keys, rows, out_sels, out, fill, progress,
                                     missing)
    part = np.flatnonzero(~whole).tolist()
    if not part:
        return
    some: list[npt.NDArray[np.uint64] | None] = [None] * len(keys)
    indexes = some
    for i, index in zip(part, await shard_indexes(
            source, fmt, [keys[i] for i in part]), strict=True):
        indexes[i] = index
    absent = [i for i in part if indexes[i] is None]
    for i in absent:  # the whole shard is missing
        out[out_sels[i]] = fill
    if missing is not None:
        missing.update(absent)
    rows = rows.take(~whole[rows.shard] & ~np.isin(rows.shard, absent))
    offsets, lengths = _entries(fmt, indexes, rows, keys, source.where)
    empty = (offsets == MAX_UINT64) & (lengths == MAX_UINT64)
    for i in np.flatnonzero(empty).tolist():
        out[rows.out_sel(i)] = fill
    if empty.any():
        rows, offsets, lengths = rows.take(~empty), offsets[~empty], lengths[~empty]
    await _read_inner(source, fmt, keys, rows, offsets.astype(np.int64),
                      lengths.astype(np.int64), out, fill, progress, per_block)


async def _read_whole_shards(source: Any, fmt: ShardFormat, keys: Sequence[str],
                             rows: InnerRows, out_sels: Sequence[Any], out: npt.NDArray[Any],
                             fill: Any, progress: Any, missing: set[int] | None
                             ) -> npt.NDArray[np.bool_]:
    """Read the shards whose every inner chunk the selection touches in one request each
    (:mod:`._whole`), where lsio reads the shard files and the C decoder applies; returns
    which shards it read."""
    none = np.zeros(len(keys), bool)
    eligible = WHOLE_SHARDS != "never" and source.direct and (
        progress in (None, False) or callable(progress))  # (a bar counts chunks)
    decoder = _decoder(fmt, out.dtype) if eligible else None
    if decoder is None or not len(rows):
        return none
    whole: npt.NDArray[np.bool_] = np.bincount(rows.shard, minlength=len(keys)) == math.prod(
        fmt.per_shard)
    ids = np.flatnonzero(whole)
    if len(ids) < WHOLE_SHARDS_MIN:
        return none
    located = source.locate([keys[i] for i in ids.tolist()])
    if not located.plain or (WHOLE_SHARDS != "always" and not any(map(is_url, located.paths))):
        return none
    number = np.full(len(keys), -1, np.int64)
    number[ids] = np.arange(len(ids))
    mine = rows.take(whole[rows.shard])

    def gone(k: int) -> None:  # a missing shard (on a worker thread)
        i = int(ids[k])
        out[out_sels[i]] = fill
        if missing is not None:
            missing.add(i)

    await read_whole(located.reader, [located.part(k, 0, None) for k in range(len(ids))],
                     fmt, decoder, [keys[i] for i in ids.tolist()], source.where,
                     replace(mine, shard=number[mine.shard]), out, fill, progress,
                     located.files_may_be_missing, gone)
    return whole


def _entries(fmt: ShardFormat, indexes: Sequence[npt.NDArray[np.uint64] | None],
             rows: InnerRows, keys: Sequence[str], where: str
             ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Each row's ``(offset, nbytes)`` from its shard's index; a ValueError naming the
    shard and inner chunk of the first entry no file could hold."""
    if not len(rows):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    present = [np.zeros((1, 2), np.uint64) if x is None else x for x in indexes]
    table = np.concatenate(present)
    base = np.cumsum([0] + [len(x) for x in present[:-1]])
    mult = np.cumprod((fmt.per_shard[1:] + (1,))[::-1])[::-1]
    entry = table[base[rows.shard] + (rows.coords * mult).sum(axis=1)]
    offsets, lengths = entry[:, 0], entry[:, 1]
    empty = (offsets == MAX_UINT64) & (lengths == MAX_UINT64)
    top = np.uint64(MAX_BYTES)
    bad = ~empty & ((offsets > top) | (lengths > top - np.minimum(offsets, top)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"lsio.zarr: the shard index of {keys[int(rows.shard[i])]!r} in {where} places "
            f"inner chunk {tuple(rows.coords[i].tolist())} at bytes {int(offsets[i])}+"
            f"{int(lengths[i])}, beyond any file (2**63 - 1 bytes)")
    return offsets, lengths


async def _read_inner(source: Any, fmt: ShardFormat, keys: Sequence[str], rows: InnerRows,
                      offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
                      out: npt.NDArray[Any], fill: Any, progress: Any,
                      per_block: Any) -> None:
    """Read and decode the inner chunks of ``rows`` (``offsets``/``lengths`` within their
    shards): one planned call of byte ranges, each decoded by the C decoder into ``out``,
    where lsio reads the shard files itself; else the per-chunk road."""
    if not len(rows):
        return
    decoder = _decoder(fmt, out.dtype) if source.direct else None
    located = source.locate(list(keys)) if decoder is not None else None
    if decoder is None or located is None or not located.plain:
        sels = [(rows.chunk_sel(i), rows.out_sel(i)) for i in range(len(rows))]
        requests = [(keys[s], o, n) for s, o, n in zip(
            rows.shard.tolist(), offsets.tolist(), lengths.tolist(), strict=True)]
        await per_block(source, fmt.decode, requests, sels, out, fill, progress)
        return
    base, size = located.offsets[rows.shard], located.lengths[rows.shard]
    sized = size >= 0  # a byte range of a file: the inner chunk's range is cut to it
    start = np.where(sized, np.minimum(offsets, np.maximum(size, 0)), offsets)
    length = np.where(sized, np.minimum(lengths, np.maximum(size, 0) - start), lengths)
    paths = located.paths
    requests = list(zip([paths[s] for s in rows.shard.tolist()], (base + start).tolist(),
                        length.tolist(), strict=True))
    jobs = rows.jobs(decoder, out)
    await read_batched(located.reader, requests, jobs, decoder, _never_missing, out,
                       source.where, progress, False)


def _never_missing(rows: Sequence[int]) -> None:  # read with missing_ok=False
    raise AssertionError(f"inner chunks {list(rows)} reported missing")
