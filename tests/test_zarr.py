"""Zarr: LsioStore passes zarr-python's own StoreTests (local, and read-only over nginx), works
from zarr's sync API and the user's loop at once, pickles, keeps keys inside the root; the
fast path equals zarr-python's own read (hypothesis over shapes, chunks, codecs, sharding,
selections, missing chunks)."""

from __future__ import annotations

import asyncio
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import Nginx
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.buffer import cpu, default_buffer_prototype
from zarr.testing.store import StoreTests
from zarr_cases import COMPRESSORS, make_array

import lsio.zarr as lz
from lsio.zarr import LsioStore


class TestLsioStoreLocal(StoreTests[LsioStore, cpu.Buffer]):  # type: ignore[misc]
    store_cls = LsioStore
    buffer_cls = cpu.Buffer

    async def get(self, store: LsioStore, key: str) -> cpu.Buffer:
        return self.buffer_cls.from_bytes(Path(store.root, key).read_bytes())

    async def set(self, store: LsioStore, key: str, value: cpu.Buffer) -> None:
        path = Path(store.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"root": str(tmp_path)}

    def test_store_repr(self, store: LsioStore) -> None:
        assert str(store) == f"file://{store.root}"
        assert repr(store) == f"LsioStore({store.root!r})"

    def test_store_supports_writes(self, store: LsioStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: LsioStore) -> None:
        assert store.supports_listing


@pytest.fixture(scope="module")
def www(nginx: Nginx) -> tuple[Nginx, Path]:
    return nginx, nginx.root


_counter = iter(range(1 << 30))


class TestLsioStoreHttp(StoreTests[LsioStore, cpu.Buffer]):  # type: ignore[misc]
    """A read-only store over nginx: the kit's reads run as they are; every test that writes
    or lists through the store checks instead that the store refuses, saying why."""

    store_cls = LsioStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, www: tuple[Nginx, Path]) -> dict[str, Any]:
        server, root = www
        sub = f"t{next(_counter)}"
        (root / sub).mkdir()
        self.root = root / sub
        return {"root": server.url(sub)}

    async def get(self, store: LsioStore, key: str) -> cpu.Buffer:
        return self.buffer_cls.from_bytes((self.root / key).read_bytes())

    async def set(self, store: LsioStore, key: str, value: cpu.Buffer) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    def test_store_repr(self, store: LsioStore) -> None:
        assert str(store).startswith("http://127.0.0.1:")

    def test_store_supports_writes(self, store: LsioStore) -> None:
        assert not store.supports_writes and store.read_only

    def test_store_supports_listing(self, store: LsioStore) -> None:
        assert not store.supports_listing

    async def _refuses_writes(self, store: LsioStore) -> None:
        data = self.buffer_cls.from_bytes(b"x")
        with pytest.raises(ValueError, match="read-only"):
            await store.set("k", data)
        with pytest.raises(ValueError, match="read-only"):
            await store.delete("k")

    async def _refuses_listing(self, store: LsioStore) -> None:
        with pytest.raises(NotImplementedError, match="listing"):
            [k async for k in store.list()]

    # writes through the store under test: refused on a remote root
    async def test_set(self, store: LsioStore) -> None:  # type: ignore[override]
        await self._refuses_writes(store)

    test_set_not_open = test_set_many = test_delete = test_delete_dir = test_set
    test_set_sync = test_delete_sync = test_delete_sync_missing = test_set
    test_delete_nonexistent_key_does_not_raise = test_set_if_not_exists = test_set
    test_store_read_only = test_delete_sync_visible_to_async_get = test_set

    # zarr 3.2+'s sync/async parity laws write through the store: here the server's files
    # are written instead, then the sync and async reads must agree
    @pytest.mark.parametrize("direction", ["set_async_get_sync", "set_sync_get_async"])
    async def test_sync_async_set_get_parity(self, store: LsioStore,  # type: ignore[override]
                                             direction: str) -> None:
        await self._refuses_writes(store)
        data = self.buffer_cls.from_bytes(b"\x01\x02\x03\x04")
        await self.set(store, "parity", data)
        synced = await asyncio.to_thread(store.get_sync, "parity")
        got = await store.get("parity", prototype=default_buffer_prototype())
        assert synced is not None and got is not None
        assert synced.to_bytes() == got.to_bytes() == data.to_bytes()

    @pytest.mark.parametrize("byte_range", [
        None, RangeByteRequest(1, 4), OffsetByteRequest(1), SuffixByteRequest(1),
        RangeByteRequest(10, 20)], ids=["none", "range", "offset", "suffix", "range-past-eof"])
    async def test_get_sync_byte_range_parity(  # type: ignore[override]
            self, store: LsioStore, byte_range: Any) -> None:
        await self.set(store, "parity", self.buffer_cls.from_bytes(b"\x01\x02\x03\x04"))
        synced = await asyncio.to_thread(store.get_sync, "parity", byte_range=byte_range)
        got = await store.get("parity", prototype=default_buffer_prototype(),
                              byte_range=byte_range)
        assert (synced is None) == (got is None)
        assert synced is None or got is None or synced.to_bytes() == got.to_bytes()

    async def test_exists(self, store: LsioStore) -> None:  # type: ignore[override]
        assert not await store.exists("foo")
        await self.set(store, "foo/zarr.json", self.buffer_cls.from_bytes(b"bar"))
        assert await store.exists("foo/zarr.json")

    async def test_clear(self, store: LsioStore) -> None:  # type: ignore[override]
        await self._refuses_listing(store)

    test_list = test_list_prefix = test_list_dir = test_list_empty_path = test_clear
    test_is_empty = test_getsize_prefix = test_clear

    async def test_serializable_store(self, store: LsioStore) -> None:  # type: ignore[override]
        again = pickle.loads(pickle.dumps(store))
        assert again == store and again.read_only
        await self.set(store, "k", self.buffer_cls.from_bytes(b"abc"))
        assert (await again.get("k", default_buffer_prototype())).to_bytes() == b"abc"

    async def test_store_open_read_only(self, store_kwargs: dict[str, Any]) -> None:  # type: ignore[override]
        store = await self.store_cls.open(**store_kwargs, read_only=True)
        assert store._is_open and store.read_only
        with pytest.raises(ValueError, match="remote roots"):
            self.store_cls(**store_kwargs, read_only=False)

    async def test_with_read_only_store(self, store: LsioStore) -> None:  # type: ignore[override]
        with pytest.raises(ValueError, match="remote roots"):
            store.with_read_only(False)


@pytest.mark.skipif(not all(os.path.exists(f"/usr/include/{h}") for h in ("blosc.h", "zstd.h")),
                    reason="no blosc/zstd headers: lsio is built without its C batch decoder")
def test_batch_decoder_is_built_where_its_headers_are() -> None:
    """setup.py builds the fast path's C batch decoder wherever the system's blosc and zstd
    headers are (`make test` installs them): it must import, or the tests here would only
    cover the numcodecs path."""
    from lsio import _codecs  # an ImportError when it was not built

    assert _codecs.ffi.sizeof("lsio_chunk") > 0  # the decoder's own struct, compiled in


def test_keys_stay_inside_the_root(tmp_path: Path) -> None:
    store = LsioStore(tmp_path)
    for key in ("../x", "a/../../x", "/etc/passwd", "a/./b", "a\\b"):
        with pytest.raises(ValueError, match="leave the store's root"):
            store.path_of(key)


BAD_PREFIXES = ["../", "..", "../../../../etc", "a/../..", "a/../../", "./", "a/./", "/",
                "/etc", "a\\b", "a/..", "sub/../../outside"]


@pytest.mark.parametrize("listing", ["list_dir", "list_prefix"])
@pytest.mark.parametrize("prefix", BAD_PREFIXES)
async def test_listing_stays_inside_the_root(tmp_path: Path, listing: str, prefix: str
                                             ) -> None:
    """A listing prefix follows the key rule: one that leaves the root (or could) is refused
    with the keys' ValueError, not listed; on a local root and a remote one alike."""
    (tmp_path / "outside").write_bytes(b"x")  # a sibling of the root, never to be listed
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for store in (LsioStore(root), LsioStore("http://127.0.0.1:9/root")):
        with pytest.raises(ValueError, match=re.escape(f"key {prefix!r} would leave")):
            [k async for k in getattr(store, listing)(prefix)]


async def test_listing_inside_the_root_still_works(tmp_path: Path) -> None:
    store = LsioStore(tmp_path)
    for key in ("a/b/c", "a/d", "e", "a/.zattrs"):
        await store.set(key, cpu.Buffer.from_bytes(b"1"))
    assert sorted([k async for k in store.list_dir("")]) == ["a", "e"]
    assert sorted([k async for k in store.list_dir("a/")]) == [".zattrs", "b", "d"]
    assert sorted([k async for k in store.list_dir("a")]) == [".zattrs", "b", "d"]
    assert sorted([k async for k in store.list_prefix("a/")]) == ["a/.zattrs", "a/b/c", "a/d"]
    assert sorted([k async for k in store.list_prefix("a/.z")]) == ["a/.zattrs"]
    assert sorted([k async for k in store.list_prefix("")]) == ["a/.zattrs", "a/b/c", "a/d",
                                                                "e"]


async def test_missing_keys_and_ranges_over_http(www: tuple[Nginx, Path]) -> None:
    server, root = www
    (root / "r").mkdir(exist_ok=True)
    (root / "r" / "a b").write_bytes(b"0123456789")
    store = LsioStore(server.url("r"))
    proto = default_buffer_prototype()
    got = await store.get_partial_values(proto, [("a b", RangeByteRequest(2, 5)),
                                                 ("missing", None), ("a b", None)])
    assert [g if g is None else g.to_bytes() for g in got] == [b"234", None, b"0123456789"]


async def test_sync_api_and_own_loop_at_once(tmp_path: Path) -> None:
    """zarr's sync API runs on zarr's loop thread while this test's loop reads too."""
    store = LsioStore(tmp_path)
    arr = zarr.create_array(store, name="a", shape=(64, 64), chunks=(16, 16), dtype="i4")
    arr[:] = np.arange(64 * 64).reshape(64, 64)
    sync_read = asyncio.get_running_loop().run_in_executor(None, lambda: arr[:])
    async_read = lz.read(arr)
    a, b = await asyncio.gather(sync_read, async_read)
    np.testing.assert_array_equal(a, b)
    again = zarr.open_array(pickle.loads(pickle.dumps(store)), path="a", mode="r")
    np.testing.assert_array_equal(again[:], a)


# -- the fast path against zarr-python ---------------------------------------------------------



@st.composite
def arrays(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, max(1, s))) for s in shape)
    sharded = draw(st.booleans())
    shards = tuple(c * draw(st.integers(1, 3)) for c in chunks) if sharded else None
    sel = []
    for s in shape:
        kind = draw(st.sampled_from(["all", "slice", "int"]))
        if kind == "int":
            sel.append(draw(st.integers(-s, s - 1)))
        elif kind == "slice":
            a = draw(st.integers(0, s))
            sel.append(slice(a, draw(st.integers(a, s))))
        else:
            sel.append(slice(None))
    return {
        "shape": shape, "chunks": chunks, "shards": shards, "selection": tuple(sel),
        "dtype": draw(st.sampled_from(["f4", "i2", "u1", ">f8", "i8"])),
        "compressor": draw(st.sampled_from(sorted(COMPRESSORS))),
        "transpose": draw(st.permutations(range(ndim))) if ndim > 1 and draw(
            st.booleans()) else None,
        "fill": draw(st.sampled_from([0, 7])),
        "written": draw(st.sampled_from(["all", "some", "none"])),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=arrays())
def test_fast_path_equals_zarr(tmp_path: Path, spec: dict[str, Any]) -> None:
    root = tmp_path / f"a{abs(hash(str(spec)))}"
    arr = make_array(root, spec)
    want = arr[spec["selection"]]
    got = lz.read_sync(arr, spec["selection"])
    assert got.dtype == want.dtype and got.shape == np.shape(want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lz.read_sync(str(root), spec["selection"]), want)


async def test_fast_path_over_http_and_sharded_index_at_start(www: tuple[Nginx, Path]) -> None:
    server, root = www
    codec = zc.ShardingCodec(chunk_shape=(8, 8), codecs=[zc.BytesCodec(), zc.ZstdCodec()],
                             index_location="start")
    arr = zarr.create_array(zarr.storage.LocalStore(root / "sh"), shape=(40, 30),
                            chunks=(16, 16), dtype="f4", serializer=codec, compressors=None,
                            fill_value=-1)
    arr[:20] = np.arange(20 * 30, dtype="f4").reshape(20, 30)
    want = arr[3:37, 5:]
    np.testing.assert_array_equal(await lz.read(server.url("sh"), (slice(3, 37), slice(5, None))),
                                  want)
    remote = zarr.open_array(LsioStore(server.url("sh")), mode="r")
    np.testing.assert_array_equal(await lz.read(remote), arr[:])
    np.testing.assert_array_equal(remote[5:9], arr[5:9])  # zarr-python through LsioStore


async def test_fast_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await lz.read(str(tmp_path / "nothing"))
    group = zarr.create_group(zarr.storage.LocalStore(tmp_path / "g"))
    assert group is not None
    with pytest.raises(ValueError, match="not a Zarr v3 array"):
        await lz.read(str(tmp_path / "g"))
    with pytest.raises(TypeError, match="zarr.Array, a path or a URL"):
        await lz.read(42)


@pytest.mark.parametrize("layout", ["plain", "transpose-120", "sharded"])
@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
def test_fast_path_codec_table(tmp_path: Path, compressor: str, layout: str) -> None:
    """Every codec in each layout, on a 3-D array with a missing region and an odd slice."""
    spec = {"shape": (6, 7, 9), "chunks": (2, 3, 4), "dtype": ">f8", "fill": 7,
            "compressor": compressor, "written": "some",
            "transpose": (1, 2, 0) if layout == "transpose-120" else None,
            "shards": (4, 6, 8) if layout == "sharded" else None}
    arr = make_array(tmp_path / "a", spec)
    for sel in [(...,), (slice(1, 5), 2, slice(3, None)), (5, 6, 8)]:
        np.testing.assert_array_equal(lz.read_sync(arr, sel), arr[sel])


@pytest.mark.parametrize("shards", [None, (8, 8)])
def test_fast_path_progress_counts_every_chunk(tmp_path: Path,
                                               shards: tuple[int, int] | None) -> None:
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "p"), shape=(64, 40),
                            chunks=(4, 4), shards=shards, dtype="u2")
    arr[:] = 3
    seen: list[tuple[int, int, int]] = []
    np.testing.assert_array_equal(lz.read_sync(arr, progress=lambda *a: seen.append(a)), arr[:])
    assert seen[-1][:2] == (160, 160) and [s[0] for s in seen] == sorted(s[0] for s in seen)


def test_a_chunk_of_the_wrong_size_fails(tmp_path: Path) -> None:
    """A stored chunk that decodes to fewer bytes than the chunk shape is an error, never a
    mix with another chunk's bytes (the C batch path, and the per-chunk numcodecs path)."""
    import numcodecs

    flat = zarr.create_array(zarr.storage.LocalStore(tmp_path / "f"), shape=(8, 8),
                             chunks=(4, 4), dtype="f4",
                             compressors=zc.BloscCodec(cname="zstd", clevel=1))
    flat[:] = 1.0
    (tmp_path / "f" / "c" / "0" / "0").write_bytes(numcodecs.Blosc().encode(b"\0" * 16))
    with pytest.raises(ValueError, match=r"c/0/0 is corrupt or does not decode"):
        lz.read_sync(flat)
    with pytest.raises((ValueError, RuntimeError)):
        lz.read_sync(flat, (slice(None), slice(None, None, 2)))  # strided: numcodecs path


@pytest.mark.parametrize("turns", [0, 1, 3])
@pytest.mark.parametrize("cold", [False, True])
async def test_a_cancelled_leading_get_leaves_its_batch_served(tmp_path: Path, turns: int,
                                                               cold: bool) -> None:
    """The first get of a turn reads the turn's batch itself: cancelled while it waits for
    the others to join or while it reads, the other gets of its batch still get their
    values."""
    from conftest import drop_cache

    store = LsioStore(tmp_path)
    values = {f"k{i}": os.urandom(1000 + i) for i in range(6)}
    for key, value in values.items():
        (tmp_path / key).write_bytes(value)
        if cold:
            drop_cache(tmp_path / key)
    proto = default_buffer_prototype()
    gets = [asyncio.ensure_future(store.get(key, proto)) for key in values]
    for _ in range(turns + 1):
        await asyncio.sleep(0)
    gets[0].cancel()
    # a get left waiting fails here, not by hanging the run
    done = await asyncio.wait_for(asyncio.gather(*gets, return_exceptions=True), 30)
    for (key, value), got in zip(list(values.items())[1:], done[1:], strict=True):
        assert got is not None and not isinstance(got, BaseException), key
        assert got.to_bytes() == value
    assert isinstance(done[0], asyncio.CancelledError) or done[0].to_bytes() == values["k0"]
