"""The pure planner: table cases with ids, then a hypothesis property that executes plans
against in-memory files. No I/O, no event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsio._plan import LINUX_MAX_RW, Plan, distinct, plan

EOF = -1  # length meaning "to the end of the file"


def run_plan(sizes: list[int], requests: list[tuple[int, int, int]], *,
             aligns: list[int] | None = None, split_size: int = 1 << 20,
             arena_align: int = 64, own: bool = False, max_gap: int | None = None,
             max_read: int = 1 << 30) -> Plan:
    arr = np.array(requests, np.int64).reshape(-1, 3)
    return plan(
        arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(),
        file_size=np.array(sizes, np.int64),
        file_align=np.array(aligns or [1] * len(sizes), np.int64),
        max_gap=max_gap, max_read=max_read, split_size=split_size,
        arena_align=arena_align, own_destinations=own,
    )


def served(p: Plan, op: int) -> int | tuple[int, ...]:
    """The requests the group of read ``op`` serves (an int when it is one request)."""
    reqs = tuple(np.flatnonzero(p.req_group == p.op_group[op]).tolist())
    return reqs[0] if len(reqs) == 1 else reqs


@dataclass(frozen=True)
class Case:
    id: str
    sizes: list[int]
    requests: list[tuple[int, int, int]]
    """(file, offset, length); offset < 0 counts from the end, length -1 reads to EOF."""
    req_start: list[int]
    req_length: list[int]
    ops: list[tuple[int, int, int, int | tuple[int, ...]]]
    """Expected reads in plan order: (file, offset, length, request(s) served)."""
    aligns: list[int] | None = None
    split_size: int = 1 << 20
    arena_align: int = 64
    own: bool = False
    req_buf: list[int] | None = None
    op_buf: list[int] | None = None
    file_ops: list[tuple[int, int]] | None = None
    """(file_op_start, file_op_end) of every file."""
    arena_size: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    max_gap: int | None = None
    max_read: int = 1 << 30


CASES = [
    Case("whole-file", [100], [(0, 0, EOF)], [0], [100], [(0, 0, 100, 0)], req_buf=[0],
         arena_size=128),
    Case("range", [100], [(0, 10, 20)], [10], [20], [(0, 10, 20, 0)], req_buf=[0]),
    Case("suffix-to-eof", [100], [(0, -10, EOF)], [90], [10], [(0, 90, 10, 0)]),
    Case("suffix-with-length", [100], [(0, -10, 4)], [90], [4], [(0, 90, 4, 0)]),
    Case("suffix-longer-than-file", [100], [(0, -500, EOF)], [0], [100], [(0, 0, 100, 0)]),
    Case("suffix-longer-than-file-with-length", [100], [(0, -500, 30)], [0], [30],
         [(0, 0, 30, 0)]),
    Case("range-past-eof-clamped", [100], [(0, 90, 50)], [90], [10], [(0, 90, 10, 0)]),
    Case("offset-beyond-eof", [100], [(0, 150, 10)], [100], [0], []),
    Case("offset-beyond-eof-to-eof", [100], [(0, 1000, EOF)], [100], [0], []),
    Case("offset-at-eof", [100], [(0, 100, EOF)], [100], [0], []),
    Case("zero-length", [100], [(0, 10, 0)], [10], [0], [], arena_size=0),
    Case("length-minus-one-reads-to-eof", [100], [(0, 30, EOF)], [30], [70],
         [(0, 30, 70, 0)]),
    Case("empty-file", [0], [(0, 0, EOF)], [0], [0], [], file_ops=[(0, 0)]),
    Case("empty-file-suffix", [0], [(0, -5, EOF)], [0], [0], []),
    Case("arena-regions-rounded-to-arena-align", [1000], [(0, 0, 10), (0, 100, 70)],
         [0, 100], [10, 70], [(0, 0, 10, 0), (0, 100, 70, 1)], req_buf=[0, 64],
         op_buf=[0, 64], arena_size=192),
    Case("align-widens-both-ends", [20000], [(0, 5000, 3000), (0, 100, 10)],
         [5000, 100], [3000, 10],
         # sorted by offset: request 1's block comes first in the file
         [(0, 0, 4096, 1), (0, 4096, 4096, 0)],
         # regions are laid out in file order, so request 1's block comes first too
         aligns=[4096], arena_align=4096, req_buf=[4096 + 5000 - 4096, 100],
         op_buf=[0, 4096], arena_size=8192),
    Case("align-read-crossing-a-block", [20000], [(0, 4000, 200)], [4000], [200],
         [(0, 0, 8192, 0)], aligns=[4096], arena_align=4096, req_buf=[4000]),
    Case("align-already-aligned-not-widened", [20000], [(0, 4096, 4096)], [4096], [4096],
         [(0, 4096, 4096, 0)], aligns=[4096], arena_align=4096, req_buf=[0]),
    Case("align-tail-past-eof", [5000], [(0, 4500, EOF)], [4500], [500],
         [(0, 4096, 4096, 0)], aligns=[4096], arena_align=4096, req_buf=[404]),
    Case("align-512", [5000], [(0, 1000, 100)], [1000], [100], [(0, 512, 1024, 0)],
         aligns=[512], arena_align=4096, req_buf=[488]),
    Case("align-zero-length-not-widened", [20000], [(0, 5000, 0)], [5000], [0], [],
         aligns=[4096], arena_align=4096, arena_size=0),
    Case("align-per-file", [20000, 20000], [(0, 5000, 10), (1, 5000, 10)],
         [5000, 5000], [10, 10], [(0, 4096, 4096, 0), (1, 5000, 10, 1)],
         aligns=[4096, 1], arena_align=4096, req_buf=[904, 4096]),
    Case("split-unaligned", [30000], [(0, 1000, 20000)], [1000], [20000],
         [(0, 1000, 8192, 0), (0, 9192, 8192, 0), (0, 17384, 3616, 0)],
         split_size=8192, req_buf=[0], op_buf=[0, 8192, 16384]),
    Case("split-exact-multiple", [30000], [(0, 0, 16384)], [0], [16384],
         [(0, 0, 8192, 0), (0, 8192, 8192, 0)], split_size=8192),
    Case("split-aligned", [30000], [(0, 1000, 20000)], [1000], [20000],
         [(0, 0, 8192, 0), (0, 8192, 8192, 0), (0, 16384, 8192, 0)],
         aligns=[4096], split_size=8192, arena_align=4096, req_buf=[1000],
         op_buf=[0, 8192, 16384], arena_size=24576),
    Case("split-to-eof", [20000], [(0, 0, EOF)], [0], [20000],
         [(0, 0, 8192, 0), (0, 8192, 8192, 0), (0, 16384, 3616, 0)], split_size=8192),
    Case("own-destinations-not-widened", [20000], [(0, 5000, 3000), (0, 100, 10)],
         [5000, 100], [3000, 10], [(0, 100, 10, 1), (0, 5000, 3000, 0)],
         aligns=[4096], arena_align=4096, own=True, req_buf=[0, 0], op_buf=[0, 0],
         arena_size=0, extra={"req_base": [0, 1], "op_base": [1, 0]}),
    Case("own-destinations-split", [30000], [(0, 1000, 20000)], [1000], [20000],
         [(0, 1000, 8192, 0), (0, 9192, 8192, 0), (0, 17384, 3616, 0)],
         split_size=8192, own=True, req_buf=[0], op_buf=[0, 8192, 16384], arena_size=0),
    Case("many-files-unsorted",
         [100, 200, 300],
         [(2, 50, 10), (0, 0, 10), (1, 100, 5), (0, 50, 10), (2, 0, 10), (0, 20, 5)],
         [50, 0, 100, 50, 0, 20], [10, 10, 5, 10, 10, 5],
         [(0, 0, 10, 1), (0, 20, 5, 5), (0, 50, 10, 3), (1, 100, 5, 2), (2, 0, 10, 4),
          (2, 50, 10, 0)],
         file_ops=[(0, 3), (3, 4), (4, 6)]),
    Case("file-without-reads-between-others", [100, 100, 100],
         [(0, 0, 10), (1, 0, 0), (2, 0, 10)], [0, 0, 0], [10, 0, 10],
         [(0, 0, 10, 0), (2, 0, 10, 2)], file_ops=[(0, 1), (1, 1), (1, 2)]),
    Case("last-file-without-reads", [100, 100], [(0, 0, 10), (1, 200, 10)], [0, 100],
         [10, 0], [(0, 0, 10, 0)], file_ops=[(0, 1), (1, 1)]),
    # -- deduplicate (always) and coalesce (max_gap) ----------------------------------
    Case("exact-duplicates-read-once", [100], [(0, 10, 5), (0, 10, 5)], [10, 10], [5, 5],
         [(0, 10, 5, (0, 1))], req_buf=[0, 0], arena_size=64),
    Case("overlap-read-once", [100], [(0, 10, 20), (0, 25, 20)], [10, 25], [20, 20],
         [(0, 10, 35, (0, 1))], req_buf=[0, 15]),
    Case("contained-read-once", [100], [(0, 0, 100), (0, 40, 10)], [0, 40], [100, 10],
         [(0, 0, 100, (0, 1))], req_buf=[0, 40]),
    Case("touching-not-merged-without-gap", [100], [(0, 0, 10), (0, 10, 10)], [0, 10],
         [10, 10], [(0, 0, 10, 0), (0, 10, 10, 1)]),
    Case("adjacent-merged-with-gap-0", [100], [(0, 0, 10), (0, 10, 10)], [0, 10], [10, 10],
         [(0, 0, 20, (0, 1))], max_gap=0, req_buf=[0, 10]),
    Case("gap-just-under-max-gap", [1000], [(0, 0, 10), (0, 109, 10)], [0, 109], [10, 10],
         [(0, 0, 119, (0, 1))], max_gap=100, req_buf=[0, 109]),
    Case("gap-equal-max-gap", [1000], [(0, 0, 10), (0, 110, 10)], [0, 110], [10, 10],
         [(0, 0, 120, (0, 1))], max_gap=100),
    Case("gap-just-over-max-gap", [1000], [(0, 0, 10), (0, 111, 10)], [0, 111], [10, 10],
         [(0, 0, 10, 0), (0, 111, 10, 1)], max_gap=100),
    Case("gap-measured-from-furthest-end", [1000], [(0, 0, 500), (0, 100, 10), (0, 550, 10)],
         [0, 100, 550], [500, 10, 10], [(0, 0, 560, (0, 1, 2))], max_gap=50),
    Case("max-read-caps-a-group", [10000], [(0, 0, 100), (0, 100, 100), (0, 200, 100),
                                            (0, 300, 100)],
         [0, 100, 200, 300], [100] * 4, [(0, 0, 200, (0, 1)), (0, 200, 200, (2, 3))],
         max_gap=0, max_read=200),
    # found by hypothesis: the two ranges touch only through the whole-file read, which lies
    # in other max_read windows, so they must not merge through the 10-byte gap between them
    Case("windows-do-not-bridge-through-an-earlier-request", [3000],
         [(0, 0, EOF), (0, 2000, 10), (0, 2020, 10)], [0, 2000, 2020], [3000, 10, 10],
         [(0, 0, 1000, 0), (0, 1000, 1000, 0), (0, 2000, 1000, 0), (0, 2000, 10, 1),
          (0, 2020, 10, 2)], max_gap=0, max_read=1000),
    Case("max-read-splits-a-long-request", [10000], [(0, 0, 500)], [0], [500],
         [(0, 0, 200, 0), (0, 200, 200, 0), (0, 400, 100, 0)], max_gap=0, max_read=200),
    Case("coalesce-never-crosses-files", [100, 100], [(0, 90, 10), (1, 0, 10)], [90, 0],
         [10, 10], [(0, 90, 10, 0), (1, 0, 10, 1)], max_gap=1000),
    Case("coalesce-unsorted-input", [1000], [(0, 300, 10), (0, 0, 10), (0, 150, 10)],
         [300, 0, 150], [10, 10, 10], [(0, 0, 310, (0, 1, 2))], max_gap=200,
         req_buf=[300, 0, 150]),
    Case("coalesce-aligned-widening-merges-blocks", [20000], [(0, 100, 10), (0, 4200, 10)],
         [100, 4200], [10, 10], [(0, 0, 8192, (0, 1))], aligns=[4096], arena_align=4096,
         max_gap=0, req_buf=[100, 4200]),
    Case("own-destinations-never-merge", [100], [(0, 10, 5), (0, 10, 5)], [10, 10], [5, 5],
         [(0, 10, 5, 0), (0, 10, 5, 1)], own=True, max_gap=1000, arena_size=0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_table(case: Case) -> None:
    p = run_plan(case.sizes, case.requests, aligns=case.aligns, split_size=case.split_size,
                 arena_align=case.arena_align, own=case.own, max_gap=case.max_gap,
                 max_read=case.max_read)
    assert p.req_start.tolist() == case.req_start
    assert p.req_length.tolist() == case.req_length
    ops = list(zip(p.op_file.tolist(), p.op_offset.tolist(), p.op_length.tolist(),
                   [served(p, i) for i in range(p.nops)], strict=True))
    assert ops == case.ops
    assert p.nops == len(case.ops)
    if case.req_buf is not None:
        assert p.req_buf.tolist() == case.req_buf
    if case.op_buf is not None:
        assert p.op_buf.tolist() == case.op_buf
    if case.file_ops is not None:
        spans = zip(p.file_op_start.tolist(), p.file_op_end.tolist(), strict=True)
        assert list(spans) == case.file_ops
    if case.arena_size is not None:
        assert p.arena_size == case.arena_size
    if case.own:
        assert p.req_base.tolist() == list(range(len(case.requests)))
    else:
        assert not p.req_base.any() and not p.op_base.any()
    for name, want in case.extra.items():
        assert getattr(p, name).tolist() == want, name
    for arr in (p.req_start, p.req_length, p.req_buf, p.op_offset, p.op_length, p.op_buf):
        assert arr.dtype == np.int64


@dataclass(frozen=True)
class BadCase:
    id: str
    aligns: list[int]
    split_size: int
    match: str


BAD_CASES = [
    BadCase("split-zero", [1], 0, "split_size"),
    BadCase("split-negative", [1], -4096, "split_size"),
    BadCase("split-above-linux-cap", [1], LINUX_MAX_RW + 1, "split_size"),
    BadCase("split-not-multiple-of-alignment", [4096], 6000, "multiple"),
    BadCase("split-not-multiple-of-one-file", [1, 512, 4096], 2048, "multiple"),
    BadCase("max-gap-negative", [1], 4096, "max_gap"),
    BadCase("max-read-zero", [1], 4096, "max_read"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_plan_rejects_bad_knobs(case: BadCase) -> None:
    n = len(case.aligns)
    with pytest.raises(ValueError, match=case.match):
        run_plan([10000] * n, [(f, 0, 10) for f in range(n)], aligns=case.aligns,
                 split_size=case.split_size,
                 max_gap=-1 if case.id == "max-gap-negative" else None,
                 max_read=0 if case.id == "max-read-zero" else 1 << 30)


def test_plan_empty_request_list() -> None:
    p = plan(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
             file_size=np.zeros(0, np.int64), file_align=np.zeros(0, np.int64),
             max_gap=0, max_read=4096, split_size=4096, arena_align=64,
             own_destinations=False)
    assert p.nops == 0 and p.arena_size == 0 and len(p.req_start) == 0


def test_plan_is_pure() -> None:
    """The planner must not modify its inputs (the reader reuses them for errors)."""
    file = np.array([1, 0, 1], np.int64)
    offset = np.array([-10, 5, 3], np.int64)
    length = np.array([-1, 100, 7], np.int64)
    sizes = np.array([50, 60], np.int64)
    aligns = np.array([4096, 1], np.int64)
    copies = [a.copy() for a in (file, offset, length, sizes, aligns)]
    plan(file, offset, length, file_size=sizes, file_align=aligns, max_gap=100,
         max_read=8192, split_size=8192, arena_align=4096, own_destinations=False)
    for a, b in zip((file, offset, length, sizes, aligns), copies, strict=False):
        np.testing.assert_array_equal(a, b)


# -- the property: executing a plan over in-memory files yields every request's bytes ----

@st.composite
def plan_inputs(draw: st.DrawFn) -> dict[str, object]:
    nfiles = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(0, 20_000), min_size=nfiles, max_size=nfiles))
    aligns = draw(st.lists(st.sampled_from([1, 512, 4096]), min_size=nfiles,
                           max_size=nfiles))
    if max(aligns) > 1:
        split_size = draw(st.sampled_from([4096, 8192, 12288, 65536]))
    else:
        split_size = draw(st.integers(1, 30_000))
    request = st.tuples(
        st.integers(0, nfiles - 1),
        st.one_of(st.integers(-25_000, 25_000), st.integers(-5, 5)),
        st.one_of(st.just(EOF), st.integers(0, 25_000), st.integers(0, 5)),
    )
    return {
        "sizes": sizes,
        "aligns": aligns,
        "split_size": split_size,
        "arena_align": draw(st.sampled_from([1, 64, 4096])),
        "own": draw(st.booleans()),
        "requests": draw(st.lists(request, max_size=30)),
        "max_gap": draw(st.one_of(st.none(), st.integers(0, 6000))),
        "max_read": draw(st.integers(1, 40_000)),
    }


def expected_range(size: int, offset: int, length: int) -> tuple[int, int]:
    """The reference semantics, written independently of the planner."""
    start = max(size + offset, 0) if offset < 0 else min(offset, size)
    end = size if length == EOF else min(start + length, size)
    return start, end


@settings(max_examples=300, deadline=None)
@given(plan_inputs())
def test_plan_property_executes_to_the_right_bytes(inp: dict) -> None:
    sizes: list[int] = inp["sizes"]
    aligns: list[int] = inp["aligns"]
    split: int = inp["split_size"]
    arena_align: int = inp["arena_align"]
    own: bool = inp["own"]
    requests: list[tuple[int, int, int]] = inp["requests"]
    rng = np.random.default_rng(len(requests))
    # No zero byte in the files: a destination byte no read wrote stays 0 and is caught.
    files = [rng.integers(1, 256, s, dtype=np.uint8) for s in sizes]

    max_gap: int | None = inp["max_gap"]
    max_read: int = inp["max_read"]
    p = run_plan(sizes, requests, aligns=aligns, split_size=split,
                 arena_align=arena_align, own=own, max_gap=max_gap, max_read=max_read)
    again = run_plan(sizes, requests, aligns=aligns, split_size=split,
                     arena_align=arena_align, own=own, max_gap=max_gap, max_read=max_read)
    for name in Plan.__slots__:  # deterministic
        np.testing.assert_array_equal(getattr(p, name), getattr(again, name), err_msg=name)
    nreq = len(requests)
    expected = [expected_range(sizes[f], o, n) for f, o, n in requests]
    assert p.req_start.tolist() == [s for s, _ in expected]
    assert p.req_length.tolist() == [e - s for s, e in expected]

    # Destinations: one arena, or (own) one buffer per request, exactly req_length long.
    if own:
        assert p.arena_size == 0
        buffers = [np.zeros(e - s, np.uint8) for s, e in expected]
    else:
        buffers = [np.zeros(p.arena_size, np.uint8)]

    # Execute: a read past EOF returns the bytes that exist, as pread does.
    cap = min(split, max_read)
    written = [np.zeros(len(b), np.int64) for b in buffers]
    for i in range(p.nops):
        f, off, n = int(p.op_file[i]), int(p.op_offset[i]), int(p.op_length[i])
        base, buf = int(p.op_base[i]), int(p.op_buf[i])
        assert 0 < n <= max(cap, max(aligns) if not own else 1)  # never above the caps
        if not own and max(aligns) <= cap:
            assert n <= cap
        # the planned length (not just the bytes that exist) must fit: the kernel may
        # write that much if the file grew
        assert 0 <= buf and buf + n <= len(buffers[base])
        chunk = files[f][off : off + n]
        buffers[base][buf : buf + len(chunk)] = chunk
        written[base][buf : buf + n] += 1
        if not own and aligns[f] > 1:
            assert off % aligns[f] == 0 and n % aligns[f] == 0
    for w in written:  # no two reads target the same destination byte
        assert w.max(initial=0) <= 1

    for r, (f, _o, _n) in enumerate(requests):
        start, end = expected[r]
        base, at = int(p.req_base[r]), int(p.req_buf[r])
        view = buffers[base][at : at + (end - start)]
        np.testing.assert_array_equal(view, files[f][start:end], err_msg=f"request {r}")
        assert (p.req_group[r] < 0) == (end == start)  # empty requests read nothing
        if own:
            assert base == r

    # Every group's reads tile its span; the span holds its requests plus merged gaps only.
    for g in range(len(p.group_start)):
        mine = np.flatnonzero(p.op_group == g)
        offs, lens = p.op_offset[mine], p.op_length[mine]
        np.testing.assert_array_equal(offs[1:], offs[:-1] + lens[:-1])
        assert offs[0] == p.group_start[g] and offs[-1] + lens[-1] == p.group_end[g]
        members = np.flatnonzero(p.req_group == g)
        assert len(members) and len({requests[r][0] for r in members}) == 1
        if own:
            assert len(members) == 1
        f = requests[members[0]][0]
        a = 1 if own else aligns[f]
        ranges = sorted((expected[r][0] // a * a, -(-expected[r][1] // a) * a)
                        for r in members)
        covered, reach, gaps = 0, ranges[0][0], []
        for lo, hi in ranges:
            if lo > reach:
                gaps.append(lo - reach)
            covered += max(0, hi - max(lo, reach))
            reach = max(reach, hi)
        assert p.group_start[g] == ranges[0][0] and p.group_end[g] == reach
        if max_gap is None or own:
            assert not gaps  # deduplication only: nothing read that nobody asked for
        else:
            assert all(gap <= max_gap for gap in gaps)
        assert int(lens.sum()) == covered + sum(gaps)
        first_buf = int(p.op_buf[mine][0])
        if not own:
            assert first_buf % arena_align == 0

    # Grouped by file, in file order, front to back within a file.
    assert np.all(np.diff(p.op_file) >= 0)
    same = p.op_file[1:] == p.op_file[:-1]
    assert np.all(np.diff(p.op_offset)[same] >= 0)
    for f in range(len(sizes)):
        lo, hi = int(p.file_op_start[f]), int(p.file_op_end[f])
        assert np.all(p.op_file[lo:hi] == f)
        assert hi - lo == int(np.count_nonzero(p.op_file == f))
    assert nreq == len(p.req_start)


@given(st.lists(st.integers(-5, 5), max_size=50))
def test_distinct_matches_numpy_unique(values: list[int]) -> None:
    arr = np.array(values, np.int64)
    got, inverse = distinct(arr)
    want, want_inverse = np.unique(arr, return_inverse=True)
    assert got.tolist() == want.tolist()
    assert inverse.tolist() == want_inverse.ravel().tolist()
