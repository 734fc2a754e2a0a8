"""Shards a selection covers whole: each read in one request, its index and inner chunks
together (as zarr's own sharding codec reads a complete shard), and decoded from memory by
the worker it landed on. No index read first: one call where a partial shard takes two
(one round trip fewer on object stores), and each shard's inner chunks are decoded while
the shard is still in the CPU's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._each import prefault
from ._batched import Decoder, decode_scatter
from ._inner import InnerRows

__all__ = ["MAX_UINT64", "read_whole"]

MAX_UINT64 = 2**64 - 1
"""An index entry of two of these: the inner chunk is empty (the fill value)."""


@dataclass(frozen=True)
class _Shards:
    """The run callback of ``read_each``: each landed shard's index checked, its empty
    inner chunks filled, the others decoded into the output in one GIL-free C call."""

    fmt: Any
    """The shards' :class:`._shards.ShardFormat`."""
    decoder: Decoder
    keys: Sequence[str]
    """The key of each request's shard (names it in errors)."""
    where: str
    rows: InnerRows
    """The shards' inner chunks."""
    starts: npt.NDArray[np.int64]
    """Request ``i``'s rows are ``rows[starts[i]:starts[i + 1]]``."""
    flat: npt.NDArray[np.int64]
    """Each row's entry in its shard's index."""
    jobs: npt.NDArray[Any]
    out: npt.NDArray[Any]
    fill: Any
    on_missing: Any

    def __call__(self, start: int, results: Any) -> None:
        addresses, sizes = results.addresses()
        missing = results.missing
        for k in range(len(results)):
            if missing[k]:
                self.on_missing(start + k)
            else:
                self.shard(start + k, results[k], int(addresses[k]), int(sizes[k]))
        del results  # held until here: the C calls read the shards

    def shard(self, i: int, view: memoryview, address: int, size: int) -> None:
        fmt, key = self.fmt, self.keys[i]
        nb = fmt.index_bytes
        raw = view[max(0, size - nb):] if fmt.at_end else view[:nb]
        index = fmt.parse_index(raw, key, self.where)
        r0, r1 = int(self.starts[i]), int(self.starts[i + 1])
        entry = index[self.flat[r0:r1]]
        offsets, lengths = entry[:, 0], entry[:, 1]
        empty = (offsets == MAX_UINT64) & (lengths == MAX_UINT64)
        top = np.uint64(size)
        bad = ~empty & ((offsets > top) | (lengths > top - np.minimum(offsets, top)))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"lsio.zarr: the shard index of {key!r} in {self.where} places inner chunk "
                f"{tuple(self.rows.coords[r0 + j].tolist())} at bytes {int(offsets[j])}+"
                f"{int(lengths[j])}, beyond the shard's {size} bytes")
        for j in np.flatnonzero(empty).tolist():
            self.out[self.rows.out_sel(r0 + j)] = self.fill
        jobs = self.jobs[r0:r1][~empty]  # (a copy: each landed shard fills its own)
        jobs["src"] = np.uint64(address) + offsets[~empty]
        jobs["srclen"] = lengths[~empty]
        coords = self.rows.coords[r0:r1][~empty]
        decode_scatter(self.decoder, lambda k: f"inner chunk {tuple(coords[k].tolist())} "
                       f"of the shard {key!r} in {self.where}", jobs)


async def read_whole(reader: Any, requests: Sequence[tuple[str, int, int | None]],
                     fmt: Any, decoder: Decoder, keys: Sequence[str], where: str,
                     rows: InnerRows, out: npt.NDArray[Any], fill: Any, progress: Any,
                     missing_ok: bool, on_missing: Any) -> None:
    """Read whole shards (``requests[i]`` holds shard ``keys[i]``; ``rows`` their inner
    chunks, ``rows.shard`` numbering the requests, in order; each holds all of its
    shard's inner chunks) and decode each into ``out`` as it lands; ``on_missing(i)`` for
    a missing one. A ``progress`` callback counts inner chunks."""
    if not len(requests):
        return
    per = np.bincount(rows.shard, minlength=len(requests))
    starts = np.concatenate([[0], np.cumsum(per)])
    mult = np.cumprod((fmt.per_shard[1:] + (1,))[::-1])[::-1]
    flat = (rows.coords * mult).sum(axis=1)
    run = _Shards(fmt, decoder, keys, where, rows, starts, flat, rows.jobs(decoder, out),
                  out, fill, on_missing)
    if callable(progress):  # counted in inner chunks, as the index-first road counts them
        inner, report = int(np.max(per)), progress

        def progress(done: int, total: int, nbytes: int) -> Any:
            return report(done * inner, total * inner, nbytes)
    async with prefault(out):
        await reader.read_each(requests, on_chunks=run, missing_ok=missing_ok,
                               progress=progress, threads=True,
                               work_bytes=decoder.chunk_bytes * max(1, int(np.max(per))))
