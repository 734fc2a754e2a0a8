"""Deterministic close of what the local engine owns: the threads backend's pool, the loop's
ring, the process-wide worker rings and pipeline workers. Each runs in a subprocess: it
counts threads and descriptors of a fresh interpreter, and a close that hangs is killed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import check_ok, run_python


def _run(code: str, *args: str) -> str:
    return check_ok(run_python(code, *args, timeout=60)).strip()


def test_threads_backend_close_ends_its_threads(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 256)
    out = _run("""
        import asyncio, sys, threading, time
        from lsio._presets import PRESETS
        from lsio._request import normalize
        from lsio.backends.threads import ThreadsBackend

        def lsio_threads():
            return [t for t in threading.enumerate() if t.name.startswith("lsio_")]

        backend = ThreadsBackend(3)
        reqs = normalize([(sys.argv[1], 0, 10)] * 600)
        tune = next(iter(PRESETS.values()))
        stat = asyncio.run(backend.stat(reqs, tune=tune, missing_ok=False))
        assert int(stat.size[0]) == 65536 and lsio_threads()
        backend.close()
        backend.close()  # idempotent
        deadline = time.monotonic() + 10
        while lsio_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(len(lsio_threads()))
        # a later call starts a new pool
        stat = asyncio.run(backend.stat(reqs, tune=tune, missing_ok=False))
        print(int(stat.size[0]))
    """, str(path))
    assert out.split() == ["0", "65536"]


def test_ring_close_fails_waiting_calls_and_is_idempotent(tmp_path: Path) -> None:
    """A ring closed under a call makes the call fail (EBADF), never hang; the loop's next
    call gets a new ring."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)
    out = _run("""
        import asyncio, errno, sys
        import lsio
        from lsio import _ring
        from lsio._ringbatch import Batch, lib, path_table

        async def main():
            loop = asyncio.get_running_loop()
            ring = _ring.ring_for_loop(loop)
            stat = await ring.stat([sys.argv[1]], queue_depth=4)
            assert int(stat.size[0]) == 4096
            # a call still waiting on the ring when it closes
            waiting = Batch(lib.LSIO_PHASE_STAT, path_table([sys.argv[1]]), max_inflight=1,
                            fail_fast=False)
            waiting.future = loop.create_future()
            ring._live[id(waiting)] = waiting
            ring.close()
            ring.close()  # idempotent
            try:
                await asyncio.wait_for(waiting.future, 5)
            except OSError as exc:
                print(exc.errno == errno.EBADF)
            again = _ring.ring_for_loop(loop)
            print(again is not ring and not again.closed)
            got = await lsio.Reader(backend="uring").read_many([(sys.argv[1], 0, 4)])
            print(bytes(got[0]))

        asyncio.run(main())
    """, str(path))
    assert out.split() == ["True", "True", "b'xxxx'"]


def test_worker_pools_close_and_start_again() -> None:
    """The process-wide pools (worker rings, pipeline workers): close ends their threads
    (and frees the worker rings) without blocking, and the next use starts new ones."""
    out = _run("""
        import os, threading, time
        from lsio import _pipeline, _ringpool

        def named(prefix):
            return [t for t in threading.enumerate() if t.name.startswith(prefix)]

        def ring_fds():
            return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[io_uring]"
                       for fd in os.listdir("/proc/self/fd")
                       if os.path.exists(f"/proc/self/fd/{fd}"))

        def settle(prefix):
            deadline = time.monotonic() + 10
            while (named(prefix) or named("lsio-ring-close")) and time.monotonic() < deadline:
                time.sleep(0.01)

        base = ring_fds()
        _ringpool.pool(2)
        _pipeline.worker_pool().submit(int).result()
        assert len(named("lsio-ring")) == 2 and named("lsio-step") and ring_fds() == base + 2
        start = time.monotonic()
        _ringpool.close(); _ringpool.close()
        _pipeline.close_worker_pool(); _pipeline.close_worker_pool()
        assert time.monotonic() - start < 0.5
        settle("lsio-ring"); settle("lsio-step")
        print(len(named("lsio-ring")), len(named("lsio-step")), ring_fds() - base)
        _ringpool.pool(2)
        print(len(named("lsio-ring")), ring_fds() - base, _pipeline.worker_count() >= 1)
    """)
    assert out.split() == ["0", "0", "0", "2", "2", "True"]


def test_close_in_a_forked_child_leaves_the_parents_resources_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * 4096)
    out = _run("""
        import asyncio, os, sys
        import lsio
        from lsio import _pipeline, _ring, _ringpool
        from lsio.backends.threads import ThreadsBackend
        from lsio._presets import PRESETS
        from lsio._request import normalize

        reqs = normalize([(sys.argv[1], 0, 4)])
        tune = next(iter(PRESETS.values()))
        backend = ThreadsBackend(2)

        async def use():
            ring = _ring.ring_for_loop(asyncio.get_running_loop())
            await ring.stat([sys.argv[1]], queue_depth=4)
            await backend.stat(reqs, tune=tune, missing_ok=False)
            return ring

        loop = asyncio.new_event_loop()
        ring = loop.run_until_complete(use())
        _ringpool.pool(2)
        _pipeline.worker_pool().submit(int).result()
        pid = os.fork()
        if pid == 0:
            ring.close(); backend.close(); _ringpool.close(); _pipeline.close_worker_pool()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        # the parent's ring, pools and threads all still work
        loop.run_until_complete(use())
        print(_ringpool.pool(2).submit(int, "7").result(),
              _pipeline.worker_pool().submit(int, "8").result())
        print(bytes(lsio.read_many_sync([(sys.argv[1], 0, 4)])[0]))
    """, str(path))
    assert out.split() == ["0", "7", "8", "b'yyyy'"]
