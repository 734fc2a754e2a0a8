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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cache import Lru
from .._defaults import METADATA_CACHE
from .._memory import allocate
from .._reader import Reader, default_reader
from .._redact import redacting
from .._sync import run_sync
from . import _compat
from ._batched import read_batched
from ._grid import batch_plan
from ._locate import Located, locator, where
from ._read import Layout, Source, chain_of, read_items
from ._sizes import check_layout, nbytes
from ._store import LsioStore

__all__ = ["read", "read_sync"]


def _location(array_or_url: Any, reader: Reader | None
              ) -> tuple[str, Any, Callable[[Sequence[str]], Located], str]:
    """(where the array is, its ArrayV3Metadata or None, its store's ``locate``, the
    array's key prefix in that store) for an Array or a path or URL (an :class:`LsioStore`
    over it)."""
    if isinstance(array_or_url, (str, os.PathLike)):
        root = os.fspath(array_or_url).rstrip("/")
        return root, None, LsioStore(root, read_only=True, reader=reader).locate, ""
    store_path = getattr(array_or_url, "store_path", None)
    if store_path is None:
        raise TypeError(f"lsio.zarr.read takes a zarr.Array, a path or a URL, not "
                        f"{type(array_or_url).__name__}")
    store = store_path.store
    located_by = locator(store)
    if located_by is None:
        raise TypeError(f"lsio.zarr.read reads arrays in a store that locates its values "
                        f"(LsioStore, LocalStore, lsio.virtual.ReferenceStore, ...), not "
                        f"{type(store).__name__}; pass the array's URL or path instead")
    locate = located_by
    if reader is not None:  # the caller's reader reads the files the store names
        def locate(keys: Sequence[str]) -> Located:
            return replace(located_by(keys), reader=reader)
    path = store_path.path
    root = where(store)
    return (f"{root}/{path}" if path else root), array_or_url.metadata, locate, (
        f"{path}/" if path else "")


_INDEXERS = ("basic", "oindex", "vindex")


@redacting
async def read(array_or_url: Any, selection: Any = Ellipsis, *, mode: str = "basic",
               reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Read ``array[selection]`` of a Zarr v3 array into a new numpy array.

    ``array_or_url`` is a ``zarr.Array`` (in a store with a ``locate`` method, such as
    :class:`LsioStore` or :class:`lsio.virtual.ReferenceStore`, or zarr's ``LocalStore``)
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
    given, reader = reader, reader or default_reader()
    if not _compat.support().fast:  # a zarr lsio does not know: zarr reads (warned once)
        return await _read_with_zarr(array_or_url, selection, mode, reader)
    root, meta, locate, prefix = _location(array_or_url, given)
    if meta is None:
        meta = await _metadata(root, locate)
    elif getattr(meta, "zarr_format", 3) != 3:  # zarr v2 metadata: zarr reads, through
        return await _read_with_zarr(array_or_url, selection, mode, reader)  # its pipeline
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
            if plan.empty:
                return out
            located = locate([prefix + name for name in plan.names] if prefix
                             else list(plan.names))
            if located.plain:
                await read_batched(located.reader, located.requests(), plan.jobs,
                                   plan.decoder, plan.fill_missing(out, fill), out, root,
                                   progress, located.files_may_be_missing)
                return out
    projections = list(indexer)
    source = Source(locate=locate, where=root)
    await read_items(source, layout,
                     [prefix + meta.encode_chunk_key(p.chunk_coords) for p in projections],
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


async def _metadata(root: str, locate: Callable[[Sequence[str]], Located]) -> Any:
    """The ArrayV3Metadata of the array at ``root``: its ``zarr.json``, read."""
    located = locate(["zarr.json"])
    part = located.part(0, 0, None)
    if part is None:
        raise FileNotFoundError(f"lsio.zarr.read: {root}/zarr.json is missing")
    if not isinstance(part, bytes):
        (part,) = await located.reader.read_many([part])
    text = bytes(part)
    meta = _METADATA.get(text)  # the same document: parsed before
    if meta is None:
        meta = _METADATA.put(text, _parse(root, text), len(text))
    return meta


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


_METADATA: Lru[Any] = Lru("zarr metadata", entries=METADATA_CACHE)
"""Parsed ``zarr.json`` documents by their bytes: every read still reads the document (so
a rewritten array is seen at once), but an unchanged one is not parsed again
(``ArrayV3Metadata.from_dict`` costs ~2-5 ms here, as much as a sub-selection's decode)."""


@redacting
def read_sync(array_or_url: Any, selection: Any = Ellipsis, *, mode: str = "basic",
              reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Blocking :func:`read`; safe to call from inside a running event loop (Jupyter)."""
    return run_sync(read(array_or_url, selection, mode=mode, reader=reader,
                         progress=progress))
