"""Sharded arrays: the shard indexes, then the inner chunks they point at."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._reader import Reader
from ._chain import Chain, sink, view
from ._store import join

__all__ = ["read_sharded"]

MAX_UINT64 = 2**64 - 1


async def read_sharded(reader: Reader, root: str, meta: Any, indexer: Any, sharding: Any,
                       dtype: np.dtype[Any], out: npt.NDArray[Any], fill: Any,
                       progress: Any) -> None:
    """Read the selection of a sharded array into ``out``: the shard indexes with one suffix
    (or prefix) read each, then the selected inner chunks in one ``read_many`` (coalesced),
    decoded on the pipeline workers. Missing shards and empty inner chunks read as ``fill``."""
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.indexing import BasicIndexer

    grid_shape = tuple(meta.chunk_grid.chunk_shape)
    inner_shape = tuple(sharding.chunk_shape)
    per_shard = tuple(s // c for s, c in zip(grid_shape, inner_shape, strict=True))
    n_inner = int(np.prod(per_shard))
    index_chain = Chain(list(sharding.index_codecs), (*per_shard, 2), np.dtype("<u8"))
    index_bytes = 16 * n_inner + 4 * sum(type(c).__name__ == "Crc32cCodec"
                                         for c in sharding.index_codecs)
    at_end = getattr(sharding.index_location, "value", sharding.index_location) == "end"
    shards = list(indexer)
    paths = [join(root, meta.encode_chunk_key(s.chunk_coords)) for s in shards]
    index_requests = [(p, -index_bytes, None) if at_end else (p, 0, index_bytes)
                      for p in paths]
    indexes = await reader.read_many(index_requests, missing_ok=True) if shards else []
    decode = Chain(list(sharding.codecs), inner_shape, dtype)
    inner_grid = RegularChunkGrid(chunk_shape=inner_shape)
    inner_requests: list[tuple[str, int, int]] = []
    inner_steps: list[list[Any]] = []
    for shard, path, raw_index in zip(shards, paths, indexes, strict=True):
        target = view(out, shard.out_selection)
        if raw_index is None:  # the whole shard is missing
            target[...] = fill
            continue
        index = index_chain(raw_index)
        within: Any = shard.chunk_selection
        for p in BasicIndexer(within, shape=grid_shape, chunk_grid=inner_grid):
            offset, nbytes = (int(v) for v in index[p.chunk_coords])
            region = view(target, p.out_selection)
            if offset == MAX_UINT64 and nbytes == MAX_UINT64:
                region[...] = fill
                continue
            inner_requests.append((path, offset, nbytes))
            inner_steps.append([sink(decode, region, p.chunk_selection)])
    if inner_requests:
        await reader.read_many(inner_requests, pipeline=inner_steps, progress=progress)
