"""Event loops: the sync twin inside a running loop, several loops in several threads (one
ring per loop), uvloop, descriptor hygiene, cancellation under load, concurrent calls."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop
from conftest import check_ok, new_fds, open_fds, random_bytes, run_python, write_file
from reference import expected_bytes

import lsio
from lsio import _ring


def check(results: lsio.Results, requests: list[tuple[str, int, int | None]]) -> None:
    assert len(results) == len(requests)
    for i, r in enumerate(requests):
        assert bytes(results[i]) == expected_bytes(*r), f"request #{i} {r}"


@pytest.fixture(scope="module")
def small_files(module_data_dir: Path) -> list[str]:
    d = module_data_dir / "small"
    d.mkdir()
    return [str(write_file(d / f"s{i}", random_bytes(1 + i % 300, seed=i))) for i in range(300)]


@pytest.fixture(scope="module")
def medium_file(module_data_dir: Path) -> str:
    return str(write_file(module_data_dir / "medium.bin", random_bytes(4 << 20, seed=77)))


def ranges(path: str, n: int, size: int, step: int = 4099) -> list[tuple[str, int, int | None]]:
    total = os.path.getsize(path)
    return [(path, (i * step) % total, size) for i in range(n)]


# -- sync twin ----------------------------------------------------------------------------

async def test_sync_twin_inside_running_loop(backend: lsio.Reader, small_files: list[str]
                                             ) -> None:
    """``read_many_sync`` called from a coroutine (a Jupyter cell) must not deadlock or
    complain about the running loop."""
    requests = [(p, 0, None) for p in small_files[:50]] + [(small_files[0], -5, 3)]
    asyncio.get_running_loop()  # we are inside a running loop
    check(backend.read_many_sync(requests), requests)
    check(lsio.read_many_sync(requests), requests)
    # and the loop is still fine afterwards
    check(await backend.read_many(requests), requests)


def test_sync_twin_without_loop(backend: lsio.Reader, small_files: list[str]) -> None:
    requests = [(p, 1, 10) for p in small_files[:20]]
    for _ in range(3):
        check(backend.read_many_sync(requests), requests)


def test_sync_twin_from_lsio_own_loop_thread_refuses(small_files: list[str]) -> None:
    """Blocking on lsio's private loop from that loop would deadlock: it must raise."""
    lsio.read_many_sync([])  # start the private loop

    async def nested() -> Any:
        return lsio.read_many_sync([(small_files[0], 0, 1)])

    from lsio import _sync

    fut = asyncio.run_coroutine_threadsafe(nested(), _sync._get_loop())
    with pytest.raises(RuntimeError, match="own loop thread"):
        fut.result(timeout=10)


def test_sync_twin_from_many_threads(backend: lsio.Reader, small_files: list[str]) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            requests = [(p, k, 7) for p in small_files[k::8]]
            for _ in range(5):
                check(backend.read_many_sync(requests), requests)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


# -- several loops ------------------------------------------------------------------------

def _in_threads(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            barrier.wait(10)
            out[k] = fn(k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a reading thread hung"
    assert not errors, errors
    return out


def test_two_loops_in_two_threads(backend: lsio.Reader, medium_file: str,
                                  small_files: list[str]) -> None:
    def one(k: int) -> tuple[int, int]:
        requests = ranges(medium_file, 3000, 1000 + k, step=4099 + k) + [
            (p, k, None) for p in small_files]

        async def main() -> tuple[int, int]:
            loop = asyncio.get_running_loop()
            results = await asyncio.gather(*(backend.read_many(requests) for _ in range(3)))
            for r in results:
                check(r, requests)
            if backend.backend == "uring":
                return id(loop), id(_ring.ring_for_loop(loop))
            return id(loop), 0

        return asyncio.run(main())

    (loop_a, ring_a), (loop_b, ring_b) = _in_threads(2, one)
    assert loop_a != loop_b
    if backend.backend == "uring":
        assert ring_a != ring_b, "two loops shared one ring"


def test_ring_is_per_loop_and_reused() -> None:
    """Each loop gets its own ring, created once and reused by every call on that loop,
    while two loops read at the same time."""
    reader = lsio.Reader(backend="uring")
    path = __file__

    def one(k: int) -> tuple[int, int, bool]:
        async def main() -> tuple[int, int, bool]:
            loop = asyncio.get_running_loop()
            await reader.read_many([(path, 0, 10)])
            ring = _ring.ring_for_loop(loop)
            for _ in range(20):
                check(await reader.read_many([(path, k, 100)] * 50), [(path, k, 100)] * 50)
            same = _ring.ring_for_loop(loop) is ring
            return id(ring), id(loop), same and ring.loop is loop

        return asyncio.run(main())

    results = _in_threads(2, one)
    assert all(same for _, _, same in results)
    assert results[0][0] != results[1][0]


def test_loops_in_threads_and_sync_twin_together(medium_file: str) -> None:
    """Four user loops plus lsio's private loop, all reading at once."""
    reader = lsio.Reader(backend="uring")
    requests = ranges(medium_file, 500, 3000)

    def one(k: int) -> None:
        if k % 2:
            for _ in range(5):
                check(reader.read_many_sync(requests), requests)
        else:
            async def main() -> None:
                for _ in range(5):
                    check(await reader.read_many(requests), requests)
            asyncio.run(main())

    _in_threads(5, one)


# -- uvloop -------------------------------------------------------------------------------

def test_uvloop(backend: lsio.Reader, medium_file: str, small_files: list[str]) -> None:
    requests = ranges(medium_file, 5000, 777) + [(p, 0, None) for p in small_files]

    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        check(await backend.read_many(requests), requests)
        seen = {i: bytes(b) async for i, b in backend.iter_many(requests[:300])}
        assert sorted(seen) == list(range(300))
        results = await asyncio.gather(*(backend.read_many(requests[k::10]) for k in range(10)))
        for k, r in enumerate(results):
            check(r, requests[k::10])

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    uvloop.run(main())


# -- concurrency on one loop --------------------------------------------------------------

async def test_concurrent_calls_on_one_loop(backend: lsio.Reader, medium_file: str,
                                            small_files: list[str]) -> None:
    calls = [ranges(medium_file, 50 + k, 100 + 37 * k, step=4096 + k) +
             [(small_files[k], -k, None)] for k in range(50)]
    results = await asyncio.gather(*(backend.read_many(c) for c in calls))
    for r, c in zip(results, calls, strict=False):
        check(r, c)


async def test_concurrent_read_many_and_iter_many(backend: lsio.Reader,
                                                  medium_file: str) -> None:
    requests = ranges(medium_file, 400, 2000)

    async def via_iter() -> dict[int, bytes]:
        return {i: bytes(b) async for i, b in backend.iter_many(requests)}

    out = await asyncio.gather(*(via_iter() for _ in range(5)),
                               *(backend.read_many(requests) for _ in range(5)))
    for o in out[:5]:
        assert o == {i: expected_bytes(*r) for i, r in enumerate(requests)}
    for o in out[5:]:
        check(o, requests)


async def test_more_concurrent_calls_than_ring_slots(small_files: list[str]) -> None:
    """More simultaneous calls than the ring has batch slots (4096): the rest wait."""
    reader = lsio.Reader(backend="uring")
    calls = [[(small_files[k % 300], k % 7, 5)] for k in range(4500)]
    results = await asyncio.gather(*(reader.read_many(c) for c in calls))
    for r, c in zip(results, calls, strict=False):
        assert bytes(r[0]) == expected_bytes(*c[0])


# -- descriptors --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def many_files(module_data_dir: Path) -> list[str]:
    d = module_data_dir / "many"
    d.mkdir()
    paths = []
    for i in range(20_000):
        p = d / f"{i:05d}"
        p.write_bytes(i.to_bytes(4, "little") * 4)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("backend_name", ["uring", "threads"])
def test_no_fd_leak_with_fresh_loops(backend_name: str, many_files: list[str]) -> None:
    reader = lsio.Reader(backend=backend_name)
    files = many_files[:10_000]
    requests = [(p, 0, None) for p in files]

    async def main() -> lsio.Results:
        return await reader.read_many(requests)

    want = b"".join(i.to_bytes(4, "little") * 4 for i in range(10_000))

    def one_round() -> None:
        results = asyncio.run(main())
        assert len(results) == 10_000 and results.nbytes == 16 * 10_000
        assert b"".join(results) == want
        del results
        gc.collect()

    # warm up twice (the second surely from the page cache): lsio's page-cache worker
    # threads and their rings are created once and live for the process
    one_round()
    one_round()
    baseline = open_fds()
    for _ in range(3):
        one_round()
        assert not new_fds(baseline)
    # and a loop that was closed with its ring idle does not keep descriptors either
    asyncio.run(main())
    gc.collect()
    assert not new_fds(baseline)


NOFILE_SCRIPT = r"""
import asyncio, gc, hashlib, os, resource, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
import lsio
backend, listing = sys.argv[1], sys.argv[2]
paths = open(listing).read().split("\n")
reader = lsio.Reader(backend=backend)
async def main():
    r = await reader.read_many([(p, 0, None) for p in paths])
    return len(r), r.nbytes, hashlib.sha256(b"".join(r)).hexdigest()
def fds():
    return len(os.listdir("/proc/self/fd"))
first = asyncio.run(main())
gc.collect()
base = fds()
again = asyncio.run(main())
gc.collect()
assert base == fds(), (base, fds())
assert first == again, (first, again)
print(*first)
"""


@pytest.mark.parametrize("backend_name", ["uring", "threads"])
def test_20000_files_under_ulimit_256(backend_name: str, many_files: list[str],
                                      module_data_dir: Path) -> None:
    listing = module_data_dir / "listing.txt"
    listing.write_text("\n".join(many_files))
    out = check_ok(run_python(NOFILE_SCRIPT, backend_name, str(listing), timeout=120))
    n, nbytes, digest = out.split()
    want = hashlib.sha256(b"".join(Path(p).read_bytes() for p in many_files)).hexdigest()
    assert (int(n), int(nbytes), digest) == (20_000, 20_000 * 16, want)


# -- cancellation under load --------------------------------------------------------------

@pytest.fixture(scope="module")
def big_file(module_data_dir: Path) -> str:
    rng = np.random.default_rng(64)
    path = module_data_dir / "big64.bin"
    path.write_bytes(rng.integers(0, 256, 64 << 20, dtype=np.uint8).tobytes())
    return str(path)


CANCEL_SCRIPT = r"""
import asyncio, faulthandler, gc, os, sys, threading
faulthandler.dump_traceback_later(45, exit=True)  # a hang: dump every thread's stack, exit
import numpy as np
import lsio
from lsio import _ring, _ringpool
from lsio._defaults import RING_FILES
backend, direct, path = sys.argv[1], {"1": True, "0": False}[sys.argv[2]], sys.argv[3]
data = np.fromfile(path, np.uint8)
reader = lsio.Reader(backend=backend, direct=direct)
rng = np.random.default_rng(1)
offsets = rng.integers(0, len(data) - 8192, 20_000)
requests = [(path, int(o), 4096 + int(o) % 4096) for o in offsets]

def fds():
    return len(os.listdir("/proc/self/fd"))

def verify(results, reqs):
    for i, (_, o, n) in enumerate(reqs):
        if bytes(results[i]) != data[o:o + n].tobytes():
            raise AssertionError(f"request #{i} has wrong bytes")

def worker_threads_idle(what):
    # lsio's page-cache worker threads (engines that have them) must all be free again once
    # cancelled work has drained, else later calls queue forever and exit blocks
    pool = getattr(_ringpool, "_pool", None)
    if pool is None:
        return
    n = pool._max_workers
    barrier = threading.Barrier(n + 1)
    for _ in range(n):
        pool.submit(barrier.wait, 5)
    try:
        barrier.wait(5)
    except threading.BrokenBarrierError:
        raise AssertionError(f"{what}: lsio worker threads stay stuck in a cancelled read")

async def settle(loop, what):
    # cancelled work drains in the background: wait (bounded) until the ring is idle
    if backend != "uring":
        await asyncio.sleep(0.05)
        return
    ring = _ring.ring_for_loop(loop)
    for _ in range(200):
        if not ring._live:
            break
        await asyncio.sleep(0.025)
    stuck = [(b.c.nopen, b.c.inflight, b.c.stopping) for b in ring._live.values()]
    assert not stuck, f"{what}: cancelled batches never finish (nopen, inflight, stopping): {stuck}"
    if hasattr(_ring.lib, "lsio_ring_free_files"):  # engines with a registered-file table
        free = _ring.lib.lsio_ring_free_files(ring._ptr)
        assert free == RING_FILES, f"{what}: registered file slots leaked: {free} free"
    worker_threads_idle(what)

async def main():
    loop = asyncio.get_running_loop()
    verify(await reader.read_many(requests[:3000]), requests[:3000])  # warm up
    verify(await reader.read_many(requests), requests)
    base = fds()
    for k in range(20):
        task = asyncio.ensure_future(reader.read_many(requests))
        await asyncio.sleep(0.001 * (1 + k % 4))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await settle(loop, f"cancel #{k}")
    # cancellations back to back, without waiting for the previous one to drain
    for k in range(20):
        task = asyncio.ensure_future(reader.read_many(requests))
        await asyncio.sleep(0.0005 * (k % 5))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await settle(loop, "back-to-back cancels")
    # an iter_many abandoned half way
    agen = reader.iter_many(requests)
    n = 0
    async for i, buf in agen:
        n += 1
        if n == 100:
            break
    await agen.aclose()
    await settle(loop, "abandoned iter_many")
    for _ in range(3):
        verify(await asyncio.wait_for(reader.read_many(requests), 20), requests)
    await settle(loop, "after the reads")
    assert fds() == base, (base, fds())
    print("ok")

# a loop closed while a read is still in flight; the next loop must work
async def abandon():
    asyncio.ensure_future(reader.read_many(requests))
    await asyncio.sleep(0.002)

async def after():
    verify(await asyncio.wait_for(reader.read_many(requests), 20), requests)

try:
    asyncio.run(main())
    asyncio.run(abandon())
    asyncio.run(after())
    gc.collect()
    worker_threads_idle("after a loop closed mid-read")
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # do not wait for worker threads that may be stuck
print("ok2")
sys.stdout.flush()
os._exit(0)  # interpreter exit has its own test (test_interpreter_exit_is_clean)
"""


@pytest.mark.parametrize(("backend_name", "direct"),
                         [("uring", True), ("uring", False), ("threads", False)],
                         ids=["uring-direct", "uring-page-cache", "threads"])
def test_cancellation_under_load(backend_name: str, direct: bool, big_file: str) -> None:
    """Cancel big reads a few ms in, 40 times; the process must not crash or hang, later
    reads must be right, and nothing may leak. Runs in a child so a crash or a hang is a
    clean test failure."""
    import subprocess

    try:
        proc = run_python(CANCEL_SCRIPT, backend_name, "1" if direct else "0", big_file,
                          timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung after cancellations (killed after {exc.timeout} s); output:\n"
                    f"{exc.stdout!r}\n{exc.stderr!r}")
    out = check_ok(proc)
    assert "ok\n" in out and "ok2" in out, out
    # asyncio logs "exception was never retrieved" for futures lsio abandoned
    assert "never retrieved" not in proc.stderr, proc.stderr[-3000:]



# -- interpreter exit ---------------------------------------------------------------------

EXIT_SCRIPTS = {
    "sync-twin": """
import lsio, sys
r = lsio.read_many_sync([sys.argv[1]])
lsio.Reader().read_many_sync([sys.argv[1], (sys.argv[1], 2, 5)])
assert bytes(r[0]) == open(sys.argv[1], "rb").read()
""",
    "sync-twin-then-readers": """
import lsio, sys
lsio.backend_name()
lsio.read_many_sync([(sys.argv[1], 2, 5)])
lsio.Reader(backend="threads")
lsio.Reader().read_many_sync([sys.argv[1]])
lsio.Reader(backend="uring")
""",
    "sync-twin-busy-at-exit": """
import lsio, sys, threading, time
def worker():  # a background thread still reading when the program ends
    while True:
        lsio.read_many_sync([(sys.argv[1], i % 7, 3) for i in range(500)])
for _ in range(2):
    threading.Thread(target=worker, daemon=True).start()
time.sleep(0.3)
""",
    "asyncio-run": """
import asyncio, lsio, sys
async def main():
    await lsio.Reader(backend="uring").read_many([sys.argv[1]] * 10)
asyncio.run(main())
""",
    "exit-with-cancelled-reads": """
import asyncio, lsio, sys
async def main():
    t = asyncio.ensure_future(lsio.read_many([(sys.argv[2], i, 100) for i in range(5000)]))
    await asyncio.sleep(0.001)
    t.cancel()
asyncio.run(main())
""",
}


@pytest.mark.parametrize("scenario", list(EXIT_SCRIPTS))
def test_interpreter_exit_is_clean(scenario: str, medium_file: str, module_data_dir: Path
                                   ) -> None:
    """Programs that used lsio must exit with status 0: at exit lsio tears its rings down
    while its private loop thread may still be running. Racy by nature, so each program
    runs 20 times."""
    tiny = module_data_dir / "tiny.txt"
    tiny.write_bytes(b"0123456789")
    import subprocess
    import sys

    code = "import faulthandler; faulthandler.enable()\n" + EXIT_SCRIPTS[scenario]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSIO_")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny), medium_file], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            results.append(("hung", err))
            continue
        results.append((p.returncode, err))
    bad = [(rc, err) for rc, err in results if rc != 0]
    assert not bad, (f"{len(bad)} of {len(results)} runs did not exit cleanly; first: "
                     f"status {bad[0][0]}\n{bad[0][1][-3000:]}")
