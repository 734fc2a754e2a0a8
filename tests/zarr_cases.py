"""Zarr arrays for the tests of the fast path and the codec pipeline: the codecs each
layout is tried with, and an array built from a spec (shape, chunks, shards, dtype, codecs,
transpose, fill value, how much of it is written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs as zc

COMPRESSORS: dict[str, Any] = {
    "none": None,
    "blosc-zstd": zc.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "blosc-lz4-bit": zc.BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle"),
    "zstd": zc.ZstdCodec(level=1),
    "gzip": zc.GzipCodec(level=1),
    "zstd+crc32c": (zc.ZstdCodec(level=1), zc.Crc32cCodec()),
}


def make_array(root: Path, spec: dict[str, Any]) -> zarr.Array:
    """The array of ``spec`` at ``root``, its values 1..120 repeating: all of them
    written, the first half of each dimension (``"some"``), or none."""
    comp = COMPRESSORS[spec["compressor"]]
    kwargs: dict[str, Any] = {}
    if spec["transpose"] is not None:
        kwargs["filters"] = [zc.TransposeCodec(order=tuple(spec["transpose"]))]
    arr = zarr.create_array(
        zarr.storage.LocalStore(root), shape=spec["shape"], chunks=spec["chunks"],
        shards=spec["shards"], dtype=spec["dtype"], fill_value=spec["fill"],
        compressors=comp, overwrite=True, **kwargs)
    data = (np.arange(np.prod(spec["shape"])) % 120 + 1).reshape(spec["shape"])
    part = tuple(slice(0, max(1, s // 2)) for s in spec["shape"])
    if spec["written"] == "all":
        arr[...] = data.astype(arr.dtype)
    elif spec["written"] == "some":
        arr[part] = data[part].astype(arr.dtype)
    return arr
