"""The chunk grid work of a basic selection, as numpy arrays, for the batched C path.

:func:`batch_plan` works out, for a selection of ints and positive-step slices over a whole
chunk grid (the fast path), one C ``lsio_chunk`` job per chunk it touches, with numpy arrays
up front instead of per-chunk Python (16 384 chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cache import Lru
from .._defaults import PLAN_CACHE, PLAN_CACHE_BYTES
from ._batched import Decoder, c_decoder, extent
from ._chain import Chain

__all__ = ["BatchPlan", "batch_plan"]


@dataclass(frozen=True)
class BatchPlan:
    """The chunk grid work of a basic selection, as arrays, for the C path: one row per
    chunk the selection touches (none for an empty selection), in C order of the grid."""

    decoder: Decoder
    coords: npt.NDArray[np.int64]
    """Grid coordinates of each chunk (its key is ``c/i/j/...``), shape (chunks, ndim)."""
    jobs: npt.NDArray[Any]
    """One C ``lsio_chunk`` per chunk: where its selected block starts in the decoded chunk,
    its shape and strides, and its address and strides in the output; ``src`` and
    ``srclen`` are set per chunk, once it is read."""
    ostarts: npt.NDArray[np.int64]
    """Where each chunk's block starts in the output, per array dimension (missing chunks
    fill their block from it)."""
    kept: tuple[bool, ...]
    """Per array dimension: whether it is a dimension of the output (a slice) or dropped
    (an int); empty for an empty selection."""
    names: tuple[str, ...] = ()
    """Each chunk's key under the array (``c/i/j``)."""

    @property
    def empty(self) -> bool:
        """Nothing selected: no chunk to read."""
        return len(self.jobs) == 0

    @classmethod
    def nothing(cls, decoder: Decoder) -> BatchPlan:
        """The plan of an empty selection."""
        return cls(decoder=decoder, coords=np.zeros((0, decoder.ndim), np.int64),
                   jobs=decoder.jobs(0), ostarts=np.zeros((0, decoder.ndim), np.int64),
                   kept=())

    def at(self, out: npt.NDArray[Any]) -> BatchPlan:
        """This plan (worked out for an output at address 0) for ``out``: its jobs with
        ``out``'s address added (a copy; the plan is shared)."""
        if not len(self.jobs):
            return self
        jobs = self.jobs.copy()
        jobs["dst"] += np.uint64(out.ctypes.data)
        jobs["out"], jobs["outlen"] = extent(out)
        return replace(self, jobs=jobs)

    def fill_missing(self, out: npt.NDArray[Any], fill: Any) -> Callable[[Sequence[int]],
                                                                             None]:
        """Sets the blocks of the chunks at the given plan rows to ``fill``."""
        def fill_rows(rows: Sequence[int]) -> None:
            for k in rows:
                region = tuple(slice(int(o), int(o + n)) for o, n, kept in zip(
                    self.ostarts[k], self.jobs["shape"][k], self.kept, strict=False) if kept)
                out[region] = fill
        return fill_rows


def batch_plan(decode: Chain, selection: Any, meta: Any, out: npt.NDArray[Any]
               ) -> BatchPlan | None:
    """The chunk grid work of a basic selection, as arrays, when the C path applies: the
    C decoder handles the codecs, ints and slices with positive steps, default chunk keys.
    Worked out once per layout and selection (:data:`_PLANS`), then placed at ``out``."""
    decoder = decode.c_decoders.get(out.dtype)
    if decoder is None and out.dtype not in decode.c_decoders:
        decoder = decode.c_decoders[out.dtype] = c_decoder(decode, out.dtype)
    enc = meta.chunk_key_encoding
    if (decoder is None or getattr(enc, "name", "") != "default"
            or getattr(enc, "separator", "") != "/"):
        return None
    shape, chunks = tuple(meta.shape), decode.shape
    if max(shape + chunks, default=0) >= 2**62:  # its int64 arithmetic could wrap: the
        return None  # per-chunk path works with Python ints
    sel = _full_selection(selection, len(shape))
    if sel is None:
        return None
    spans = tuple(_span(n, x) for n, x in zip(shape, sel, strict=True))
    if None in spans:
        return None
    key = (decoder, shape, spans, out.strides)
    plan = _PLANS.get(key)
    if plan is None:  # (jobs at output address 0)
        plan = _plan(decoder, chunks, spans, out.strides)  # type: ignore[arg-type]
        _PLANS.put(key, plan, plan.jobs.nbytes + plan.coords.nbytes + plan.ostarts.nbytes
                   + 64 * len(plan.names))  # (a key string: ~64 bytes)
    return plan.at(out)


def _plan(decoder: Decoder, chunks: tuple[int, ...],
          spans: tuple[tuple[int, int, int, bool], ...],
          out_strides: tuple[int, ...]) -> BatchPlan:
    """The plan of ``spans`` (per dimension: first, count, step, kept) for an output at
    address 0 with ``out_strides``."""
    # per array dim: (chunk index, start in chunk, length, start in out, step) arrays
    per_dim: list[tuple[npt.NDArray[np.int64], ...]] = []
    out_dim = 0
    dims_strides, dims_kept = [], []
    for c, (lo, count, step, kept) in zip(chunks, spans, strict=True):
        if count <= 0:
            return BatchPlan.nothing(decoder)
        per_dim.append(_dim_blocks(lo, count, step, c))
        if kept:
            dims_strides.append(out_strides[out_dim])
            out_dim += 1
        else:
            dims_strides.append(0)
        dims_kept.append(kept)
    return _grid_jobs(decoder, per_dim, dims_strides, dims_kept)


_PLANS: Lru[BatchPlan] = Lru("zarr selection plans", entries=PLAN_CACHE,
                             max_bytes=PLAN_CACHE_BYTES)
"""Plans by (decoder, array shape, selection spans, output strides), at output address 0:
repeated selections of one layout (a notebook's, a Dask task's) skip the grid work."""


def _dim_blocks(lo: int, count: int, step: int, c: int) -> tuple[npt.NDArray[np.int64], ...]:
    """One dimension's selection (``count`` elements from ``lo`` every ``step``) cut by
    chunks of ``c``: (chunk index, first element in the chunk, elements, first position in
    the output, step) per chunk holding at least one element."""
    last = lo + (count - 1) * step
    idx = np.arange(lo // c, last // c + 1, dtype=np.int64)
    begin = idx * c
    first = np.where(begin > lo, lo + -(-(begin - lo) // step) * step, lo)
    end = np.minimum(begin + c, last + 1)
    n = np.where(first < end, (end - 1 - first) // step + 1, 0)
    some = n > 0
    idx, first, n = idx[some], first[some], n[some]
    return idx, first - idx * c, n, (first - lo) // step, np.full(len(idx), step, np.int64)


def _full_selection(selection: Any, ndim: int) -> tuple[Any, ...] | None:
    """The selection with one entry per dimension (``...`` and the trailing dimensions as
    whole slices), or None if it has more entries than dimensions or several ``...``."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    if sum(x is Ellipsis for x in sel) > 1:
        return None
    if Ellipsis in sel:
        k = sel.index(Ellipsis)
        sel = sel[:k] + (slice(None),) * (ndim - len(sel) + 1) + sel[k + 1:]
    sel = sel + (slice(None),) * (ndim - len(sel))
    if len(sel) != ndim:
        return None
    return sel


def _span(n: int, x: Any) -> tuple[int, int, int, bool] | None:
    """(first, count, step, kept) of one dimension's selection of ``n``: an int (not kept
    in the output) or a slice with a positive step (kept); None for anything else."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        i = int(x) + n if x < 0 else int(x)
        return (i, 1, 1, False) if 0 <= i < n else None
    if isinstance(x, slice) and (x.step is None or (isinstance(x.step, (int, np.integer))
                                                    and x.step > 0)):
        lo, hi, step = x.indices(n)
        return lo, len(range(lo, hi, step)), step, True
    return None


def _grid_jobs(decoder: Decoder, per_dim: list[tuple[npt.NDArray[np.int64], ...]],
               out_strides: list[int], dims_kept: list[bool]) -> BatchPlan:
    """Every combination of the dimensions' chunks, as a plan: the grid coordinates, and
    each block's shape, offset and strides in its decoded chunk, and offset and strides
    in the output."""
    grids = np.meshgrid(*[np.arange(len(d[0])) for d in per_dim], indexing="ij")
    picks = [g.ravel() for g in grids]
    ndim = len(per_dim)
    coords = np.stack([per_dim[k][0][picks[k]] for k in range(ndim)], axis=1)
    jobs = decoder.jobs(len(coords))
    ostarts = np.zeros((len(coords), ndim), np.int64)
    for k in range(ndim):
        idx, start, length, ostart, step = (a[picks[k]] for a in per_dim[k])
        jobs["shape"][:, k] = length
        jobs["src_offset"] += start * decoder.strides[k]
        jobs["src_strides"][:, k] = step * decoder.strides[k]
        jobs["dst"] += (ostart * out_strides[k]).astype(np.uint64)
        jobs["dst_strides"][:, k] = out_strides[k]
        ostarts[:, k] = ostart
    names = tuple("c/" + "/".join(map(str, c)) for c in coords.tolist())
    for a in (coords, jobs, ostarts):
        a.flags.writeable = False  # shared by every read of this plan
    return BatchPlan(decoder=decoder, coords=coords, jobs=jobs, ostarts=ostarts,
                     kept=tuple(dims_kept), names=names)
