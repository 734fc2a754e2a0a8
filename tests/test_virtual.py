"""lsio.virtual.ReferenceStore: zarr arrays whose chunks are byte ranges of NetCDF4 files,
from kerchunk references (one file, and several combined) and a VirtualiZarr manifest,
read through zarr (lsio's codec pipeline) and xarray equal to h5py, locally and from nginx,
every chunk of a selection in one ``read_many`` call; hypothesis over reference sets (inline,
base64, templates, whole files, missing chunks); untrusted references refused by name."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsio
import lsio.zarr as lz
from lsio.virtual import ReferenceStore

T, Y, X = 12, 40, 48
CHUNKS = (3, 10, 16)
FILES = 3


class CountingReader(lsio.Reader):
    """Counts the planned calls the store's reads make."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.calls: list[int] = []

    async def read_many(self, requests: Any, **kwargs: Any) -> Any:
        self.calls.append(len(requests))
        return await super().read_many(requests, **kwargs)

    async def read_each(self, requests: Any, **kwargs: Any) -> Any:
        self.calls.append(len(requests))
        return await super().read_each(requests, **kwargs)


def write_netcdf(path: Path, k: int) -> None:
    rng = np.random.default_rng(k)
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"t": T, "y": Y, "x": X}
        t = f.create_variable("t", ("t",), "i8")
        t[:] = np.arange(k * T, (k + 1) * T)
        f.create_variable("x", ("x",), "f8", data=np.linspace(0, 1, X))
        v = f.create_variable("temp", ("t", "y", "x"), "f4", chunks=CHUNKS,
                              compression="gzip", compression_opts=4, shuffle=True)
        v[:] = rng.random((T, Y, X), dtype="f4")
        w = f.create_variable("hum", ("t", "y", "x"), "<i2", chunks=CHUNKS,
                              compression="gzip", compression_opts=4, shuffle=True)
        w[:] = rng.integers(-500, 500, (T, Y, X))


def kerchunk_refs(path: str) -> dict[str, Any]:
    from kerchunk.hdf import SingleHdf5ToZarr

    refs: dict[str, Any] = SingleHdf5ToZarr(path, inline_threshold=300).translate()
    return refs


@pytest.fixture(scope="module")
def files(module_data_dir: Path) -> list[Path]:
    paths = [module_data_dir / f"v{k}.nc" for k in range(FILES)]
    for k, p in enumerate(paths):
        write_netcdf(p, k)
    return paths


def h5(path: Path, name: str) -> Any:
    with h5py.File(path) as f:
        return f[name][:]


def open_group(store: Any, **kwargs: Any) -> zarr.Group:
    """The group; its arrays, opened in the test, get lsio's pipeline (the autouse fixture)."""
    return zarr.open_group(store, mode="r", **kwargs)


def test_kerchunk_refs_read_through_lsio_pipeline_in_one_call(files: list[Path]) -> None:
    reader = CountingReader()
    store = ReferenceStore(kerchunk_refs(str(files[0])), reader=reader)
    group = open_group(store, zarr_format=2)
    temp = group["temp"]
    assert isinstance(temp._async_array.codec_pipeline, lz.LsioCodecPipeline)
    reader.calls.clear()
    np.testing.assert_array_equal(temp[:], h5(files[0], "temp"))
    n_chunks = np.prod([-(-s // c) for s, c in zip((T, Y, X), CHUNKS, strict=True)])
    assert reader.calls == [n_chunks]  # the whole variable: one planned call
    np.testing.assert_array_equal(group["hum"][2:9, 5:33, ::3], h5(files[0], "hum")[2:9, 5:33, ::3])
    np.testing.assert_array_equal(group["t"][:], np.arange(T))  # an inline value
    gets = CountingReader()  # the same references through zarr's own pipeline: its
    with lz.disable():  # concurrent gets of one event-loop turn are one call
        again = zarr.open_group(ReferenceStore(kerchunk_refs(str(files[0])), reader=gets),
                                mode="r", zarr_format=2)["temp"]
    assert not isinstance(again._async_array.codec_pipeline, lz.LsioCodecPipeline)
    gets.calls.clear()
    np.testing.assert_array_equal(again[:], h5(files[0], "temp"))
    # zarr's first turn asks for 10 chunks at once: at least those are one call (later turns
    # depend on when each decode ends)
    assert sum(gets.calls) == n_chunks and max(gets.calls) >= 10, gets.calls


def test_xarray_open_zarr_equals_h5py(files: list[Path]) -> None:
    import xarray as xr

    store = ReferenceStore(json.dumps(kerchunk_refs(str(files[1]))))  # JSON text
    ds = xr.open_zarr(store, consolidated=False, zarr_format=2)
    np.testing.assert_array_equal(ds.temp.values, h5(files[1], "temp"))
    np.testing.assert_array_equal(ds.hum.values, h5(files[1], "hum"))
    np.testing.assert_array_equal(ds.t.values, h5(files[1], "t"))


def test_several_files_combined_are_one_call(files: list[Path], tmp_path: Path) -> None:
    from kerchunk.combine import MultiZarrToZarr

    combined = MultiZarrToZarr([kerchunk_refs(str(p)) for p in files], concat_dims=["t"],
                               identical_dims=["x"]).translate()
    (tmp_path / "refs.json").write_text(json.dumps(combined))
    reader = CountingReader()
    store = ReferenceStore(tmp_path / "refs.json", reader=reader)  # a path to the JSON
    temp = open_group(store, zarr_format=2)["temp"]
    reader.calls.clear()
    got = temp[:]
    assert len(reader.calls) == 1, reader.calls
    np.testing.assert_array_equal(got, np.concatenate([h5(p, "temp") for p in files]))
    assert len({r[0] for r in store._table.values() if isinstance(r, tuple)}) == FILES


def test_virtualizarr_manifest_equals_h5py(files: list[Path]) -> None:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    url = files[2].resolve().as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VirtualiZarr's experimental-API notices
        manifest = HDFParser()(url=url, registry=ObjectStoreRegistry({"file://": LocalStore()}))
    reader = CountingReader()
    store = pickle.loads(pickle.dumps(ReferenceStore(manifest, reader=reader)))
    temp = open_group(store)["temp"]
    assert temp.metadata.zarr_format == 3
    got = temp[:]
    np.testing.assert_array_equal(got, h5(files[2], "temp"))
    np.testing.assert_array_equal(lz.read_sync(temp, np.s_[1:5, 3:30, 7:40]),
                                  got[1:5, 3:30, 7:40])


def test_remote_refs_on_nginx(files: list[Path], nginx: Any) -> None:
    import xarray as xr

    local = kerchunk_refs(str(files[0]))
    for p in files[:1]:
        shutil.copy(p, nginx.root / f"virtual-{p.name}")
    text = json.dumps(local).replace(json.dumps(str(files[0]))[1:-1],
                                     nginx.url(f"virtual-{files[0].name}"))
    reader = CountingReader()
    store = ReferenceStore(json.loads(text), reader=reader)
    assert all(r[0].startswith("http://") for r in store._table.values()
               if isinstance(r, tuple))
    group = open_group(store, zarr_format=2)
    reader.calls.clear()
    np.testing.assert_array_equal(group["temp"][:], h5(files[0], "temp"))
    assert len(reader.calls) == 1
    ds = xr.open_zarr(store, consolidated=False, zarr_format=2)
    np.testing.assert_array_equal(ds.hum.values, h5(files[0], "hum"))


def test_remote_refs_on_moto(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """References to ``s3://`` ranges (two files, one bucket on moto): one planned call,
    values equal to h5py."""
    from conftest import use_moto_credentials
    from servers import MotoServer

    server = MotoServer().start()
    try:
        use_moto_credentials(monkeypatch, server)
        server.client().create_bucket(Bucket="virtual")
        refs = []
        for p in files[:2]:
            server.client().put_object(Bucket="virtual", Key=p.name, Body=p.read_bytes())
            text = json.dumps(kerchunk_refs(str(p))).replace(json.dumps(str(p))[1:-1],
                                                             f"s3://virtual/{p.name}")
            refs.append(json.loads(text))
        reader = CountingReader(http=lsio.HttpOptions(endpoint_url=server.endpoint))
        for p, r in zip(files[:2], refs, strict=True):
            store = ReferenceStore(r, reader=reader)
            assert all(v[0] == f"s3://virtual/{p.name}" for v in store._table.values()
                       if isinstance(v, tuple))
            group = open_group(store, zarr_format=2)
            reader.calls.clear()
            np.testing.assert_array_equal(group["temp"][:], h5(p, "temp"))
            assert len(reader.calls) == 1
    finally:
        server.stop()


def test_fletcher32_chunks_are_checked(tmp_path: Path) -> None:
    """HDF5's fletcher32 (kerchunk 0.2 cannot reference it): hand-made references with the
    whole filtered chunk are verified; a corrupt chunk fails."""
    path = tmp_path / "f.nc"
    data = np.arange(20 * 30, dtype="<i4").reshape(20, 30)
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=data, chunks=(10, 10), compression="gzip",
                         compression_opts=4, shuffle=True, fletcher32=True)
    with h5py.File(path) as f:
        ds = f["v"]
        chunks = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    zarray = {"shape": [20, 30], "chunks": [10, 10], "dtype": "<i4", "fill_value": 0,
              "order": "C", "compressor": None, "zarr_format": 2,
              "filters": [{"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 4},
                          {"id": "fletcher32"}]}
    refs = {".zgroup": '{"zarr_format": 2}', "v/.zarray": json.dumps(zarray)}
    for c in chunks:
        key = "v/" + ".".join(str(o // 10) for o in c.chunk_offset)
        refs[key] = [str(path), c.byte_offset, c.size]
    group = open_group(ReferenceStore({"version": 1, "refs": refs}), zarr_format=2)
    np.testing.assert_array_equal(group["v"][:], data)
    raw = bytearray(path.read_bytes())
    raw[chunks[0].byte_offset + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    group = open_group(ReferenceStore({"version": 1, "refs": refs}), zarr_format=2)
    with pytest.raises(ValueError, match="'v/0.0' in .* does not decode: .*fletcher32"):
        group["v"][:]


# -- reference sets ----------------------------------------------------------------------

@st.composite
def reference_sets(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, bytes], int]:
    """(kerchunk v1 references of a uint8 array of 1-D chunks, each chunk's expected bytes
    (None: missing), chunk size): chunks inline as text or base64, ranges of one file
    through a template, whole files."""
    n, size = draw(st.integers(1, 12)), draw(st.integers(1, 9))
    kinds = draw(st.lists(st.sampled_from(["text", "base64", "range", "whole", "missing"]),
                          min_size=n, max_size=n))
    return {"n": n, "size": size, "kinds": kinds,
            "seed": draw(st.integers(0, 2**16)), "order": draw(st.permutations(range(n)))}


def build(spec: dict[str, Any], where: Path) -> tuple[dict[str, Any], np.ndarray]:
    n, size = spec["n"], spec["size"]
    rng = np.random.default_rng(spec["seed"])
    want = np.zeros(n * size, np.uint8)  # fill value 0
    blob = rng.integers(0, 256, n * size * 2, np.uint8).tobytes()
    (where / "blob.bin").write_bytes(blob)
    zarray = {"shape": [n * size], "chunks": [size], "dtype": "|u1", "fill_value": 0,
              "order": "C", "compressor": None, "filters": None, "zarr_format": 2}
    refs: dict[str, Any] = {".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(zarray)}
    for i in spec["order"]:
        kind, key = spec["kinds"][i], f"a/{i}"
        value = rng.integers(0x20, 0x7F, size, np.uint8).tobytes()  # ASCII: text works
        if kind == "text":
            refs[key] = value.decode()
        elif kind == "base64":
            refs[key] = "base64:" + base64.b64encode(value).decode()
        elif kind == "range":
            off = int(rng.integers(0, len(blob) - size + 1))
            value = blob[off:off + size]
            refs[key] = ["{{d}}/blob.bin", off, size]
        elif kind == "whole":
            (where / f"w{i}.bin").write_bytes(value)
            refs[key] = [str(where / f"w{i}.bin")]
        else:
            continue
        want[i * size:(i + 1) * size] = np.frombuffer(value, np.uint8)
    return {"version": 1, "templates": {"d": str(where)}, "refs": refs}, want


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=reference_sets())
def test_reference_sets_read_as_their_values(tmp_path: Path, spec: dict[str, Any]) -> None:
    where = tmp_path / f"r{abs(hash(str(spec)))}"
    where.mkdir()
    refs, want = build(spec, where)
    store = ReferenceStore(refs)
    arr = open_group(store, zarr_format=2)["a"]
    np.testing.assert_array_equal(arr[:], want)
    with lz.disable():
        theirs = zarr.open_group(store, mode="r", zarr_format=2)["a"]
    np.testing.assert_array_equal(theirs[:], want)
    size = spec["size"]
    for i, kind in enumerate(spec["kinds"]):
        located = store.locate([f"a/{i}"])
        got = located.part(0, 0, None)
        if kind == "missing":
            assert got is None
        elif isinstance(got, bytes):
            assert got == want[i * size:(i + 1) * size].tobytes()
        else:
            (chunk,) = lsio.read_many_sync([got])
            assert bytes(chunk) == want[i * size:(i + 1) * size].tobytes()


# -- the store's contract ----------------------------------------------------------------

async def test_store_reads_lists_and_refuses_writes(tmp_path: Path) -> None:
    from zarr.abc.store import RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype

    (tmp_path / "f.bin").write_bytes(bytes(range(100)))
    f = str(tmp_path / "f.bin")
    store = ReferenceStore({"version": 1, "refs": {
        ".zgroup": '{"zarr_format":2}', "g/a/0": [f, 10, 20], "g/a/1": [f],
        "g/b": "base64:" + base64.b64encode(b"\x00\x01").decode()}})
    proto = default_buffer_prototype()
    assert (await store.get("g/a/0", proto)).to_bytes() == bytes(range(10, 30))
    got = await store.get("g/a/0", proto, RangeByteRequest(5, 8))
    assert got.to_bytes() == bytes(range(15, 18))
    got = await store.get("g/a/0", proto, SuffixByteRequest(3))
    assert got.to_bytes() == bytes(range(27, 30))
    assert (await store.get("g/a/1", proto, SuffixByteRequest(2))).to_bytes() == b"\x62\x63"
    assert await store.get("g/nope", proto) is None
    parts = await store.get_partial_values(proto, [("g/a/1", None), ("g/b", None),
                                                   ("g/x", None)])
    assert [None if p is None else p.to_bytes() for p in parts] == [
        bytes(range(100)), b"\x00\x01", None]
    assert await store.exists("g/b") and not await store.exists("g")
    assert sorted([k async for k in store.list_dir("g")]) == ["a", "b"]
    assert sorted([k async for k in store.list_dir("")]) == [".zgroup", "g"]
    assert sorted([k async for k in store.list_prefix("g/a")]) == ["g/a/0", "g/a/1"]
    assert await store.getsize("g/a/0") == 20
    with pytest.raises(ValueError, match="read-only"):
        await store.set("g/c", proto.buffer.from_bytes(b"x"))
    with pytest.raises(ValueError, match="read-only"):
        await store.delete("g/b")
    assert pickle.loads(pickle.dumps(store)) == store
    own = ReferenceStore({"g/a/0": [f, 10, 20]}, max_gap=0, threads=2)  # Reader settings
    assert own.reader is not lsio.zarr.LsioStore(tmp_path).reader
    again = pickle.loads(pickle.dumps(own))  # (a reader pickles as its settings)
    assert (await again.get("g/a/0", proto)).to_bytes() == bytes(range(10, 30))
    with pytest.raises(TypeError):
        ReferenceStore({}, no_such_setting=1)
    with pytest.raises(TypeError, match="not both"):
        ReferenceStore({}, reader=own.reader, threads=2)


@pytest.mark.parametrize(("value", "match"), [
    (["f", -1, 4], "bad byte range"),
    (["f", 0, 2**63], "bad byte range"),
    (["f", 0, "4"], "bad byte range"),
    (["f", 1], "neither"),
    ([None, 0, 1], "names no file"),
    (["{{nope}}/f", 0, 1], "template 'nope'"),
    ("base64:!!", "not valid base64"),
    (7, "neither"),
])
def test_bad_references_name_their_key(value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=f"'v/0'.*{match}|{match}.*'v/0'|'v/0' .*"):
        ReferenceStore({"version": 1, "refs": {"v/0": value}})
    with pytest.raises(ValueError, match=match):
        ReferenceStore({"version": 1, "refs": {"v/0": value}})


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b"])
def test_keys_that_leave_the_root_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="leave"):
        ReferenceStore({key: "x"})  # (version 0: the mapping itself)


def test_a_huge_length_is_refused_by_the_read_not_allocated(tmp_path: Path) -> None:
    """A reference claiming 2**50 bytes of a 100-byte file: lsio reads what the file holds
    (lengths are checked against the file's size before any allocation), and the chunk,
    short of its size, fails naming the file; never a MemoryError."""
    (tmp_path / "f.bin").write_bytes(bytes(100))
    zarray = {"shape": [4], "chunks": [4], "dtype": "|u1", "fill_value": 0, "order": "C",
              "compressor": None, "filters": None, "zarr_format": 2}
    store = ReferenceStore({".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(zarray),
                            "a/0": [str(tmp_path / "f.bin"), 0, 2**50]})
    arr = open_group(store, zarr_format=2)["a"]
    with pytest.raises(ValueError, match=r"f\.bin \(bytes 0\+1125899906842624\)"):
        arr[:]
    (got,) = lsio.read_many_sync([store.locate(["a/0"]).part(0, 0, None)])
    assert len(got) == 100


def test_a_referenced_file_that_is_gone_is_an_error(tmp_path: Path) -> None:
    zarray = {"shape": [4], "chunks": [4], "dtype": "|u1", "fill_value": 0, "order": "C",
              "compressor": None, "filters": None, "zarr_format": 2}
    store = ReferenceStore({".zgroup": '{"zarr_format":2}', "a/.zarray": json.dumps(zarray),
                            "a/0": [str(tmp_path / "gone.bin"), 0, 4]})
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        open_group(store, zarr_format=2)["a"][:]


def test_lsio_store_locates_whole_files(tmp_path: Path) -> None:
    store = lz.LsioStore(tmp_path)
    located = store.locate(["a/zarr.json", "a/c/0/1"])
    assert located.paths == [os.path.join(tmp_path, "a/zarr.json"),
                             os.path.join(tmp_path, "a/c/0/1")]
    assert located.offsets.tolist() == [0, 0] and located.lengths.tolist() == [-1, -1]
    assert located.plain and located.reader is store.reader
    with pytest.raises(ValueError, match="leave"):
        store.locate(["ok", "../x"])
    remote = lz.LsioStore("http://127.0.0.1:1/r")
    assert remote.locate(["a b/c"]).paths == ["http://127.0.0.1:1/r/a%20b/c"]


@pytest.fixture(autouse=True)
def _lsio_pipeline() -> Iterator[None]:
    """Each test opens arrays with lsio's codec pipeline, and leaves the setting as it was."""
    with lz.enable():
        yield


def test_parquet_references_equal_the_json_ones(files: list[Path], tmp_path: Path) -> None:
    """kerchunk's parquet form (written as ``refs_to_dataframe`` does, by fsspec's
    LazyReferenceMapper, small records so an array spans several files)."""
    import fsspec
    import pyarrow  # noqa: F401 - the interop extra installs it: fail, not skip
    from fsspec.implementations.reference import LazyReferenceMapper

    refs = kerchunk_refs(str(files[0]))["refs"]
    refs["hum/0.0.0"] = "base64:" + base64.b64encode(b"\x00" * 4).decode()  # a raw value
    del refs["hum/1.0.0"]  # a missing chunk
    out = LazyReferenceMapper.create(root=str(tmp_path / "p"), fs=fsspec.filesystem("file"),
                                     record_size=7, engine="pyarrow")
    for key in sorted(refs):
        out[key] = refs[key]
    out.flush()
    from_parquet = ReferenceStore(tmp_path / "p")
    from_json = ReferenceStore({"version": 1, "refs": refs})
    theirs, mine = from_json._table, from_parquet._table
    assert theirs.keys() == mine.keys()
    for key, value in theirs.items():
        if key.rpartition("/")[2].startswith(".z"):  # documents: re-serialized
            assert json.loads(mine[key]) == json.loads(value), key  # type: ignore[arg-type]
        else:
            assert mine[key] == value, key
    np.testing.assert_array_equal(open_group(from_parquet, zarr_format=2)["temp"][:],
                                  h5(files[0], "temp"))
