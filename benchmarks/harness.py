"""Timing one run of a contender and checking what it returned."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .contenders import Payload, RunFn, SelfTimed
from .workloads import Workload


def log(msg: str) -> None:
    """Progress lines go to stderr, so stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


class WrongResult(RuntimeError):
    pass


def as_view(buf: Any) -> memoryview:
    """A byte view of anything a contender may return (bytes, memoryview, numpy, zarr Buffer)."""
    if hasattr(buf, "as_numpy_array"):  # zarr Buffer does not export the buffer protocol
        buf = buf.as_numpy_array()
    return memoryview(buf).cast("B")


def _expected(wl: Workload, i: int) -> bytes:
    r = wl.requests[i]
    fd = os.open(r.path, os.O_RDONLY)
    try:
        return os.pread(fd, r.length, r.offset)
    finally:
        os.close(fd)


def verify(wl: Workload, payload: Payload) -> tuple[int, int]:
    """Check total bytes (and the content of a few samples); return (nbytes, n_ops)."""
    if isinstance(payload, SelfTimed):
        return payload.nbytes, payload.n_ops
    if not isinstance(payload, Sequence) and not hasattr(payload, "__getitem__"):
        raise WrongResult(f"returned {type(payload).__name__}, not a sequence of buffers")
    if len(payload) != wl.n_ops:
        raise WrongResult(f"returned {len(payload)} buffers, expected {wl.n_ops}")
    nbytes = sum(as_view(b).nbytes for b in payload)
    if nbytes != wl.nbytes:
        raise WrongResult(f"returned {nbytes} bytes, expected {wl.nbytes}")
    for i in sorted({0, wl.n_ops // 2, wl.n_ops - 1}):
        if as_view(payload[i]) != _expected(wl, i):
            raise WrongResult(f"content of request {i} differs from the file")
    return nbytes, wl.n_ops


def time_run(runner: asyncio.Runner, fn: RunFn) -> tuple[float, Payload]:
    """Run `fn` once on the shared event loop; (seconds, payload). Self-timed tools win.

    The timed task returns None and hands the payload over in a list: on Python < 3.12
    `Runner.run` formats the repr of the finished task, result included, when it restores the
    SIGINT handler (CPython issue #112559), which for `bytes` results costs real time inside
    the timed region (0.27 s for one 32 MiB object here)."""
    box: list[Payload] = []

    async def call() -> None:
        box.append(await fn())

    gc.collect()
    t0 = time.perf_counter()
    runner.run(call())
    elapsed = time.perf_counter() - t0
    payload = box.pop()
    if isinstance(payload, SelfTimed):
        elapsed = payload.seconds
    return elapsed, payload
