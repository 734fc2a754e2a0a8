"""Timing one run of a contender and checking what it returned."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from tests.reference import expected_bytes

from .contenders import Payload, RunFn, SelfTimed
from .workloads import Workload

HEARTBEAT_S = 0.001  # LoopStall's period


def pick_names(text: str, known: Sequence[str], what: str, ap: argparse.ArgumentParser
               ) -> list[str]:
    """The comma-separated names of ``text`` (``--workload a,b``), each one of ``known``;
    ``ap.error`` names an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in known for n in names):
        ap.error(f"unknown {what} in {text!r}; known: {list(known)}")
    return names


def log(msg: str) -> None:
    """Progress lines go to stderr, so stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


def stall_text(stall: float | None) -> str:
    """The worst loop stall for a progress line ("" when the loop was not watched)."""
    return "" if stall is None else f", worst loop stall {stall * 1e3:.1f} ms"


class WrongResult(RuntimeError):
    pass


def as_view(buf: Any) -> memoryview:
    """A byte view of anything a contender may return (bytes, memoryview, numpy, zarr Buffer)."""
    if hasattr(buf, "as_numpy_array"):  # zarr Buffer does not export the buffer protocol
        buf = buf.as_numpy_array()
    return memoryview(buf).cast("B")


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
        r = wl.requests[i]
        if as_view(payload[i]) != expected_bytes(r.path, r.offset, r.length):
            raise WrongResult(f"content of request {i} differs from the file")
    return nbytes, wl.n_ops


class LoopStall:
    """The worst event-loop stall while entered (``async with LoopStall() as stall``).

    A heartbeat task sleeps `HEARTBEAT_S` in a loop on the running loop and records the largest
    gap between consecutive wake-ups minus that period (`time.perf_counter`): how long the loop
    could not run a ready task. The first interval starts at entry (so synchronous work of the
    watched call before its first `await` counts), the last one ends at exit (a heartbeat that
    is overdue then counts as late). On exit the task is cancelled and awaited. Its cost: one
    wake-up per millisecond, a few microseconds each."""

    def __init__(self) -> None:
        self.worst = 0.0  # seconds
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        sleep, clock, period = asyncio.sleep, time.perf_counter, HEARTBEAT_S
        while True:
            await sleep(period)
            now = clock()
            if (late := now - self._last - period) > self.worst:
                self.worst = late
            self._last = now

    async def __aenter__(self) -> LoopStall:
        self.worst = 0.0
        self._last = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        assert task is not None
        late = time.perf_counter() - self._last - HEARTBEAT_S  # the interval the exit cut short
        task.cancel()
        await asyncio.wait({task})  # never raises; the cancelled task is done after this
        self.worst = max(self.worst, late)


class Timed(NamedTuple):
    seconds: float
    payload: Payload
    loop_stall: float | None  # worst event-loop stall (s); None when not watched


def time_run(runner: asyncio.Runner, fn: RunFn, *, watch_loop: bool = True) -> Timed:
    """Run `fn` once on the shared event loop; its wall-clock time (self-timed tools: their
    own), the payload and, with `watch_loop` (asyncio contenders), the worst loop stall while
    it ran (`LoopStall`, started just before the timed call and stopped right after it, so
    starting and stopping the heartbeat is not timed).

    The timed task returns None and hands the payload over in a list: on Python < 3.12
    `Runner.run` formats the repr of the finished task, result included, when it restores the
    SIGINT handler (CPython issue #112559), which for `bytes` results costs real time."""
    box: list[tuple[float, Payload]] = []
    stall = LoopStall() if watch_loop else None

    async def call() -> None:
        async with stall or contextlib.nullcontext():
            t0 = time.perf_counter()
            payload = await fn()
            box.append((time.perf_counter() - t0, payload))

    gc.collect()
    runner.run(call())
    elapsed, payload = box.pop()
    if isinstance(payload, SelfTimed):
        return Timed(payload.seconds, payload, None)
    return Timed(elapsed, payload, stall.worst if stall is not None else None)


def cpu_timed(fn: RunFn, cpu: list[float]) -> RunFn:
    """`fn`, with the process's CPU time of the call (``time.process_time()``: every thread)
    appended to `cpu`."""
    async def run() -> Payload:
        c0 = time.process_time()
        try:
            return await fn()
        finally:
            cpu.append(time.process_time() - c0)

    return run


def sent(payload: Any) -> tuple[int | None, str]:
    """(GETs, transport) from an lsio result's ``stats``; (None, "") for the others'."""
    stats = getattr(payload, "stats", None)
    if stats is None:
        return None, ""
    return int(stats.operations), str(getattr(stats, "transport", ""))
