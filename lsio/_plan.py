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

    piece_offset: I64 | None = None
    """Sparse plans: file offset of each piece, a run of requested bytes inside one read
    (read ``k``'s pieces are ``op_piece[k]:op_piece[k + 1]``, by offset). The arena holds
    the pieces only: the bytes of a read between its pieces are received and dropped."""

    piece_length: I64 | None = None
    """Sparse plans: bytes of each piece."""

    piece_buf: I64 | None = None
    """Sparse plans: offset of each piece in the arena (buffer 0)."""

    op_piece: I64 | None = None
    """Sparse plans: each read's first piece, and one past the last piece at the end."""

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
    span = int(np.max(values)) - int(np.min(values)) + 1
    if span * (int(np.max(segment)) + 1) < 2**62:  # lift each segment above the previous one
        lifted = values - np.min(values) + segment * span
        top: I64 = np.maximum.accumulate(lifted) - segment * span
        return top + int(np.min(values))
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
    file: I64, offset: I64, length: I64, *, file_size: I64, file_align: I64,
    max_gap: int | None, max_read: int, split_size: int, arena_align: int,
    own_destinations: bool, check_eof: bool = False, sparse: bool = False,
    gap_budget: int | None = None,
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
        :func:`size_dependent`) with the bytes read: its read runs one byte past the end of
        the file, so a read that comes back with more or fewer bytes than the size predicts
        shows the file was replaced or changed (how, and ``eof_scratch``: :func:`_align`).
    sparse
        Lay out only the requested bytes, not the gaps a merged read fetches (remote reads;
        not with ``own_destinations``, ``check_eof`` or alignment): see :func:`_sparse`.
    gap_budget
        Most bytes no request asked for that merging may add to the call (the gaps it
        reads through), spent on the smallest gaps first; ``None``: no limit beyond
        ``max_gap``. Remote reads bound the bytes transferred per byte requested so.
    """
    _check_knobs(file_align, max_gap, max_read, split_size, own_destinations, check_eof,
                 sparse, gap_budget)
    start, end = resolve_ranges(file, offset, length, file_size)
    count = end - start
    rstart, rend, eof, cap = _align(file, offset, length, start, end, file_size, file_align,
                                    max_read, split_size, own_destinations, check_eof)
    # empty requests read nothing and belong to no group, unless they probe the end
    g = _group(file, rstart, rend, np.flatnonzero((count > 0) | eof), own_destinations,
               max_gap, max_read, gap_budget)
    if sparse:
        return _sparse(start, count, g, cap, arena_align, len(file_size))
    return _dense(file, file_size, start, count, eof, g, cap, arena_align, own_destinations)


def _check_knobs(file_align: I64, max_gap: int | None, max_read: int, split_size: int,
                 own_destinations: bool, check_eof: bool, sparse: bool,
                 gap_budget: int | None) -> None:
    """Reject knobs the planner cannot honour, with a ValueError naming the knob."""
    if not 0 < split_size <= LINUX_MAX_RW:
        raise ValueError(f"split_size must be in 1..{LINUX_MAX_RW}, got {split_size}")
    if max_read <= 0:
        raise ValueError(f"max_read must be positive, got {max_read}")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    if np.any(split_size % file_align):
        raise ValueError("split_size must be a multiple of every file's alignment")
    if sparse and (own_destinations or check_eof or np.any(file_align != 1)):
        raise ValueError("a sparse plan needs a shared arena, no end-of-file proof and no "
                         "alignment")
    if gap_budget is not None and gap_budget < 0:
        raise ValueError(f"gap_budget must be >= 0 or None, got {gap_budget}")


def _align(file: I64, offset: I64, length: I64, start: I64, end: I64, file_size: I64,
           file_align: I64, max_read: int, split_size: int, own_destinations: bool,
           check_eof: bool) -> tuple[I64, I64, npt.NDArray[np.bool_], int]:
    """Step 2: the aligned ranges, the requests that prove their file's size, the largest read.

    With ``check_eof`` a size-dependent request proves the size: in the shared arena its own
    read is widened to ``[start, size + 1)``; with own destinations (the caller's buffers,
    never widened) it gets an extra one-byte read at ``size`` into buffer ``n_requests`` at
    offset ``k`` (the k-th such request; the caller provides that scratch buffer of
    ``eof_scratch`` bytes). Empty size-dependent requests get the probe too, so every file
    whose bytes a call claims was opened."""
    nreq = len(file)
    align = np.ones(nreq, np.int64) if own_destinations else file_align[file]
    rstart = start // align * align
    rend = _round_up(end, align)
    eof = (size_dependent(offset, length, start, end, file_size[file]) if check_eof
           else np.zeros(nreq, bool))
    if not own_destinations and eof.any():
        rend[eof] = _round_up(file_size[file[eof]] + 1, align[eof])
    # Largest read: aligned down so every part of a split stays aligned.
    cap = min(max_read, split_size)
    cap_align = int(np.max(file_align)) if len(file_align) and not own_destinations else 1
    return rstart, rend, eof, max(cap // cap_align * cap_align, cap_align)


@dataclass(frozen=True, slots=True)
class _Groups:
    """Step 3's result: the merged reads (groups) and the requests each one serves."""

    order: I64  # the live requests, sorted by (file, aligned start) unless own destinations
    first: npt.NDArray[np.bool_]  # which request of ``order`` starts a group
    of_sorted: I64  # the group of each request of ``order``
    req_group: I64  # the group of each request, -1 for none
    start: I64  # each group's first byte in its file (aligned)
    end: I64  # one past each group's last byte
    file: I64  # each group's file


def _group(file: I64, rstart: I64, rend: I64, live: I64, own_destinations: bool,
           max_gap: int | None, max_read: int, gap_budget: int | None) -> _Groups:
    """Step 3: the live requests merged into groups (own destinations: one group each)."""
    if own_destinations:
        order, first = live, np.ones(len(live), bool)
    else:
        order = live[np.lexsort((rstart[live], file[live]))]
        first = _group_heads(file[order], rstart[order], rend[order], max_gap, max_read,
                             gap_budget)
    group_of_sorted = np.cumsum(first) - 1
    heads = np.flatnonzero(first)
    if own_destinations:
        gstart, gend, gfile = rstart[order], rend[order], file[order]
    else:
        gstart, gfile = rstart[order][heads], file[order][heads]
        gend = (np.maximum.reduceat(rend[order], heads) if len(heads)
                else np.zeros(0, np.int64))
    req_group = np.full(len(file), -1, np.int64)
    req_group[order] = group_of_sorted
    return _Groups(order, first, group_of_sorted, req_group, gstart, gend, gfile)


def _group_heads(f: I64, a: I64, e: I64, max_gap: int | None, max_read: int,
                 gap_budget: int | None = None) -> npt.NDArray[np.bool_]:
    """Step 3 on requests sorted by (file, start): which ones start a new group. A request
    joins the group before it when it overlaps it or the gap is at most ``max_gap``
    (``None``: only overlaps), and while it starts within ``max_read`` of its cluster's
    first byte. With a ``gap_budget``, only the smallest gaps whose sum stays within it
    are read through."""
    newfile = f[1:] != f[:-1]

    def gap_opens(reach: I64) -> npt.NDArray[np.bool_]:
        if max_gap is None:  # deduplicate only: merge what overlaps, not what just touches
            return a[1:] >= reach[:-1]
        gap = a[1:] - reach[:-1]
        opens = gap > max_gap
        if gap_budget is not None:
            spent = np.flatnonzero(~opens & ~newfile & (gap > 0))
            if len(spent):
                spent = spent[np.argsort(gap[spent], kind="stable")]
                opens[spent[np.cumsum(gap[spent]) > gap_budget]] = True
        return opens

    first = np.ones(len(a), bool)
    first[1:] = newfile | gap_opens(_segment_cummax(e, f))
    # Windows of max_read bytes from each cluster's start keep groups bounded.
    cluster = np.cumsum(first) - 1
    window = (a - a[first][cluster]) // max_read
    first[1:] |= window[1:] != window[:-1]
    # A window may hold requests that only touched through a request of an earlier window
    # (a whole-file read spanning many windows): measure gaps again within each window, so
    # a group never reads bytes none of its own requests asked for beyond max_gap. One pass
    # suffices: a split point is past everything before it.
    first[1:] |= gap_opens(_segment_cummax(e, np.cumsum(first) - 1))
    return first


def _lay_out(start: I64, g: _Groups, arena_align: int, own_destinations: bool
             ) -> tuple[I64, I64, I64, I64, int]:
    """Step 4: each request's and each group's buffer and offset in it, and the arena size."""
    nreq, ngroups = len(start), len(g.start)
    if own_destinations:  # each request's group lands at the start of its own buffer
        return (np.arange(nreq, dtype=np.int64), np.zeros(nreq, np.int64),
                g.order.astype(np.int64), np.zeros(ngroups, np.int64), 0)
    gbuf, arena_size = _arena(g.end - g.start, arena_align)
    req_buf = np.zeros(nreq, np.int64)
    req_buf[g.order] = gbuf[g.of_sorted] + (start[g.order] - g.start[g.of_sorted])
    return np.zeros(nreq, np.int64), req_buf, np.zeros(ngroups, np.int64), gbuf, arena_size


def _dense(file: I64, file_size: I64, start: I64, count: I64, eof: npt.NDArray[np.bool_],
           g: _Groups, cap: int, arena_align: int, own_destinations: bool) -> Plan:
    """Steps 4-6 of a plan whose destinations hold whole groups (requests and gaps)."""
    req_base, req_buf, gbase, gbuf, arena_size = _lay_out(start, g, arena_align,
                                                          own_destinations)
    ops = _split(g.start, g.end, g.file, gbase, gbuf, cap)
    probe = np.flatnonzero(eof) if own_destinations else np.zeros(0, np.int64)
    if len(probe):  # own destinations: one byte at each size-dependent request's EOF
        ops = ops.concat(_Ops(group=g.req_group[probe], file=file[probe],
                              offset=file_size[file[probe]],
                              length=np.ones(len(probe), np.int64),
                              base=np.full(len(probe), len(file), np.int64),
                              buf=np.arange(len(probe), dtype=np.int64)))
    ops = _by_file(ops, force=own_destinations)
    file_op_start, file_op_end = _file_ranges(ops.file, len(file_size))
    return Plan(
        req_start=start, req_length=count, req_base=req_base, req_buf=req_buf,
        req_group=g.req_group, group_start=g.start, group_end=g.end,
        op_file=ops.file, op_offset=ops.offset, op_length=ops.length, op_base=ops.base,
        op_buf=ops.buf, op_group=ops.group, file_op_start=file_op_start,
        file_op_end=file_op_end, arena_size=arena_size, eof_scratch=len(probe))


def _sparse(start: I64, count: I64, g: _Groups, cap: int, arena_align: int,
            nfiles: int) -> Plan:
    """Steps 4-6 of a sparse plan: the arena holds each group's runs of requested bytes
    (overlapping or touching requests form one run; a run never crosses groups), and each
    read of a group gets the pieces of those runs inside it; reads are trimmed to their
    pieces and reads without one are dropped."""
    nreq = len(start)
    a, e = start[g.order], start[g.order] + count[g.order]
    run_of_sorted, run_start, run_end, run_group = _runs(a, e, g.first, g.of_sorted)
    run_buf, arena_size = _arena(run_end - run_start, arena_align)
    req_buf = np.zeros(nreq, np.int64)
    req_buf[g.order] = run_buf[run_of_sorted] + (a - run_start[run_of_sorted])
    p_op, p_lo, p_hi, p_buf = _pieces(run_start, run_end, run_group, run_buf, g, cap)
    zero = np.zeros(len(g.start), np.int64)  # one arena; _trim sets each read's offset
    ops, p_op, p_lo, p_hi, p_buf = _trim(_split(g.start, g.end, g.file, zero, zero, cap),
                                         p_op, p_lo, p_hi, p_buf)
    file_op_start, file_op_end = _file_ranges(ops.file, nfiles)
    return Plan(
        req_start=start, req_length=count, req_base=np.zeros(nreq, np.int64),
        req_buf=req_buf, req_group=g.req_group, group_start=g.start, group_end=g.end,
        op_file=ops.file, op_offset=ops.offset, op_length=ops.length, op_base=ops.base,
        op_buf=ops.buf, op_group=ops.group, file_op_start=file_op_start,
        file_op_end=file_op_end, arena_size=arena_size, piece_offset=p_lo,
        piece_length=p_hi - p_lo, piece_buf=p_buf,
        op_piece=np.searchsorted(p_op, np.arange(len(ops.offset) + 1)).astype(np.int64))


def _runs(a: I64, e: I64, first: npt.NDArray[np.bool_], group_of_sorted: I64
          ) -> tuple[I64, I64, I64, I64]:
    """Sparse step 4: the union of requested bytes within each group, as runs."""
    run_first = first.copy()
    if len(a):
        run_first[1:] |= a[1:] > _segment_cummax(e, group_of_sorted)[:-1]
    rheads = np.flatnonzero(run_first)
    run_end = np.maximum.reduceat(e, rheads) if len(rheads) else np.zeros(0, np.int64)
    return np.cumsum(run_first) - 1, a[rheads], run_end, group_of_sorted[rheads]


def _pieces(run_start: I64, run_end: I64, run_group: I64, run_buf: I64, g: _Groups,
            cap: int) -> tuple[I64, I64, I64, I64]:
    """Sparse step 5: each run cut at the boundaries of its group's reads (every cap bytes)."""
    g0 = g.start[run_group]
    k0 = (run_start - g0) // cap
    npieces = (run_end - 1 - g0) // cap - k0 + 1
    run = np.repeat(np.arange(len(run_start), dtype=np.int64), npieces)
    k = k0[run] + np.arange(len(run), dtype=np.int64) - np.repeat(
        np.cumsum(npieces) - npieces, npieces)
    p_lo = np.maximum(run_start[run], g0[run] + k * cap)
    p_hi = np.minimum(run_end[run], g0[run] + (k + 1) * cap)
    nparts = _round_up(g.end - g.start, cap) // cap
    p_op = (np.cumsum(nparts) - nparts)[run_group[run]] + k
    return p_op, p_lo, p_hi, run_buf[run] + (p_lo - run_start[run])


def _trim(ops: _Ops, p_op: I64, p_lo: I64, p_hi: I64, p_buf: I64
          ) -> tuple[_Ops, I64, I64, I64, I64]:
    """Sparse step 6: reads trimmed to their pieces, those without one dropped, by file."""
    has = np.zeros(len(ops.offset), bool)
    has[p_op] = True
    heads = np.flatnonzero(np.r_[True, p_op[1:] != p_op[:-1]]) if len(p_op) else p_op
    lo = p_lo[heads]
    hi = np.maximum.reduceat(p_hi, heads) if len(heads) else p_hi
    keep = np.flatnonzero(has)
    ops = _Ops(group=ops.group[keep], file=ops.file[keep], offset=lo, length=hi - lo,
               base=ops.base[keep], buf=p_buf[heads])
    renumber = np.full(len(has), -1, np.int64)
    renumber[keep] = np.arange(len(keep), dtype=np.int64)
    by_file = np.lexsort((ops.offset, ops.file))
    ops = ops.take(by_file)
    new_id = np.empty(len(by_file), np.int64)
    new_id[by_file] = np.arange(len(by_file), dtype=np.int64)
    p_op = new_id[renumber[p_op]]
    pieces = np.lexsort((p_lo, p_op))
    return ops, p_op[pieces], p_lo[pieces], p_hi[pieces], p_buf[pieces]


def _file_ranges(op_file: I64, nfiles: int) -> tuple[I64, I64]:
    """Each file's first read and one past its last (reads are grouped by file)."""
    files = np.arange(nfiles)
    return (np.searchsorted(op_file, files, "left").astype(np.int64),
            np.searchsorted(op_file, files, "right").astype(np.int64))


def _arena(glen: I64, arena_align: int) -> tuple[I64, int]:
    """Step 4: each group's offset in one arena (groups one after another, each region
    aligned), and the arena's size."""
    region = _round_up(glen, arena_align)
    return np.cumsum(region) - region, int(region.sum())


@dataclass(frozen=True, slots=True)
class _Ops:
    """The reads of a plan being built, one entry per read."""

    group: I64
    file: I64
    offset: I64
    length: I64
    base: I64
    buf: I64

    def take(self, index: I64) -> _Ops:
        return _Ops(*(getattr(self, k)[index] for k in self.__slots__))

    def concat(self, more: _Ops) -> _Ops:
        return _Ops(*(np.concatenate((getattr(self, k), getattr(more, k)))
                      for k in self.__slots__))


def _split(gstart: I64, gend: I64, gfile: I64, gbase: I64, gbuf: I64, cap: int) -> _Ops:
    """Step 5: each group as reads of at most ``cap`` bytes, read in parallel."""
    nparts = _round_up(gend - gstart, cap) // cap
    group = np.repeat(np.arange(len(gstart), dtype=np.int64), nparts)
    part = np.arange(len(group), dtype=np.int64) - np.repeat(np.cumsum(nparts) - nparts, nparts)
    offset = gstart[group] + part * cap
    return _Ops(group=group, file=gfile[group], offset=offset,
                length=np.minimum(cap, gend[group] - offset), base=gbase[group],
                buf=gbuf[group] + part * cap)


def _by_file(ops: _Ops, *, force: bool) -> _Ops:
    """Step 6: reads grouped by file, by offset within each. Own destinations come in
    request order, and a group cut by max_read inside an overlap starts before its
    predecessor ends: those are sorted; otherwise the split already left this order."""
    step = np.diff(ops.offset)
    if force or len(step) and not np.all((step >= 0) | (np.diff(ops.file) != 0)):
        return ops.take(np.lexsort((ops.offset, ops.file)))
    return ops
