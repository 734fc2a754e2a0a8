"""The small path of long request lists (``backends/_local_small.py``, ``_split``): a long list
of local requests whose data is in the page cache is parsed, opened and copied off the event
loop, its copies split over one thread per usable core (``lsio/_c/small.c``). Whatever it
cannot serve goes to the bulk road with the same outcome."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import drop_cache, random_bytes, write_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_changes import STALL_LIMIT, Heartbeat

import lsio
from lsio._call import parse
from lsio._defaults import (
    SMALL_SPLIT_BYTES,
    SMALL_SPLIT_FILES,
    SMALL_SPLIT_MAX,
    SMALL_SPLIT_MISSES,
)
from lsio._route import Strategy
from lsio.backends import _local_small as _small

SIZES = [1 << 20, 300_001, 4096 * 3 + 17]
LONG = 1024
"""A long list (past the plain parse of ``SMALL_REQUESTS``)."""
SPLIT = ("small", "small-thread")
"""Its routes: copied on the calling thread (within ``SMALL_BYTES``), else on a worker."""


@pytest.fixture(scope="module")
def files(module_data_dir: Path) -> list[Path]:
    return [write_file(module_data_dir / f"s{i}", random_bytes(n, seed=40 + i))
            for i, n in enumerate(SIZES)]


def expected(path: Path, offset: int, length: int | None) -> bytes:
    """What ``os.pread`` gives for the request, with lsio's meaning of a negative offset
    (from the end) and of ``None`` (to the end)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        start = max(size + offset, 0) if offset < 0 else min(offset, size)
        return os.pread(fd, size - start if length is None else length, start)
    finally:
        os.close(fd)


def some_requests(files: list[Path], n: int, seed: int) -> list[tuple[str, int, int | None]]:
    rng = np.random.default_rng(seed)
    reqs: list[tuple[str, int, int | None]] = []
    for k in range(n):
        f = int(rng.integers(len(files)))
        size = SIZES[f]
        offset = int(rng.integers(-size - 10, size + 10)) if k % 7 == 0 else int(
            rng.integers(0, size))
        length = None if k % 11 == 0 else int(rng.integers(0, 20_000))
        reqs.append((str(files[f]), offset, length))
    return reqs


def warm(paths: list[Path]) -> None:
    for p in paths:
        p.read_bytes()


async def test_a_long_warm_list_takes_the_split_path(files: list[Path]) -> None:
    warm(files)
    reqs = some_requests(files, LONG + 5, seed=1)
    got = await lsio.read_many(reqs)
    assert got.stats.route == "small-thread" and got.stats.files == len(files)  # > 2 MiB
    assert got.stats.loop_hold == 0.0
    for (path, offset, length), chunk in zip(reqs, got, strict=True):
        assert bytes(chunk) == expected(Path(path), offset, length)
    same = lsio.read_many_sync(reqs)
    assert same.stats.route == "small"
    assert [bytes(c) for c in same] == [bytes(c) for c in got]


async def test_out_buffers_on_the_split_path(files: list[Path]) -> None:
    warm(files)
    reqs = [(str(files[0]), k * 37, 64) for k in range(LONG)]
    out = [bytearray(70) for _ in reqs]
    got = await lsio.read_many(reqs, out=out)
    assert got.stats.route == "small"  # 64 KiB: on the loop's thread
    data = files[0].read_bytes()
    for k, buf in enumerate(out):
        assert bytes(buf[:64]) == data[k * 37 : k * 37 + 64] == bytes(got[k])


async def test_missing_ok_on_the_split_path(files: list[Path], tmp_path: Path) -> None:
    gone = str(tmp_path / "nope")
    await lsio.read_many([(gone,)], missing_ok=True)  # the kernel learns the name is absent
    warm(files)
    reqs = [(gone, 0, 5) if k % 3 == 0 else (str(files[1]), k, 10)
            for k in range(LONG)]
    got = await lsio.read_many(reqs, missing_ok=True)
    assert got.stats.route in SPLIT
    assert list(got.missing) == [k % 3 == 0 for k in range(len(reqs))]
    assert bytes(got[1]) == files[1].read_bytes()[1:11]


def cached(path: Path, pages: list[int]) -> list[bool]:
    """Whether each 4 KiB page of ``path`` is in the page cache (``mincore`` of a mapping,
    which reads nothing: a read that misses would start read-ahead and bring pages back)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        try:
            vec = ctypes.create_string_buffer(-(-size // 4096))
            assert libc.mincore(addr, size, vec) == 0
            return [bool(vec.raw[p] & 1) for p in pages]
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(paths: list[Path]) -> None:
    """Evict these files from the page cache, checked without reading them."""
    for _ in range(60):
        for path in paths:
            drop_cache(path)
        if not any(any(cached(p, [0, 1])) for p in paths):
            return
        time.sleep(0.05)  # a page still on a per-CPU LRU list is skipped once
    raise AssertionError("the files stay in the page cache")


async def evicted_call(data_dir: Path, name: str, evicted: int) -> str:
    """A long call of which ``evicted`` requests are of files evicted from the page cache
    (one request each: a file's first miss starts read-ahead of its next pages, so each is
    one miss); byte-exact whatever road it took, which is returned."""
    cold = [write_file(data_dir / f"{name}{i}", random_bytes(65536, seed=i))
            for i in range(evicted)]
    path = write_file(data_dir / f"{name}w", random_bytes(1 << 20, seed=9))
    data = {p: p.read_bytes() for p in [*cold, path]}  # all warm
    reqs = [(str(p), 100, 60_000) for p in cold]
    reqs += [(str(path), k * 1000, 2000) for k in range(LONG)]  # > SMALL_BYTES: a worker's
    evict(cold)
    got = await lsio.read_many(reqs)
    for (p, offset, length), chunk in zip(reqs, got, strict=True):
        assert bytes(chunk) == data[Path(p)][offset : offset + length]
    return got.stats.route


async def test_a_few_evicted_files_are_read_waiting(data_dir: Path) -> None:
    """Up to ``SMALL_SPLIT_MISSES`` reads that miss the page cache are read by waiting on
    the call's threads; many more make the call cold, for the ring. (A read that must not
    wait may still succeed on an evicted page when the read-ahead it starts completes at
    once, so the cold call is tried a few times.)"""
    assert await evicted_call(data_dir, "a", SMALL_SPLIT_MISSES) == "small-thread"
    cold = SMALL_SPLIT_FILES - 1
    took = [await evicted_call(data_dir, f"b{k}-", cold) for k in range(5)]
    assert "bulk" in took, took


async def test_what_the_split_path_leaves_to_the_bulk_road(files: list[Path],
                                                           tmp_path: Path) -> None:
    many = [write_file(tmp_path / f"m{i}", random_bytes(100, seed=i))
            for i in range(SMALL_SPLIT_FILES + 1)]
    reqs = [(str(many[k % len(many)]), k % 50, 10) for k in range(LONG)]
    got = await lsio.read_many(reqs)  # too many files to hold open at once
    assert got.stats.route == "bulk"
    assert bytes(got[3]) == many[3].read_bytes()[3:13]
    short = some_requests(files, LONG - 1, seed=2)
    big: list[tuple[Any, ...]] = [(str(files[0]),)] * (SMALL_SPLIT_BYTES // SIZES[0] + 1)
    big += [(str(files[2]), 0, 1)] * LONG
    got = await lsio.read_many(big)  # a copy too long to wait for on cancellation
    assert got.stats.route == "bulk" and bytes(got[0]) == files[0].read_bytes()
    with pytest.raises(TypeError, match="request #1023"):  # the bulk road's parse names it
        await lsio.read_many([*short, (str(files[0]), "x", 1), *short])
    longer = some_requests(files, SMALL_SPLIT_MAX + 1, seed=4)
    got = await lsio.read_many(longer)  # past the split's length: the rings do it cheaper
    assert got.stats.route == "bulk"
    forced = await lsio.Reader(route="bulk").read_many(short * 2)
    assert forced.stats.route == "bulk"
    direct = await lsio.Reader(direct=True).read_many(short * 2)
    assert direct.stats.route == "bulk"


async def test_a_big_split_call_does_not_hold_the_loop(data_dir: Path) -> None:
    """The longest lists the split path takes (warm 4 KiB ranges into fresh memory): the
    parse and the copies run off the loop, which a 1 ms heartbeat sees."""
    path = write_file(data_dir / "h", random_bytes(32 << 20, seed=3))
    path.read_bytes()
    rng = np.random.default_rng(5)
    reqs = [(str(path), int(o) * 4096, 4096) for o in rng.integers(0, 8192, SMALL_SPLIT_MAX)]
    worst, kept = [], []
    for _ in range(3):  # the best of three: this machine is shared and noisy
        async with Heartbeat() as hb:
            got = await lsio.read_many(reqs)
        assert got.stats.route == "small-thread"
        kept.append(got)
        worst.append(hb.worst)
    assert min(worst) < STALL_LIMIT, f"worst stalls {[f'{w * 1e3:.1f} ms' for w in worst]}"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), threads=st.integers(1, 5),
       to_out=st.booleans())
def test_any_split_is_byte_exact(files: list[Path], seed: int, n: int, threads: int,
                                 to_out: bool, monkeypatch: Any) -> None:
    """Whatever the requests and however many threads copy them, every request is served
    once with ``os.pread``'s bytes, into the arena or the caller's buffers."""
    warm(files)
    reqs = some_requests(files, n, seed)
    monkeypatch.setattr(_small, "usable_cpus", lambda: threads)
    want = [expected(Path(path), offset, length) for path, offset, length in reqs]
    out = [bytearray(len(w) + 3) for w in want] if to_out else None
    call = parse(reqs, out, False, plain_max=0)  # as a long list is parsed
    strategy = Strategy(small=True, thread_bytes=SMALL_SPLIT_BYTES, off_loop=True,
                        split_files=SMALL_SPLIT_FILES)
    def split() -> Any:
        small = _small._open_long(call, strategy)
        assert small is not None and small.nfiles == len({r[0] for r in reqs})
        return small.serve(SMALL_SPLIT_BYTES, threads=threads, misses=0)

    got = split()
    if got is None:  # another process evicted the files (a cache dropped): once more
        warm(files)
        got = split()
    assert got is not None
    assert [bytes(chunk) for chunk in got] == want
    if out is not None:
        assert [bytes(buf[: len(w)]) for buf, w in zip(out, want, strict=True)] == want


async def test_a_declined_long_list_is_planned_off_the_loop(files: list[Path],
                                                            monkeypatch: Any) -> None:
    """When the split path declines a long list (cold data), the bulk road still checks
    and plans it on a worker thread (``OFF_LOOP_REQUESTS``), not on the event loop."""
    import lsio._serve as serve_mod
    from lsio._defaults import OFF_LOOP_REQUESTS

    seen: list[bool] = []
    real = serve_mod.off_loop

    async def spy(on_thread: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(on_thread)
        return await real(on_thread, fn, *args, **kwargs)

    monkeypatch.setattr(serve_mod, "off_loop", spy)
    monkeypatch.setattr(lsio._route, "SMALL_SPLIT_MAX", OFF_LOOP_REQUESTS)
    monkeypatch.setattr(_small, "_open_long", lambda call, strategy: None)
    reqs = some_requests(files, OFF_LOOP_REQUESTS, seed=3)
    got = await lsio.read_many(reqs)
    assert got.stats.route == "bulk" and seen == [True]
    assert bytes(got[5]) == expected(Path(reqs[5][0]), reqs[5][1], reqs[5][2])
