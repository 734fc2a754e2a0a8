"""fork: a child of a process that used lsio gets a working lsio of its own, and never
touches what it inherited (the parent's rings, loops, pools, HTTP sessions).

Each test runs its script in a fresh interpreter with a hard timeout, and the script bounds
every forked child and fork pool itself, so a regression fails in seconds instead of hanging
(the bug: a child waited forever on the parent's dead loop thread or pools, and a child's
exit tore down the parent's ring)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import check_ok, run_python
from servers import Nginx

COMMON = r'''
import os, sys, threading, time, warnings, multiprocessing
# Python 3.12+ warns (DeprecationWarning) when a process with threads forks. Forking a
# process whose lsio threads run is exactly what these tests do, on purpose.
warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
import numpy as np
import lsio

DIR = sys.argv[1]
BLOCK = 4096


def make(name, size, seed):
    path = os.path.join(DIR, name)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(rng.integers(1, 256, size, dtype=np.uint8).tobytes())
    return path


def pread(path, offset, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def same(got, requests):
    assert len(got) == len(requests)
    for g, (path, offset, length) in zip(got, requests):
        assert bytes(g) == pread(path, offset, length), (path, offset, length)


def in_child(fn, timeout=30, normal_exit=False):
    """fn() in an os.fork child, which must exit 0 within ``timeout`` seconds (with
    ``normal_exit`` through ``sys.exit``: atexit hooks, finalizers and the interpreter's
    shutdown run in the child; else through ``os._exit``, as multiprocessing's do)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            if normal_exit:
                sys.exit(code)  # unwinds this script to its end, as a child's exit would
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, f"forked child failed: {status}"
            return
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("a forked child hung")
        time.sleep(0.02)


def in_pool(fn, timeout=30):
    """fn(k) for k in 0..3 in a multiprocessing fork pool of 2 (the Dask / DataLoader way)."""
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        return pool.map_async(fn, range(4)).get(timeout)
    except multiprocessing.TimeoutError:
        raise AssertionError("a fork pool's workers hung") from None
    finally:
        pool.terminate()
        pool.join()


def everywhere(check):
    """check() here, in a forked child, in a fork pool's workers, and here again."""
    check()
    in_child(check)
    assert in_pool(pool_check) == [0, 1, 2, 3]
    check()


def pool_check(k):
    CHECK()
    return k
'''


def _run(body: str, directory: Path, *args: str, timeout: float = 120) -> str:
    code = COMMON + textwrap.dedent(body)
    return check_ok(run_python(code, str(directory), *args, timeout=timeout))


# what the parent did first, and the check run everywhere after it
USES = {
    "uring-bulk": '''
        reader = lsio.Reader(backend="uring")
        paths = [make(f"f{i}", 64 << 10, i) for i in range(80)]
        REQS = [(p, 1000 * i, 5000) for i, p in enumerate(paths)]  # over the small path's 64
        def CHECK():
            same(reader.read_many_sync(REQS), REQS)
            same(lsio.read_many_sync(REQS[:3]), REQS[:3])
    ''',
    "threads": '''
        reader = lsio.Reader(backend="threads")
        paths = [make(f"f{i}", 64 << 10, i) for i in range(80)]
        REQS = [(p, 1000 * i, 5000) for i, p in enumerate(paths)]
        def CHECK():
            same(reader.read_many_sync(REQS), REQS)
    ''',
    "big-warm": '''
        path = make("big", 8 << 20, 1)
        REQS = [(path, 4096 * i, 4000) for i in range(2100)]  # enough to use worker rings
        def CHECK():
            same(lsio.read_many_sync(REQS), REQS)
    ''',
    "pipeline": '''
        paths = [make(f"f{i}", 4096, i) for i in range(100)]
        REQS = [(p, 0, 4096) for p in paths]
        def CHECK():
            got = lsio.read_many_sync(REQS, pipeline=[lambda b: bytes(b)[::-1]])
            assert got == [pread(p, 0, 4096)[::-1] for p in paths]
    ''',
    "zarr": '''
        import zarr
        arr = zarr.create_array(zarr.storage.LocalStore(os.path.join(DIR, "z")),
                                shape=(64, 48), chunks=(16, 16), dtype="i4")
        arr[:] = np.arange(64 * 48, dtype="i4").reshape(64, 48)
        def CHECK():
            got = lsio.zarr.read_sync(os.path.join(DIR, "z"), (slice(3, 60), slice(5, 40)))
            assert np.array_equal(got, np.arange(64 * 48, dtype="i4").reshape(64, 48)[3:60, 5:40])
    ''',
}


@pytest.mark.parametrize("use", sorted(USES))
def test_a_forked_child_reads_after_the_parent_used_lsio(use: str, tmp_path: Path) -> None:
    """After each kind of use, a forked child and a fork pool's workers read correctly, and
    so does the parent afterwards."""
    out = _run(USES[use] + '''
        CHECK()
        everywhere(CHECK)
        print("ok")
    ''', tmp_path)
    assert out.strip().endswith("ok")


def test_a_forked_child_reads_urls_after_the_parent_did(nginx: Nginx) -> None:
    """HTTP: the child makes its own session (the parent's keep-alive connections are
    shared sockets: using or closing them would corrupt the parent's)."""
    names = [f"fork-{i}.bin" for i in range(40)]
    for i, name in enumerate(names):
        (nginx.root / name).write_bytes(bytes([i + 1]) * (8192 + i))
    out = _run('''
        BASE, NAMES = sys.argv[2], sys.argv[3:]
        URLS = [BASE + n for n in NAMES]
        def CHECK():
            reqs = [(u, 100, 4000) for u in URLS]
            got = lsio.read_many_sync(reqs)
            assert [bytes(g) for g in got] == [bytes([i + 1]) * 4000 for i in range(len(URLS))]
            assert bytes(lsio.read_many_sync([(URLS[3], 0, 10)])[0]) == bytes([4]) * 10
        CHECK()
        everywhere(CHECK)
        print("ok")
    ''', nginx.root, nginx.url(""), *names)
    assert out.strip().endswith("ok")


def test_a_child_ending_its_loop_leaves_the_parent_ring_working(tmp_path: Path) -> None:
    """A child that runs ``asyncio.run(lsio.read_many(...))`` and exits normally (atexit
    hooks, finalizers) must not drain, unregister or free the ring it inherited: the
    parent's next cold read, which completes through that ring's eventfd, still returns."""
    _run('''
        import asyncio
        paths = [make(f"f{i}", 256 << 10, i) for i in range(80)]
        REQS = [(p, 4096 * i, 65536) for i, p in enumerate(paths)]

        def drop_cache():
            for p in paths:
                fd = os.open(p, os.O_RDONLY)
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)

        runner = asyncio.Runner()  # the parent keeps its loop, and so its ring
        same(runner.run(lsio.read_many(REQS)), REQS)
        lsio.read_many_sync(REQS)  # and lsio's private loop has a ring too

        in_child(lambda: same(asyncio.run(lsio.read_many(REQS)), REQS), normal_exit=True)
        for _ in range(2):
            drop_cache()
            same(runner.run(asyncio.wait_for(lsio.read_many(REQS), 20)), REQS)
            drop_cache()
            got = [None]
            t = threading.Thread(target=lambda: got.__setitem__(0, lsio.read_many_sync(REQS)),
                                 daemon=True)
            t.start()
            t.join(20)
            assert not t.is_alive(), "the parent's private loop no longer completes reads"
            same(got[0], REQS)
        runner.close()
        print("ok")
    ''', tmp_path)


def test_a_fork_while_another_thread_is_inside_a_call(tmp_path: Path) -> None:
    """A thread is inside a long pipelined call when the main thread forks: the child
    reads (its own loop, its own pools), and the parent's call ends correctly."""
    _run('''
        paths = [make(f"f{i}", 64 << 10, i) for i in range(100)]
        REQS = [(p, 0, 4096) for p in paths]
        started = threading.Event()

        def slow(b):
            started.set()
            time.sleep(0.02)
            return bytes(b)

        result = []
        t = threading.Thread(target=lambda: result.append(
            lsio.read_many_sync(REQS, pipeline=[slow])), daemon=True)
        t.start()
        assert started.wait(20)

        def CHECK():
            same(lsio.read_many_sync(REQS), REQS)
            same(lsio.Reader(backend="threads").read_many_sync(REQS), REQS)
            got = lsio.read_many_sync(REQS, pipeline=[lambda b: bytes(b)])
            same(got, REQS)

        in_child(CHECK)
        assert in_pool(pool_check) == [0, 1, 2, 3]
        t.join(60)
        assert not t.is_alive()
        same(result[0], REQS)
        print("ok")
    ''', tmp_path)


def test_a_fork_while_lsio_locks_are_held(tmp_path: Path) -> None:
    """Another thread holds every lock lsio has (as it would, for a moment, inside a call)
    when the process forks: the child's lsio works, and so does the parent's once the
    thread lets go."""
    _run('''
        import lsio._fork
        reader = lsio.Reader(backend="threads")
        paths = [make(f"f{i}", 64 << 10, i) for i in range(80)]
        REQS = [(p, 1000 * i, 5000) for i, p in enumerate(paths)]
        same(lsio.read_many_sync(REQS), REQS)
        same(reader.read_many_sync(REQS), REQS)
        held, release = threading.Event(), threading.Event()

        def hold():
            locks = lsio._fork.locks()
            assert len(locks) >= 4
            for lock in locks:
                lock.acquire()
            held.set()
            release.wait()
            for lock in locks:
                lock.release()

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        assert held.wait(10)

        def CHECK():
            same(lsio.read_many_sync(REQS), REQS)
            same(reader.read_many_sync(REQS), REQS)

        try:
            in_child(CHECK)
        finally:
            release.set()
        t.join()
        CHECK()
        print("ok")
    ''', tmp_path)


START_METHOD_SCRIPT = r'''
import multiprocessing, os, sys
import numpy as np
import lsio
import zarr
import lsio.zarr


def read_in_child(args):
    """A child started by the method under test reads local bytes and a Zarr array through
    a pickled LsioStore and lsio's codec pipeline."""
    path, store, want = args
    got = lsio.read_many_sync([(path, 10, 1000)])
    with lsio.zarr.enable():
        arr = zarr.open_array(store, mode="r")[...]
    return bytes(got[0]), lsio.backend_name(), float(arr.sum()), want


if __name__ == "__main__":
    method, root = sys.argv[1], sys.argv[2]
    path = os.path.join(root, "f.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(4096))
    lsio.read_many_sync([(path,)])  # the parent used lsio (a ring, pools) before starting
    store = lsio.zarr.LsioStore(os.path.join(root, "z"))
    data = np.arange(64 * 64, dtype="f4").reshape(64, 64)
    z = zarr.create_array(os.path.join(root, "z"), shape=data.shape, chunks=(16, 16),
                          dtype="f4")
    z[...] = data
    with multiprocessing.get_context(method).Pool(2) as pool:
        out = pool.map(read_in_child, [(path, store, float(data.sum()))] * 4, chunksize=1)
    with open(path, "rb") as f:
        f.seek(10)
        ref = f.read(1000)
    for got, backend, total, want in out:
        assert got == ref and backend == "uring" and total == want, (backend, total, want)
    print("ok", len(out))
'''


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_children_started_by_forkserver_and_spawn_read(method: str, tmp_path: Path) -> None:
    """Python 3.14 makes ``forkserver`` the default start method on Linux (``spawn`` is the
    default elsewhere): children it starts, handed a pickled LsioStore, read through io_uring
    and lsio's codec pipeline after the parent used lsio."""
    script = tmp_path / "start.py"
    script.write_text(START_METHOD_SCRIPT)
    env = {"LSIO_REQUIRE_URING": "1"}
    proc = subprocess.run([sys.executable, str(script), method, str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("LSIO_")},
                               **env})
    assert check_ok(proc).split() == ["ok", "4"]
