"""The planner: pure functions from requests (as arrays) to the reads to issue.

Theory of operation
-------------------
Planning never does I/O and never awaits. Its inputs are the request arrays, what the stat
phase learned about each file (size, direct-I/O alignment) and the tuning knobs, all as
required keyword arguments (their defaults live in one place: ``lsio._reader``). Its output
is a :class:`Plan`: every read to issue (file, offset, length, destination) and, for every
request, where its bytes will sit once the reads complete. Results are zero-copy slices of
the destination buffers.

Steps, all vectorised with numpy (no Python loop per request):

1. *Resolve*: negative offsets count from the end of the file; ranges are clamped to the
   file size (a range past EOF yields the bytes that exist).
2. *Align*: for files read with O_DIRECT, each range is widened to the file's alignment; the
   request's view skips the extra head bytes.
3. *Lay out*: each request gets a region of the destination arena, aligned so direct reads
   land on aligned memory.
4. *Split*: reads longer than ``split_size`` (at most Linux's 2,147,479,552-byte read cap)
   become several reads issued in parallel.
5. *Order*: reads are grouped by file and sorted by offset, so the engine opens each file
   once per call and reads it front to back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["LINUX_MAX_RW", "Plan", "plan"]

I64 = npt.NDArray[np.int64]

LINUX_MAX_RW = 2_147_479_552
"""Largest count one ``read(2)`` transfers on Linux (0x7ffff000), from ``MAX_RW_COUNT``."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to read, and where each request's bytes end up."""

    req_start: I64
    """File offset of each request's first byte, after resolving suffixes and clamping."""

    req_length: I64
    """Bytes each request returns if nothing changes underneath (clamped at EOF)."""

    req_base: I64
    """Destination buffer of each request (0 for the shared arena)."""

    req_buf: I64
    """Offset of each request's first byte inside its destination buffer."""

    op_file: I64
    """File index of each read; reads are grouped by file, files in index order."""

    op_offset: I64
    """File offset of each read."""

    op_length: I64
    """Bytes of each read (never above ``split_size``)."""

    op_base: I64
    """Destination buffer of each read."""

    op_buf: I64
    """Offset of each read's first byte inside its destination buffer."""

    op_req: I64
    """The request each read serves."""

    file_op_start: I64
    """First read of each file (reads of file ``f`` are ``file_op_start[f]:file_op_end[f]``)."""

    file_op_end: I64
    """One past the last read of each file."""

    arena_size: int
    """Bytes of the shared arena (0 when every request has its own destination)."""

    @property
    def nops(self) -> int:
        return len(self.op_offset)


def _round_up(x: I64, to: I64 | int) -> I64:
    return -(-x // to) * to


def plan(
    file: I64,
    offset: I64,
    length: I64,
    *,
    file_size: I64,
    file_align: I64,
    split_size: int,
    arena_align: int,
    own_destinations: bool,
) -> Plan:
    """Plan the reads for a request list.

    Parameters
    ----------
    file, offset, length
        Request arrays: file index, offset (negative: from the end), length (-1: to EOF).
    file_size
        Size of each file in bytes.
    file_align
        Alignment each file's reads must respect (1 for buffered reads, the direct-I/O
        alignment for files read with O_DIRECT).
    split_size
        Largest single read; longer reads are split. Must be a multiple of every alignment.
    arena_align
        Alignment of each request's region in the shared arena (and of direct-I/O memory).
    own_destinations
        Every request has its own destination buffer (``req_base`` is the request index and
        nothing is widened); otherwise requests share one arena.
    """
    if split_size <= 0 or split_size > LINUX_MAX_RW:
        raise ValueError(f"split_size must be in 1..{LINUX_MAX_RW}, got {split_size}")
    nreq = len(file)
    size = file_size[file]
    start = np.where(offset < 0, np.maximum(size + offset, 0), np.minimum(offset, size))
    avail = size - start
    count = np.where(length < 0, avail, np.minimum(length, avail))
    end = start + count

    if np.any(split_size % file_align):
        raise ValueError("split_size must be a multiple of every file's alignment")
    align = np.ones(nreq, np.int64) if own_destinations else file_align[file]
    rstart = np.where(count > 0, start // align * align, start)
    rend = np.where(count > 0, _round_up(end, align), start)
    rlen = rend - rstart

    if own_destinations:
        req_base = np.arange(nreq, dtype=np.int64)
        region_start = np.zeros(nreq, np.int64)
        arena_size = 0
    else:
        req_base = np.zeros(nreq, np.int64)
        region = _round_up(rlen, arena_align)
        region_start = np.cumsum(region) - region
        arena_size = int(region.sum())
    req_buf = region_start + (start - rstart)

    # Split every read into parts of at most split_size bytes.
    nparts = _round_up(rlen, split_size) // split_size
    op_req = np.repeat(np.arange(nreq, dtype=np.int64), nparts)
    first_part = np.cumsum(nparts) - nparts
    part = np.arange(len(op_req), dtype=np.int64) - np.repeat(first_part, nparts)
    op_offset = rstart[op_req] + part * split_size
    op_length = np.minimum(split_size, rend[op_req] - op_offset)
    op_buf = region_start[op_req] + part * split_size

    # Group by file, front to back inside each file.
    op_file = file[op_req]
    order = (np.argsort(op_offset) if len(file_size) == 1
             else np.lexsort((op_offset, op_file)))
    op_file, op_offset, op_length = op_file[order], op_offset[order], op_length[order]
    op_req, op_buf = op_req[order], op_buf[order]
    nfiles = len(file_size)
    files = np.arange(nfiles)
    return Plan(
        req_start=start,
        req_length=count,
        req_base=req_base,
        req_buf=req_buf,
        op_file=op_file,
        op_offset=op_offset,
        op_length=op_length,
        op_base=req_base[op_req],
        op_buf=op_buf,
        op_req=op_req,
        file_op_start=np.searchsorted(op_file, files, "left").astype(np.int64),
        file_op_end=np.searchsorted(op_file, files, "right").astype(np.int64),
        arena_size=arena_size,
    )
