"""The fast path: :func:`read` and :func:`read_sync`, a Zarr v3 selection straight into numpy.

The chunks the selection touches are read in one planned ``read_many`` and decoded on the
pinned pipeline workers straight into their place in the output (:mod:`._read`); a basic
selection of an unsharded array has its whole chunk grid worked out with numpy arrays first
(:func:`._grid.batch_plan`).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from .._memory import allocate
from .._reader import Reader, default_reader
from .._redact import redacting
from .._sync import run_sync
from . import _compat
from ._batched import read_batched
from ._grid import batch_plan
from ._read import Layout, Source, chain_of, read_items
from ._sizes import check_layout, nbytes
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



_INDEXERS = ("basic", "oindex", "vindex")


@redacting
async def read(array_or_url: Any, selection: Any = Ellipsis, *, mode: str = "basic",
               reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Read ``array[selection]`` of a Zarr v3 array into a new numpy array.

    ``array_or_url`` is a ``zarr.Array`` (in an :class:`LsioStore` or zarr's ``LocalStore``)
    or the array's path or URL. ``mode`` says how ``selection`` indexes, as in zarr:
    ``"basic"`` (ints, slices with positive steps, ``...``: ``array[sel]``), ``"oindex"``
    (also int arrays and boolean masks per dimension: ``array.oindex[sel]``) or ``"vindex"``
    (coordinate arrays: ``array.vindex[sel]``). Missing chunks read as the fill value.
    Codecs: bytes (either byte order), transpose, blosc, zstd, gzip, crc32c, and
    sharding_indexed around them (only the inner chunks the selection touches are read).
    """
    if mode not in _INDEXERS:
        raise ValueError(f"lsio.zarr.read: mode must be one of {sorted(_INDEXERS)}, "
                         f"not {mode!r}")
    reader = reader or default_reader()
    if not _compat.support().fast:  # a zarr lsio does not know: zarr reads (warned once)
        return await _read_with_zarr(array_or_url, selection, mode, reader)
    root, meta = await _metadata(reader, array_or_url)
    grid_shape = _compat.regular_chunks(meta)
    if grid_shape is None:  # a rectilinear grid (zarr 3.3+): zarr's own code reads it
        return await _read_with_zarr(array_or_url, selection, mode, reader)
    dtype = meta.dtype.to_native_dtype()
    fill = meta.fill_value
    layout = Layout(tuple(meta.codecs), grid_shape, dtype)
    check_layout(layout, root, meta.shape)  # untrusted sizes, before any is used
    indexer = _compat.indexer(mode, selection, meta.shape, grid_shape)
    # result memory from lsio's arena pool: recycled once the caller drops the array, so
    # repeated reads skip the first-touch page faults (~0.1-0.4 s per 256 MiB on this VM)
    size = nbytes(indexer.shape, dtype.itemsize, f"the selection of {root!r}")
    out: npt.NDArray[Any] = allocate(size).view(dtype).reshape(indexer.shape)
    if mode == "basic" and layout.sharding is None:
        plan = batch_plan(chain_of(layout), selection, meta, out)
        if plan is not None:  # the whole chunk grid's work as numpy arrays
            # keys are digits and '/': the joined prefix needs no more quoting or joining
            # per chunk (16 384 joins held the loop ~50 ms)
            prefix = join(root, "c/")
            requests = [(prefix + "/".join(map(str, c)), 0, None)
                        for c in plan.coords.tolist()]
            await read_batched(reader, requests, plan.jobs, plan.decoder,
                               plan.fill_missing(out, fill), out, root, progress)
            return out
    projections = list(indexer)
    source = Source(reader=reader, path_of=lambda key: join(root, key), where=root)
    await read_items(source, layout, [meta.encode_chunk_key(p.chunk_coords) for p in projections],
                     [p.chunk_selection for p in projections],
                     [p.out_selection for p in projections], out, fill, indexer.drop_axes,
                     progress)
    return out.reshape(indexer.sel_shape) if hasattr(indexer, "sel_shape") else out


async def _read_with_zarr(array_or_url: Any, selection: Any, mode: str,
                          reader: Reader) -> npt.NDArray[Any]:
    """``array[selection]`` (or ``.oindex``, ``.vindex``) through zarr's own public API, on a
    worker thread (zarr's sync API runs its own loop): where lsio's own reads are off."""
    import zarr

    def run() -> npt.NDArray[Any]:
        arr = array_or_url
        if isinstance(arr, (str, os.PathLike)):
            store = LsioStore(os.fspath(arr).rstrip("/"), read_only=True, reader=reader)
            arr = zarr.open_array(store, mode="r")
        view = arr if mode == "basic" else getattr(arr, mode)
        return np.asarray(view[selection])

    return await asyncio.to_thread(run)


async def _metadata(reader: Reader, array_or_url: Any) -> tuple[str, Any]:
    """(root path or URL, ArrayV3Metadata): an Array's own, else its ``zarr.json``, read."""
    root, meta = _location(array_or_url)
    if meta is None:
        (raw,) = await reader.read_many([(join(root, "zarr.json"), 0, None)])
        text = bytes(raw)
        cached = _METADATA.get(root)
        if cached is not None and cached[0] == text:  # the same document: parsed before
            return root, cached[1]
        meta = _parse(root, text)
        if len(_METADATA) >= 256:
            _METADATA.clear()
        _METADATA[root] = (text, meta)
    return root, meta


def _parse(root: str, text: bytes) -> Any:
    """``zarr.json``'s bytes as array metadata; anything else (not JSON, not an object,
    not a v3 array, fields zarr refuses) is a ValueError naming the document."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError
        raise ValueError(f"lsio.zarr.read: {root}/zarr.json is not JSON: {exc}") from None
    if (not isinstance(doc, dict) or doc.get("zarr_format") != 3
            or doc.get("node_type") != "array"):
        raise ValueError(f"lsio.zarr.read: {root!r} is not a Zarr v3 array")
    try:
        return _compat.array_metadata(doc)
    except MemoryError:
        raise
    except Exception as exc:  # zarr raises KeyError, TypeError, ... on untrusted fields
        raise ValueError(f"lsio.zarr.read: {root}/zarr.json is not valid Zarr v3 array "
                         f"metadata: {type(exc).__name__}: {exc}") from exc


_METADATA: dict[str, tuple[bytes, Any]] = {}
"""The last parsed ``zarr.json`` per array root, with its bytes: every read still reads
the document (so a rewritten array is seen at once), but an unchanged one is not parsed
again (``ArrayV3Metadata.from_dict`` costs ~2-5 ms here, as much as a sub-selection's
decode)."""


@redacting
def read_sync(array_or_url: Any, selection: Any = Ellipsis, *, mode: str = "basic",
              reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Blocking :func:`read`; safe to call from inside a running event loop (Jupyter)."""
    return run_sync(read(array_or_url, selection, mode=mode, reader=reader,
                         progress=progress))
