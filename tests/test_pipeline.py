"""Per-chunk pipelines: steps run on the pinned workers as chunks arrive, in request order
results, errors naming the request and the step, bounded windows, cancellation."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from conftest import drop_cache, random_bytes
from servers import FaultServer, serving_faults

import lsio
import lsio._windows
from lsio import _pipeline


def _chunks(root: Path, n: int, size: int = 4096) -> list[tuple[np.ndarray, str]]:
    """n float32 chunks, zstd-compressed on disk: (original array, path)."""
    codec = numcodecs.Zstd(level=1)
    out = []
    for i in range(n):
        arr = np.arange(size, dtype="f4") * (i + 1)
        path = root / f"c{i}"
        path.write_bytes(codec.encode(arr))
        out.append((arr, str(path)))
    return out


async def test_decode_then_reduce(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 50)
    got = await lsio.read_many([(p,) for _, p in chunks],
                               pipeline=[numcodecs.Zstd(), lambda b: np.frombuffer(b, "f4")])
    assert len(got) == 50
    for (want, _), arr in zip(chunks, got, strict=True):
        np.testing.assert_array_equal(arr, want)


async def test_per_request_pipelines_and_function_form(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 6)
    reqs = [(p,) for _, p in chunks]
    listed = [[numcodecs.Zstd(), lambda b, i=i: float(np.frombuffer(b, "f4")[1]) + i]
              for i in range(6)]
    assert await lsio.read_many(reqs, pipeline=listed) == [float(k + 1) + k for k in range(6)]
    fn = await lsio.read_many(reqs, pipeline=lambda i: [numcodecs.Zstd()] if i % 2 else [])
    for i, ((want, path), out) in enumerate(zip(chunks, fn, strict=True)):
        raw = Path(path).read_bytes()
        assert bytes(out) == (want.tobytes() if i % 2 else raw)


async def test_copy_to_sink_fills_one_array(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 8, size=1024)
    merged = np.zeros((8, 1024), "f4")
    got = await lsio.read_many([(p,) for _, p in chunks],
                               pipeline=lambda i: [numcodecs.Zstd(), lsio.copy_to(merged, i)])
    assert got == [None] * 8
    np.testing.assert_array_equal(merged, np.stack([a for a, _ in chunks]))


async def test_step_error_names_request_and_step(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 4)
    (data_dir / "bad").write_bytes(b"not zstd at all")
    reqs = [(p,) for _, p in chunks] + [(str(data_dir / "bad"),)]
    with pytest.raises(RuntimeError) as info:
        await lsio.read_many(reqs, pipeline=[numcodecs.Zstd()])
    assert info.value.request_index == 4  # type: ignore[attr-defined]
    note = " ".join(info.value.__notes__)
    assert "step #0 (Zstd.decode)" in note and "request #4" in note and "bad" in note


async def test_windows_bound_memory_and_keep_order(data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pipeline, "WINDOW", 7)
    monkeypatch.setattr(lsio._windows, "WINDOW", 7)
    data = random_bytes(10_000)
    (data_dir / "f").write_bytes(data)
    reqs = [(str(data_dir / "f"), i * 100, 100) for i in range(50)]
    got = await lsio.read_many(reqs, pipeline=[bytes])
    assert got == [data[i * 100:(i + 1) * 100] for i in range(50)]


async def test_missing_files_give_none(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 2)
    reqs = [(chunks[0][1],), (str(data_dir / "nope"),), (chunks[1][1],)]
    got = await lsio.read_many(reqs, pipeline=[numcodecs.Zstd(), bytes], missing_ok=True)
    assert got[1] is None and got[0] == chunks[0][0].tobytes()
    with pytest.raises(FileNotFoundError):
        await lsio.read_many(reqs, pipeline=[bytes])


async def test_workers_are_pinned_one_per_core(data_dir: Path) -> None:
    (data_dir / "f").write_bytes(b"x" * 1000)
    seen: dict[str, set[int]] = {}

    def where(buf: memoryview) -> None:
        time.sleep(0.002)
        seen[threading.current_thread().name] = os.sched_getaffinity(0)

    await lsio.read_many([(str(data_dir / "f"), i, 1) for i in range(200)], pipeline=[where])
    cpus = sorted(os.sched_getaffinity(0))
    assert all(name.startswith("lsio-step") for name in seen)
    assert all(len(aff) == 1 for aff in seen.values())
    if len(cpus) > 1:
        assert len({min(a) for a in seen.values()}) > 1  # spread over cores


async def test_cancel_stops_handing_out_steps(data_dir: Path) -> None:
    (data_dir / "f").write_bytes(b"x" * 1000)
    started = []

    def slow(buf: memoryview) -> None:
        started.append(1)
        time.sleep(0.05)

    task = asyncio.ensure_future(lsio.read_many(
        [(str(data_dir / "f"), i, 1) for i in range(200)], pipeline=[slow]))
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(started)
    await asyncio.sleep(0.2)
    assert len(started) == count < 200  # nothing started after the cancellation returned


async def test_bad_pipelines_are_refused_early(data_dir: Path) -> None:
    (data_dir / "f").write_bytes(b"x")
    reqs = [(str(data_dir / "f"),)]
    with pytest.raises(TypeError, match="step #1"):
        await lsio.read_many(reqs, pipeline=[bytes, 42])
    with pytest.raises(ValueError, match="2 step lists for 1 requests"):
        await lsio.read_many(reqs, pipeline=[[bytes], [bytes]])
    with pytest.raises(ValueError, match="copy_to"):
        await lsio.read_many(reqs, pipeline=[bytes], out=[bytearray(1)])
    with pytest.raises(TypeError, match="pipeline must be"):
        await lsio.read_many(reqs, pipeline=42)  # type: ignore[arg-type]


def test_sync_twin_with_pipeline(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 3)
    got = lsio.read_many_sync([(p,) for _, p in chunks],
                              pipeline=[numcodecs.Zstd(), lambda b: np.frombuffer(b, "f4")])
    for (want, _), arr in zip(chunks, got, strict=True):
        np.testing.assert_array_equal(arr, want)


async def test_progress_with_pipeline(data_dir: Path) -> None:
    chunks = _chunks(data_dir, 12)
    seen: list[tuple[int, int, int]] = []
    await lsio.read_many([(p,) for _, p in chunks], pipeline=[numcodecs.Zstd()],
                         progress=lambda *a: seen.append(a))
    total = sum(Path(p).stat().st_size for _, p in chunks)
    assert seen[-1] == (12, 12, total)


async def test_windows_stat_only_their_own_files(data_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lsio._windows, "WINDOW", 7)
    chunks = _chunks(data_dir, 40, size=16)
    reader = lsio.Reader()
    seen: list[int] = []
    stat = reader._backend.stat

    async def counting(paths: list[str], **kw: object) -> object:
        seen.append(len(paths))
        return await stat(paths, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(reader._backend, "stat", counting)
    got = await reader.read_many([(p,) for _, p in chunks], pipeline=[numcodecs.Zstd(), bytes])
    assert got == [a.tobytes() for a, _ in chunks]
    assert sum(seen) == 40 and max(seen) <= 7


async def test_concurrent_and_nested_pipelines(data_dir: Path) -> None:
    """Two pipelined calls at once, and a step that itself runs a pipelined read (through
    the sync twin), both finish: calls do not share (or wait for) each other's workers."""
    chunks = _chunks(data_dir, 30)
    reqs = [(p,) for _, p in chunks]

    def nested(buf: memoryview) -> int:
        inner = lsio.read_many_sync(reqs[:2], pipeline=[numcodecs.Zstd(), len])
        return len(buf) + sum(inner)

    a, b = await asyncio.wait_for(asyncio.gather(
        lsio.read_many(reqs, pipeline=[numcodecs.Zstd(), len]),
        lsio.read_many(reqs[:3], pipeline=[nested])), timeout=60)
    assert a == [4096 * 4] * 30
    assert b == [Path(p).stat().st_size + 2 * 4096 * 4 for p in [c[1] for c in chunks[:3]]]


def test_window_bounds_cut_by_count_and_bytes() -> None:
    bounds = lsio._windows.window_bounds
    lengths = np.array([100] * 10, np.int64)
    assert bounds(lengths, 4, 1 << 30) == [(0, 4), (4, 8), (8, 10)]
    assert bounds(lengths, 100, 250) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    # a request bigger than the budget gets a window of its own; to-EOF reads count as 0
    assert bounds(np.array([50, 900, 50, -1, -1, 50], np.int64), 100, 200) == [
        (0, 1), (1, 2), (2, 6)]
    assert bounds(np.zeros(0, np.int64), 4, 100) == []


async def test_windows_bound_bytes_in_memory(data_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Large chunks: a window holds at most WINDOW_BYTES of them, however few they are."""
    monkeypatch.setattr(lsio._windows, "WINDOW_BYTES", 3 * 4096)
    paths = []
    for i in range(12):
        (data_dir / f"b{i}").write_bytes(bytes([i]) * 4096)
        paths.append(str(data_dir / f"b{i}"))
    reader = lsio.Reader()
    seen: list[int] = []
    stat = reader._backend.stat

    async def counting(paths: list[str], **kw: object) -> object:
        seen.append(len(paths))
        return await stat(paths, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(reader._backend, "stat", counting)
    got = await reader.read_many([(p, 0, 4096) for p in paths], pipeline=[bytes])
    assert got == [bytes([i]) * 4096 for i in range(12)]
    assert sum(seen) == 12 and max(seen) <= 3


async def test_decoded_windows_free_their_raw_bytes(data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A window's raw chunks are let go once they are decoded, not kept until the call
    ends: by the last chunk's step, no earlier window's buffer is alive."""
    import gc
    import weakref

    monkeypatch.setattr(lsio._windows, "WINDOW_BYTES", 4 * 4096)
    paths = []
    for i in range(32):
        (data_dir / f"w{i}").write_bytes(bytes([i]) * 4096)
        paths.append(str(data_dir / f"w{i}"))
    bases: dict[int, weakref.ref[object]] = {}
    alive: list[int] = []

    def steps(i: int) -> list[object]:
        def keep_base(buf: object) -> None:
            bases[i] = weakref.ref(memoryview(buf).obj)  # type: ignore[arg-type]
            if i == 31:
                gc.collect()
                alive.extend(k for k in range(16) if bases[k]() is not None)
        return [keep_base]

    await lsio.Reader(backend="uring").read_many([(p, 0, 4096) for p in paths],
                                                 pipeline=steps)
    assert sorted(bases) == list(range(32))
    assert alive == []


# -- no window waits for the slowest read of the window before it --------------------------

SLOW = b"slow chunk"


@pytest.fixture(scope="module")
def slow_server() -> Iterator[FaultServer]:
    yield from serving_faults({"s.bin": SLOW})


def _slow_first(server: FaultServer, root: Path, monkeypatch: pytest.MonkeyPatch
                ) -> list[tuple[str, int, int | None]]:
    """Windows of 7 requests: the first holds a URL answered after 2 s (``slowx1``) and 6
    cold local chunks, the next ones 21 more cold local chunks."""
    monkeypatch.setattr(lsio._windows, "WINDOW", 7)
    server.reset()
    paths = [p for _, p in _chunks(root, 27)]
    for p in paths:
        drop_cache(p)
    return [(server.url("slowx1", "s.bin"), 0, None), *((p, 0, None) for p in paths)]


async def test_chunks_are_decoded_while_a_slower_read_runs(
        slow_server: FaultServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of the slow read's window and of the window after it run their steps as
    they land, seconds before the slow one: no window waits for the slowest read of the
    one before. Results stay in request order, byte-exact."""
    requests = _slow_first(slow_server, data_dir, monkeypatch)
    at: dict[int, float] = {}
    lock = threading.Lock()

    def stamp(i: int) -> list[object]:
        def step(buf: memoryview) -> bytes:
            with lock:
                at[i] = time.monotonic()
            return bytes(buf)
        return [step]

    got = await lsio.read_many(requests, pipeline=stamp)
    assert got[0] == SLOW
    assert got[1:] == [Path(p).read_bytes() for p, _, _ in requests[1:]]
    assert max(at[i] for i in range(1, 14)) < at[0] - 1.0  # windows 0 and 1, before it


async def test_a_failing_step_ends_every_window_read(
        slow_server: FaultServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step failing on a landed chunk while the slow read (and the next window's reads)
    run: raised at once, naming its request; no step runs after the call raised."""
    requests = _slow_first(slow_server, data_dir, monkeypatch)
    ran: list[int] = []

    def steps(i: int) -> list[object]:
        def step(buf: memoryview) -> None:
            ran.append(i)
            if i == 3:
                raise ValueError("bad chunk")
        return [step]

    start = time.monotonic()
    with pytest.raises(ValueError, match="bad chunk") as info:
        await lsio.read_many(requests, pipeline=steps)
    assert time.monotonic() - start < 1.5  # the slow read takes 2 s
    assert info.value.request_index == 3  # type: ignore[attr-defined]
    count = len(ran)
    await asyncio.sleep(2.2)  # the slow chunk would have landed by now
    assert len(ran) == count and 0 not in ran


async def test_cancelled_while_a_slower_read_runs(
        slow_server: FaultServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled after the landed chunks of two windows ran their steps, with the slow read
    in flight: the cancellation returns at once, and no step runs after it."""
    requests = _slow_first(slow_server, data_dir, monkeypatch)
    ran: list[int] = []
    task = asyncio.ensure_future(lsio.read_many(
        requests, pipeline=lambda i: [lambda buf: ran.append(i)]))
    deadline = time.monotonic() + 1.5
    while len(ran) < 13 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert len(ran) >= 13  # windows 0 (but the slow one) and 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(ran)
    await asyncio.sleep(2.2)
    assert len(ran) == count and 0 not in ran
