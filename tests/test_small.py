"""The local small path (``lsio/backends/_local_small.py``): a call of a few requests whose data
is in the page cache is served without an event-loop round trip, and everything else it meets
goes to the bulk path with the same outcome. Byte-exactness over both paths is the conformance
kit's job (``test_conformance.py``, kits ``small`` and ``uring``/``threads``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import drop_cache, make_cold, new_fds, open_fds, random_bytes, write_file

import lsio
from lsio._defaults import SMALL_BYTES, SMALL_OFF_LOOP_BYTES, SMALL_REQUESTS
from lsio.backends import _local_small as _small


def finish_now(coro: Any) -> Any:
    """Run ``coro`` to its end without an event loop; fails if it had to wait (suspend)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the call waited for the event loop")


@pytest.fixture
def files(data_dir: Path) -> list[Path]:
    return [write_file(data_dir / f"f{i}", random_bytes(5000 + 997 * i, seed=i))
            for i in range(8)]


SMALL_ROUTES = ("small", "small-thread", "cold")


def served_by_small(fn: Any) -> Any:
    result = fn()
    assert result.stats.route in SMALL_ROUTES, "the small path did not serve the call"
    return result


async def test_a_cached_call_returns_without_waiting(files: list[Path]) -> None:
    reqs = [(str(files[0]),), (str(files[1]), 100, 50), lsio.Chunk(files[2], -10),
            str(files[3])]
    lsio.read_many_sync(reqs[:1])  # loads the engine (a process's first call imports it)
    got = served_by_small(lambda: finish_now(lsio.read_many(reqs)))
    assert bytes(got[0]) == files[0].read_bytes()
    assert bytes(got[1]) == files[1].read_bytes()[100:150]
    assert bytes(got[2]) == files[2].read_bytes()[-10:]
    assert bytes(got[3]) == files[3].read_bytes()
    assert list(got.lengths) == [len(bytes(g)) for g in got]
    assert got[0].readonly and got[0].format == "B"


def test_the_sync_door_takes_it_too(files: list[Path]) -> None:
    got = served_by_small(lambda: lsio.read_many_sync([(str(files[4]),)]))
    assert bytes(got[0]) == files[4].read_bytes()


async def test_out_buffers_on_the_small_path(files: list[Path]) -> None:
    out = [np.zeros(6000, np.uint8), bytearray(20)]
    got = served_by_small(lambda: finish_now(lsio.read_many(
        [(str(files[0]),), (str(files[1]), 7, 20)], out=out)))
    assert out[0][:5000].tobytes() == files[0].read_bytes() and not out[0][5000:].any()
    assert bytes(out[1]) == files[1].read_bytes()[7:27] == bytes(got[1])


@pytest.mark.parametrize("bad, error", [
    (lambda: [bytearray(10)], ValueError),      # too small: the bulk path names out[0]
    (lambda: [b"x" * 6000], TypeError),         # read-only
    (lambda: [np.zeros((100, 100), np.uint8)[:, ::2]], ValueError),  # not contiguous
])
async def test_bad_out_buffers_raise_as_on_the_bulk_path(files: list[Path], bad: Any,
                                                         error: type[Exception]) -> None:
    with pytest.raises(error, match=r"out\[0\]"):
        await lsio.read_many([(str(files[0]),)], out=bad())


async def test_errors_are_the_bulk_paths(files: list[Path], data_dir: Path) -> None:
    fifo = data_dir / "fifo"
    os.mkfifo(fifo)
    cases: list[tuple[str, type[OSError]]] = [
        (str(data_dir / "nope"), FileNotFoundError),
        (str(data_dir), IsADirectoryError),
        (str(fifo), OSError),  # refused (not read: a FIFO would block), never hangs
        (str(files[0]) + "/x", NotADirectoryError),
    ]
    for path, error in cases:
        with pytest.raises(error) as info:
            await asyncio.wait_for(lsio.read_many([(str(files[1]),), (path,)]), 10)
        assert info.value.request_index == 1  # type: ignore[attr-defined]
        assert info.value.filename == path
        assert info.value.stats.route == "bulk"  # type: ignore[attr-defined]


async def test_missing_ok_on_the_small_path(files: list[Path], data_dir: Path) -> None:
    gone = str(data_dir / "nope")
    # The first lookup of a missing name goes to the filesystem (openat2 RESOLVE_CACHED
    # refuses it), so the bulk path serves it; the kernel then remembers the name is absent.
    await lsio.read_many([(gone,)], missing_ok=True)
    got = served_by_small(lambda: finish_now(lsio.read_many(
        [(gone,), (str(files[0]), 10, 10), (gone, 5, 5)], missing_ok=True)))
    assert got[0] is None and got[2] is None
    assert bytes(got[1]) == files[0].read_bytes()[10:20]
    assert list(got.missing) == [True, False, True] and list(got.lengths) == [0, 10, 0]


async def test_a_cold_call_waits_on_the_loop_and_lets_timers_run(data_dir: Path) -> None:
    """Data not in the page cache: the call suspends (the bulk path reads it through the
    ring), and another task's 1 ms timer keeps firing meanwhile."""
    paths = [write_file(data_dir / f"cold{i}", random_bytes(256 << 10, seed=i))
             for i in range(8)]
    for p in paths:
        drop_cache(p)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.001)
            ticks.append(time.perf_counter())

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.005)
    waits = [0]
    start = time.perf_counter()
    try:
        got = await counting(lsio.read_many([(str(p),) for p in paths]), waits)
    finally:
        end = time.perf_counter()
        ticker.cancel()
    assert got.stats.route == "bulk"
    assert waits[0] >= 1, "a cold call never waited on the event loop"
    beats = [start] + [t for t in ticks if start < t < end] + [end]
    assert max(np.diff(beats)) < 0.1, "the loop was held while cold data was read"
    for p, chunk in zip(paths, got, strict=True):
        assert bytes(chunk) == p.read_bytes()


async def test_one_cold_request_is_read_on_a_thread_not_the_ring(data_dir: Path) -> None:
    """A single request whose data is not in the page cache is read by blocking calls on a
    worker thread (``SMALL_COLD_REQUESTS``): served by the small path, after suspending, and
    exact; the sync door reads it on the caller's thread."""
    path = write_file(data_dir / "cold-one", random_bytes(300_000, seed=9))
    make_cold(path)
    waits = [0]
    got = await counting(lsio.read_many([(str(path), 1000, 200_000)]), waits)
    assert got.stats.route == "cold" and waits[0] >= 1
    assert bytes(got[0]) == path.read_bytes()[1000:201_000]
    make_cold(path)
    sync = served_by_small(lambda: lsio.read_many_sync([(str(path), -5000, None)]))
    assert bytes(sync[0]) == path.read_bytes()[-5000:]
    with pytest.raises(FileNotFoundError, match="cold-missing"):  # errors: the bulk path's
        await lsio.read_many([(str(data_dir / "cold-missing"),)])


@types.coroutine
def counting(coro: Any, waits: list[int]) -> Any:
    """Await ``coro``, counting the times it suspended (handed a future to the loop)."""
    steps = coro.__await__()
    try:
        future = steps.send(None)
        while True:
            waits[0] += 1
            try:
                value = yield future
            except BaseException as exc:  # noqa: BLE001 - handed on to the coroutine
                future = steps.throw(exc)
            else:
                future = steps.send(value)
    except StopIteration as done:
        return done.value


@pytest.mark.parametrize("offset, length", [(0, None), (-10, 5), (100, 1 << 40), (-3, None)])
async def test_a_file_changed_between_open_and_read_is_read_again(
        files: list[Path], monkeypatch: pytest.MonkeyPatch, offset: int, length: int | None
) -> None:
    """The size comes from the descriptor; a file that grows after it was taken fails the
    end-of-file check of every request whose range depends on the size (to the end, a
    suffix, clamped at the end), and the bulk path reads the new version."""
    path = files[6]
    real = _small.lib

    class Growing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def lsio_small_serve(self, *args: Any) -> int:  # after the open, before the read
            with open(path, "ab") as f:
                f.write(b"more")
            return int(real.lsio_small_serve(*args))

    monkeypatch.setattr(_small, "lib", Growing())
    results = await lsio.read_many([(str(path), offset, length)])
    (got,) = results
    assert results.stats.route == "bulk"
    now = path.read_bytes()
    start = len(now) + offset if offset < 0 else offset
    assert bytes(got) == now[start : None if length is None else start + length]


async def test_a_medium_call_is_copied_on_a_thread(data_dir: Path) -> None:
    """Between SMALL_BYTES and SMALL_OFF_LOOP_BYTES the copy runs on a worker thread: the
    call waits once (for the thread), never for the bulk path's round trips; a blocking
    caller copies on its own thread."""
    path = write_file(data_dir / "medium", random_bytes(SMALL_BYTES + 12345, seed=5))
    waits = [0]
    got = await counting(lsio.read_many([(str(path),), (str(path), 7, 10)]), waits)
    assert got.stats.route == "small-thread" and waits[0] == 1
    assert bytes(got[0]) == path.read_bytes() and bytes(got[1]) == path.read_bytes()[7:17]
    got = served_by_small(lambda: lsio.read_many_sync([(str(path),)]))
    assert bytes(got[0]) == path.read_bytes()


async def test_cancelling_a_medium_call_leaves_out_buffers_alone(data_dir: Path) -> None:
    """Cancelled while the thread copies into the caller's buffers, the call returns only
    once the copy is over: nothing changes in them afterwards."""
    paths = [write_file(data_dir / f"m{i}", random_bytes(1 << 20, seed=i)) for i in range(3)]
    for _ in range(20):
        out = [np.zeros(1 << 20, np.uint8) for _ in paths]
        task = asyncio.ensure_future(lsio.read_many([(str(p),) for p in paths], out=out))
        await asyncio.sleep(0)  # the thread has the copy now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        before = [a.copy() for a in out]
        await asyncio.sleep(0.01)
        assert all(np.array_equal(a, b) for a, b in zip(out, before, strict=True))


def test_calls_beyond_the_limits_take_the_bulk_path(data_dir: Path) -> None:
    big = write_file(data_dir / "big", random_bytes(SMALL_OFF_LOOP_BYTES + 1))
    small = write_file(data_dir / "small", b"abc")
    got = lsio.read_many_sync([(str(big),)])
    assert got.stats.route == "bulk"
    assert bytes(got[0]) == big.read_bytes()
    served_by_small(lambda: lsio.read_many_sync([(str(small),)] * SMALL_REQUESTS))
    # longer lists: the split small path (tests/test_split.py), but not with route="bulk"
    many = [(str(small),)] * (SMALL_REQUESTS + 1)
    served_by_small(lambda: lsio.read_many_sync(many))
    assert lsio.Reader(route="bulk").read_many_sync(many).stats.route == "bulk"


async def test_no_descriptor_is_left_open(files: list[Path], data_dir: Path) -> None:
    baseline: dict[int, str] = {}
    for i in range(51):
        if i == 1:  # after one round, which made this loop's ring (it lives with the loop)
            baseline = open_fds()
        await lsio.read_many([(str(f),) for f in files])
        await lsio.read_many([(str(files[0]),), (str(data_dir / "nope"),)], missing_ok=True)
        with pytest.raises(FileNotFoundError):
            await lsio.read_many([(str(files[0]),), (str(data_dir / "nope"),)])
        with pytest.raises(ValueError):
            await lsio.read_many([(str(files[0]),)], out=[bytearray(1)])
    assert not new_fds(baseline)


async def test_concurrent_small_calls_and_cancellation(files: list[Path]) -> None:
    """Many concurrent one-chunk calls each return their own bytes; cancelled ones never
    disturb the others."""
    want = [f.read_bytes() for f in files]

    async def one(i: int) -> bytes:
        (chunk,) = await lsio.read_many([(str(files[i % len(files)]),)])
        return bytes(chunk)

    tasks = [asyncio.ensure_future(one(i)) for i in range(64)]
    for t in tasks[::3]:
        t.cancel()
    outcome = await asyncio.gather(*tasks, return_exceptions=True)
    for i, got in enumerate(outcome):
        if i % 3 == 0:
            assert isinstance(got, asyncio.CancelledError)
        else:
            assert got == want[i % len(files)]


async def test_concurrent_store_gets_are_one_small_call(files: list[Path],
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """zarr-python's concurrent ``get`` calls of one loop turn are read by one small call;
    a cancelled one leaves the others served."""
    from zarr.core.buffer import default_buffer_prototype

    from lsio.zarr import LsioStore

    store = LsioStore(str(files[0].parent))
    proto = default_buffer_prototype()
    names = [f.name for f in files]
    await store.get(names[0], proto)  # opens the store
    with caplog.at_level(logging.DEBUG, logger="lsio"):
        got = await asyncio.gather(*(store.get(n, proto) for n in names))
    calls = [r.getMessage() for r in caplog.records if "lsio.Stats(" in r.getMessage()]
    assert len(calls) == 1 and "route='small'" in calls[0], calls
    assert [g.to_bytes() for g in got] == [f.read_bytes() for f in files]
    tasks = [asyncio.ensure_future(store.get(n, proto)) for n in names]
    await asyncio.sleep(0)
    tasks[0].cancel()  # the leader, waiting for the others to join
    outcome = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcome[0], asyncio.CancelledError)
    assert [g.to_bytes() for g in outcome[1:]] == [f.read_bytes() for f in files[1:]]


def test_huge_sizes_cannot_wrap_the_total(files: list[Path]) -> None:
    """Sizes near 2**63 (a huge sparse file) summed over a few requests must not wrap the
    call's total to a small number (a small arena, then reads far past its end): the call
    is refused as too big, before any read or allocation."""
    fd = os.open(files[0], os.O_RDONLY)
    try:
        lib, ffi = _small.lib, _small.ffi
        table = ffi.new("long long[]", [fd, 1 << 62])  # one file, claimed 4 EiB
        res = ffi.new("long long[]", 3 * 4 + 2)
        arena = ffi.new("void **")
        got = lib.lsio_small_serve(4, [0, 0, -1] * 4, ffi.NULL, ffi.NULL,
                                   SMALL_OFF_LOOP_BYTES, 1, table, 1, 0, 1, 0, 0, res, arena)
        assert got == lib.LSIO_SMALL_BIG and arena[0] == ffi.NULL
        assert res[3 * 4 + 1] == (1 << 63) - 1  # the total, saturated
    finally:
        os.close(fd)
