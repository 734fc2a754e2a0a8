"""Issue 20, item 13 (c-e): what ``out=``, ``file://`` URLs and ``missing_ok`` refuse or
accept, on every route (the small path below SMALL_REQUESTS requests, the bulk path above;
io_uring and threads)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from conftest import check_ok, run_python

import lsio

BULK = 100  # above SMALL_REQUESTS: the call takes the bulk path


def _requests(path: str, n: int) -> list[tuple[str, int, int]]:
    return [(path, 0, 3)] * n


@pytest.fixture
def small_file(tmp_path: Path) -> str:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    return str(path)


@pytest.mark.parametrize("n", [1, BULK])
@pytest.mark.parametrize("make", [
    lambda: np.empty(3, object),
    lambda: np.empty(1, [("a", "u1"), ("b", object)]),
    lambda: (ctypes.c_void_p * 1)(),
], ids=["object", "record-with-object", "pointer"])
async def test_out_refuses_objects_and_pointers(backend: lsio.Reader, small_file: str,
                                                n: int, make: object) -> None:
    out = [make() for _ in range(n)]  # type: ignore[operator]
    keep = [bytes(memoryview(b).cast("B")) if not isinstance(b, np.ndarray) or
            not b.dtype.hasobject else None for b in out]
    with pytest.raises(TypeError, match=r"out\[0\] holds Python objects or pointers"):
        await backend.read_many(_requests(small_file, n), out=out)
    with pytest.raises(TypeError, match=r"out\[0\] holds Python objects or pointers"):
        backend.read_many_sync(_requests(small_file, n), out=out)
    for b, before in zip(out, keep, strict=True):  # untouched
        if before is not None:
            assert bytes(memoryview(b).cast("B")) == before


@pytest.mark.parametrize("n", [1, BULK])
async def test_out_accepts_records(backend: lsio.Reader, small_file: str, n: int) -> None:
    # a field named with an O or P is still raw bytes
    dtype = np.dtype([("Origin", "u1"), ("Pad", "u2")])
    out = [np.zeros(1, dtype) for _ in range(n)]
    await backend.read_many(_requests(small_file, n), out=out)
    assert all(bytes(o.tobytes()) == b"abc" for o in out)


@pytest.mark.parametrize("url", ["file://host/tmp/x", "file://HOST.example/x",
                                 "file:///tmp/x?x=1", "file:///tmp/x#frag",
                                 "file://localhost/tmp/x?x=1"])
async def test_file_url_refuses_hosts_queries_fragments(backend: lsio.Reader, url: str) -> None:
    for n in (1, BULK):
        with pytest.raises(ValueError, match="file:// URL"):
            await backend.read_many([(url,)] * n)
        with pytest.raises(ValueError, match="file:// URL"):
            backend.read_many_sync([(url,)] * n)


async def test_file_url_local_hosts_and_encoded_query(backend: lsio.Reader,
                                                      tmp_path: Path) -> None:
    (tmp_path / "p?x=1").write_bytes(b"q")
    (tmp_path / "f").write_bytes(b"abc")
    urls = [f"file://{tmp_path}/f", f"file://localhost{tmp_path}/f",
            f"file://LocalHost{tmp_path}/f", f"file://{tmp_path}/p%3Fx=1"]
    got = await backend.read_many([(u,) for u in urls])
    assert [bytes(g) for g in got] == [b"abc", b"abc", b"abc", b"q"]


@pytest.mark.parametrize("n", [1, BULK])
async def test_missing_ok_path_under_a_file(backend: lsio.Reader, small_file: str,
                                            n: int) -> None:
    under = small_file + "/child"
    reqs = [(under,)] + [(small_file,)] * (n - 1)
    got = await backend.read_many(reqs, missing_ok=True)
    assert got[0] is None and all(bytes(g) == b"abc" for g in got[1:])
    got = backend.read_many_sync(reqs, missing_ok=True)
    assert got[0] is None and all(bytes(g) == b"abc" for g in got[1:])
    with pytest.raises(NotADirectoryError) as info:
        await backend.read_many(reqs)
    assert info.value.filename == under


async def test_missing_ok_path_under_a_file_big_read(backend: lsio.Reader,
                                                     tmp_path: Path) -> None:
    """The ring's (and threads') read of a big file plus one path under a file."""
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * (16 << 12))  # 16 MiB: above the small path's bytes
    got = await backend.read_many([(str(big),), (str(big) + "/x",)], missing_ok=True)
    assert len(got[0]) == 16 << 20 and got[1] is None


def test_results_that_cannot_be_allocated_name_the_request(tmp_path: Path) -> None:
    """A call whose results do not fit the address space (RLIMIT_AS here; a 1 TiB sparse
    file read whole anywhere) raises OSError(ENOMEM) naming its largest request, on both
    backends, instead of a bare ENOMEM."""
    small = tmp_path / "small"
    small.write_bytes(b"x" * 4096)
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(1 << 40)
    code = """
        import errno, resource, sys
        import lsio
        small, sparse = sys.argv[1:]
        readers = [lsio.Reader(backend=b) for b in ("uring", "threads")]
        for r in readers:  # rings, pools and imports first: only the results must not fit
            r.read_many_sync([(small,)] * 100)
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        limit = vm + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for r in readers:
            for big in (1 << 30, None):  # 1 GiB: over the limit; None: the whole 1 TiB
                try:
                    r.read_many_sync([(small,)] * 3 + [(sparse, 0, big)] + [(small,)])
                except OSError as exc:
                    assert exc.errno == errno.ENOMEM, exc
                    assert exc.filename == sparse, exc.filename
                    assert exc.request_index == 3, exc.request_index
                    assert "request #3" in exc.__notes__[0], exc.__notes__
                else:
                    raise AssertionError(f"{r.backend}: no error")
        print("ok")
    """
    assert check_ok(run_python(code, str(small), str(sparse), timeout=120)).strip() == "ok"


def test_first_read_imports_nothing_on_the_loop(tmp_path: Path) -> None:
    """Issue 20 item 12: the first read of a process held the event loop ~70-130 ms, mostly
    importing lsio's engine and (through np.median in the page-cache sample) numpy.ma on
    the loop's thread. The engine now loads on a worker thread and nothing imports
    numpy.ma. (The stall itself is measured by benchmarks/bench_stall.py, not here.)"""
    path = tmp_path / "data"
    path.write_bytes(b"x" * (16 << 20))  # big enough that the page cache is sampled
    code = """
        import asyncio, sys, threading
        import lsio
        assert "lsio._reader" not in sys.modules and "numpy.ma" not in sys.modules
        on_loop = []

        class Watch:  # sees every import first, then lets the usual finders find it
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name in ("lsio._reader", "numpy.ma"):
                    on_loop.append((name, threading.current_thread() is loop_thread))
                return None

        async def main():
            global loop_thread
            loop_thread = threading.current_thread()
            sys.meta_path.insert(0, Watch)
            got = await lsio.read_many([(sys.argv[1],)])
            assert len(got[0]) == 16 << 20

        asyncio.run(main())
        assert ("lsio._reader", False) in on_loop, on_loop
        assert not [m for m, here in on_loop if here], on_loop
        assert "numpy.ma" not in sys.modules
        print("ok")
    """
    assert check_ok(run_python(code, str(path), timeout=120)).strip() == "ok"
