"""lsio.obspec.Store: obspec's protocols over lsio, byte for byte against os.pread and nginx,
listing against moto's S3, errors, pickling, the gathering of one loop turn's range reads,
the types (mypy) and VirtualiZarr's ManifestStore over a NetCDF4 file."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import check_ok, random_bytes, run_python, use_moto_credentials, write_file
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import MotoServer, Nginx

import lsio
import lsio.obspec

SIZE = 200_000
DATA = random_bytes(SIZE, seed=23)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local(module_data_dir: Path) -> Path:
    write_file(module_data_dir / "obj.bin", DATA)
    (module_data_dir / "sub" / "deeper").mkdir(parents=True)
    write_file(module_data_dir / "sub" / "one.bin", b"one")
    write_file(module_data_dir / "sub" / "deeper" / "two.bin", b"two!")
    write_file(module_data_dir / "subway.bin", b"not under sub/")
    return module_data_dir


@pytest.fixture(scope="module")
def served(nginx: Nginx) -> str:
    """The nginx URL of a directory holding ``obj.bin``."""
    (nginx.root / "obspec").mkdir(exist_ok=True)
    write_file(nginx.root / "obspec" / "obj.bin", DATA)
    return nginx.url("obspec")


def pread(path: Path, start: int, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, start)
    finally:
        os.close(fd)


ranges = st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(1, 70_000)),
                  min_size=1, max_size=12)


# -- bytes ---------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(ranges)
def test_local_ranges_equal_pread(local: Path, spans: list[tuple[int, int]]) -> None:
    store = lsio.obspec.Store(local)
    want = [pread(local / "obj.bin", s, n) for s, n in spans]
    assert [bytes(b) for b in store.get_ranges("obj.bin", starts=[s for s, _ in spans],
                                                lengths=[n for _, n in spans])] == want
    assert [bytes(b) for b in store.get_ranges("obj.bin", starts=[s for s, _ in spans],
                                                ends=[s + n for s, n in spans])] == want
    s, n = spans[0]
    assert bytes(store.get_range("obj.bin", start=s, length=n)) == want[0]
    assert bytes(store.get_range("obj.bin", start=s, end=s + n)) == want[0]

    async def together() -> list[Any]:
        return await asyncio.gather(*(store.get_range_async("obj.bin", start=s, length=n)
                                      for s, n in spans))
    assert [bytes(b) for b in asyncio.run(together())] == want


@settings(max_examples=15, deadline=None)
@given(ranges)
def test_nginx_ranges_equal_the_file(served: str, spans: list[tuple[int, int]]) -> None:
    store = lsio.obspec.Store(served)
    want = [DATA[s:s + n] for s, n in spans]
    got = store.get_ranges("obj.bin", starts=[s for s, _ in spans],
                           lengths=[n for _, n in spans])
    assert [bytes(b) for b in got] == want

    async def together() -> list[Any]:
        return await asyncio.gather(*(store.get_range_async("obj.bin", start=s, end=s + n)
                                      for s, n in spans))
    assert [bytes(b) for b in asyncio.run(together())] == want


@pytest.mark.parametrize("where", ["local", "nginx"])
def test_get_head_and_options(where: str, local: Path, served: str) -> None:
    store = lsio.obspec.Store(local if where == "local" else served)
    whole = store.get("obj.bin")
    assert bytes(whole.buffer()) == DATA and whole.range == (0, SIZE)
    assert isinstance(whole.buffer(), memoryview) and whole.buffer().readonly
    assert b"".join(bytes(c) for c in whole) == DATA
    meta = store.head("obj.bin")
    assert meta["path"] == "obj.bin" and meta["size"] == SIZE and meta["e_tag"]
    assert meta["last_modified"].tzinfo is not None
    assert whole.meta == meta
    for opt, rng in [((10, 20), (10, 20)), ([SIZE - 5, SIZE + 50], (SIZE - 5, SIZE)),
                     ({"offset": SIZE - 7}, (SIZE - 7, SIZE)), ({"suffix": 9}, (SIZE - 9, SIZE))]:
        got = store.get("obj.bin", options={"range": opt})  # type: ignore[typeddict-item]
        assert got.range == rng and bytes(got.buffer()) == DATA[rng[0]:rng[1]], opt
    assert bytes(store.get("obj.bin", options={"head": True}).buffer()) == b""
    with pytest.raises(NotImplementedError, match="if_match"):
        store.get("obj.bin", options={"if_match": '"x"'})
    with pytest.raises(ValueError, match="range"):
        store.get("obj.bin", options={"range": {"offset": -1}})

    async def run() -> None:
        got = await store.get_async("obj.bin", options={"range": (5, 9)})
        assert bytes(await got.buffer_async()) == DATA[5:9]
        assert [bytes(c) async for c in got] == [DATA[5:9]]
        assert await store.head_async("obj.bin") == meta
    asyncio.run(run())


# -- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["local", "nginx"])
def test_errors_name_the_path(where: str, local: Path, served: str) -> None:
    store = lsio.obspec.Store(local if where == "local" else served)
    for call in (lambda: store.get_range("missing.bin", start=0, length=4),
                 lambda: store.get("missing.bin"), lambda: store.head("missing.bin"),
                 lambda: asyncio.run(store.get_range_async("missing.bin", start=0, length=4))):
        with pytest.raises(FileNotFoundError, match="missing.bin"):
            call()
    with pytest.raises(OSError, match="past the end"):
        store.get_range("obj.bin", start=SIZE, length=10)
    with pytest.raises(OSError, match="past the end"):
        store.get("obj.bin", options={"range": (SIZE + 1, SIZE + 4)})
    for bad in ["../obj.bin", "/etc/passwd", "a//b", "./obj.bin", "s3://b/k", ""]:
        with pytest.raises(ValueError, match="store path"):
            store.get_range(bad, start=0, length=1)
    for kw in [{}, {"end": 4, "length": 4}, {"end": 0}, {"length": 0}, {"length": -1}]:
        with pytest.raises(ValueError, match="obj.bin"):
            store.get_range("obj.bin", start=0, **kw)
    with pytest.raises(ValueError, match="obj.bin"):
        store.get_ranges("obj.bin", starts=[0, 1], lengths=[1])
    with pytest.raises(ValueError, match="s3x"):
        lsio.obspec.Store("s3x://bucket/dir")


# -- listing -------------------------------------------------------------------------------------

def _paths(chunks: Iterator[Any]) -> list[str]:
    return sorted(m["path"] for chunk in chunks for m in chunk)


def test_local_listing(local: Path) -> None:
    store = lsio.obspec.Store(f"file://{local}")
    assert _paths(store.list()) == ["obj.bin", "sub/deeper/two.bin", "sub/one.bin",
                                    "subway.bin"]
    assert _paths(store.list("sub")) == ["sub/deeper/two.bin", "sub/one.bin"]
    assert _paths(store.list(offset="sub/one.bin")) == ["subway.bin"]
    level = store.list_with_delimiter("sub")
    assert level["common_prefixes"] == ["sub/deeper"]
    assert [(m["path"], m["size"]) for m in level["objects"]] == [("sub/one.bin", 3)]

    async def run() -> list[str]:
        return _paths(iter([chunk async for chunk in store.list_async("sub/deeper")]))
    assert asyncio.run(run()) == ["sub/deeper/two.bin"]


@pytest.fixture(scope="module")
def moto_bucket() -> Iterator[MotoServer]:
    server = MotoServer().start()
    s3 = server.client()
    s3.create_bucket(Bucket="obs")
    for key, body in [("dir/obj.bin", DATA), ("dir/sub/one.bin", b"one"),
                      ("dir/subway.bin", b"x"), ("other.bin", b"y")]:
        s3.put_object(Bucket="obs", Key=key, Body=body)
    try:
        yield server
    finally:
        server.stop()


def test_s3_list_head_and_ranges(moto_bucket: MotoServer, monkeypatch: pytest.MonkeyPatch
                                 ) -> None:
    use_moto_credentials(monkeypatch, moto_bucket)
    store = lsio.obspec.Store("s3://obs/dir", http=lsio.HttpOptions(
        endpoint_url=moto_bucket.endpoint, backoff=0.001))
    assert store.prefix == "dir"
    assert _paths(store.list()) == ["obj.bin", "sub/one.bin", "subway.bin"]
    assert _paths(store.list("sub")) == ["sub/one.bin"]
    level = store.list_with_delimiter()
    assert level["common_prefixes"] == ["sub"]
    assert sorted((m["path"], m["size"]) for m in level["objects"]) == [
        ("obj.bin", SIZE), ("subway.bin", 1)]
    meta = store.head("obj.bin")
    assert meta["size"] == SIZE and meta["e_tag"] and meta["last_modified"].year >= 2024
    assert bytes(store.get_range("obj.bin", start=100, length=50)) == DATA[100:150]
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        store.head("nothing.bin")
    store = pickle.loads(pickle.dumps(store))
    assert bytes(store.get("obj.bin").buffer()) == DATA


def test_plain_http_cannot_list(served: str) -> None:
    store = lsio.obspec.Store(served)
    with pytest.raises(NotImplementedError, match="listing"):
        list(store.list())
    with pytest.raises(NotImplementedError, match="listing"):
        store.list_with_delimiter()


# -- gathering, pickling, imports, types -----------------------------------------------------------

class CountingReader(lsio.Reader):
    calls: list[int]

    async def read_many(self, requests: Any, **kw: Any) -> Any:  # type: ignore[override]
        requests = list(requests)
        self.calls.append(len(requests))
        return await super().read_many(requests, **kw)


@pytest.mark.parametrize("where", ["local", "nginx"])
async def test_one_turn_of_range_reads_is_one_call(where: str, local: Path, served: str
                                                   ) -> None:
    reader = CountingReader()
    reader.calls = []
    store = lsio.obspec.Store(local if where == "local" else served, reader=reader)
    order = list(reversed(range(40)))  # none continues the one before: none read ahead
    got = await asyncio.gather(*(store.get_range_async("obj.bin", start=i * 1000, length=700)
                                 for i in order))
    assert [bytes(g) for g in got] == [DATA[i * 1000:i * 1000 + 700] for i in order]
    assert reader.calls == [40]
    await store.get_ranges_async("obj.bin", starts=[0, 5000], lengths=[10, 10])
    assert reader.calls == [40, 2]


def test_pickles_with_its_settings(local: Path) -> None:
    store = lsio.obspec.Store(local, preset="nvme", max_gap=1234)
    again = pickle.loads(pickle.dumps(store))
    assert again.url == store.url and again.reader.max_gap == 1234
    assert bytes(again.get_range("obj.bin", start=3, length=3)) == DATA[3:6]
    with pytest.raises(ValueError, match="not both"):
        lsio.obspec.Store(local, reader=lsio.Reader(), preset="nvme")


def test_import_loads_neither_zarr_nor_the_engine() -> None:
    out = check_ok(run_python("import sys, lsio.obspec\n"
                              "print(*[m for m in sys.modules if m.startswith(('zarr', "
                              "'lsio._reader', 'lsio.backends', 'asyncio', 'aiohttp'))])"))
    assert out.strip() == ""


def test_store_type_checks_as_obspec_protocols() -> None:
    """mypy accepts a Store as each obspec protocol (tests/typing/obspec_conformance.py)."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict",
                           "tests/typing/obspec_conformance.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- VirtualiZarr -----------------------------------------------------------------------------

def _write_netcdf(path: Path) -> None:
    """A NetCDF4 file of a few chunked variables, zlib + shuffle, written with h5netcdf."""
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(23)
    ds = xr.Dataset(
        {"temperature": (("time", "y", "x"), rng.standard_normal((6, 40, 50)).astype("f4")),
         "counts": (("y", "x"), rng.integers(0, 1000, (40, 50)).astype("i4")),
         "flag": (("time",), np.arange(6, dtype="i2"))},
        coords={"time": np.arange(6), "y": np.linspace(0, 1, 40), "x": np.arange(50.0)})
    encoding = {"temperature": {"zlib": True, "complevel": 4, "shuffle": True,
                                "chunksizes": (2, 16, 25)},
                "counts": {"zlib": True, "complevel": 4, "shuffle": True,
                           "chunksizes": (10, 10)}}
    ds.to_netcdf(path, engine="h5netcdf", encoding=encoding)


@pytest.mark.parametrize("where", ["local", "nginx"])
def test_virtualizarr_manifest_store_reads_the_netcdf(where: str, local: Path, nginx: Nginx
                                                      ) -> None:
    """VirtualiZarr's HDF parser and ``ManifestStore`` through an ``ObjectStoreRegistry`` of
    lsio stores give the values ``xarray.open_dataset`` reads from the file itself."""
    import xarray as xr
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    target = (nginx.root if where == "nginx" else local) / "vz"
    target.mkdir(exist_ok=True)
    _write_netcdf(target / "data.nc")
    if where == "nginx":
        base = nginx.url("")[:-1]
        url = nginx.url("vz/data.nc")
    else:
        base, url = f"file://{target}", f"file://{target}/data.nc"
    store = lsio.obspec.Store(base)
    manifest = HDFParser()(url=url, registry=ObjectStoreRegistry({base: store}))
    with xr.open_dataset(target / "data.nc", engine="h5netcdf") as want, \
            xr.open_dataset(manifest, engine="zarr", consolidated=False,  # type: ignore[arg-type]
                            zarr_format=3) as got:
        assert set(got.data_vars) == set(want.data_vars)
        for name in want.variables:
            assert (got[name].values == want[name].values).all(), name
