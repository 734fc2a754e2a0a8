""":class:`LsioCodecPipeline`: lsio as zarr-python's codec pipeline.

zarr-python works out which chunks a selection touches and hands the whole list to its codec
pipeline's ``read``. This one reads them all in one planned ``read_many`` and decodes each
chunk straight into the output on the pinned workers (:mod:`._read`): the fast path, reached
through ``zarr.open_array(...)[sel]``, ``.oindex``, ``.vindex``, xarray and Dask. Writes, and
codecs or stores it cannot plan, go to zarr's own ``BatchedCodecPipeline`` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.codec import CodecPipeline

from .._shared import identity, shared
from . import _compat
from ._locate import locator, where
from ._read import Layout, Source, read_items

__all__ = ["PATH", "LsioCodecPipeline", "Switch", "disable", "enable"]

PATH = "lsio.zarr.LsioCodecPipeline"
"""The name zarr's config knows the pipeline by (``codec_pipeline.path``)."""
DEFAULT_PATH = _compat.DEFAULT_PIPELINE_PATH
log = logging.getLogger("lsio")


class LsioCodecPipeline(CodecPipeline):
    """A zarr-python ``CodecPipeline`` that reads through lsio.

    Switch it on for every array opened afterwards with :func:`enable`, or with
    ``zarr.config.set({"codec_pipeline.path": "lsio.zarr.LsioCodecPipeline"})``.

    - **Reads** of arrays in a store that locates its values (``locate``:
      :class:`LsioStore`, :class:`lsio.virtual.ReferenceStore`, and zarr's ``LocalStore``)
      are one planned ``read_many`` of every chunk the selection touches (sharded arrays: the shard
      indexes, then only the inner chunks needed), each chunk decoded on the pinned workers
      straight into the output: by lsio's batched C decoder (blosc, zstd or no compression,
      either byte order, transposes, basic selections with steps), else one numcodecs chain
      per chunk (gzip, crc32c, ``oindex`` and ``vindex`` selections). Other stores are
      read through their own ``get``, with the same decoding.
    - **Writes**, and codecs lsio does not decode, go to zarr's ``BatchedCodecPipeline``,
      with the same results.
    - It pickles (Dask ships arrays to its workers).
    """

    __module__ = "lsio.zarr"  # the public name zarr's config and pickle use

    def __init__(self, codecs: Iterable[Any]) -> None:
        self.codecs = tuple(codecs)
        self.fallback = _compat.default_pipeline().from_codecs(self.codecs)
        self._identity: str | None = None
        """What a process that unpickles this pipeline keys its one copy on ("": none)."""

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_codecs(cls, codecs: Iterable[Any]) -> LsioCodecPipeline:
        return cls(codecs)

    def evolve_from_array_spec(self, array_spec: Any) -> LsioCodecPipeline:
        return type(self)(c.evolve_from_array_spec(array_spec=array_spec) for c in self.codecs)

    def __reduce__(self) -> tuple[Any, ...]:
        # one pipeline (and so one decode chain, lsio.zarr._read.chain_of) per codecs in
        # each process that unpickles it: Dask ships the array in every graph or task
        if self._identity is None:
            self._identity = identity(self.codecs) or ""
        return (_rebuild, (self.codecs, self._identity or None))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LsioCodecPipeline) and self.codecs == other.codecs

    def __hash__(self) -> int:
        return hash((type(self), self.codecs))

    def __repr__(self) -> str:
        return f"LsioCodecPipeline({list(self.codecs)!r})"

    def __iter__(self) -> Any:
        return iter(self.codecs)

    # -- zarr's CodecPipeline interface: zarr's own pipeline does everything but reads ----
    @property
    def supports_partial_decode(self) -> bool:
        return bool(self.fallback.supports_partial_decode)

    @property
    def supports_partial_encode(self) -> bool:
        return bool(self.fallback.supports_partial_encode)

    def validate(self, **kwargs: Any) -> None:
        # keywords as zarr passes them: shape, dtype and chunk_grid (a RegularChunkGrid up
        # to 3.1, chunk-grid metadata from 3.2); zarr's own pipeline checks them
        self.fallback.validate(**kwargs)

    def compute_encoded_size(self, byte_length: int, array_spec: Any) -> int:
        return int(self.fallback.compute_encoded_size(byte_length, array_spec))

    async def decode(self, chunk_bytes_and_specs: Iterable[Any]) -> Iterable[Any]:
        decoded: Iterable[Any] = await self.fallback.decode(chunk_bytes_and_specs)
        return decoded

    async def encode(self, chunk_arrays_and_specs: Iterable[Any]) -> Iterable[Any]:
        encoded: Iterable[Any] = await self.fallback.encode(chunk_arrays_and_specs)
        return encoded

    async def write(self, batch_info: Iterable[Any], value: Any,
                    drop_axes: tuple[int, ...] = ()) -> None:
        await self.fallback.write(batch_info, value, drop_axes)

    async def read(self, batch_info: Iterable[Any], out: Any,
                   drop_axes: tuple[int, ...] = ()) -> Any:
        """Read every chunk of ``batch_info`` into ``out`` (see the class docstring).
        Returns what zarr's own pipeline returns: None up to zarr 3.1, one
        ``{"status": "present" | "missing"}`` per chunk from zarr 3.2."""
        batch = batch_info if isinstance(batch_info, list) else list(batch_info)
        support = _compat.support()
        planned = self._plan(batch, out) if batch and support.fast else None
        if planned is None:
            return await self.fallback.read(batch, out, drop_axes)
        source, layout, target, fill = planned
        keys = [b[0].path for b in batch]
        missing: set[int] = set()
        try:
            await read_items(source, layout, keys, [b[2] for b in batch],
                             [b[3] for b in batch], target, fill, drop_axes, missing=missing)
        except NotImplementedError:  # a codec lsio does not decode: found before any read
            return await self.fallback.read(batch, out, drop_axes)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("lsio.zarr: the lsio pipeline read %d chunks", len(batch))
        if not support.read_results:
            return None
        return tuple({"status": "missing" if i in missing else "present"}
                     for i in range(len(batch)))

    def _plan(self, batch: list[Any], out: Any) -> tuple[Source, Layout, Any, Any] | None:
        """(where the chunks come from, how they are stored, the output array, the fill
        value), or None where zarr's own pipeline reads the batch."""
        from zarr.storage import StorePath

        getter, spec = batch[0][0], batch[0][1]
        target = out.as_ndarray_like() if hasattr(out, "as_ndarray_like") else None
        if (not isinstance(getter, StorePath) or not isinstance(target, np.ndarray)
                or not target.flags.writeable or batch[-1][1].shape != spec.shape):
            return None  # (a regular grid's chunk specs all have one shape)
        store = getter.store
        locate = locator(store)
        source = (Source(locate=locate, where=where(store)) if locate is not None
                  else Source(store=store, where=str(store)))
        dtype = spec.dtype.to_native_dtype()
        if dtype != target.dtype or dtype.hasobject:
            return None
        layout = Layout(self.codecs, tuple(spec.shape), dtype, str(spec.order))
        return source, layout, target, _fill(spec)


def _rebuild(codecs: tuple[Any, ...], key: str | None) -> LsioCodecPipeline:
    """An unpickled :class:`LsioCodecPipeline`: the one this process built first for these
    codecs (``key``: their :func:`lsio._shared.identity`)."""
    if key is None:
        return LsioCodecPipeline(codecs)

    def build() -> LsioCodecPipeline:
        pipe = LsioCodecPipeline(codecs)
        pipe._identity = key
        return pipe

    return shared("pipeline", key, build)


def _fill(spec: Any) -> Any:
    """The chunk's fill value, as zarr's own pipeline fills missing chunks."""
    return _compat.fill_value(spec)


@dataclass(frozen=True)
class Switch:
    """What :func:`enable` and :func:`disable` return: used in a ``with`` block, the
    previous pipeline comes back at its end. Small and picklable, so
    ``client.run(lsio.zarr.enable)`` can ship it back from Dask workers."""

    previous: str

    def __enter__(self) -> Switch:
        return self

    def __exit__(self, *exc: object) -> None:
        _set_path(self.previous)


def _set_path(path: str) -> Switch:
    import zarr

    previous = str(zarr.config.get("codec_pipeline.path"))
    zarr.config.set({"codec_pipeline.path": path})
    return Switch(previous)


def enable() -> Switch:
    """Make :class:`LsioCodecPipeline` zarr's codec pipeline for arrays opened from now on
    (``zarr.config.set({"codec_pipeline.path": "lsio.zarr.LsioCodecPipeline"})``). Used as
    a context manager (``with lsio.zarr.enable(): ...``), the previous setting comes back
    at its end."""
    return _set_path(PATH)


def disable() -> Switch:
    """Back to zarr's default codec pipeline for arrays opened from now on (also a context
    manager, like :func:`enable`)."""
    return _set_path(DEFAULT_PATH)
