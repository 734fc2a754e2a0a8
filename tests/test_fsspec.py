"""``lsio.fsspec.LsioFileSystem``: byte for byte against ``os.pread``/the source and nginx,
fsspec's range and ``on_error`` rules, the path table, gathering of one loop turn's
``cat_file`` calls, pickling and the instance cache, fsspec's own abstract ``get`` tests,
and the integrations (kerchunk references read by zarr 3, h5py through ``open``)."""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from conftest import check_ok, random_bytes, run_python, use_moto_credentials
from fsspec.tests.abstract import AbstractFixtures, AbstractGetTests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import MotoServer, Nginx

import lsio
import lsio.fsspec as lf

SIZE = 300_000
OFFSETS = st.integers(-SIZE - 10, SIZE + 10) | st.none()


@pytest.fixture(scope="module")
def served(nginx: Nginx) -> tuple[Nginx, Path, bytes]:
    """A file of SIZE random bytes, on disk and served by nginx as ``fsspec/a.bin``."""
    root = nginx.root / "fsspec"
    root.mkdir(exist_ok=True)
    data = random_bytes(SIZE, seed=23)
    (root / "a.bin").write_bytes(data)
    return nginx, root / "a.bin", data


@pytest.fixture(scope="module")
def fs() -> lf.LsioFileSystem:
    return lf.LsioFileSystem()


def pread(path: Path, start: int | None, end: int | None) -> bytes:
    """``data[start:end]`` by ``os.pread``."""
    size = path.stat().st_size
    a, b, _ = slice(start, end).indices(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, max(b - a, 0), a) if b > a else b""
    finally:
        os.close(fd)


# -- paths ----------------------------------------------------------------------------------

TABLE = [  # (given, read as): the table of lsio.fsspec's docstring, row by row
    ("/data/x.nc", "/data/x.nc"),
    ("data/x.nc", os.path.join(os.getcwd(), "data/x.nc")),
    ("~/x.nc", os.path.expanduser("~/x.nc")),
    ("file:///data/x.nc", "/data/x.nc"),
    ("file://localhost/data/x.nc", "/data/x.nc"),
    ("lsio:///data/x.nc", "/data/x.nc"),
    ("lsio://data/x.nc", os.path.join(os.getcwd(), "data/x.nc")),
    ("lsio::/data/x.nc", "/data/x.nc"),
    ("lsio://s3://b/k", "s3://b/k"),
    ("lsio://https://h/p?q=1", "https://h/p?q=1"),
    ("s3://b/k/", "s3://b/k"),
    ("https://h/p/", "https://h/p/"),
]


@pytest.mark.parametrize(("given", "inner"), TABLE)
def test_path_table(given: str, inner: str) -> None:
    fs = lf.LsioFileSystem
    assert fs._strip_protocol(given) == inner
    assert fs._strip_protocol(fs().unstrip_protocol(inner)) == inner


def test_refusals_show_no_secret(fs: lf.LsioFileSystem) -> None:
    with pytest.raises(ValueError) as bad:
        fs.cat_file("s3x://b/k?X-Amz-Signature=SECRET")
    with pytest.raises(NotImplementedError) as http:
        fs.ls("https://h.example/d?sig=SECRET")
    for exc in (bad.value, http.value):
        assert "SECRET" not in str(exc) and "REDACTED" in str(exc)


def test_stripped_once_then_refused(tmp_path: Path, fs: lf.LsioFileSystem) -> None:
    for twice in ("lsio://lsio://x", "lsio://lsio:///x"):  # what is left: an unknown scheme
        with pytest.raises(ValueError, match="'lsio'"):
            fs.cat_file(twice)
    (tmp_path / "f").write_bytes(b"abc")
    assert fs.cat_file(f"lsio://{tmp_path}/f") == b"abc"
    assert fs.cat_file(f"file://{tmp_path}/f") == b"abc"


@pytest.mark.parametrize(("path", "up"), [
    ("/a/b/c", "/a/b"), ("/a", "/"), ("/", "/"), ("s3://b/k/x", "s3://b/k"),
    ("s3://b/k", "s3://b"), ("s3://b", "s3://b"), ("lsio://s3://b/k", "s3://b"),
    ("https://h/a/b", "https://h/a"), ("https://h", "https://h")])
def test_parent(path: str, up: str) -> None:
    assert lf.LsioFileSystem._parent(path) == up


# -- byte for byte ----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(OFFSETS, OFFSETS), min_size=1, max_size=20), st.booleans())
def test_cat_ranges_match_pread_and_nginx(served: tuple[Nginx, Path, bytes],
                                         fs: lf.LsioFileSystem,
                                         ranges: list[tuple[Any, Any]], remote: bool) -> None:
    nginx, path, _ = served
    where = nginx.url("fsspec/a.bin") if remote else str(path)
    starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
    want = [pread(path, a, b) for a, b in ranges]
    assert fs.cat_ranges([where] * len(ranges), starts, ends) == want
    assert fs.cat_ranges([where] * len(ranges), starts, ends, max_gap=4096) == want
    a, b = ranges[0]
    assert fs.cat_file(where, a, b) == want[0]


def test_cat_whole_and_open(served: tuple[Nginx, Path, bytes], fs: lf.LsioFileSystem) -> None:
    nginx, path, data = served
    for where in (str(path), nginx.url("fsspec/a.bin"), f"lsio://{nginx.url('fsspec/a.bin')}"):
        assert fs.cat(where) == data
        assert fs.info(where)["size"] == SIZE
        with fs.open(where, block_size=4096) as f:
            f.seek(SIZE - 100)
            assert f.read(1000) == data[-100:]
            f.seek(7)
            assert f.read(5) == data[7:12]


def test_max_gap_reader_is_kept(fs: lf.LsioFileSystem) -> None:
    a = fs.reader(max_gap=123)
    assert a is fs.reader(max_gap=123) and a.max_gap == 123
    given = lsio.Reader(queue_depth=5)
    other = lf.LsioFileSystem(reader=given)
    assert other.reader() is given
    assert (other.reader(9).queue_depth, other.reader(9).max_gap) == (5, 9)


# -- on_error ------------------------------------------------------------------------------

def test_on_error(tmp_path: Path, fs: lf.LsioFileSystem) -> None:
    good, bad = tmp_path / "good", str(tmp_path / "missing")
    good.write_bytes(b"0123456789")
    out = fs.cat_ranges([str(good), bad, str(good)], [0, 0, -3], [4, 4, None])
    assert out[0] == b"0123" and out[2] == b"789"
    assert isinstance(out[1], FileNotFoundError) and bad in str(out[1])
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.cat_ranges([str(good), bad], 0, 4, on_error="raise")
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.cat([str(good), bad])  # fsspec's default for cat: raise
    assert fs.cat([str(good), bad], on_error="omit") == {str(good): b"0123456789"}
    got = fs.cat([str(good), bad], on_error="return")
    assert got[str(good)] == b"0123456789" and isinstance(got[bad], FileNotFoundError)
    # a path lsio refuses outright fails alone
    out = fs.cat_ranges([str(good), "s3x://b/k"], 0, 2)
    assert out[0] == b"01" and isinstance(out[1], ValueError)


# -- gathering ------------------------------------------------------------------------------

class CountingReader(lsio.Reader):
    """A reader that counts its ``read_many`` calls and the requests in each."""

    calls: list[int]
    operations: list[int]

    async def read_many(self, requests: Any, **kwargs: Any) -> Any:
        requests = list(requests)
        self.calls.append(len(requests))
        results = await super().read_many(requests, **kwargs)
        self.operations.append(results.stats.operations)
        return results


def counting() -> CountingReader:
    reader = CountingReader(route="bulk")
    reader.calls, reader.operations = [], []
    return reader


async def test_one_turn_is_one_call(tmp_path: Path) -> None:
    data = random_bytes(50_000, seed=5)
    (tmp_path / "g").write_bytes(data)
    reader = counting()
    fs = lf.LsioFileSystem(reader=reader, asynchronous=True, skip_instance_cache=True)
    path = str(tmp_path / "g")
    # last to first: no read continues the one before, so none is read ahead
    ranges = [(i * 1000, i * 1000 + 700) for i in reversed(range(40))]
    got = await asyncio.gather(*(fs._cat_file(path, a, b) for a, b in ranges),
                               fs._cat_file(str(tmp_path / "nothing"), 0, 5),
                               return_exceptions=True)
    assert got[:-1] == [data[a:b] for a, b in ranges]
    assert isinstance(got[-1], FileNotFoundError)  # its own failure; the others read
    assert reader.calls[0] == 41, reader.calls  # one call of the turn's 41 requests
    reader.calls.clear()
    assert await fs._cat_ranges([path] * 3, [0, 10, 20], [5, 15, 25]) == [
        data[0:5], data[10:15], data[20:25]]
    assert reader.calls == [3]
    reader.calls.clear()
    (tmp_path / "g2").write_bytes(b"2")
    assert await fs._cat([path, path + "2"]) == {path: data, path + "2": b"2"}
    assert reader.calls == [2]


async def test_max_gap_merges(tmp_path: Path) -> None:
    """``cat_ranges(max_gap=...)`` reads through gaps up to that size, and not further."""
    data = random_bytes(200_000, seed=6)
    path = str(tmp_path / "m")
    Path(path).write_bytes(data)
    reader = counting()
    fs = lf.LsioFileSystem(reader=reader, asynchronous=True, skip_instance_cache=True)
    starts = list(range(0, 200_000, 10_000))  # 20 ranges of 1 000 bytes, 9 000 apart
    ends = [s + 1000 for s in starts]
    for gap, most in ((16_384, 1), (4096, 20)):
        merging = fs.reader(max_gap=gap)
        assert isinstance(merging, CountingReader) and merging.max_gap == gap
        merging.calls, merging.operations = [], []
        got = await fs._cat_ranges([path] * 20, starts, ends, max_gap=gap)
        assert got == [data[s:e] for s, e in zip(starts, ends, strict=True)]
        assert merging.calls == [20]
        assert merging.operations[0] <= most, merging.operations
    assert merging.operations[0] == 20  # 4 KiB gaps merge none of them


# -- pickling, caching, registration, imports ------------------------------------------------

def test_pickle_and_instance_cache() -> None:
    fsspec.register_implementation("lsio", lf.LsioFileSystem, clobber=True)  # the entry point's
    a = fsspec.filesystem("lsio", queue_depth=7)
    assert lf.LsioFileSystem(queue_depth=7) is a
    assert pickle.loads(pickle.dumps(a)) is a and a.reader().queue_depth == 7
    one = lf.LsioFileSystem(http=lsio.HttpOptions(headers={"Authorization": "a"}))
    two = lf.LsioFileSystem(http=lsio.HttpOptions(headers={"Authorization": "b"}))
    assert one is not two  # reprs redact headers: the cache must not mix them up
    assert one is lf.LsioFileSystem(http=lsio.HttpOptions(headers={"Authorization": "a"}))
    with pytest.raises(TypeError, match="not both"):
        lf.LsioFileSystem(reader=lsio.Reader(), queue_depth=3)
    with pytest.raises(TypeError, match="anon, key"):  # s3fs' options are not lsio's
        lf.LsioFileSystem(anon=True, key="k")
    lf.LsioFileSystem(use_listings_cache=False)  # fsspec's own


def test_register_and_import_is_light(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"xyz")
    out = check_ok(run_python(f"""
        import sys, fsspec
        import lsio.fsspec
        heavy = [m for m in ("zarr", "lsio._reader", "lsio.backends", "aiohttp")
                 if m in sys.modules]
        assert not heavy, heavy
        assert fsspec.get_filesystem_class("file").__name__ == "LocalFileSystem"
        lsio.fsspec.register(["file"])
        fs, path = fsspec.core.url_to_fs("file://{tmp_path}/x")
        assert type(fs).__name__ == "LsioFileSystem", fs
        print(fs.cat(path).decode())
        """))
    assert out.strip() == "xyz"


def test_read_only(tmp_path: Path, fs: lf.LsioFileSystem) -> None:
    target = str(tmp_path / "w")
    for write in (lambda: fs.pipe(target, b"x"), lambda: fs.open(target, "wb"),
                  lambda: fs.touch(target), lambda: fs.mkdir(target),
                  lambda: fs.rm(target), lambda: fs.put(__file__, target)):
        with pytest.raises(NotImplementedError, match="read-only"):
            write()
    assert not os.path.exists(target)


def test_ls_find_info_local(tmp_path: Path, fs: lf.LsioFileSystem) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("a", "d/b", "d/e/c"):
        (tmp_path / name).write_bytes(name.encode())
    root = str(tmp_path)
    assert fs.ls(root, detail=False) == [f"{root}/a", f"{root}/d"]
    assert fs.find(root) == [f"{root}/a", f"{root}/d/b", f"{root}/d/e/c"]
    assert fs.find(root, maxdepth=1) == [f"{root}/a"]
    assert f"{root}/d/e" in fs.find(root, withdirs=True)
    assert fs.info(f"{root}/d")["type"] == "directory"
    assert fs.info(f"{root}/d/b")["size"] == 3
    assert fs.exists(f"{root}/a") and not fs.exists(f"{root}/zz")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{root}/zz")


def test_http_does_not_list(served: tuple[Nginx, Path, bytes], fs: lf.LsioFileSystem) -> None:
    nginx, _, _ = served
    with pytest.raises(NotImplementedError, match="no listing"):
        fs.ls(nginx.url("fsspec/"))
    assert fs.exists(nginx.url("fsspec/a.bin"))
    assert not fs.exists(nginx.url("fsspec/nothing.bin"))


# -- fsspec's own abstract tests (the read-only ones: get) -------------------------------------

class TestFsspecGet(AbstractFixtures, AbstractGetTests):
    """fsspec's ``get`` tests (copying to local files). Its other abstract classes (copy,
    put, pipe, open with ``"xb"``) write to the filesystem; lsio's is read-only. The
    scenarios are written by the local filesystem, the tests read them through lsio."""

    @pytest.fixture
    def fs(self) -> lf.LsioFileSystem:
        return lf.LsioFileSystem()

    @pytest.fixture
    def fs_path(self, tmp_path: Path) -> str:
        return str(tmp_path / "remote")

    def _on_local(self, make: Any, local_fs: Any, fs_join: Any, fs_path: str) -> Any:
        source = make(local_fs, fs_join, fs_path)
        yield source
        local_fs.rm(source, recursive=True)

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, local_fs: Any, fs_join: Any, fs_path: str) -> Any:
        yield from self._on_local(self._bulk_operations_scenario_0, local_fs, fs_join, fs_path)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, local_fs: Any, fs_join: Any, fs_path: str) -> Any:
        yield from self._on_local(self._glob_edge_cases_files, local_fs, fs_join, fs_path)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, local_fs: Any, fs_join: Any,
                                              fs_path: str) -> Any:
        yield from self._on_local(self._dir_and_file_with_same_name_prefix, local_fs,
                                  fs_join, fs_path)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, local_fs: Any, fs_join: Any, fs_path: str
                                      ) -> Any:
        yield from self._on_local(self._10_files_with_hashed_names, local_fs, fs_join,
                                  fs_path)

    test_get_directory_recursive = None  # makes its source with fs.mkdir/fs.touch


def test_numpy_buffer_ok(tmp_path: Path, fs: lf.LsioFileSystem) -> None:
    """What fsspec callers get is ``bytes`` (not a view of lsio's memory)."""
    (tmp_path / "n").write_bytes(np.arange(10, dtype="u1").tobytes())
    got = fs.cat_file(str(tmp_path / "n"), 2, 5)
    assert type(got) is bytes and got == bytes([2, 3, 4])


# -- an object store that lists (moto's S3) ---------------------------------------------------

@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    s3 = server.client()
    s3.create_bucket(Bucket="fsb")
    for name in ("a.bin", "d/b.bin", "d/e/c.bin", "d/empty"):
        body = b"" if name.endswith("empty") else random_bytes(5000, seed=len(name))
        s3.put_object(Bucket="fsb", Key=name, Body=body)
    try:
        yield server
    finally:
        server.stop()


def test_s3_info_ls_find_cat(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_moto_credentials(monkeypatch, moto)
    fs = lf.LsioFileSystem(http=lsio.HttpOptions(endpoint_url=moto.endpoint, backoff=0.001))
    b = random_bytes(5000, seed=len("d/b.bin"))
    assert fs.info("s3://fsb/d/b.bin") == {"name": "s3://fsb/d/b.bin", "size": 5000,
                                           "type": "file"}
    assert fs.info("s3://fsb/d/empty")["size"] == 0
    assert fs.info("lsio://s3://fsb/d/")["type"] == "directory"
    assert fs.info("s3://fsb")["type"] == "directory"
    with pytest.raises(FileNotFoundError):
        fs.info("s3://fsb/nothing")
    assert fs.ls("s3://fsb", detail=False) == ["s3://fsb/a.bin", "s3://fsb/d"]
    assert fs.ls("s3://fsb/d", detail=False) == ["s3://fsb/d/b.bin", "s3://fsb/d/e",
                                                 "s3://fsb/d/empty"]
    assert fs.find("s3://fsb/d") == ["s3://fsb/d/b.bin", "s3://fsb/d/e/c.bin",
                                     "s3://fsb/d/empty"]
    assert fs.find("s3://fsb", maxdepth=1) == ["s3://fsb/a.bin"]
    assert "s3://fsb/d/e" in fs.find("s3://fsb", withdirs=True)
    assert fs.find("s3://fsb/d/b.bin") == ["s3://fsb/d/b.bin"]
    assert fs.exists("s3://fsb/d") and not fs.exists("s3://fsb/zz")
    assert fs.cat("s3://fsb/d/*.bin") == {"s3://fsb/d/b.bin": b}  # a glob: one call
    assert fs.cat_ranges(["s3://fsb/d/b.bin"] * 2, [10, -7], [20, -2]) == [b[10:20], b[-7:-2]]
    with fs.open("s3://fsb/d/b.bin", block_size=1024) as f:
        f.seek(4000)
        assert f.read() == b[4000:]
