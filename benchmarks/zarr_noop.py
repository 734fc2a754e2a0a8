"""A codec pipeline that reads and fills nothing: what zarr-python itself costs per selection.

`bench_zarr` imports this module (which registers the class with zarr) and opens an array
with it (``zarr.config.set({"codec_pipeline.path":
"benchmarks.zarr_noop.NoopCodecPipeline"})``); `await arr.getitem(sel)` then runs everything
zarr does around a codec pipeline (indexing, its per-chunk list of byte getters and
selections, the output buffer) and nothing a pipeline does (no reads, no decode, no copy).
`read` records when it was called, so the part of zarr's time spent before the pipeline runs
(building that list, synchronously: it holds the event loop) is known too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

if TYPE_CHECKING:
    from zarr.abc.codec import GetResult  # zarr >= 3.2

PATH = "benchmarks.zarr_noop.NoopCodecPipeline"


class NoopCodecPipeline(BatchedCodecPipeline):
    """zarr's default pipeline for everything but `read`, which touches nothing."""

    # perf_counter() when `read` was last entered (one benchmark loop, one call at a time)
    entered: float = 0.0

    async def read(self, batch_info: Iterable[Any], out: Any,
                   drop_axes: tuple[int, ...] = ()) -> tuple[GetResult, ...]:
        NoopCodecPipeline.entered = time.perf_counter()
        # every chunk "present": zarr fills nothing and checks nothing after the read
        return tuple({"status": "present"} for _ in batch_info)


register_pipeline(NoopCodecPipeline)  # zarr.config names only registered pipelines
