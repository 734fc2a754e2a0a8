"""What lsio keeps between calls (``lsio/_cache.py``): bounded, never stale, dropped by
lsio's own writes, by ``lsio.clear_caches()`` and in a forked child.

Stale-cache cases rewrite a chunk, a ``zarr.json`` and a shard in place (same size, the
old mtime put back with ``os.utime(ns=...)``) and replace them atomically; every change
must be seen by the next read, through the fast path and through zarr with lsio's
pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from conftest import check_ok, run_python

import lsio
import lsio.zarr as lz
from lsio import _cache
from lsio._sync import run_sync
from lsio.zarr import _compat, _fastpath, _grid, _read

# -- the mechanism -----------------------------------------------------------------------------

OLD1 = ("local", 1, 1, 64, 10**9, 10**9)  # identities of versions written long ago
OLD2 = ("local", 1, 2, 64, 10**9, 10**9)


def test_an_lru_is_bounded_by_entries_and_bytes() -> None:
    lru: _cache.Lru[str] = _cache.Lru("test", entries=3, max_bytes=100)
    for i in range(5):
        lru.put(i, str(i), 10)
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) == "4"
    lru.get(2)  # used: kept over 3, the least recently used
    lru.put(5, "5", 10)
    assert lru.get(3) is None and lru.get(2) == "2"
    lru.put(6, "6", 85)  # over the byte budget: the oldest go
    assert lru.get(6) == "6" and lru.get(2) == "2" and len(lru) == 2
    lru.put(7, "7", 101)  # heavier than the whole budget: not kept
    assert lru.get(7) is None and lru.get(6) == "6" and len(lru) == 2
    _cache.clear_all()
    assert len(lru) == 0


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Same size, same bytes' place, the old mtime put back (ctime moves on)."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _identity(path: Path) -> _cache.Identity:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _cache.local_identity(fd)
    finally:
        os.close(fd)


def test_a_file_entry_is_valid_for_one_identity_only(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry kept for one identity of a file is a miss once the file is rewritten in
    place with its mtime put back, or replaced; weak and absent ETags keep nothing."""
    monkeypatch.setattr(_cache, "FILE_SETTLED", 0.0)  # (the racy rule: its own test)
    cache: _cache.FileCache[str] = _cache.FileCache("test", entries=8)
    path = tmp_path / "shard"
    path.write_bytes(b"a" * 64)
    first = _identity(path)
    cache.keep(str(path), first, "index a")
    assert cache.lookup(str(path), _identity(path)) == "index a"
    _rewrite_in_place(path, b"b" * 64)
    assert _identity(path) != first and cache.lookup(str(path), _identity(path)) is None
    assert cache.lookup(str(path), first) is None  # the old version's entry was dropped
    cache.keep(str(path), _identity(path), "index b")
    _replace(path, b"b" * 64)
    assert cache.lookup(str(path), _identity(path)) is None
    assert _cache.remote_identity('W/"abc"') is None and _cache.remote_identity(None) is None
    assert _cache.remote_identity("") is None
    strong = _cache.remote_identity('"abc"')
    cache.keep("s3://b/k", strong, "remote")
    assert cache.lookup("s3://b/k", strong) == "remote"
    assert cache.lookup("s3://b/k", _cache.remote_identity('"abd"')) is None
    cache.keep("s3://b/k", None, "kept without identity")
    assert cache.lookup("s3://b/k", None) is None


def test_lsio_store_writes_and_deletes_drop_file_entries(tmp_path: Path) -> None:
    """``LsioStore.set`` and ``delete`` (as zarr calls them) drop the entries of what they
    write: a file's, and everything under a deleted directory."""
    store = lz.LsioStore(tmp_path / "z")
    arr = zarr.create_array(store, shape=(8, 8), shards=(4, 4), chunks=(2, 2), dtype="i4")
    shard = store.path_of("c/0/0")
    other = store.path_of("c/1/1")
    indexes = _cache.SHARD_INDEXES
    indexes.keep(shard, OLD1, "old index")
    indexes.keep(other, OLD2, "other index")
    arr[0:4, 0:4] = 7  # zarr writes shard c/0/0 through LsioStore.set
    assert indexes.lookup(shard, OLD1) is None
    assert indexes.lookup(other, OLD2) == "other index"
    indexes.keep(shard, OLD1, "old index")
    run_sync(store.delete("c"))  # a directory: everything under it
    assert indexes.lookup(shard, OLD1) is None
    assert indexes.lookup(other, OLD2) is None
    arr[:] = 3
    indexes.keep(other, OLD2, "other index")
    run_sync(store.delete("c/1/1"))
    assert indexes.lookup(other, OLD2) is None
    assert not (tmp_path / "z" / "c" / "1" / "1").exists()


# -- never stale ---------------------------------------------------------------------------


def _fast(path: Path, sel: Any) -> Any:
    return lz.read_sync(path, sel)


def _through_zarr(path: Path, sel: Any) -> Any:
    with lz.enable():
        return zarr.open_array(lz.LsioStore(path, read_only=True), mode="r")[sel]


def test_a_version_younger_than_a_clock_tick_is_not_kept(tmp_path: Path) -> None:
    """A file changed less than ``FILE_SETTLED`` ago may change again with the same
    times (a coarse clock tick): what it holds is not kept."""
    cache: _cache.FileCache[str] = _cache.FileCache("test", entries=8)
    path = tmp_path / "shard"
    path.write_bytes(b"a" * 64)
    cache.keep(str(path), _identity(path), "young")
    assert cache.lookup(str(path), _identity(path)) is None
    old = 1_000_000_000 * 1_000_000_000
    os.utime(path, ns=(old, old))  # the mtime is old, but the ctime is now
    cache.keep(str(path), _identity(path), "young")
    assert cache.lookup(str(path), _identity(path)) is None
    assert _cache.file_identity(str(path)) == _identity(path)
    assert _cache.file_identity(str(tmp_path / "nothing")) is None


READERS: dict[str, Callable[[Path, Any], Any]] = {"fast": _fast, "zarr": _through_zarr}
SEL = (slice(1, 7), slice(0, 8))


def _array(root: Path, sharded: bool) -> np.ndarray[Any, Any]:
    """An uncompressed 8x8 int32 array in chunks of 4x4 (shards of 4x4 holding 2x2 inner
    chunks), so a chunk rewritten with other values keeps its size."""
    # values whose bytes appear nowhere else in a chunk or shard file
    data = (np.arange(64, dtype="i4") * 7919 + 123457).reshape(8, 8)
    grid: dict[str, Any] = ({"shards": (4, 4), "chunks": (2, 2)} if sharded
                            else {"chunks": (4, 4)})
    arr = zarr.create_array(zarr.storage.LocalStore(root), shape=(8, 8), dtype="i4",
                            fill_value=1, compressors=None, **grid)
    arr[:] = data
    return data


@pytest.mark.parametrize("how", ["in place", "replaced"])
@pytest.mark.parametrize("sharded", [False, True], ids=["chunk", "shard"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_rewritten_chunk_or_shard_is_seen(tmp_path: Path, reader: str, sharded: bool,
                                            how: str) -> None:
    read = READERS[reader]
    root = tmp_path / "a"
    data = _array(root, sharded)
    for _ in range(2):  # warm every cache
        np.testing.assert_array_equal(read(root, SEL), data[SEL])
    key = root / "c" / "0" / "0"
    old = key.read_bytes()
    # chunk (0, 0) holds data[0:4, 0:4]; each value + 1000, bytes of the same length (a
    # shard's index, crc32c and all, still locates the same inner chunks)
    block = data[0:4, 0:4]
    new = old
    for v in np.unique(block):  # little-endian int32 values, each stored once
        a, b = np.int32(v).tobytes(), np.int32(v + 1000).tobytes()
        assert new.count(a) == 1, "the test needs each value's bytes stored once"
        new = new.replace(a, b)
    (_rewrite_in_place if how == "in place" else _replace)(key, new)
    want = data.copy()
    want[0:4, 0:4] += 1000
    np.testing.assert_array_equal(read(root, SEL), want[SEL])


@pytest.mark.parametrize("how", ["in place", "replaced"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_rewritten_metadata_is_seen(tmp_path: Path, reader: str, how: str) -> None:
    """zarr.json rewritten with another fill value of the same length: missing chunks
    read as the new one."""
    read = READERS[reader]
    root = tmp_path / "a"
    zarr.create_array(zarr.storage.LocalStore(root), shape=(8, 8), chunks=(4, 4),
                      dtype="i4", fill_value=1)
    for _ in range(2):
        np.testing.assert_array_equal(read(root, SEL), np.ones((6, 8), "i4"))
    meta = root / "zarr.json"
    text = meta.read_bytes()
    assert text.count(b'"fill_value": 1,') == 1
    (_rewrite_in_place if how == "in place" else _replace)(
        meta, text.replace(b'"fill_value": 1,', b'"fill_value": 9,'))
    np.testing.assert_array_equal(read(root, SEL), np.full((6, 8), 9, "i4"))


def _sharded_for_index_tests(root: Path) -> np.ndarray[Any, Any]:
    data = (np.arange(64, dtype="i4") * 7919 + 123457).reshape(8, 8)
    arr = zarr.create_array(zarr.storage.LocalStore(root), shape=(8, 8), dtype="i4",
                            fill_value=1, compressors=None, shards=(8, 8), chunks=(4, 4))
    arr[:] = data
    return data


@pytest.mark.parametrize("reader", sorted(READERS))
def test_shard_indexes_are_kept_and_never_stale(tmp_path: Path, reader: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard's index is read once while its file is unchanged; a rewrite in place that
    moves its inner chunks (same size, mtime put back) is read anew, never located by the
    old index."""
    import time

    monkeypatch.setattr(_cache, "FILE_SETTLED", 0.0)
    read, root = READERS[reader], tmp_path / "a"
    data = _sharded_for_index_tests(root)
    shard = root / "c" / "0" / "0"
    time.sleep(0.05)  # past the clock tick of the write
    lsio.clear_caches()
    np.testing.assert_array_equal(read(root, SEL), data[SEL])
    kept = _cache.SHARD_INDEXES.get(str(shard))
    assert kept is not None and kept[0] == _identity(shard)
    calls: list[Any] = []
    real = _read.Source.fetch

    async def counting(self: Any, requests: Any, *args: Any, **kw: Any) -> Any:
        calls.append(list(requests))
        return await real(self, requests, *args, **kw)

    monkeypatch.setattr(_read.Source, "fetch", counting)
    np.testing.assert_array_equal(read(root, SEL), data[SEL])
    assert not any(r[1] < 0 for c in calls for r in c), calls  # no index (a suffix) read
    # the inner chunks swapped in the file: (0, 0) and (1, 1) exchange places, the index
    # rewritten to match (its crc32c too); same size, the mtime put back
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-(16 * 4 + 4):-4], "<u8").reshape(4, 2).copy()
    (o0, n0), (o3, n3) = index[0].tolist(), index[3].tolist()
    assert n0 == n3 and o0 < o3
    body = bytearray(raw)
    body[o0:o0 + n0], body[o3:o3 + n3] = raw[o3:o3 + n3], raw[o0:o0 + n0]
    index[0, 0], index[3, 0] = o3, o0
    import google_crc32c

    tail = index.tobytes()
    body[-(16 * 4 + 4):] = tail + np.uint32(google_crc32c.value(tail)).tobytes()
    time.sleep(0.05)  # a clock tick after the read that kept the index
    _rewrite_in_place(shard, bytes(body))
    np.testing.assert_array_equal(read(root, SEL), data[SEL])
    assert _cache.SHARD_INDEXES.get(str(shard))[0] == _identity(shard)  # type: ignore[index]


# -- what is kept, and forgetting it -------------------------------------------------------


def test_repeated_selections_reuse_metadata_chain_and_plan(tmp_path: Path) -> None:
    """The second read of a selection parses nothing and plans nothing anew, and its jobs
    are placed at its own output; arrays opened again share one decode chain."""
    root = tmp_path / "a"
    data = _array(root, sharded=False)
    lsio.clear_caches()
    outs = [lz.read_sync(root, SEL) for _ in range(3)]
    for out in outs:
        np.testing.assert_array_equal(out, data[SEL])
    assert len({o.__array_interface__["data"][0] for o in outs}) == 3  # kept: 3 outputs
    assert len(_fastpath._METADATA) == 1 and len(_grid._PLANS) == 1
    assert len(_read._CHAINS) == 1
    for plan in _grid._PLANS._map.values():  # shared: nobody may write into it
        assert not plan[0].jobs.flags.writeable
    chains = set()
    for _ in range(2):
        arr = zarr.open_array(lz.LsioStore(root, read_only=True), mode="r")
        codecs = tuple(arr.metadata.codecs)  # type: ignore[union-attr]
        chains.add(id(_read.chain_of(_read.Layout(codecs, (4, 4), np.dtype("i4")))))
    assert len(chains) == 1


def test_clear_caches_forgets_everything(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _array(root, sharded=False)
    lz.read_sync(root, SEL)
    _cache.SHARD_INDEXES.keep("x", OLD1, "index")
    assert len(_fastpath._METADATA) and len(_grid._PLANS) and len(_read._CHAINS)
    assert _compat._grid.cache_info().currsize
    lsio.clear_caches()
    assert not len(_fastpath._METADATA) and not len(_grid._PLANS)
    assert not len(_read._CHAINS) and not len(_cache.SHARD_INDEXES)
    assert not _compat._grid.cache_info().currsize


def test_a_forked_child_starts_with_empty_caches(tmp_path: Path) -> None:
    _array(tmp_path / "a", sharded=False)
    out = check_ok(run_python('''
        import os, sys
        import numpy as np
        import lsio.zarr as lz
        from lsio import _cache
        from lsio.zarr import _fastpath, _grid, _read
        root = sys.argv[1]
        want = (np.arange(64, dtype="i4") * 7919 + 123457).reshape(8, 8)[1:7]
        assert np.array_equal(lz.read_sync(root, (slice(1, 7), slice(0, 8))), want)
        _cache.SHARD_INDEXES.keep("x", ("local", 1, 1, 64, 10**9, 10**9), "index")
        assert len(_fastpath._METADATA) and len(_grid._PLANS) and len(_read._CHAINS)
        pid = os.fork()
        if pid == 0:
            ok = not (len(_fastpath._METADATA) or len(_grid._PLANS) or len(_read._CHAINS)
                      or len(_cache.SHARD_INDEXES))
            ok = ok and np.array_equal(lz.read_sync(root, (slice(1, 7), slice(0, 8))), want)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert len(_fastpath._METADATA) and len(_cache.SHARD_INDEXES)  # the parent's stay
        print("ok")
    ''', str(tmp_path / "a"), timeout=120))
    assert out.strip() == "ok"
