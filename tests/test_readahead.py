"""lsio._readahead: sequential reads are served from read-ahead windows, byte for byte as
reads of their own would be; other reads read nothing extra; a failed window costs nothing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsio import _readahead
from lsio._defaults import READAHEAD_FIRST, READAHEAD_MAX
from lsio._readahead import ReadAhead

DATA = random.Random(7).randbytes(3 * READAHEAD_MAX + 12345)


class _Gatherer:
    """Reads ``DATA`` like lsio (a range past the end gives what exists); records every
    read; ``fail`` makes reads longer than a chunk fail (as a window would)."""

    def __init__(self, fail: bool = False) -> None:
        self.reads: list[tuple[str, int, int]] = []
        self.fail = fail

    async def read(self, request: Any, *, missing_ok: bool = False) -> memoryview:
        path, offset, length = request
        self.reads.append(request)
        await asyncio.sleep(0)
        if self.fail and length > 100_000:
            raise OSError(5, "window failed", path)
        if path == "gone":
            raise FileNotFoundError(2, "missing", path)
        return memoryview(DATA[offset:offset + length])


def _ahead(g: _Gatherer) -> ReadAhead:
    return ReadAhead(g)  # type: ignore[arg-type]


async def test_a_sequential_scan_is_read_in_growing_windows() -> None:
    g = _Gatherer()
    ra = _ahead(g)
    step = 17_000
    for off in range(0, len(DATA), step):
        got = await ra.read("f", off, step)
        assert bytes(got) == DATA[off:off + step]  # type: ignore[arg-type]
    n = len(DATA) // step + 1
    assert len(g.reads) < n // 10, g.reads  # windows, not one read per chunk
    sizes = [length for _, _, length in g.reads if length > step]
    assert sizes[0] == READAHEAD_FIRST and max(sizes) == READAHEAD_MAX
    assert sizes == sorted(sizes)


async def test_concurrent_in_order_reads_like_zarrs_share_windows() -> None:
    g = _Gatherer()
    ra = _ahead(g)
    step, sem = 17_000, asyncio.Semaphore(10)

    async def one(off: int) -> None:
        async with sem:
            got = await ra.read("f", off, step)
        assert bytes(got) == DATA[off:off + step]  # type: ignore[arg-type]

    await asyncio.gather(*(one(off) for off in range(0, len(DATA), step)))
    assert len(g.reads) < len(DATA) // step // 10


async def test_random_reads_read_nothing_extra() -> None:
    g = _Gatherer()
    ra = _ahead(g)
    rng = random.Random(3)
    done: dict[str, list[int]] = {}
    reads = 0
    for _ in range(2000):  # reads none of which continues an earlier read of its file
        path = f"f{rng.randrange(40)}"
        o = rng.randrange(0, len(DATA) - 5000)
        if any(-2 * READAHEAD_MAX <= o - (p + 4096) <= 2 << 20 for p in done.get(path, [])):
            continue
        done.setdefault(path, []).append(o)
        assert bytes(await ra.read(path, o, 4096)) == DATA[o:o + 4096]  # type: ignore[arg-type]
        reads += 1
    assert reads > 60
    assert sum(length for _, _, length in g.reads) == 4096 * reads


async def test_a_failed_window_leaves_each_read_its_own() -> None:
    g = _Gatherer(fail=True)
    ra = _ahead(g)
    for off in range(0, 10 * 17_000, 17_000):
        assert bytes(await ra.read("f", off, 17_000)) == DATA[off:off + 17_000]  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        await ra.read("gone", 0, 10)


async def test_a_restarted_scan_reads_ahead_again() -> None:
    g = _Gatherer()
    ra = _ahead(g)
    for _ in range(2):
        g.reads.clear()
        for off in range(0, len(DATA), 17_000):
            await ra.read("f", off, 17_000)
        assert len(g.reads) < 20


async def test_old_windows_are_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    g = _Gatherer()
    ra = _ahead(g)
    for off in (0, 17_000):
        await ra.read("f", off, 17_000)
    monkeypatch.setattr(_readahead, "READAHEAD_TTL", 0.0)
    before = len(g.reads)
    await ra.read("f", 34_000, 17_000)
    assert len(g.reads) > before  # the window had expired: read again


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(DATA) + 100), st.integers(0, 300_000)),
                min_size=1, max_size=40),
       st.booleans())
def test_any_reads_give_what_reads_of_their_own_give(reads: list[tuple[int, int]],
                                                     sequential: bool) -> None:
    if sequential:  # mostly in order, as zarr and HDF5 read
        reads = sorted(reads)

    async def run() -> None:
        ra = _ahead(_Gatherer())
        got = await asyncio.gather(*(ra.read("f", o, n) for o, n in reads))
        for (o, n), view in zip(reads, got, strict=True):
            assert bytes(view) == DATA[o:o + n]  # type: ignore[arg-type]

    asyncio.run(run())
