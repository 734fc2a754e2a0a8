"""The engine's per-chunk hook, ``read_each``: each chunk handed to a callback as it lands,
byte-exact on every schedule (inline, cold worker, worker parts, ring windows), with
``missing_ok``, read errors naming the request, a callback's error ending the call, and no
callback running once the call has returned (done, failed or cancelled)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from conftest import check_ok, drop_cache, run_python
from servers import FaultServer, serving_faults

import lsio
from lsio._each import read_each
from lsio._landing import _spread, runs_of

Route = Literal["auto", "small", "bulk"]


def _files(tmp_path: Path, n: int, size: int) -> list[str]:
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(size))
        paths.append(str(p))
    return paths


def _pread(path: str, offset: int, length: int | None) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if offset < 0:
            offset += size
        return os.pread(fd, size - offset if length is None else length, offset)
    finally:
        os.close(fd)


class _Collect:
    """A thread-safe callback keeping a copy of each chunk and the thread it ran on."""

    def __init__(self) -> None:
        self.got: dict[int, bytes | None] = {}
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, i: int, view: memoryview | None) -> None:
        data = None if view is None else bytes(view)
        with self.lock:
            assert i not in self.got, f"chunk {i} handed over twice"
            self.got[i] = data
            self.threads.add(threading.get_ident())

    def run(self, start: int, results: lsio.Results) -> None:
        """The batch form: a run of consecutive requests, each chunk as the view form."""
        assert isinstance(results, lsio.Results) and len(results)
        for k, view in enumerate(results):
            assert (view is None) == bool(results.missing[k])
            self(start + k, view)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("route", ["auto", "bulk"])
@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("n", [1, 5, 300])
async def test_each_chunk_is_handed_over_byte_exact(tmp_path: Path, route: Route,
                                                    threads: bool, n: int,
                                                    batch: bool) -> None:
    """One call of 1, 5 or 300 requests (whole files, ranges, suffixes), on either route
    and either thread mode, per chunk or in runs (the batch form): every chunk once,
    equal to os.pread."""
    paths = _files(tmp_path, min(n, 40), 5000)
    requests: list[tuple[str, int, int | None]] = [
        (paths[i % len(paths)], *[(0, None), (100, 333), (-700, None), (4999, 1)][i % 4])
        for i in range(n)]
    cb = _Collect()
    reader = lsio.Reader(route=route)
    if batch:
        await read_each(reader, requests, on_chunks=cb.run, threads=threads,
                        work_bytes=64 << 10)
    else:
        await read_each(reader, requests, cb, threads=threads, work_bytes=64 << 10)
    assert sorted(cb.got) == list(range(n))
    for i, (path, offset, length) in enumerate(requests):
        assert cb.got[i] == _pread(path, offset, length), i


async def test_cold_chunks_are_exact_too(tmp_path: Path) -> None:
    """Chunks not in the page cache (one alone: the cold worker; many: ring windows)."""
    paths = _files(tmp_path, 100, 20000)
    for requests in ([(paths[0], 0, None)], [(p, 10, 9000) for p in paths]):
        for p in paths:
            drop_cache(p)
        cb = _Collect()
        await read_each(lsio.Reader(), requests, cb, threads=True, work_bytes=1 << 20)
        assert [cb.got[i] for i in range(len(requests))] == [
            _pread(*r) for r in requests]


@pytest.mark.parametrize(("direct", "chunks", "o_direct"),
                         [(None, 192, True), (None, 64, False), (False, 192, False)],
                         ids=["auto-3MiB", "auto-1MiB", "buffered-3MiB"])
async def test_cold_windows_of_a_big_call_read_with_o_direct(
        data_dir: Path, direct: bool | None, chunks: int, o_direct: bool) -> None:
    """The ring windows of a cold ``read_each`` returning ``SMALL_CALL_BYTES`` or more read
    with O_DIRECT (``direct=None``), as one ``read_many`` of them all would, though each
    window (64 chunks of 16 KiB here) is smaller; a smaller call, or ``direct=False``, reads
    through the page cache."""
    from conftest import make_cold, resident_pages

    paths = _files(data_dir, 4, 48 * 16384)
    requests = [(p, k * 16384, 16384) for p in paths for k in range(48)][:chunks]
    for p in paths:
        make_cold(p)
    cb = _Collect()
    await read_each(lsio.Reader(backend="uring", direct=direct), requests, on_chunks=cb.run,
                    threads=True, work_bytes=65536)
    pages = sum(resident_pages(p) for p in paths)  # before anything else reads them
    assert [cb.got[i] for i in range(len(requests))] == [_pread(*r) for r in requests]
    read_pages = chunks * 16384 // 4096
    if o_direct:  # (the small path's probes may start some readahead)
        assert pages < read_pages // 2, f"{pages} of {read_pages} pages cached: buffered"
    else:
        assert pages >= read_pages, f"only {pages} of {read_pages} pages cached"


async def test_a_worker_callbacks_error_is_raised_however_the_turns_fall(
        tmp_path: Path) -> None:
    """A callback raising on a worker ends the call with its error every time, also when
    the worker's job has ended before the loop learns of the failure (it learns a loop
    turn later: such a call returned, losing the error and the chunks it skipped, in
    ~1 of 400 calls here)."""
    paths = _files(tmp_path, 2, 4096)
    reader = lsio.Reader(route="bulk")  # the ring windows, callbacks on the workers

    def boom(start: int, results: lsio.Results) -> None:
        raise RuntimeError(f"callback failed at {start}")

    for n in (2, 64):
        requests = [(paths[k % 2], 0, 4096) for k in range(n)]
        for _ in range(600):
            with pytest.raises(RuntimeError, match="callback failed"):
                await read_each(reader, requests, on_chunks=boom, threads=True,
                                work_bytes=4096)


async def test_windows_read_let_their_raw_bytes_go(tmp_path: Path) -> None:
    """Ring windows: a window's raw chunks are let go once handed over, not kept until the
    call ends (with 100 files of 1 024 chunks each over HTTP, that was every stored byte)."""
    import gc
    import weakref

    paths = _files(tmp_path, 8, 64 * 4096)
    requests = [(p, k * 4096, 4096) for p in paths for k in range(64)]  # 8 windows of 64
    for p in paths:
        drop_cache(p)
    bases: dict[int, weakref.ref[object]] = {}
    alive: list[int] = []

    def on_chunk(i: int, view: memoryview) -> None:
        assert bytes(view) == _pread(*requests[i])
        bases[i] = weakref.ref(view.obj)
        if len(bases) == len(requests):  # the last chunk: the first windows' bytes are gone
            gc.collect()
            alive.extend(k for k in range(128) if bases[k]() is not None)

    await read_each(lsio.Reader(backend="uring"), requests, on_chunk)
    assert len(bases) == len(requests)
    assert alive == []


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("threads", [False, True])
async def test_missing_files_are_none_with_missing_ok(tmp_path: Path, threads: bool,
                                                      batch: bool) -> None:
    paths = _files(tmp_path, 3, 100)
    gone = str(tmp_path / "gone")
    requests = [(paths[0], 0, None), (gone, 0, None), (paths[2], 5, 10)] * 30
    cb = _Collect()
    if batch:
        await read_each(lsio.Reader(), requests, on_chunks=cb.run, missing_ok=True,
                        threads=threads)
    else:
        await read_each(lsio.Reader(), requests, cb, missing_ok=True, threads=threads)
    assert all(cb.got[i] is None for i in range(1, len(requests), 3))
    assert cb.got[0] == _pread(paths[0], 0, None) and cb.got[2] == _pread(paths[2], 5, 10)
    with pytest.raises(FileNotFoundError) as err:
        await read_each(lsio.Reader(), requests, _Collect(), threads=threads)
    assert err.value.filename == gone  # the read error names the request


@pytest.mark.parametrize("route", ["auto", "bulk"])
async def test_a_callbacks_error_ends_the_call_and_none_runs_after(tmp_path: Path,
                                                                   route: Route) -> None:
    paths = _files(tmp_path, 50, 1000)
    requests = [(p, 0, None) for p in paths] * 4
    running, ran_after = [0], []
    lock = threading.Lock()
    done = threading.Event()

    class Boom(Exception):
        pass

    def cb(i: int, view: Any) -> None:
        with lock:
            running[0] += 1
            if done.is_set():
                ran_after.append(i)
        try:
            if i == 77:
                raise Boom(i)
            threading.Event().wait(0.001)
        finally:
            with lock:
                running[0] -= 1

    with pytest.raises(Boom):
        await read_each(lsio.Reader(route=route), requests, cb, threads=True)
    done.set()
    with lock:
        assert running[0] == 0
    threading.Event().wait(0.05)
    assert not ran_after


async def test_threads_run_callbacks_on_the_workers(tmp_path: Path) -> None:
    """With ``threads=True`` a big call's callbacks run on the pinned workers (not the
    caller's thread); without it, all on the caller's thread."""
    paths = _files(tmp_path, 200, 4096)
    requests = [(p, 0, None) for p in paths]
    me = threading.get_ident()
    routes: tuple[Route, ...] = ("auto", "bulk")
    for route in routes:
        cb = _Collect()
        await read_each(lsio.Reader(route=route), requests, cb, threads=True,
                        work_bytes=1 << 20)
        assert cb.threads and me not in cb.threads, route
        cb = _Collect()
        await read_each(lsio.Reader(route=route), requests, cb, threads=False)
        assert cb.threads == {me}, route


async def test_a_few_cached_chunks_are_handed_over_inline(tmp_path: Path) -> None:
    """A few cached chunks of little work: read and handed over on the caller's thread,
    no thread hop, even with ``threads=True``."""
    paths = _files(tmp_path, 3, 4096)
    cb = _Collect()
    await read_each(lsio.Reader(), [(p, 0, None) for p in paths], cb, threads=True,
                    work_bytes=4096)
    assert cb.threads == {threading.get_ident()}


class _CountingReader(lsio.Reader):
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.read_many_calls = 0

    async def read_many(self, requests: Any, **kwargs: Any) -> Any:
        self.read_many_calls += 1
        return await super().read_many(requests, **kwargs)


async def test_file_urls_take_the_small_path_as_paths_do(tmp_path: Path) -> None:
    """``file://`` URLs (kerchunk's local references) are local files: cached chunks are read
    by the workers' small path as plain paths are, not by ring windows (which held several
    windows of stored bytes at once), byte-exact; percent-encoding is decoded."""
    (tmp_path / "a dir").mkdir()
    paths = _files(tmp_path / "a dir", 50, 20000)
    requests = [("file://" + p.replace(" ", "%20"), 100 * i, 9000) for i, p in
                enumerate(paths * 4)]
    reader = _CountingReader()
    cb = _Collect()
    await read_each(reader, requests, on_chunks=cb.run, threads=True, work_bytes=64 << 10)
    assert reader.read_many_calls == 0
    assert [cb.got[i] for i in range(len(requests))] == [
        _pread(p, o, n) for p, o, n in
        ((paths[i % 50], 100 * i, 9000) for i in range(len(requests)))]


def test_a_cancelled_call_leaves_no_callback_running(tmp_path: Path) -> None:
    """Cancelled while callbacks run on the workers: once the cancellation is through, no
    callback runs or starts (in a child: a hang fails by timeout)."""
    _files(tmp_path, 300, 2048)
    code = """
        import asyncio, sys, threading, time
        import lsio
        from lsio._each import read_each

        root = sys.argv[1]
        requests = [(f"{root}/f{i}", 0, None) for i in range(300)]
        state = {"running": 0, "after": 0, "calls": 0}
        lock = threading.Lock()
        cancelled = threading.Event()
        started = threading.Event()

        def cb(i, view):
            with lock:
                state["running"] += 1
                state["calls"] += 1
                if cancelled.is_set():
                    state["after"] += 1
            started.set()
            time.sleep(0.01)
            with lock:
                state["running"] -= 1

        async def main():
            for route in ("auto", "bulk"):
                cancelled.clear(); started.clear(); state["calls"] = 0
                task = asyncio.ensure_future(read_each(
                    lsio.Reader(route=route), requests, cb, threads=True))
                while not started.is_set():
                    await asyncio.sleep(0.001)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                else:
                    raise SystemExit("not cancelled")
                with lock:
                    assert state["running"] == 0, state
                cancelled.set()
                await asyncio.sleep(0.1)
                assert state["after"] == 0, state
                assert state["calls"] < 300, state
            print("ok")

        asyncio.run(main())
    """
    assert check_ok(run_python(code, str(tmp_path), timeout=60)).strip() == "ok"


async def test_one_callback_form_exactly(tmp_path: Path) -> None:
    paths = _files(tmp_path, 1, 10)
    cb = _Collect()
    for kwargs in ({}, {"on_chunk": cb, "on_chunks": cb.run}):
        with pytest.raises(TypeError, match="on_chunk or on_chunks"):
            await read_each(lsio.Reader(), [(paths[0], 0, None)], **kwargs)  # type: ignore[arg-type]


# -- each chunk as it lands: no window waits for its slowest read --------------------------

SLOW = b"slow chunk"


@pytest.fixture(scope="module")
def slow_server() -> Iterator[FaultServer]:
    yield from serving_faults({"s.bin": SLOW})


def _one_slow(server: FaultServer, tmp_path: Path, n: int = 99
              ) -> list[tuple[str, int, int | None]]:
    """Request 0 a URL answered after 2 s (``slowx1``); then ``n`` local files, cold, read
    by the ring in the same windows (the first one with the slow URL: a mixed call)."""
    server.reset()
    paths = _files(tmp_path, n, 3000)
    for p in paths:
        drop_cache(p)
    return [(server.url("slowx1", "s.bin"), 0, None), *((p, 0, None) for p in paths)]


class _Timed(_Collect):
    """:class:`_Collect`, keeping when each chunk was handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[int, float] = {}

    def __call__(self, i: int, view: memoryview | None) -> None:
        self.at[i] = time.monotonic()
        super().__call__(i, view)


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("threads", [False, True])
async def test_chunks_are_handed_over_while_a_slower_read_of_their_window_runs(
        slow_server: FaultServer, tmp_path: Path, threads: bool, batch: bool) -> None:
    """The local chunks of the slow URL's window (ring completions) and of the windows
    after it are handed over as they land, long before the slow one: a cold read waits
    for no slower read of its window (each chunk still byte-exact, each once)."""
    requests = _one_slow(slow_server, tmp_path)
    cb = _Timed()
    if batch:
        await read_each(lsio.Reader(), requests, on_chunks=cb.run, threads=threads)
    else:
        await read_each(lsio.Reader(), requests, cb, threads=threads)
    assert sorted(cb.got) == list(range(len(requests)))
    assert cb.got[0] == SLOW
    for i, (path, offset, length) in enumerate(requests[1:], 1):
        assert cb.got[i] == _pread(path, offset, length), i
    slow = cb.at[0]
    assert max(cb.at[i] for i in range(1, len(requests))) < slow - 1.0, (
        "a chunk waited for the slow read of its window")


@pytest.mark.parametrize("threads", [False, True])
async def test_a_callbacks_error_ends_the_call_before_a_slower_read(
        slow_server: FaultServer, tmp_path: Path, threads: bool) -> None:
    """A callback raising on a landed chunk (on a worker, or inline in the completion
    handling) ends the call at once (the slow read of its window is cancelled, not waited
    for), and no callback runs after the call raised."""
    requests = _one_slow(slow_server, tmp_path)
    cb = _Timed()

    class Boom(Exception):
        pass

    def failing(i: int, view: memoryview | None) -> None:
        cb(i, view)
        if i == 5:
            raise Boom

    start = time.monotonic()
    with pytest.raises(Boom):
        await read_each(lsio.Reader(), requests, failing, threads=threads)
    assert time.monotonic() - start < 1.5  # the slow read takes 2 s
    handed = dict(cb.at)
    await asyncio.sleep(2.2)  # the slow chunk would have landed by now
    assert cb.at == handed and 0 not in handed


async def test_cancelled_with_a_read_in_flight_no_callback_runs_after(
        slow_server: FaultServer, tmp_path: Path) -> None:
    """Cancelled once the landed chunks were handed over, while the slow read is in
    flight: the cancellation returns with no callback running, and none runs later."""
    requests = _one_slow(slow_server, tmp_path)
    cb = _Timed()
    task = asyncio.ensure_future(read_each(lsio.Reader(), requests, cb, threads=True))
    deadline = time.monotonic() + 1.5
    while len(cb.at) < len(requests) - 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert len(cb.at) == len(requests) - 1  # every chunk but the slow one, landed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    handed = dict(cb.at)
    await asyncio.sleep(2.2)
    assert cb.at == handed and 0 not in handed


@pytest.mark.parametrize(("finished", "local", "runs"), [
    pytest.param([3, 4, 5], [3, 4, 5], [(3, 3, 6)], id="one-run"),
    pytest.param([7, 2, 3, 9], [7, 2, 3, 9], [(2, 2, 4), (7, 7, 8), (9, 9, 10)],
                 id="out-of-order"),
    pytest.param([4, 5, 6], [0, 1, 2], [(4, 0, 3)], id="results-of-their-own"),
    pytest.param([4, 5, 6], [0, 2, 3], [(4, 0, 1), (5, 2, 4)], id="gap-in-results"),
])
def test_landed_requests_become_runs(finished: list[int], local: list[int],
                                     runs: list[tuple[int, int, int]]) -> None:
    """A wake-up's landed requests as runs of consecutive requests and result slots (the
    batch form's unit), in request order."""
    assert runs_of(np.array(finished, np.int64), np.array(local, np.int64)) == runs


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("sizes", [[1], [1, 1, 1], [10], [3, 50, 1, 7], [2] * 40])
def test_runs_spread_over_workers_each_chunk_once(workers: int, sizes: list[int]) -> None:
    """A wake-up's runs as at most one job per worker, of about as many chunks each; every
    chunk in exactly one job, each piece still a run of consecutive requests."""
    runs, at = [], 0
    for n in sizes:
        runs.append((at + 1000, at, at + n))
        at += n + 1
    parts = _spread(runs, workers)
    assert 1 <= len(parts) <= workers
    pieces = [piece for part in parts for piece in part]
    covered = sorted(k for _, a, b in pieces for k in range(a, b))
    assert covered == sorted(k for _, a, b in runs for k in range(a, b))
    assert all(first - a == 1000 for first, a, _ in pieces)  # request = slot + 1000
    counts = [sum(b - a for _, a, b in part) for part in parts]
    if len(parts) > 1:
        assert max(counts) - min(counts) <= max(counts) // 2 + 1
