"""The demo's Zarr workload (``python -m lsio demo``): the sample array, written once and
reused while it matches, read by zarr-python with its default codec pipeline, with lsio's,
and by ``lsio.zarr.read``."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

from ._demo_data import Sizes, Workload, WrongResult

__all__ = [
    "demo_stored", "demo_write_zarr", "demo_zarr_data", "demo_zarr_matches",
    "demo_zarr_missing", "demo_zarr_root", "demo_zarr_workloads"
]

ZARR_DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
"""zarr-python's own codec pipeline (the default of its ``codec_pipeline.path``)."""
ZARR_LSIO = "lsio.zarr.LsioCodecPipeline"
ZARR_MARK = {"lsio_demo": {"data": 1, "complete": True}}
"""The array's attributes, set after its last chunk: bump ``data`` when :func:`demo_zarr_data`
changes, and the arrays the demo kept are written again."""
ZARR_SUB = ((1000, 3000), (500, 3600))
"""The sub-selection of the 4096 x 4096 array (scaled with the array): chunks cut on all sides."""


def demo_zarr_missing() -> str | None:
    """Why the Zarr workload cannot run here, or None when it can."""
    try:
        import zarr  # noqa: F401

        from . import zarr as _  # noqa: F401
    except ImportError as exc:
        return f"{exc}; `make setup` installs zarr-python, or pip install 'lsio[zarr]'"
    return None


def demo_zarr_data(n: int) -> Any:
    """The array's values: 8 x 8 blocks of a ramp plus noise from an integer hash of the
    index, in steps of 1/16: exact in float32, so the same on every machine and numpy
    version; blosc-zstd stores them in about a quarter (measured data often compresses so)."""
    import numpy as np

    k = np.arange(n * n, dtype=np.uint64).reshape(n, n)
    for mul in (0x9E3779B97F4A7C15, 0xFF51AFD7ED558CCD):  # splitmix64 / murmur3 mixing
        k *= np.uint64(mul)
        k ^= k >> np.uint64(33)
    ramp = np.arange(n, dtype=np.float32) // 8
    return (ramp[:, None] + ramp[None, :]) + (k >> np.uint64(58)).astype(np.float32) / 16


def _zarr_kwargs(sizes: Sizes) -> dict[str, Any]:
    import zarr.codecs

    n, c = sizes.zarr_n, sizes.zarr_chunk
    return dict(shape=(n, n), dtype="float32", chunks=(c, c), fill_value=0.0,
                compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"))


def demo_zarr_root(data_root: str, sizes: Sizes) -> str:
    n, c = sizes.zarr_n, sizes.zarr_chunk
    return os.path.join(data_root, "lsio-demo-zarr", f"{n}x{n}_c{c}.zarr")


def demo_zarr_matches(root: str, sizes: Sizes) -> bool:
    """The array at ``root`` was written to the end, with the metadata (and data version)
    the demo would write now."""
    import zarr

    try:
        with open(os.path.join(root, "zarr.json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    attributes = doc.pop("attributes", None)
    want = zarr.create_array(store=zarr.storage.MemoryStore(), **_zarr_kwargs(sizes))
    expected = json.loads(json.dumps(want.metadata.to_dict()))
    expected.pop("attributes", None)
    return bool(doc == expected and attributes == ZARR_MARK)


def demo_write_zarr(root: str, sizes: Sizes, data: Any, bar: Any) -> None:
    import zarr

    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    arr = zarr.create_array(store=root, **_zarr_kwargs(sizes))
    band = max(sizes.zarr_chunk, 1024 // sizes.zarr_chunk * sizes.zarr_chunk)  # whole chunks
    for r0 in range(0, sizes.zarr_n, band):
        arr[r0:r0 + band] = data[r0:r0 + band]
        bar.update(data[r0:r0 + band].nbytes)
    arr.attrs.update(ZARR_MARK)  # last: marks the array complete


def demo_stored(root: str) -> tuple[int, int]:
    """(chunk files, bytes) under ``root``, metadata left out."""
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(root)
             for f in names if f != "zarr.json"]
    return len(sizes), sum(sizes)


def _equal_to(expected: Any, root: str) -> Callable[[str, Any], int]:
    """The check of a Zarr workload: every value equals the one written to ``root``."""
    import numpy as np

    def check(name: str, got: Any) -> int:
        got = np.asarray(got)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            raise WrongResult(f"{name} returned {got.dtype} {got.shape}, not "
                              f"{expected.dtype} {expected.shape}")
        if not np.array_equal(got, expected):
            bad = np.argwhere(got != expected)
            raise WrongResult(f"{name}: {len(bad):,} of {got.size:,} values differ from those "
                              f"written to {root}, the first at "
                              f"{tuple(int(i) for i in bad[0])}")
        return int(got.nbytes)
    return check


def _zarr_contenders(default: Any, piped: Any, root: str, sel: Any
                     ) -> list[tuple[str, Callable[[], Any]]]:
    from .zarr import read_sync

    return [("zarr", lambda: default[sel]), ("lsio pipeline", lambda: piped[sel]),
            ("lsio.zarr.read", lambda: read_sync(root, sel))]


def demo_zarr_workloads(root: str, sizes: Sizes, data: Any) -> list[Workload]:
    """The whole array and a sub-selection, each read by zarr-python with its default codec
    pipeline, by zarr-python with lsio's, and by lsio's fast path. zarr picks the pipeline
    when it opens an array, so each array is opened (once, untimed) under its own config."""
    import zarr

    from .zarr import read_sync

    arrays = []
    for path in (ZARR_DEFAULT, ZARR_LSIO):
        with zarr.config.set({"codec_pipeline.path": path}):
            arr = zarr.open_array(root, mode="r")
        got = type(arr.async_array.codec_pipeline)
        if f"{got.__module__}.{got.__qualname__}" != path:
            raise WrongResult(f"zarr opened {root} with {got.__module__}.{got.__qualname__}, "
                              f"not {path}")
        arrays.append(arr)
    default, piped = arrays
    n, c = sizes.zarr_n, sizes.zarr_chunk
    scale = n / 4096
    sub = tuple(slice(int(a * scale), int(b * scale)) for a, b in ZARR_SUB)
    whole = (slice(0, n), slice(0, n))
    out = []
    for sel, name in ((whole, "whole array"),
                      (sub, "[" + ", ".join(f"{s.start}:{s.stop}" for s in sub) + "]")):
        chunks = math.prod((s.stop - 1) // c - s.start // c + 1 for s in sel)
        out.append(Workload(f"{name} ({chunks} chunks)", chunks,
                            _zarr_contenders(default, piped, root, sel),
                            _equal_to(data[sel], root)))
    for arr in arrays:  # warm-up: zarr's loop thread, lsio's ring and pinned workers
        arr[:1, :1]
    read_sync(root, (slice(0, 1), slice(0, 1)))
    return out
