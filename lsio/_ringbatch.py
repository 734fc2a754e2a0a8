"""What the io_uring engine reads and writes, built in Python: batches of arrays, the path
table, one read's shared state, rings made and released. No event loop here (that is
``_ring``), no threads (``_ringpool``): values and plain C calls only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._buildinfo import absent
from ._defaults import ASYNC_MIN, RING_ENTRIES, RING_FILES
from ._plan import Plan
from ._types import ProgressFn

if TYPE_CHECKING:
    import asyncio

try:
    from ._uring import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    ffi = lib = None
    IMPORT_ERROR: str | None = absent("lsio._uring", "io_uring", exc)
else:
    IMPORT_ERROR = None

__all__ = [
    "DIRECT_OFF", "DIRECT_ON", "IMPORT_ERROR", "Batch", "ReadJob", "ReadOptions",
    "RingUnavailable", "cached_share", "close_fds", "ffi", "lib", "new_ring", "open_spanning",
    "path_table", "probe", "ptr", "ring_error", "teardown",
]

DIRECT_OFF = lib.LSIO_DIRECT_OFF if lib is not None else 0
"""``lsio_batch.fdirect``: read through the page cache."""
DIRECT_ON = lib.LSIO_DIRECT_ON if lib is not None else 1
"""``lsio_batch.fdirect``: read with O_DIRECT."""


class RingUnavailable(OSError):
    """io_uring cannot be used here (not built, blocked by seccomp, disabled by sysctl)."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How one :meth:`lsio._ring.Ring.read` runs (the plan and destinations aside)."""

    queue_depth: int
    """Reads in flight at most."""

    max_open: int
    """Files open at once at most."""

    workers: int = 1
    """More than 1: the reads are split over that many threads with rings of their own
    (page-cache reads, which are CPU copies); completions then arrive per piece."""

    missing_ok: bool = False
    """A file gone since the stat fails its reads with ENOENT without stopping the others."""

    keep_going: bool = False
    """No failure stops the other reads (``on_error="return"``)."""

    caller_memory: bool = False
    """The destinations are the caller's: a cancellation waits until nothing can write into
    them any more."""

    fresh: bool = False
    """The destinations are new memory, which worker rings fault in first."""

    on_progress: ProgressFn | None = None
    """Told about reads as they finish."""

    keepalive: Any = None
    """The destination memory, kept referenced until the kernel is done with it."""

    changed: npt.NDArray[np.bool_] | None = None
    """One flag per file, set when a file opened for several worker rings is not the size
    the plan was made with (the reader plans again)."""

    hold: list[float] | None = None
    """Where to keep the longest span the ring's completion handling held the event loop
    while this read was in flight (``[seconds]``, raised, never lowered)."""


def new_ring(err: Any, entries: int = RING_ENTRIES, files: int = RING_FILES) -> Any:
    """``lsio_ring_new`` with the registered-file table capped at ``RLIMIT_NOFILE`` (the
    kernel applies it to the table's size)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError):  # pragma: no cover
        soft = files
    nfiles = files if soft < 0 else max(1, min(files, soft))
    return lib.lsio_ring_new(entries, nfiles, err)


def ring_error(err: Any) -> RingUnavailable:
    return RingUnavailable(err[0], f"io_uring_setup failed: {os.strerror(err[0])}")


def ptr(ctype: str, arr: npt.NDArray[Any]) -> Any:
    return ffi.cast(ctype, arr.ctypes.data)


def path_table(paths: list[str]) -> tuple[bytes, npt.NDArray[np.uint64]]:
    """All paths in one blob, each NUL-terminated, plus a ``char *`` per path.

    Each path's start comes from the encoded lengths, never from scanning for separators,
    and the blob must hold exactly one NUL per path: a path with a NUL inside it (which
    ``_request`` refuses) cannot shift the table, it raises here instead. ASCII paths (the
    usual case) cost no Python call per path: one join, one encode, lengths by ``map``.
    """
    joined = "\0".join([*paths, ""])  # each path followed by its NUL
    if joined.isascii():
        blob = joined.encode("ascii")
        lengths = np.fromiter(map(len, paths), np.uint64, len(paths))
    else:
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        blob = b"\0".join([*encoded, b""])
        lengths = np.fromiter(map(len, encoded), np.uint64, len(encoded))
    if blob.count(0) != len(paths):
        raise ValueError("lsio: a path contains a NUL byte")
    if not paths:
        return blob, np.zeros(0, np.uint64)
    lengths += np.uint64(1)
    starts = np.cumsum(lengths, dtype=np.uint64) - lengths
    base = int(ffi.cast("uintptr_t", ffi.from_buffer(blob)))
    return blob, starts + np.uint64(base)


class Batch:
    """One unit of work on a ring: arrays the C engine reads and writes, kept alive here."""

    future: asyncio.Future[None]
    log: npt.NDArray[np.int64]
    done: npt.NDArray[np.int64]
    err: npt.NDArray[np.int32]
    statbuf: npt.NDArray[np.uint8]

    def __init__(self, phase: int, table: tuple[bytes, npt.NDArray[np.uint64]], *,
                 max_inflight: int, fail_fast: bool) -> None:
        self.blob, self.path_ptrs = table  # shared by the pieces of one call
        self.hold: list[float] | None = None
        n = len(self.path_ptrs)
        self.c = ffi.new("lsio_batch *")
        self.keep: list[Any] = []
        c = self.c
        c.phase = phase
        c.slot = -1
        c.fail_fast = int(fail_fast)
        c.max_inflight = max_inflight
        c.nfiles = n
        c.paths = ptr("const char **", self.path_ptrs)
        self.fsize = self.attach("long long *", "fsize", np.zeros(n, np.int64))
        self.falign = self.attach("int *", "falign", np.zeros(n, np.int32))
        self.fdirect = self.attach("int *", "fdirect", np.zeros(n, np.int32))
        self.ferr = self.attach("int *", "ferr", np.zeros(n, np.int32))
        self.attach("int *", "fd", np.full(n, -1, np.int32))
        self.attach("long long *", "active", np.zeros(n, np.int64))
        self.attach("int *", "fstate", np.zeros(n, np.int32))
        self.seen = 0
        self.on_progress: ProgressFn | None = None
        self.span: tuple[int, int] | None = None
        """Destination memory [start, end) a worker thread faults in before reading."""

    def attach(self, ctype: str, field: str, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        arr = np.ascontiguousarray(arr)
        self.keep.append(arr)
        setattr(self.c, field, ptr(ctype, arr))
        return arr

    def set_log(self, size: int) -> None:
        self.log = self.attach("long long *", "log", np.zeros(max(size, 1), np.int64))


def open_spanning(paths: list[str], file_size: npt.NDArray[np.int64], plan: Plan,
                   cuts: npt.NDArray[np.int64], changed: npt.NDArray[np.bool_] | None
                   ) -> npt.NDArray[np.int32] | None:
    """Descriptors of the files whose reads the ``cuts`` split over several worker rings
    (-1 for the others): one open per file, so all pieces read one version of it. Only
    used for page-cache reads, whose opens are quick."""
    first, last = plan.file_op_start, plan.file_op_end
    spanning = [f for f in range(len(paths)) if last[f] > first[f]
                and np.any((cuts > first[f]) & (cuts < last[f]))]
    if not spanning:
        return None
    pre = np.full(len(paths), -1, np.int32)
    try:
        for f in spanning:
            fd = os.open(paths[f], os.O_RDONLY | os.O_CLOEXEC)
            pre[f] = fd
            if os.fstat(fd).st_size != file_size[f] and changed is not None:
                changed[f] = True  # replaced since the stat: the reader plans again
    except OSError:
        close_fds(pre)  # the rings open it themselves and report the error per read
        return None
    return pre


def close_fds(pre: npt.NDArray[np.int32] | None) -> None:
    if pre is not None:
        for fd in pre[pre >= 0].tolist():
            os.close(fd)
        pre[:] = -1


class ReadJob:
    """What the batches of one read share: the plan, the destinations and the outputs (bytes
    done and errno per read), and the stop flag its pieces on several rings watch."""

    def __init__(self, table: tuple[bytes, npt.NDArray[np.uint64]], plan: Plan,
                 file_size: npt.NDArray[np.int64], file_direct: npt.NDArray[np.int32],
                 addresses: npt.NDArray[np.uint64], opts: ReadOptions) -> None:
        self.table, self.plan, self.opts = table, plan, opts
        self.file_size, self.file_direct, self.addresses = file_size, file_direct, addresses
        self.done = np.zeros(plan.nops, np.int64)
        self.err = np.zeros(plan.nops, np.int32)
        self.stop_flag = np.zeros(1, np.int32)

    def batch(self, lo: int, hi: int, pre: npt.NDArray[np.int32] | None = None,
              async_min: int = ASYNC_MIN) -> Batch:
        """The batch of reads ``lo:hi`` (``pre``: descriptors opened by the caller)."""
        plan, opts, n = self.plan, self.opts, len(self.file_size)
        b = Batch(lib.LSIO_PHASE_READ, self.table, max_inflight=opts.queue_depth,
                  fail_fast=not opts.keep_going)
        b.attach("int *", "stop_flag", self.stop_flag)
        b.c.missing_ok = int(opts.missing_ok)
        b.c.async_min = async_min
        if pre is not None:
            b.attach("int *", "fpre", pre)
        b.keep.append(opts.keepalive)
        b.fsize[:] = self.file_size
        b.fdirect[:] = self.file_direct
        b.c.max_open = opts.max_open
        b.c.nops = hi - lo
        b.attach("long long *", "fop_start", np.clip(plan.file_op_start, lo, hi))
        b.attach("long long *", "fop_end", np.clip(plan.file_op_end, lo, hi))
        b.attach("long long *", "fnext", np.clip(plan.file_op_start, lo, hi))
        b.attach("long long *", "fpending", np.zeros(n, np.int64))
        b.attach("long long *", "ooff", plan.op_offset)
        b.attach("long long *", "olen", plan.op_length)
        b.attach("unsigned long long *", "oaddr", self.addresses)
        b.done = b.attach("long long *", "odone", self.done)
        b.err = b.attach("int *", "oerr", self.err)
        b.set_log(hi - lo)
        return b


def teardown(ring: Any, live: dict[int, Batch]) -> None:
    lib.lsio_ring_drain(ring)
    for b in live.values():
        lib.lsio_ring_remove(ring, b.c)
    live.clear()
    lib.lsio_ring_free(ring)


def cached_share(path: str) -> float:
    """Share of ``path``'s pages in the page cache (-1: unknown)."""
    return float(lib.lsio_cached_share(os.fsencode(path)))


def probe() -> str | None:
    """``None`` if a ring can be set up here, else the reason it cannot."""
    if lib is None:
        return IMPORT_ERROR
    err = ffi.new("int *")
    ring = lib.lsio_ring_new(8, 8, err)
    if ring == ffi.NULL:
        return f"io_uring_setup failed: {os.strerror(err[0])} (errno {err[0]})"
    lib.lsio_ring_free(ring)
    return None
