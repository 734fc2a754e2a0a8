"""The fast path: :func:`read` and :func:`read_sync`, a Zarr v3 selection straight into numpy.

The chunks the selection touches are read in one planned ``read_many`` and decoded on the
pinned pipeline workers straight into their place in the output: by the batched C decoder
where it applies (:mod:`._batched`), else one numcodecs chain per chunk; sharded arrays read
their shard indexes first (:mod:`._sharding`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from .._memory import allocate
from .._reader import Reader, default_reader
from .._sync import run_sync
from ._batched import batch_plan, read_batched
from ._chain import Chain, sink, view
from ._sharding import read_sharded
from ._store import LsioStore, join

__all__ = ["read", "read_sync"]


def _location(array_or_url: Any) -> tuple[str, Any]:
    """(root path or URL of the array, its ArrayV3Metadata) for an Array or a location."""
    if isinstance(array_or_url, (str, os.PathLike)):
        return os.fspath(array_or_url).rstrip("/"), None
    store_path = getattr(array_or_url, "store_path", None)
    if store_path is None:
        raise TypeError(f"lsio.zarr.read takes a zarr.Array, a path or a URL, not "
                        f"{type(array_or_url).__name__}")
    store = store_path.store
    if isinstance(store, LsioStore):
        root = store.root
    elif type(store).__name__ == "LocalStore":
        root = os.fspath(store.root)
    else:
        raise TypeError(f"lsio.zarr.read reads arrays in an LsioStore or LocalStore, not "
                        f"{type(store).__name__}; pass the array's URL or path instead")
    path = store_path.path
    return (f"{root}/{path}" if path else root), array_or_url.metadata



async def read(array_or_url: Any, selection: Any = Ellipsis, *,
               reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Read ``array[selection]`` of a Zarr v3 array into a new numpy array.

    ``array_or_url`` is a ``zarr.Array`` (in an :class:`LsioStore` or zarr's ``LocalStore``)
    or the array's path or URL. ``selection`` is a basic selection (ints, slices,
    ``...``). Missing chunks read as the fill value. Supported codecs: bytes, transpose,
    blosc, zstd, gzip, crc32c, and sharding_indexed around them.
    """
    from zarr.core.indexing import BasicIndexer

    reader = reader or default_reader()
    root, meta = await _metadata(reader, array_or_url)
    dtype = meta.dtype.to_native_dtype()
    fill = meta.fill_value
    indexer = BasicIndexer(selection, shape=meta.shape, chunk_grid=meta.chunk_grid)
    # result memory from lsio's arena pool: recycled once the caller drops the array, so
    # repeated reads skip the first-touch page faults (~0.1-0.4 s per 256 MiB on this VM)
    size = int(np.prod(indexer.shape)) * dtype.itemsize
    out: npt.NDArray[Any] = allocate(size).view(dtype).reshape(indexer.shape)
    codecs = list(meta.codecs)
    sharding = codecs[-1] if len(codecs) == 1 and type(codecs[0]).__name__ == (
        "ShardingCodec") else None
    grid_shape = tuple(meta.chunk_grid.chunk_shape)

    if sharding is None:
        decode = Chain(codecs, grid_shape, dtype)
        batched = batch_plan(decode, selection, meta, out)
        if batched is not None:
            await read_batched(reader, root, batched, decode, out, fill, progress)
        else:
            await _read_chunks(reader, root, meta, indexer, decode, out, fill, progress)
        return out
    await read_sharded(reader, root, meta, indexer, sharding, dtype, out, fill, progress)
    return out


async def _metadata(reader: Reader, array_or_url: Any) -> tuple[str, Any]:
    """(root path or URL, ArrayV3Metadata): an Array's own, else its ``zarr.json``, read."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    root, meta = _location(array_or_url)
    if meta is None:
        (raw,) = await reader.read_many([(join(root, "zarr.json"), 0, None)])
        doc = json.loads(bytes(raw))
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
            raise ValueError(f"lsio.zarr.read: {root!r} is not a Zarr v3 array")
        meta = ArrayV3Metadata.from_dict(doc)
    return root, meta


async def _read_chunks(reader: Reader, root: str, meta: Any, indexer: Any, decode: Chain,
                       out: npt.NDArray[Any], fill: Any, progress: Any) -> None:
    """The per-chunk path: one ``read_many`` whose pipeline decodes each chunk (numcodecs)
    into its place in ``out``; missing chunks read as ``fill``."""
    projections = list(indexer)
    requests = [(join(root, meta.encode_chunk_key(p.chunk_coords)), 0, None)
                for p in projections]
    steps = [[sink(decode, view(out, p.out_selection), p.chunk_selection)]
             for p in projections]
    written = await reader.read_many(requests, pipeline=steps, missing_ok=True,
                                     progress=progress) if requests else []
    for p, ok in zip(projections, written, strict=True):
        if ok is None:
            view(out, p.out_selection)[...] = fill


def read_sync(array_or_url: Any, selection: Any = Ellipsis, *, reader: Reader | None = None,
              progress: Any = False) -> npt.NDArray[Any]:
    """Blocking :func:`read`; safe to call from inside a running event loop (Jupyter)."""
    return run_sync(read(array_or_url, selection, reader=reader, progress=progress))
