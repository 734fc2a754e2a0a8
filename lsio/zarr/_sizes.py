"""Sizes worked out from untrusted ``zarr.json`` shapes, with Python ints: ``np.prod`` of a
shape wraps around in int64 (``[2**62 + 1, 4]`` bytes came out as 4), and a wrapped size
let the C decoder copy past a chunk. A size that does not fit a signed 64-bit count (the C
decoder's offsets and strides, numpy's array sizes) is refused with a ``ValueError`` naming
the array, as zarr's own pipeline refuses it with a ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_BYTES", "MAX_DIM", "check_layout", "nbytes"]

MAX_BYTES = 2**63 - 1
"""The most bytes a chunk, a shard index or a result may hold."""


def nbytes(shape: Sequence[int], itemsize: int, what: str) -> int:
    """Bytes of ``shape`` elements of ``itemsize`` each; a ``ValueError`` naming ``what``
    when a dimension is negative or the size exceeds :data:`MAX_BYTES`."""
    dims = tuple(int(n) for n in shape)
    if any(n < 0 for n in dims):
        raise ValueError(f"lsio.zarr: {what} has a negative shape {list(dims)}")
    size = math.prod(dims) * int(itemsize)
    if size > MAX_BYTES:
        raise ValueError(f"lsio.zarr: {what} of shape {list(dims)} and {itemsize}-byte "
                         f"elements holds {size} bytes, more than 2**63 - 1")
    return size


MAX_DIM = 2**53
"""The longest array dimension read: zarr's indexers count chunks with float division
(``math.ceil(a / b)``), inexact past 2**53, and then hand over no chunk at all for a
selection (zarr's own read returns uninitialized memory there; lsio's result memory may
hold an earlier result)."""


def check_layout(layout: Any, where: str, shape: Sequence[int] | None = None) -> None:
    """Refuse an array whose chunks (or shards' inner chunks and indexes) have sizes that do
    not fit (:func:`nbytes`), or whose ``shape`` has a dimension longer than
    :data:`MAX_DIM`, naming the array ``where``."""
    _check_chunks(layout, where)
    if shape is not None and any(int(n) > MAX_DIM for n in shape):
        raise ValueError(f"lsio.zarr: the shape {list(shape)} of {where!r} has a dimension "
                         f"longer than 2**53, past which zarr's indexing is inexact")


def _check_chunks(layout: Any, where: str) -> None:
    name = f"a chunk of {where!r}"
    if any(int(n) <= 0 for n in layout.chunk_shape):
        raise ValueError(f"lsio.zarr: the chunk shape {list(layout.chunk_shape)} of {where!r} "
                         f"has an empty dimension")
    nbytes(layout.chunk_shape, layout.dtype.itemsize, name)
    sharding = layout.sharding
    if sharding is None:
        return
    inner = tuple(int(n) for n in sharding.chunk_shape)
    if len(inner) != len(layout.chunk_shape) or any(n <= 0 for n in inner):
        raise ValueError(f"lsio.zarr: the inner chunk shape {list(inner)} of {where!r} "
                         f"does not fit its shards of {list(layout.chunk_shape)}")
    nbytes(inner, layout.dtype.itemsize, f"an inner chunk of {where!r}")
    per_shard = [s // c for s, c in zip(layout.chunk_shape, inner, strict=True)]
    nbytes([*per_shard, 2], 8, f"a shard index of {where!r}")
