"""zarr-python's private surface, in one place.

lsio reads zarr arrays itself (:func:`lsio.zarr.read`, :class:`lsio.zarr.LsioCodecPipeline`),
and for that it needs a few things zarr has no public API for: its indexers (which chunks a
selection touches, and where each block goes), a runtime chunk grid to give them, array
metadata parsed from ``zarr.json``, and its default codec pipeline to hand everything else
to. Every such use lives here, and nowhere else in lsio.

zarr changed these between releases: up to 3.1 the chunk grid in the metadata is also the
grid the indexers take (``RegularChunkGrid``); from 3.2 the metadata holds a description
(``RegularChunkGridMetadata``) and the indexers take a runtime ``ChunkGrid`` built from it
(``ChunkGrid.from_sizes``). From 3.2 a codec pipeline's ``read`` returns one result per
chunk (``{"status": "present" | "missing"}``).

Known: zarr 3.1 to 3.4 (each has its test). A newer 3.x is checked once, by building a tiny
indexer through the same calls; a zarr whose major version is not 3, or one where that
check fails (a moved module, a missing attribute), turns lsio's own zarr reads off: the
pipeline hands every read to zarr's own pipeline and :func:`lsio.zarr.read` reads through
zarr's own array code, with one :class:`ZarrCompatWarning` saying so.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Any

import zarr

from .._cache import on_clear

__all__ = ["KNOWN", "DEFAULT_PIPELINE_PATH", "ZarrCompatWarning", "Support", "array_metadata",
           "default_pipeline", "fill_value", "indexer", "regular_chunks", "support"]

KNOWN = ((3, 1), (3, 2), (3, 3), (3, 4))
"""The zarr minor releases lsio is tested with (tests/test_zarr_compat.py)."""

DEFAULT_PIPELINE_PATH = "zarr.core.codec_pipeline.BatchedCodecPipeline"
"""zarr's default ``codec_pipeline.path`` (the same in every 3.x)."""


class ZarrCompatWarning(UserWarning):
    """lsio does not know this zarr: its own zarr reads are off, zarr's own code reads."""


@dataclass(frozen=True)
class Support:
    """What lsio can do with the installed zarr."""

    version: str
    """``zarr.__version__``."""
    fast: bool
    """lsio's own reads (the pipeline's planned reads, :func:`lsio.zarr.read`) work."""
    split_grid: bool
    """zarr >= 3.2: the metadata's chunk grid is a description; indexers take a ChunkGrid."""
    read_results: bool
    """zarr >= 3.2: ``CodecPipeline.read`` returns one ``GetResult`` per chunk."""
    why: str = ""
    """Why ``fast`` is off."""


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None


@functools.cache
def support() -> Support:
    """The installed zarr's support, worked out once (warns once if lsio's reads are off)."""
    version = str(getattr(zarr, "__version__", "unknown"))
    minor = _minor(version)
    split = minor is not None and minor >= (3, 2)
    why = ""
    if minor is None or minor[0] != 3 or minor < (3, 1):
        why = "lsio knows zarr 3.1 and newer 3.x only"
    else:
        try:
            _self_check(split)
        except Exception as exc:  # a moved module or attribute: zarr's own code reads
            why = f"{type(exc).__name__}: {exc}"
    if why:
        warnings.warn(
            f"lsio.zarr: zarr {version} is not one lsio knows ({why}); lsio's own zarr reads "
            "(LsioCodecPipeline's planned reads, lsio.zarr.read) are off and zarr's own code "
            "reads instead. LsioStore works as before.", ZarrCompatWarning, stacklevel=2)
    return Support(version=version, fast=not why, split_grid=split, read_results=split,
                   why=why)


def _self_check(split: bool) -> None:
    """The private calls lsio makes, once on a tiny array: raises where one moved."""
    from zarr.core.metadata.v3 import ArrayV3Metadata  # noqa: F401

    projections = list(_indexer_class("basic")((slice(1, 3),), (4,), _grid((4,), (2,), split)))
    if [tuple(p.chunk_coords) for p in projections] != [(0,), (1,)]:
        raise ValueError(f"zarr's indexer gave {projections!r} for [1:3] of 2-element chunks")
    default_pipeline()


def _indexer_class(mode: str) -> Any:
    from zarr.core import indexing

    return getattr(indexing, {"basic": "BasicIndexer", "oindex": "OrthogonalIndexer",
                              "vindex": "CoordinateIndexer", "any": "get_indexer"}[mode])


@functools.lru_cache(maxsize=64)  # one per array (and shard shape), not one per read
def _grid(shape: tuple[int, ...], chunks: tuple[int, ...], split: bool) -> Any:
    if split:
        from zarr.core.chunk_grids import ChunkGrid

        return ChunkGrid.from_sizes(shape, chunks)  # type: ignore[attr-defined,unused-ignore]
    from zarr.core.chunk_grids import RegularChunkGrid  # type: ignore[attr-defined,unused-ignore]

    return RegularChunkGrid(chunk_shape=chunks)


on_clear(_grid.cache_clear)


def indexer(mode: str, selection: Any, shape: tuple[int, ...], chunks: tuple[int, ...]) -> Any:
    """zarr's indexer of ``selection`` over a regular grid of ``chunks``: ``mode`` is
    ``"basic"``, ``"oindex"``, ``"vindex"`` or ``"any"`` (zarr picks, as ``array[sel]``)."""
    return _indexer_class(mode)(selection, tuple(shape), _grid(tuple(shape), tuple(chunks),
                                                               support().split_grid))


def regular_chunks(meta: Any) -> tuple[int, ...] | None:
    """A v3 array's chunk shape, or None for a grid that is not regular (rectilinear)."""
    shape = getattr(meta.chunk_grid, "chunk_shape", None)
    return None if shape is None else tuple(shape)


def array_metadata(doc: dict[str, Any]) -> Any:
    """``zarr.json``'s document as zarr's ``ArrayV3Metadata`` (zarr's errors pass through)."""
    from zarr.core.metadata.v3 import ArrayV3Metadata

    return ArrayV3Metadata.from_dict(doc)


def fill_value(spec: Any) -> Any:
    """A chunk's fill value as zarr's own pipeline fills a missing chunk: v2 metadata may
    hold none, then the dtype's default (zarr's ``fill_value_or_default``)."""
    value = spec.fill_value
    return spec.dtype.default_scalar() if value is None else value


def default_pipeline() -> Any:
    """zarr's default codec pipeline class (``BatchedCodecPipeline``)."""
    from zarr.core.codec_pipeline import BatchedCodecPipeline

    return BatchedCodecPipeline

