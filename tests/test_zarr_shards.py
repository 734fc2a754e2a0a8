"""Sharded arrays read whole and in part: the inner chunks of every shard a basic selection
touches are worked out at once with numpy arrays (``lsio.zarr._inner.inner_rows``) and read
in one call, each decoded into the output. It equals zarr's indexer chunk for chunk
(hypothesis), and reads equal zarr-python's default pipeline for shard and inner chunk
shapes, index at the start or end, empty inner chunks and missing shards, steps and ints;
hostile indexes (past the end, overlapping, huge) give zarr's answer or an error naming
the shard, never bytes from outside it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from numcodecs.checksum32 import CRC32C

import lsio.zarr as lz
from lsio.zarr import _compat, _inner, _read, _shards

PIPELINE = "lsio.zarr.LsioCodecPipeline"
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


pytestmark = pytest.mark.usefixtures("default_pipeline")


@pytest.fixture(params=["whole-shards", "index-first"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Shards covered whole read in one request each (from one shard on), or never."""
    monkeypatch.setattr(_shards, "WHOLE_SHARDS_MIN", 1 if request.param == "whole-shards"
                        else 10**9)
    monkeypatch.setattr(_shards, "WHOLE_SHARDS", "always")  # local files too
    return str(request.param)


def _format(shard: tuple[int, ...], inner: tuple[int, ...]) -> _shards.ShardFormat:
    sharding = zc.ShardingCodec(chunk_shape=inner, codecs=[zc.BytesCodec()])
    layout = _read.Layout((sharding,), shard, np.dtype("u2"))
    return _shards.shard_format(layout, sharding, _read.chain_of)


@st.composite
def grids(draw: st.DrawFn, kinds: tuple[str, ...] = ("all", "slice", "step", "int"),
          most: int = 4, longest: int = 14) -> dict[str, Any]:
    """A shape, inner chunk and shard shapes, and a basic selection of the shape."""
    ndim = draw(st.integers(1, 3))
    inner = tuple(draw(st.integers(1, most)) for _ in range(ndim))
    shard = tuple(c * draw(st.integers(1, 3)) for c in inner)
    shape = tuple(draw(st.integers(1, longest)) for _ in range(ndim))
    sel: list[Any] = []
    for s in shape:
        kind = draw(st.sampled_from(kinds))
        if kind == "int":
            sel.append(draw(st.integers(0, s - 1)))
        elif kind == "neg-int":
            sel.append(draw(st.integers(-s, -1)))
        elif kind == "all":
            sel.append(slice(None))
        else:
            a = draw(st.integers(0, s))
            sel.append(slice(a, draw(st.integers(a, s)),
                             draw(st.integers(1, 7)) if kind == "step" else None))
    return {"shape": shape, "inner": inner, "shard": shard, "sel": tuple(sel)}


@settings(max_examples=200, deadline=None)
@given(case=grids())
def test_inner_rows_are_zarrs_inner_chunks(case: dict[str, Any]) -> None:
    """Per shard, the rows name the inner chunks zarr's indexer names, with the same block
    in the chunk and in the output, in the same order."""
    fmt = _format(case["shard"], case["inner"])
    outer = _compat.indexer("basic", case["sel"], case["shape"], case["shard"])
    shards = list(outer)
    out = np.empty(outer.shape, "u2")
    rows = _inner.inner_rows(fmt, [p.chunk_selection for p in shards],
                              [p.out_selection for p in shards], out)
    assert rows is not None
    want = []
    for i, p in enumerate(shards):
        for q in _compat.indexer("basic", p.chunk_selection, fmt.shard_shape, fmt.inner_shape):
            region: Any = np.zeros(out.shape, bool)
            region[(*p.out_selection, ...)][(*q.out_selection, ...)] = True
            want.append((i, tuple(q.chunk_coords), _norm(q.chunk_selection, fmt.inner_shape),
                         region.tobytes()))
    got = []
    for k in range(len(rows)):
        region = np.zeros(out.shape, bool)
        region[(*rows.out_sel(k), ...)] = True
        got.append((int(rows.shard[k]), tuple(rows.coords[k].tolist()),
                    _norm(rows.chunk_sel(k), fmt.inner_shape), region.tobytes()))
    assert got == want


def _norm(sel: Any, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A chunk selection as the elements it picks per dimension."""
    return tuple(tuple(range(*s.indices(n))) if isinstance(s, slice) else int(s)
                 for s, n in zip(sel, shape, strict=True))


def test_inner_rows_refuse_what_they_cannot_describe() -> None:
    fmt = _format((4, 4), (2, 2))
    out = np.empty((4, 4), "u2")
    whole = (slice(0, 4, 1), slice(0, 4, 1))
    assert _inner.inner_rows(fmt, [whole], [whole], out) is not None
    for chunk_sel, out_sel in [
            ((np.array([0, 1]), slice(0, 4, 1)), whole),  # an oindex array
            ((slice(0, 4, 1), slice(0, 4, -1)), whole),  # a negative step
            ((slice(0, 5, 1), slice(0, 4, 1)), whole),  # past the shard
            (whole, (slice(0, 4, 1), slice(1, 5, 1))),  # past the output
            (whole, (slice(0, 4, 1), slice(0, 3, 1))),  # counts differ
            ((slice(0, 4, 1), True), whole)]:  # a bool is not an index here
        assert _inner.inner_rows(fmt, [chunk_sel], [out_sel], out) is None


def _array(root: Path, shape: tuple[int, ...], inner: tuple[int, ...], shard: tuple[int, ...],
           location: str, written: str, compressed: bool) -> np.ndarray:
    """A sharded uint16 array at ``root``; returns what it holds (fill 7)."""
    arr = zarr.create_array(
        zarr.storage.LocalStore(root), shape=shape, chunks=inner, shards=shard, dtype="<u2",
        fill_value=7, overwrite=True,
        compressors=zc.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
        if compressed else None)
    if location == "start":
        meta = json.loads((root / "zarr.json").read_text())
        meta["codecs"][0]["configuration"]["index_location"] = "start"
        (root / "zarr.json").write_text(json.dumps(meta))
        arr = zarr.open_array(zarr.storage.LocalStore(root), mode="r+")
    data = (np.arange(int(np.prod(shape))) % 1000 + 100).reshape(shape).astype("<u2")
    if written == "all":
        arr[...] = data
    elif written == "checker":  # every other inner chunk written: empty index entries
        for coords in np.ndindex(*(-(-s // c) for s, c in zip(shape, inner, strict=True))):
            if sum(coords) % 2 == 0:
                block = tuple(slice(k * c, (k + 1) * c) for k, c in zip(coords, inner,
                                                                        strict=True))
                arr[block] = data[block]
    elif written == "first-shard":  # the other shards are missing
        block = tuple(slice(0, s) for s in shard)
        arr[block] = data[block]
    return np.asarray(zarr.open_array(zarr.storage.LocalStore(root), mode="r")[...])


@st.composite
def arrays(draw: st.DrawFn) -> dict[str, Any]:
    """:func:`grids` with how the array is stored and written."""
    case = draw(grids(("all", "slice", "step", "int", "neg-int"), most=5, longest=16))
    return {**case, "location": draw(st.sampled_from(["end", "start"])),
            "written": draw(st.sampled_from(["all", "checker", "first-shard", "none"])),
            "compressed": draw(st.booleans()), "whole_min": draw(st.sampled_from([1, 10**9]))}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=arrays())
@example(case={"shape": (9, 10), "inner": (2, 3), "shard": (4, 6),
               "sel": (slice(1, 8, 3), 4), "location": "start", "written": "checker",
               "compressed": True, "whole_min": 1})
def test_sharded_reads_equal_zarrs(data_dir: Path, case: dict[str, Any],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path and the lsio pipeline read what zarr's default pipeline reads, shards
    covered whole read in one request each or index first."""
    monkeypatch.setattr(_shards, "WHOLE_SHARDS_MIN", case["whole_min"])
    monkeypatch.setattr(_shards, "WHOLE_SHARDS", "always")
    root = data_dir / "a"
    full = _array(root, case["shape"], case["inner"], case["shard"], case["location"],
                  case["written"], case["compressed"])
    sel = case["sel"]
    want = full[sel]
    np.testing.assert_array_equal(lz.read_sync(root, sel), want)
    np.testing.assert_array_equal(_open(root, PIPELINE)[sel], want)


def _open(root: Path, pipeline: str) -> Any:
    with zarr.config.set({"codec_pipeline.path": pipeline}):
        return zarr.open_array(zarr.storage.LocalStore(root), mode="r")


def test_basic_selections_take_the_vectorised_road(data_dir: Path, route: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-shard indexer and no per-chunk road for basic selections of blosc shards;
    ``oindex`` still reads (by the per-shard road)."""
    root = data_dir / "a"
    full = _array(root, (40, 30), (4, 5), (8, 10), "end", "checker", True)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("per-chunk road taken")

    with monkeypatch.context() as m:
        m.setattr(_read, "_per_shard", refuse)
        m.setattr(_read, "_per_block", refuse)
        sels: list[Any] = [(slice(None), slice(None)), (slice(3, 37, 2), slice(7, 29)),
                           (5, 7), (slice(None), 29)]
        for sel in sels:
            np.testing.assert_array_equal(lz.read_sync(root, sel), full[sel])
            np.testing.assert_array_equal(_open(root, PIPELINE)[sel], full[sel])
    idx = (np.array([1, 17, 39]), slice(2, 25, 3))
    np.testing.assert_array_equal(lz.read_sync(root, idx, mode="oindex"),
                                  full[np.ix_(idx[0], np.arange(30)[idx[1]])])


# -- hostile indexes ---------------------------------------------------------------------

def _one_shard(root: Path, location: str) -> tuple[bytes, int, np.ndarray]:
    """An 8x8 uint16 array in one shard of 4x4 inner chunks (the index's offset in it)."""
    full = _array(root, (8, 8), (4, 4), (8, 8), location, "all", False)
    shard = (root / "c" / "0" / "0").read_bytes()
    return shard, (len(shard) - 68 if location == "end" else 0), full


def _rewrite(root: Path, shard: bytes, at: int, entries: dict[int, tuple[int, int]]) -> None:
    index = bytearray(shard[at:at + 64])
    for k, (off, n) in entries.items():
        struct.pack_into("<QQ", index, 16 * k, off, n)
    crc = bytes(CRC32C().encode(bytes(index)))[64:]
    (root / "c" / "0" / "0").write_bytes(shard[:at] + bytes(index) + crc + shard[at + 68:])


@pytest.mark.parametrize("location", ["end", "start"])
@pytest.mark.parametrize("entry", [(10**6, 32), (0, 2**40), (2**62, 2**62 - 1)],
                         ids=["past-eof", "huge-length", "huge-both"])
def test_hostile_entry_names_the_shard(data_dir: Path, location: str, route: str,
                                       entry: tuple[int, int]) -> None:
    """An inner chunk past the end of its shard, or longer than any file: an error naming
    the shard, as zarr refuses it; the other inner chunks still read."""
    root = data_dir / "a"
    shard, at, full = _one_shard(root, location)
    _rewrite(root, shard, at, {0: entry})
    with pytest.raises(Exception):  # noqa: B017 - zarr's own error, whatever its class
        _open(root, DEFAULT)[0:4, 0:4]
    for read in (lambda: lz.read_sync(root, (slice(0, 4), slice(0, 4))),
                 lambda: _open(root, PIPELINE)[0:4, 0:4], lambda: lz.read_sync(root),
                 lambda: _open(root, PIPELINE)[...]):
        with pytest.raises((ValueError, OSError)) as info:
            read()
        assert "c/0/0" in str(info.value)
    np.testing.assert_array_equal(lz.read_sync(root, (slice(4, 8), slice(0, 8))), full[4:])


@pytest.mark.parametrize("location", ["end", "start"])
def test_overlapping_entries_read_as_zarr_reads_them(data_dir: Path, location: str,
                                                     route: str) -> None:
    """Two inner chunks pointing at the same bytes: both read them (zarr does too)."""
    root = data_dir / "a"
    shard, at, full = _one_shard(root, location)
    index = np.frombuffer(shard[at:at + 64], "<u8").reshape(4, 2)
    _rewrite(root, shard, at, {3: (int(index[0, 0]), int(index[0, 1]))})
    want = np.asarray(_open(root, DEFAULT)[...])
    np.testing.assert_array_equal(want[4:, 4:], full[:4, :4])
    np.testing.assert_array_equal(lz.read_sync(root), want)
    np.testing.assert_array_equal(_open(root, PIPELINE)[...], want)


def test_corrupt_index_checksum_names_the_shard(data_dir: Path, route: str) -> None:
    root = data_dir / "a"
    shard, at, _ = _one_shard(root, "end")
    bad = bytearray(shard)
    bad[at] ^= 1
    (root / "c" / "0" / "0").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="shard index of 'c/0/0'.*corrupt"):
        lz.read_sync(root)


# -- shards that are byte ranges of another file (references) ------------------------------

def _packed(data_dir: Path) -> tuple[Any, Path, dict[str, tuple[int, int]], np.ndarray]:
    """A sharded array whose shard files are packed into one file, with junk between them,
    read through kerchunk-style references: (the store, the packed file, each shard's
    (offset, length) in it, the values)."""
    from lsio.virtual import ReferenceStore

    root = data_dir / "a"
    full = _array(root, (12, 10), (2, 5), (4, 10), "end", "all", True)
    blob, ranges = bytearray(), {}
    refs: dict[str, Any] = {"zarr.json": (root / "zarr.json").read_text()}
    for path in sorted((root / "c").rglob("*")):
        if path.is_file():
            blob += b"\xff" * 100
            key, value = str(path.relative_to(root)), path.read_bytes()
            ranges[key] = (len(blob), len(value))
            refs[key] = [str(data_dir / "packed"), len(blob), len(value)]
            blob += value
    (data_dir / "packed").write_bytes(bytes(blob))
    return ReferenceStore({"version": 1, "refs": refs}), data_dir / "packed", ranges, full


def _open_store(store: Any) -> Any:
    with zarr.config.set({"codec_pipeline.path": PIPELINE}):
        return zarr.open_array(store, mode="r")


def test_shards_in_byte_ranges_of_another_file(data_dir: Path, route: str) -> None:
    store, _, _, full = _packed(data_dir)
    arr = zarr.open_array(store, mode="r")
    for sel in [(slice(None), slice(None)), (slice(1, 11, 3), slice(2, 9))]:
        np.testing.assert_array_equal(lz.read_sync(arr, sel), full[sel])
        np.testing.assert_array_equal(_open_store(store)[sel], full[sel])


def test_an_entry_past_its_range_never_reads_the_next_shard(data_dir: Path,
                                                           route: str) -> None:
    """An index entry pointing past the end of its shard's byte range, at the next shard's
    first inner chunk in the packed file: an error naming the packed file, not the
    neighbour's chunk decoded as this one's."""
    store, packed, ranges, _ = _packed(data_dir)
    blob = bytearray(packed.read_bytes())
    (a0, n0), (a1, n1) = ranges["c/0/0"], ranges["c/1/0"]
    index = bytearray(blob[a0 + n0 - 68:a0 + n0 - 4])  # shard 0's index (at its end)
    nxt = np.frombuffer(bytes(blob[a1 + n1 - 68:a1 + n1 - 4]), "<u8").reshape(-1, 2)
    struct.pack_into("<QQ", index, 0, a1 - a0 + int(nxt[0, 0]), int(nxt[0, 1]))
    blob[a0 + n0 - 68:a0 + n0] = bytes(CRC32C().encode(bytes(index)))
    packed.write_bytes(bytes(blob))
    arr = zarr.open_array(store, mode="r")
    for read in (lambda: lz.read_sync(arr, (slice(0, 2), slice(0, 5))),
                 lambda: _open_store(store)[0:2, 0:5], lambda: lz.read_sync(arr),
                 lambda: _open_store(store)[...]):
        with pytest.raises((ValueError, OSError), match="packed|'c/0/0'"):
            read()


def test_shards_covered_whole_read_without_an_index_read(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A selection covering 8 shards whole (the default threshold) reads each in one
    request: no index read first; missing shards and empty inner chunks read as the fill
    value."""
    monkeypatch.setattr(_shards, "WHOLE_SHARDS", "always")
    root = data_dir / "a"
    full = _array(root, (16, 40), (4, 5), (8, 10), "end", "checker", True)  # 8 shards
    (root / "c" / "1" / "3").unlink()  # a missing shard
    full[8:16, 30:40] = 7

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an index read first")

    monkeypatch.setattr(_shards, "shard_indexes", refuse)
    np.testing.assert_array_equal(lz.read_sync(root), full)
    np.testing.assert_array_equal(_open(root, PIPELINE)[...], full)
    sel = (slice(None), slice(0, 40, 3))
    np.testing.assert_array_equal(lz.read_sync(root, sel), full[sel])
    with pytest.raises(AssertionError, match="an index read first"):
        lz.read_sync(root, (slice(0, 11), slice(None)))  # 4 shards whole: fewer than 8


async def test_remote_shards_covered_whole_read_in_one_request_each(
        nginx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTP (nginx), 8 shards covered whole: one request each, no index read first;
    a selection covering fewer reads index first. Local files always read index first."""
    server, base = nginx, Path(nginx.root)
    full = _array(base / "w", (16, 40), (4, 5), (8, 10), "start", "checker", True)
    calls: list[int] = []
    real = _shards.shard_indexes

    async def counted(source: Any, fmt: Any, keys: Any) -> Any:
        calls.append(len(keys))
        return await real(source, fmt, keys)

    monkeypatch.setattr(_shards, "shard_indexes", counted)
    np.testing.assert_array_equal(await lz.read(server.url("w")), full)
    assert calls == []
    sel = (slice(0, 11), slice(None))
    np.testing.assert_array_equal(await lz.read(server.url("w"), sel), full[sel])
    assert calls == [8]
    np.testing.assert_array_equal(await lz.read(str(base / "w")), full)
    assert calls == [8, 8]
