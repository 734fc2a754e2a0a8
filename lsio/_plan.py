"""The planner: pure functions from requests (as arrays) to the reads to issue.

Theory of operation
-------------------
Planning never does I/O and never awaits. Its inputs are the request arrays, what the stat
phase learned about each file (size, direct-I/O alignment) and the tuning knobs, all as
required keyword arguments (their defaults live in one place: ``lsio._presets``). Its output
is a :class:`Plan`: every read to issue (file, offset, length, destination) and, for every
request, where its bytes will sit once the reads complete. Results are zero-copy slices of
the destination buffers.

Steps, all vectorised with numpy (sort, diff, cumsum; no Python loop per request):

1. *Resolve*: negative offsets count from the end of the file; ranges are clamped to the
   file size (a range past EOF yields the bytes that exist).
2. *Align*: for files read with O_DIRECT, each range is widened to the file's alignment; the
   request's view skips the extra head bytes.
3. *Group* (coalesce and deduplicate): requests are sorted by (file, offset); a request joins
   the group before it when it overlaps it or the gap is at most ``max_gap`` (``None``: only
   overlapping requests merge, which is deduplication alone), and while it starts within
   ``max_read`` bytes of its cluster's first byte. Identical and overlapping requests
   are read once and served as slices of the same bytes.
4. *Lay out*: each group gets a region of the destination arena, aligned so direct reads land
   on aligned memory.
5. *Split*: a group longer than ``min(max_read, split_size)`` becomes several reads issued in
   parallel (``split_size`` is at most Linux's 2,147,479,552-byte read cap).
6. *Order*: reads are grouped by file and sorted by offset, so the engine opens each file
   once per call and reads it front to back.

With ``own_destinations`` every request is its own group (its bytes must land in the caller's
buffer for that request), so nothing is merged or widened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["LINUX_MAX_RW", "Plan", "distinct", "plan", "resolve_ranges"]

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

    req_group: I64
    """The group (merged read) whose bytes serve each request; -1 for empty requests."""

    group_start: I64
    """File offset of each group's first byte (aligned for direct I/O)."""

    group_end: I64
    """File offset one past each group's last byte."""

    op_file: I64
    """File index of each read; reads are grouped by file, files in index order."""

    op_offset: I64
    """File offset of each read."""

    op_length: I64
    """Bytes of each read (never above ``min(max_read, split_size)``)."""

    op_base: I64
    """Destination buffer of each read."""

    op_buf: I64
    """Offset of each read's first byte inside its destination buffer."""

    op_group: I64
    """The group each read belongs to."""

    file_op_start: I64
    """First read of each file (reads of file ``f`` are ``file_op_start[f]:file_op_end[f]``)."""

    file_op_end: I64
    """One past the last read of each file."""

    arena_size: int
    """Bytes of the shared arena (0 when every request has its own destination)."""

    eof_scratch: int = 0
    """Own destinations with ``check_eof``: bytes of the scratch buffer (buffer index
    ``n_requests``) that the one-byte end-of-file probes land in."""

    @property
    def nops(self) -> int:
        return len(self.op_offset)

    @property
    def bytes_read(self) -> int:
        """Bytes the reads cover (requested bytes + merged gaps + alignment)."""
        return int(self.op_length.sum())


def distinct(values: I64) -> tuple[I64, I64]:
    """Sorted distinct values and, for each input, the index of its value among them:
    ``np.unique(values, return_inverse=True)`` without its first-call import of
    ``numpy.ma`` (~40 ms here, an event-loop stall on a process's first read)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    head = np.ones(len(ordered), bool)
    head[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(values), np.int64)
    inverse[order] = np.cumsum(head) - 1
    return ordered[head], inverse


def _round_up(x: I64, to: I64 | int) -> I64:
    return -(-x // to) * to


def _segment_cummax(values: I64, segment: I64) -> I64:
    """Running maximum of ``values`` restarting at each new ``segment`` (sorted segments)."""
    if not len(values):
        return values
    span = int(values.max()) - int(values.min()) + 1
    if span * (int(segment.max()) + 1) < 2**62:  # lift each segment above the previous one
        lifted = values - values.min() + segment * span
        top: I64 = np.maximum.accumulate(lifted) - segment * span
        return top + int(values.min())
    out = values.copy()  # pragma: no cover - offsets near 2**62: a loop over segments
    starts = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    for a, z in zip(starts, np.r_[starts[1:], len(values)], strict=True):
        out[a:z] = np.maximum.accumulate(values[a:z])
    return out


def resolve_ranges(file: I64, offset: I64, length: I64, file_size: I64) -> tuple[I64, I64]:
    """Step 1 alone: each request's (start, end) in its file, suffixes resolved and ranges
    clamped at the end of the file.

    Never computes ``start + length`` before clamping: a length near ``2**63`` (the caller's
    "everything") would wrap around in int64. ``size - start`` is in ``[0, size]``."""
    size = file_size[file]
    start = np.where(offset < 0, np.maximum(size + offset, 0), np.minimum(offset, size))
    room = size - start
    end = start + np.where((length < 0) | (length > room), room, length)
    return start, end


def size_dependent(offset: I64, length: I64, start: I64, end: I64, size: I64
                   ) -> npt.NDArray[np.bool_]:
    """Which requests' resolved ranges depend on the file's size: suffixes, reads to the end,
    and ranges clamped at the end (their bytes change if the file is replaced by a version of
    another size)."""
    del size  # the clamp already tells: ``end - start < length`` only where it cut
    return (offset < 0) | (length < 0) | (length > end - start)


def plan(
    file: I64,
    offset: I64,
    length: I64,
    *,
    file_size: I64,
    file_align: I64,
    max_gap: int | None,
    max_read: int,
    split_size: int,
    arena_align: int,
    own_destinations: bool,
    check_eof: bool = False,
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
    max_gap
        Largest gap (bytes) between two requests on one file that are read as one; ``None``
        merges only overlapping requests (deduplication without coalescing).
    max_read
        Largest merged read: a group never extends past ``max_read`` bytes from its first
        byte, and reads longer than it are split.
    split_size
        Largest single read; longer reads are split into parts read in parallel. Must be a
        multiple of every alignment and at most Linux's read cap.
    arena_align
        Alignment of each group's region in the shared arena (and of direct-I/O memory).
    own_destinations
        Every request has its own destination buffer (``req_base`` is the request index;
        nothing is merged or widened); otherwise requests share one arena.
    check_eof
        Prove the size each size-dependent request was resolved against (see
        :func:`size_dependent`) with the bytes read: such a request's read runs one byte
        (one aligned block for direct I/O) past the end of the file, so a read that comes
        back with more or fewer bytes than the size predicts shows the file was replaced
        or changed. In the shared arena the request's own read is widened to
        ``[start, size + 1)``; with own destinations (the caller's buffers) the request gets
        an extra one-byte read at ``size`` into buffer ``n_requests`` at offset ``k`` (the
        k-th such request; the caller provides that scratch buffer of ``eof_scratch``
        bytes). Empty size-dependent requests get the probe too, so every file whose
        bytes a call claims was opened.
    """
    if not 0 < split_size <= LINUX_MAX_RW:
        raise ValueError(f"split_size must be in 1..{LINUX_MAX_RW}, got {split_size}")
    if max_read <= 0:
        raise ValueError(f"max_read must be positive, got {max_read}")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    if np.any(split_size % file_align):
        raise ValueError("split_size must be a multiple of every file's alignment")
    nreq = len(file)
    start, end = resolve_ranges(file, offset, length, file_size)
    count = end - start

    align = np.ones(nreq, np.int64) if own_destinations else file_align[file]
    rstart = start // align * align
    rend = _round_up(end, align)
    eof = (size_dependent(offset, length, start, end, file_size[file]) if check_eof
           else np.zeros(nreq, bool))
    probe = np.flatnonzero(eof) if own_destinations else np.zeros(0, np.int64)
    if not own_destinations and eof.any():
        rend[eof] = _round_up(file_size[file[eof]] + 1, align[eof])

    # Largest read: aligned down so every part of a split stays aligned.
    cap = min(max_read, split_size)
    cap_align = int(file_align.max()) if len(file_align) and not own_destinations else 1
    cap = max(cap // cap_align * cap_align, cap_align)

    # -- group --------------------------------------------------------------------------
    # empty requests read nothing and belong to no group, unless they probe the end
    live = np.flatnonzero((count > 0) | (eof & ~own_destinations))
    if own_destinations:
        live = np.flatnonzero((count > 0) | eof)
        order = live
        first = np.ones(len(live), bool)
    else:
        order = live[np.lexsort((rstart[live], file[live]))]
        f, a, e = file[order], rstart[order], rend[order]
        reach = _segment_cummax(e, f)  # furthest byte of everything before, per file
        first = np.ones(len(order), bool)
        if max_gap is None:  # deduplicate only: merge what overlaps, not what just touches
            first[1:] = (f[1:] != f[:-1]) | (a[1:] >= reach[:-1])
        else:
            first[1:] = (f[1:] != f[:-1]) | (a[1:] - reach[:-1] > max_gap)
        # Windows of max_read bytes from each cluster's start keep groups bounded.
        cluster = np.cumsum(first) - 1
        cstart = a[first][cluster]
        window = (a - cstart) // max_read
        first[1:] |= window[1:] != window[:-1]
        # A window may hold requests that only touched through a request of an earlier
        # window (a whole-file read spanning many windows): measure gaps again within each
        # window, so a group never reads bytes none of its own requests asked for beyond
        # max_gap. One pass suffices: a split point is past everything before it.
        reach = _segment_cummax(e, np.cumsum(first) - 1)
        if max_gap is None:
            first[1:] |= a[1:] >= reach[:-1]
        else:
            first[1:] |= a[1:] - reach[:-1] > max_gap
    group_of_sorted = np.cumsum(first) - 1
    ngroups = int(first.sum())
    heads = np.flatnonzero(first)
    if own_destinations:
        gstart, gend = rstart[order], rend[order]
        gfile = file[order]
    else:
        gstart = a[heads]
        gend = np.maximum.reduceat(e, heads) if ngroups else np.zeros(0, np.int64)
        gfile = f[heads]

    req_group = np.full(nreq, -1, np.int64)
    req_group[order] = group_of_sorted

    # -- lay out -------------------------------------------------------------------------
    glen = gend - gstart
    if own_destinations:
        req_base = np.arange(nreq, dtype=np.int64)
        gbase = order.astype(np.int64)
        gbuf = np.zeros(ngroups, np.int64)
        arena_size = 0
        req_buf = np.zeros(nreq, np.int64)
    else:
        req_base = np.zeros(nreq, np.int64)
        gbase = np.zeros(ngroups, np.int64)
        region = _round_up(glen, arena_align)
        gbuf = np.cumsum(region) - region
        arena_size = int(region.sum())
        req_buf = np.zeros(nreq, np.int64)
        req_buf[order] = gbuf[group_of_sorted] + (start[order] - gstart[group_of_sorted])

    # -- split ---------------------------------------------------------------------------
    nparts = _round_up(glen, cap) // cap
    op_group = np.repeat(np.arange(ngroups, dtype=np.int64), nparts)
    part = np.arange(len(op_group), dtype=np.int64) - np.repeat(np.cumsum(nparts) - nparts,
                                                                nparts)
    op_offset = gstart[op_group] + part * cap
    op_length = np.minimum(cap, gend[op_group] - op_offset)
    op_buf = gbuf[op_group] + part * cap
    op_file = gfile[op_group]
    op_base = gbase[op_group]
    if len(probe):  # own destinations: one byte at each size-dependent request's EOF
        pgroup = req_group[probe]
        op_group = np.concatenate((op_group, pgroup))
        op_offset = np.concatenate((op_offset, file_size[file[probe]]))
        op_length = np.concatenate((op_length, np.ones(len(probe), np.int64)))
        op_buf = np.concatenate((op_buf, np.arange(len(probe), dtype=np.int64)))
        op_file = np.concatenate((op_file, file[probe]))
        op_base = np.concatenate((op_base, np.full(len(probe), nreq, np.int64)))
    # Own destinations come in request order, and a group cut by max_read inside an overlap
    # starts before its predecessor ends: restore file, then offset order.
    step = np.diff(op_offset)
    if len(step) and not np.all((step >= 0) | (np.diff(op_file) != 0)) or own_destinations:
        by_file = np.lexsort((op_offset, op_file))
        op_group, op_offset, op_length = op_group[by_file], op_offset[by_file], op_length[by_file]
        op_buf, op_file, op_base = op_buf[by_file], op_file[by_file], op_base[by_file]

    files = np.arange(len(file_size))
    return Plan(
        req_start=start,
        req_length=count,
        req_base=req_base,
        req_buf=req_buf,
        req_group=req_group,
        group_start=gstart,
        group_end=gend,
        op_file=op_file,
        op_offset=op_offset,
        op_length=op_length,
        op_base=op_base,
        op_buf=op_buf,
        op_group=op_group,
        file_op_start=np.searchsorted(op_file, files, "left").astype(np.int64),
        file_op_end=np.searchsorted(op_file, files, "right").astype(np.int64),
        arena_size=arena_size,
        eof_scratch=len(probe),
    )
