"""Contenders: one function per way of reading a workload, all with the same signature.

``contender(wl, ctx) -> RunFn``: the function does the one-off setup a user would do once (build
the request list, create a reader / thread pool / store, write fio's iolog) and returns an async
callable that performs exactly one full read of the workload. The harness times that callable.
It returns either the buffers it read (a sequence in request order, checked by the harness) or a
`SelfTimed` record for external tools that report their own timing (fio).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from .workloads import Request, State, Workload, drop_caches

Mode = Literal["auto", "direct", "buffered"]
Payload = Any
THREADS = 32
RunFn = Callable[[], Coroutine[Any, Any, Payload]]


@dataclass
class RunContext:
    state: State
    queue_depth: int
    scratch_dir: Path
    cleanup: ExitStack = field(default_factory=ExitStack)


@dataclass(frozen=True)
class SelfTimed:
    """Result of a contender that measures itself (an external process)."""

    seconds: float
    nbytes: int
    n_ops: int
    detail: str = ""  # what the tool chose, for the notes under the table (fio's best depth)


@dataclass(frozen=True)
class Contender:
    name: str
    mode: Mode  # I/O mode, used to pick the fio reference row
    make: Callable[[Workload, RunContext], RunFn]
    kinds: frozenset[str] = frozenset({"ranges", "files"})  # workload kinds it applies to
    # Awaits its I/O on the event loop: the harness reports the worst loop stall while it runs.
    # False for external tools and synchronous calls (threads, processes), which block the loop.
    on_loop: bool = True
    only: frozenset[str] = frozenset()  # workload keys it runs on; empty: every workload


# --------------------------------------------------------------------------- lsio


def lsio_contender(wl: Workload, ctx: RunContext, *, direct: bool | None = None,
                   coalesce: bool = True) -> RunFn:
    import lsio

    if wl.whole_files:
        requests = [lsio.Chunk(p) for p in wl.paths]
    else:
        requests = [lsio.Chunk(r.path, r.offset, r.length) for r in wl.requests]
    reader = lsio.Reader(queue_depth=ctx.queue_depth, direct=direct, coalesce=coalesce)

    async def run() -> Payload:
        return await reader.read_many(requests)

    return run


# --------------------------------------------------------------------------- fio


def write_iolog(wl: Workload, path: Path) -> None:
    """fio iolog v2 replaying exactly the workload's requests, in order.

    One file: opened once around all reads. Several files: each is opened just before its
    first read and closed after its last (so 1000 files are not all open at once)."""
    lines = ["fio version 2 iolog"]
    lines += [f"{p} add" for p in wl.paths]
    if wl.whole_files:
        for r in wl.requests:
            lines += [f"{r.path} open", f"{r.path} read {r.offset} {r.length}", f"{r.path} close"]
    elif len(wl.paths) == 1:
        lines += [f"{p} open" for p in wl.paths]
        lines += [f"{r.path} read {r.offset} {r.length}" for r in wl.requests]
        lines += [f"{p} close" for p in wl.paths]
    else:
        last = {r.path: i for i, r in enumerate(wl.requests)}
        opened: set[str] = set()
        for i, r in enumerate(wl.requests):
            if r.path not in opened:
                opened.add(r.path)
                lines.append(f"{r.path} open")
            lines.append(f"{r.path} read {r.offset} {r.length}")
            if last[r.path] == i:
                lines.append(f"{r.path} close")
    path.write_text("\n".join(lines) + "\n")


def fio_command(iolog: Path, *, direct: bool, warm: bool, queue_depth: int) -> list[str]:
    return [
        "fio", "--name=replay", f"--read_iolog={iolog}",
        "--ioengine=io_uring", f"--iodepth={queue_depth}",
        f"--direct={int(direct)}", f"--invalidate={0 if warm else 1}",
        "--output-format=json",
    ]


def parse_fio(stdout: str, wl: Workload, queue_depth: int) -> SelfTimed:
    """Check fio replayed the whole log and return its own runtime.

    fio 3.33 does not account the completions of the last (iodepth - 1) requests of an iolog
    replay in `io_bytes`, so we require `total_ios` (submitted) to match the log exactly and the
    byte shortfall to be within that window.
    """
    start = stdout.find("{")  # fio may print notes before the JSON document
    job = json.loads(stdout[start:])["jobs"][0]
    rd = job["read"]
    if job["error"]:
        raise RuntimeError(f"fio reported error {job['error']}")
    if rd["total_ios"] != wl.n_ops or rd["short_ios"] or rd["drop_ios"]:
        raise RuntimeError(f"fio did {rd['total_ios']} ios (short {rd['short_ios']}, "
                           f"dropped {rd['drop_ios']}), expected {wl.n_ops}")
    shortfall = wl.nbytes - rd["io_bytes"]
    if not 0 <= shortfall <= (queue_depth - 1) * wl.max_request:
        raise RuntimeError(f"fio read {rd['io_bytes']} bytes, expected {wl.nbytes}")
    seconds = max(rd["runtime"], 1) / 1000.0  # ms resolution
    return SelfTimed(seconds=seconds, nbytes=wl.nbytes, n_ops=rd["total_ios"])


def fio_contender(wl: Workload, ctx: RunContext, *, direct: bool) -> RunFn:
    iolog = ctx.scratch_dir / f"{wl.key}-{wl.spec.dirname}.iolog"
    write_iolog(wl, iolog)
    cmd = fio_command(iolog, direct=direct, warm=ctx.state == "warm",
                      queue_depth=ctx.queue_depth)

    async def run() -> Payload:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"fio exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return parse_fio(proc.stdout, wl, ctx.queue_depth)

    return run


# fio's best queue depth for whole small files: one job over the workload's files, each opened,
# read in one request and closed (`openfiles` = the queue depth, so as many files are open as
# reads are in flight, and fio closes each before opening another, as lsio must), swept over
# these depths; the row is the fastest depth of each round.
FIO_SWEEP_DEPTHS = (1, 2, 4, 8, 16, 32, 64, 128)


def fio_files_command(root: str, *, direct: bool, warm: bool, queue_depth: int,
                      file_size: int) -> list[str]:
    return [
        "fio", "--name=files", f"--opendir={root}", "--rw=read", f"--bs={file_size}",
        "--ioengine=io_uring", f"--iodepth={queue_depth}", f"--openfiles={queue_depth}",
        "--file_service_type=roundrobin", f"--direct={int(direct)}",
        f"--invalidate={0 if warm else 1}", "--output-format=json",
    ]


def parse_fio_files(stdout: str, wl: Workload) -> SelfTimed:
    """fio's own runtime of one sweep point, after checking it read every file whole."""
    start = stdout.find("{")
    job = json.loads(stdout[start:])["jobs"][0]
    rd = job["read"]
    if job["error"]:
        raise RuntimeError(f"fio reported error {job['error']}")
    if rd["total_ios"] != wl.n_ops or rd["io_bytes"] != wl.nbytes or rd["short_ios"]:
        raise RuntimeError(f"fio did {rd['total_ios']} ios, {rd['io_bytes']} bytes, expected "
                           f"{wl.n_ops} and {wl.nbytes}")
    return SelfTimed(seconds=max(rd["runtime"], 1) / 1000.0, nbytes=wl.nbytes,
                     n_ops=rd["total_ios"])


def fio_sweep_contender(wl: Workload, ctx: RunContext, *, direct: bool) -> RunFn:
    """Every depth of `FIO_SWEEP_DEPTHS` in turn (cold: caches dropped before each); returns
    the fastest, naming its depth."""
    if not wl.whole_files or len(set(os.path.dirname(p) for p in wl.paths)) != 1:
        raise ValueError("the fio sweep reads whole files of one directory")
    root = os.path.dirname(wl.paths[0])
    if sorted(os.listdir(root)) != sorted(os.path.basename(p) for p in wl.paths):
        raise ValueError(f"{root} holds other files than the workload's")

    async def run() -> Payload:
        best: tuple[SelfTimed, int] | None = None
        for depth in FIO_SWEEP_DEPTHS:
            if ctx.state == "cold":
                drop_caches()
            cmd = fio_files_command(root, direct=direct, warm=ctx.state == "warm",
                                    queue_depth=depth, file_size=wl.spec.file_size)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"fio exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
            got = parse_fio_files(proc.stdout, wl)
            if best is None or got.seconds < best[0].seconds:
                best = (got, depth)
        assert best is not None
        return dataclasses.replace(best[0], detail=f"queue depth {best[1]}")

    return run


# --------------------------------------------------------------------------- plain Python


def _pread_all(path: str, requests: Sequence[Request]) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, r.length, r.offset) for r in requests]
    finally:
        os.close(fd)


def _pread_runs(requests: Sequence[Request]) -> list[bytes]:
    """pread every request, opening each file once per run of consecutive requests to it."""
    out: list[bytes] = []
    path: str | None = None
    fd = -1
    try:
        for r in requests:
            if r.path != path:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                fd = os.open(r.path, os.O_RDONLY)
                path = r.path
            out.append(os.pread(fd, r.length, r.offset))
    finally:
        if fd >= 0:
            os.close(fd)
    return out


def _read_whole(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def plain_loop_contender(wl: Workload, ctx: RunContext) -> RunFn:
    async def run() -> Payload:
        if wl.whole_files:
            return [_read_whole(p) for p in wl.paths]
        if len(wl.paths) > 1:
            return _pread_runs(wl.requests)
        return _pread_all(wl.paths[0], wl.requests)

    return run


def threads_contender(wl: Workload, ctx: RunContext) -> RunFn:
    pool = ThreadPoolExecutor(max_workers=THREADS)
    ctx.cleanup.callback(pool.shutdown)

    async def run() -> Payload:
        if wl.whole_files:
            return list(pool.map(_read_whole, wl.paths))
        fd = os.open(wl.paths[0], os.O_RDONLY)
        try:
            return list(pool.map(lambda r: os.pread(fd, r.length, r.offset), wl.requests))
        finally:
            os.close(fd)

    return run


# --------------------------------------------------------------------------- peers


def fsspec_contender(wl: Workload, ctx: RunContext) -> RunFn:
    import fsspec

    fs = fsspec.filesystem("file")
    paths = list(wl.paths) if wl.whole_files else [r.path for r in wl.requests]
    starts = [r.offset for r in wl.requests]
    ends = [r.offset + r.length for r in wl.requests]

    async def run() -> Payload:
        if wl.whole_files:
            return list(fs.cat(paths).values())
        return fs.cat_ranges(paths, starts, ends)

    return run


def obstore_contender(wl: Workload, ctx: RunContext) -> RunFn:
    """Ranges: one `obstore.get_ranges` call (obstore coalesces nearby ranges itself).

    Files: the sync `obstore.get(...).bytes()` (which releases the GIL) over a 32-thread pool.
    On quick runs this beat `asyncio.gather` over `get_async` + `bytes_async` (with or without
    a semaphore) by 2-3x cold and warm, and a plain sync loop cold.
    """
    import obstore
    from obstore.store import LocalStore

    store = LocalStore(wl.root)
    keys = [wl.relpath(p) for p in wl.paths]
    starts = [r.offset for r in wl.requests]
    lengths = [r.length for r in wl.requests]
    pool = ThreadPoolExecutor(max_workers=THREADS)
    ctx.cleanup.callback(pool.shutdown)

    def get_one(key: str) -> Payload:
        return obstore.get(store, key).bytes()

    async def run() -> Payload:
        if wl.whole_files:
            return list(pool.map(get_one, keys))
        return obstore.get_ranges(store, keys[0], starts=starts, lengths=lengths)

    return run


def zarr_contender(wl: Workload, ctx: RunContext) -> RunFn:
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    store = LocalStore(wl.root, read_only=True)
    proto = default_buffer_prototype()
    gets: list[tuple[str, RangeByteRequest | None]]
    if wl.whole_files:
        gets = [(wl.relpath(p), None) for p in wl.paths]
    else:
        gets = [(wl.relpath(r.path), RangeByteRequest(r.offset, r.offset + r.length))
                for r in wl.requests]

    async def run() -> Payload:
        return await asyncio.gather(*(store.get(k, proto, byte_range=br) for k, br in gets))

    return run


def aiofiles_contender(wl: Workload, ctx: RunContext) -> RunFn:
    import aiofiles

    async def read_one(sem: asyncio.Semaphore, r: Request) -> Payload:
        async with sem, aiofiles.open(r.path, "rb") as f:
            if wl.whole_files:
                return await f.read()
            await f.seek(r.offset)
            return await f.read(r.length)

    async def run() -> Payload:
        sem = asyncio.Semaphore(ctx.queue_depth)
        return await asyncio.gather(*(read_one(sem, r) for r in wl.requests))

    return run


# --------------------------------------------------------------------------- registry

RANGES = frozenset({"ranges"})
GAPS = frozenset({"gaps"})  # the planner workloads: only lsio's variants, fio, plain loop
ALL = frozenset({"ranges", "files", "gaps"})

CONTENDERS: tuple[Contender, ...] = (
    Contender("lsio", "auto", lsio_contender),
    Contender("lsio direct=True", "direct", partial(lsio_contender, direct=True), RANGES),
    Contender("lsio direct=False", "buffered", partial(lsio_contender, direct=False), RANGES),
    # Planner workloads: coalescing on (the default reader) and off, automatic and O_DIRECT.
    Contender("lsio coalesce", "auto", lsio_contender, GAPS),
    Contender("lsio coalesce direct", "direct", partial(lsio_contender, direct=True), GAPS),
    Contender("lsio no coalesce", "auto", partial(lsio_contender, coalesce=False), GAPS),
    Contender("lsio no coalesce direct", "direct",
              partial(lsio_contender, direct=True, coalesce=False), GAPS),
    Contender("fio direct=1", "direct", partial(fio_contender, direct=True), ALL,
              on_loop=False),
    Contender("fio buffered", "buffered", partial(fio_contender, direct=False), ALL,
              on_loop=False),
    # issue 25's cold-files limit: fio's best queue depth, buffered and direct, on (h) only
    Contender("fio best depth buffered", "buffered",
              partial(fio_sweep_contender, direct=False), frozenset({"files"}), on_loop=False,
              only=frozenset({"h"})),
    Contender("fio best depth direct=1", "direct",
              partial(fio_sweep_contender, direct=True), frozenset({"files"}), on_loop=False,
              only=frozenset({"h"})),
    Contender("plain loop", "buffered", plain_loop_contender, ALL, on_loop=False),
    Contender(f"{THREADS} threads", "buffered", threads_contender, on_loop=False),
    Contender("fsspec", "buffered", fsspec_contender, on_loop=False),
    Contender("obstore", "buffered", obstore_contender, on_loop=False),
    Contender("zarr LocalStore", "buffered", zarr_contender),
    Contender("aiofiles", "buffered", aiofiles_contender),
)

LSIO = "lsio"
LSIO_REFERENCES = (LSIO, "lsio coalesce")  # the default reader's row, for "vs lsio"
FIO_BY_MODE: dict[str, str] = {"direct": "fio direct=1", "buffered": "fio buffered"}
# "coalesce on / off" pairs of the planner workloads, by I/O mode.
COALESCE_PAIRS: dict[str, tuple[str, str]] = {
    "auto": ("lsio coalesce", "lsio no coalesce"),
    "direct": ("lsio coalesce direct", "lsio no coalesce direct"),
}


def by_name(name: str) -> Contender:
    for c in CONTENDERS:
        if c.name == name:
            return c
    raise KeyError(name)
