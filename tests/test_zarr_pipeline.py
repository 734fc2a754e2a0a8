"""lsio as zarr-python's codec pipeline: ``zarr.open_array(...)[sel]``, ``.oindex`` and
``.vindex`` with :class:`lsio.zarr.LsioCodecPipeline` equal zarr's default pipeline
(hypothesis over shapes, chunks, shards, codecs, byte orders, transposes, fill values,
missing chunks and selections), on LocalStore, LsioStore and a store lsio cannot plan; the
fast path's modes equal them too; writes go through zarr's pipeline and read back; the
pipeline pickles and is found by its configured name."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr_cases import COMPRESSORS, make_array

import lsio.zarr as lz
import lsio.zarr._batched as batched
from lsio.zarr import LsioCodecPipeline, LsioStore

PIPELINE = "lsio.zarr.LsioCodecPipeline"
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


pytestmark = pytest.mark.usefixtures("default_pipeline")


def open_with(store: Any, pipeline: str) -> zarr.Array:
    with zarr.config.set({"codec_pipeline.path": pipeline}):
        return zarr.open_array(store, mode="r")


def selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[str, Any]:
    """A zarr selection of ``shape``: (mode, selection)."""
    mode = draw(st.sampled_from(["basic", "oindex", "vindex"]))
    if mode == "vindex":
        n = draw(st.integers(1, 6))
        return mode, tuple(np.array(draw(st.lists(st.integers(0, s - 1), min_size=n,
                                                  max_size=n)), np.int64) for s in shape)
    sel: list[Any] = []
    for s in shape:
        kinds = ["all", "slice", "step", "int"] + (["ints", "mask"] if mode == "oindex" else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "int":
            sel.append(draw(st.integers(-s, s - 1)))
        elif kind in ("slice", "step"):
            a = draw(st.integers(0, s))
            step = draw(st.integers(1, 5)) if kind == "step" else None
            sel.append(slice(a, draw(st.integers(a, s)), step))
        elif kind == "ints":
            sel.append(np.array(draw(st.lists(st.integers(0, s - 1), min_size=1, max_size=5,
                                              unique=True)), np.int64))
        elif kind == "mask":
            sel.append(np.array(draw(st.lists(st.booleans(), min_size=s, max_size=s))))
        else:
            sel.append(slice(None))
    return mode, tuple(sel)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, max(1, s))) for s in shape)
    shards = (tuple(c * draw(st.integers(1, 3)) for c in chunks) if draw(st.booleans())
              else None)
    mode, sel = selections(draw, shape)
    return {
        "shape": shape, "chunks": chunks, "shards": shards, "mode": mode, "selection": sel,
        "dtype": draw(st.sampled_from(["f4", "<i2", ">i2", "u1", ">f8", "<f8", "i8"])),
        "compressor": draw(st.sampled_from(sorted(COMPRESSORS))),
        "transpose": draw(st.permutations(range(ndim))) if ndim > 1 and draw(
            st.booleans()) else None,
        "fill": draw(st.sampled_from([0, 7])),
        "written": draw(st.sampled_from(["all", "some", "none"])),
    }


def index(arr: zarr.Array, mode: str, sel: Any) -> Any:
    return {"basic": arr, "oindex": arr.oindex, "vindex": arr.vindex}[mode][sel]


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=cases())
def test_pipeline_equals_zarrs_default(tmp_path: Path, spec: dict[str, Any]) -> None:
    root = tmp_path / f"a{abs(hash(str(spec)))}"
    make_array(root, spec)
    mode, sel = spec["mode"], spec["selection"]
    want = index(open_with(zarr.storage.LocalStore(root), DEFAULT), mode, sel)
    for store in (zarr.storage.LocalStore(root), LsioStore(root)):
        arr = open_with(store, PIPELINE)
        assert isinstance(arr._async_array.codec_pipeline, LsioCodecPipeline)
        got = index(arr, mode, sel)
        assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)
    fast = lz.read_sync(str(root), sel, mode=mode)
    assert fast.dtype == want.dtype and fast.shape == np.shape(want)
    np.testing.assert_array_equal(fast, want)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", ">i8", "u1"])
@pytest.mark.parametrize("transpose", [None, (1, 0)])
@pytest.mark.parametrize("compressor", ["none", "blosc-zstd", "zstd"])
def test_the_c_decoder_takes_steps_transposes_and_byte_orders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str,
        transpose: tuple[int, int] | None, compressor: str) -> None:
    """Stepped selections, transposed chunks and either byte order stay on the batched C
    decoder (counted), and equal zarr's own read."""
    calls: list[int] = []
    real = batched._decode_scatter

    def counting(decoder: Any, name: Any, jobs: Any, n: int) -> None:
        calls.append(n)
        real(decoder, name, jobs, n)

    monkeypatch.setattr(batched, "_decode_scatter", counting)
    spec = {"shape": (23, 17), "chunks": (5, 4), "shards": None, "dtype": dtype, "fill": 7,
            "compressor": compressor, "transpose": transpose, "written": "all"}
    make_array(tmp_path / "a", spec)
    want_arr = open_with(zarr.storage.LocalStore(tmp_path / "a"), DEFAULT)
    lsio_arr = open_with(zarr.storage.LocalStore(tmp_path / "a"), PIPELINE)
    for sel in [np.s_[:], np.s_[1:22:3, ::2], np.s_[4, 3:15:5], np.s_[::7, 16]]:
        calls.clear()
        np.testing.assert_array_equal(lsio_arr[sel], want_arr[sel])
        np.testing.assert_array_equal(lz.read_sync(tmp_path / "a", sel), want_arr[sel])
        assert sum(calls) > 0, sel


def test_writes_go_through_zarr_and_read_back(tmp_path: Path) -> None:
    lz.enable()
    arr = zarr.create_array(LsioStore(tmp_path / "w"), shape=(30, 20), chunks=(7, 6),
                            shards=(14, 12), dtype="i4", fill_value=-1,
                            compressors=zc.ZstdCodec(level=1))
    assert isinstance(arr._async_array.codec_pipeline, LsioCodecPipeline)
    data = np.arange(600, dtype="i4").reshape(30, 20)
    arr[:] = data
    arr[3:9, 2:5] = 0
    data[3:9, 2:5] = 0
    np.testing.assert_array_equal(arr[:], data)
    np.testing.assert_array_equal(arr.oindex[[0, 29], [19, 0]], data[np.ix_([0, 29], [19, 0])])
    lz.disable()
    np.testing.assert_array_equal(zarr.open_array(LsioStore(tmp_path / "w"), mode="r")[:],
                                  data)


def test_pipeline_pickles_and_is_found_by_name(tmp_path: Path) -> None:
    from zarr.registry import get_pipeline_class

    lz.enable()
    assert zarr.config.get("codec_pipeline.path") == "lsio.zarr.LsioCodecPipeline"
    assert get_pipeline_class() is LsioCodecPipeline
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "p"), shape=(10,), chunks=(3,),
                            dtype="f8")
    arr[:] = np.arange(10.0)
    pipe = arr._async_array.codec_pipeline
    again = pickle.loads(pickle.dumps(pipe))
    assert again == pipe and isinstance(again, LsioCodecPipeline)
    lz.disable()  # an unpickled array keeps the pipeline it was opened with
    back = pickle.loads(pickle.dumps(arr))
    assert isinstance(back._async_array.codec_pipeline, LsioCodecPipeline)
    np.testing.assert_array_equal(back[:], np.arange(10.0))


def test_other_stores_and_zarr_v2_arrays(tmp_path: Path) -> None:
    """A store lsio cannot read paths from (MemoryStore) is read through its own ``get``;
    a zarr v2 array with filters (numcodecs Delta) goes to zarr's own pipeline: same
    results."""
    import numcodecs

    data = np.arange(200, dtype="u2").reshape(10, 20)
    mem = zarr.storage.MemoryStore()
    zarr.create_array(mem, shape=(10, 20), chunks=(3, 7), shards=(6, 14), dtype="u2",
                      fill_value=5)[:8] = data[:8]
    v2 = zarr.create_array(zarr.storage.LocalStore(tmp_path / "v2"), shape=(10, 20),
                           chunks=(3, 7), dtype="u2", zarr_format=2,
                           filters=[numcodecs.Delta(dtype="u2")])
    v2[:] = data
    lz.enable()
    arr = zarr.open_array(mem, mode="r")
    want = data.copy()
    want[8:] = 5
    np.testing.assert_array_equal(arr[:], want)
    np.testing.assert_array_equal(arr.vindex[[0, 9], [19, 3]], want[[0, 9], [19, 3]])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "v2", mode="r")[1:9:2], data[1:9:2])


def test_a_corrupt_chunk_names_its_path(tmp_path: Path) -> None:
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "c"), shape=(8, 8), chunks=(4, 4),
                            dtype="f4", compressors=zc.ZstdCodec(level=1))
    arr[:] = 1.0
    (tmp_path / "c" / "c" / "1" / "0").write_bytes(b"not zstd at all")
    lsio_arr = open_with(zarr.storage.LocalStore(tmp_path / "c"), PIPELINE)
    with pytest.raises(ValueError, match=r"c/1/0 is corrupt"):
        lsio_arr[:]
    np.testing.assert_array_equal(lsio_arr[:4], np.ones((4, 8), "f4"))  # the others still read


def test_a_stores_reader_survives_pickling(tmp_path: Path) -> None:
    """Dask ships stores to its workers: the store's own reader (its backend, its HTTP
    endpoint and headers) goes with it, rebuilt from its settings."""
    import lsio

    http = lsio.HttpOptions(headers={"x-token": "t"})
    store = LsioStore(tmp_path, reader=lsio.Reader(backend="threads", max_gap=123, http=http))
    again = pickle.loads(pickle.dumps(store))
    assert again.reader is not store.reader
    assert (again.reader.backend, again.reader.max_gap, again.reader.http) == (
        "threads", 123, http)
    assert pickle.loads(pickle.dumps(LsioStore(tmp_path)))._reader is None  # the default's


def test_enable_as_a_context_manager() -> None:
    switch = lz.enable()
    assert pickle.loads(pickle.dumps(switch)) == switch  # client.run ships it back
    switch.__exit__(None, None, None)
    with lz.enable():
        assert zarr.config.get("codec_pipeline.path") == lz.PATH
        with lz.disable():
            assert zarr.config.get("codec_pipeline.path") == DEFAULT
        assert zarr.config.get("codec_pipeline.path") == lz.PATH
    assert zarr.config.get("codec_pipeline.path") == DEFAULT


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f4", ">i4"])
@pytest.mark.parametrize("compressor", ["blosc", "zstd", "gzip", "none"])
def test_zarr_v2_arrays_are_read_by_lsio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         order: str, dtype: str, compressor: str) -> None:
    """zarr v2 arrays (most xarray data): the compressor over raw C- or F-order chunks, read
    by lsio (blosc and zstd on the C decoder, counted), equal to zarr's own read."""
    import numcodecs

    calls: list[int] = []
    real = batched._decode_scatter
    monkeypatch.setattr(batched, "_decode_scatter",
                        lambda *a: (calls.append(1), real(*a))[1])
    comp = {"blosc": numcodecs.Blosc(cname="zstd", clevel=1), "zstd": numcodecs.Zstd(level=1),
            "gzip": numcodecs.GZip(level=1), "none": None}[compressor]
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "v2"), shape=(19, 13),
                            chunks=(5, 4), dtype=dtype, zarr_format=2, order=order,
                            compressors=comp, fill_value=3)
    data = np.arange(19 * 13).reshape(19, 13).astype(dtype)
    arr[:15] = data[:15]
    ref = open_with(zarr.storage.LocalStore(tmp_path / "v2"), DEFAULT)
    sels = [np.s_[:], np.s_[2:17:3, 1:12]]
    want = [ref[sel] for sel in sels] + [ref.oindex[[0, 18], [12, 2]]]
    from zarr.core.codec_pipeline import BatchedCodecPipeline

    def not_zarrs(*args: Any) -> None:
        raise AssertionError("zarr's own pipeline read the chunks")

    monkeypatch.setattr(BatchedCodecPipeline, "read", not_zarrs)
    got = open_with(zarr.storage.LocalStore(tmp_path / "v2"), PIPELINE)
    for sel, w in zip(sels, want, strict=False):
        np.testing.assert_array_equal(got[sel], w)
    np.testing.assert_array_equal(got.oindex[[0, 18], [12, 2]], want[-1])
    assert (len(calls) > 0) == (compressor in ("blosc", "zstd", "none"))


def test_warm_chunks_are_read_on_the_workers_cold_ones_through_the_ring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Page-cache chunks are read and decoded by the workers themselves (small-path C
    calls); parts with cold data go through the ring instead: exact either way."""
    from conftest import drop_cache, make_cold

    from lsio._each import _Run

    outcomes: list[bool] = []
    real = _Run.read_part

    def spy(*args: Any, **kwargs: Any) -> bool:
        outcomes.append(real(*args, **kwargs))
        return outcomes[-1]

    monkeypatch.setattr(_Run, "read_part", spy)
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "w"), shape=(96, 80),
                            chunks=(8, 8), dtype="f4", compressors=zc.ZstdCodec(level=1))
    data = np.arange(96 * 80, dtype="f4").reshape(96, 80)
    arr[:] = data
    np.testing.assert_array_equal(lz.read_sync(tmp_path / "w"), data)
    assert outcomes and all(outcomes)
    outcomes.clear()
    for f in (tmp_path / "w" / "c").rglob("*"):
        if f.is_file():
            drop_cache(f)
    lsio_arr = open_with(zarr.storage.LocalStore(tmp_path / "w"), PIPELINE)
    np.testing.assert_array_equal(lsio_arr[3:90, 5:77], data[3:90, 5:77])
    assert outcomes and not all(outcomes)  # some parts were cold: the ring read them
    chunk = tmp_path / "w" / "c" / "11" / "9"
    make_cold(chunk)  # checked: DONTNEED alone may leave a page cached now and then
    outcomes.clear()  # one cold chunk: missed in the page cache, then read from disk on a
    np.testing.assert_array_equal(lsio_arr[88:96, 72:80], data[88:96, 72:80])  # worker
    assert outcomes == [False, True]


def test_the_fast_path_sees_a_rewritten_array(tmp_path: Path) -> None:
    """The fast path parses an unchanged zarr.json once, but reads it every time: an array
    written again with another shape and fill value reads as the new one."""
    from lsio.zarr import _fastpath

    store = zarr.storage.LocalStore(tmp_path / "r")
    zarr.create_array(store, shape=(6, 4), chunks=(3, 2), dtype="i2", fill_value=1)
    np.testing.assert_array_equal(lz.read_sync(tmp_path / "r"), np.ones((6, 4), "i2"))
    text = (tmp_path / "r" / "zarr.json").read_bytes()
    first = _fastpath._METADATA.get(text)
    assert first is not None
    np.testing.assert_array_equal(lz.read_sync(tmp_path / "r"), np.ones((6, 4), "i2"))
    assert _fastpath._METADATA.get(text) is first  # not parsed again
    zarr.create_array(store, shape=(5, 5), chunks=(3, 2), dtype="i2", fill_value=9,
                      overwrite=True)
    np.testing.assert_array_equal(lz.read_sync(tmp_path / "r"), np.full((5, 5), 9, "i2"))


def test_blocks_outside_the_chunk_or_the_output_never_reach_the_c_decoder() -> None:
    """The C jobs copy from a scratch buffer of one decoded chunk into the output: a
    selection reaching past either is refused (the numpy path then raises or clips), one
    by one and in bulk."""
    from lsio.zarr._chain import Chain

    decoder = batched.c_decoder(Chain([zc.BytesCodec()], (4, 6), np.dtype("<f4")),
                                np.dtype("<f4"))
    assert decoder is not None and decoder.shape == (4, 6)
    out = np.zeros((8, 12), "<f4")
    base = out.__array_interface__["data"][0]
    good = ((slice(0, 4, 1), slice(1, 6, 2)), (slice(4, 8, None), slice(0, 3, None)))
    bad = [
        ((slice(0, 5, 1), slice(0, 6, 1)), (slice(0, 5), slice(0, 6))),    # past the chunk
        ((slice(0, 4, 1), slice(0, 7, 2)), (slice(0, 4), slice(0, 4))),    # step past it
        ((slice(-1, 3, 1), slice(0, 6, 1)), (slice(0, 4), slice(0, 6))),   # negative start
        ((slice(0, 4, 1), slice(0, 6, 1)), (slice(6, 10), slice(0, 6))),   # past the output
        ((4, slice(0, 6, 1)), (slice(0, 6),)),                             # int past it
    ]
    assert batched.block_job(decoder, *good, out, base) is not None
    jobs = batched.slice_jobs(decoder, [good[0]] * 9, [good[1]] * 9, out)
    assert jobs is not None and len(jobs) == 9
    for chunk_sel, out_sel in bad:
        assert batched.block_job(decoder, chunk_sel, out_sel, out, base) is None
        if all(isinstance(x, slice) for x in chunk_sel):
            assert batched.slice_jobs(decoder, [good[0]] * 9 + [chunk_sel],
                                      [good[1]] * 9 + [out_sel], out) is None


def test_an_oversized_chunk_file_is_not_read_on_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One small chunk is read and decoded on the caller's thread, but only within the
    small path's on-loop limit: a chunk file replaced by 3 MiB of junk is refused there,
    goes to a worker and fails there, naming the file."""
    from lsio._each import _Run

    calls: list[tuple[threading.Thread, str]] = []
    real = _Run.read_part

    def spy(*args: Any, **kwargs: Any) -> bool:
        try:
            ok = real(*args, **kwargs)
        except ValueError:
            calls.append((threading.current_thread(), "raised"))
            raise
        calls.append((threading.current_thread(), "served" if ok else "refused"))
        return ok

    monkeypatch.setattr(_Run, "read_part", spy)
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "o"), shape=(8, 8),
                            chunks=(8, 8), dtype="f4", compressors=zc.ZstdCodec(level=1))
    arr[:] = 1.0
    (tmp_path / "o" / "c" / "0" / "0").write_bytes(b"\1" * (3 << 20))
    with pytest.raises(ValueError, match=r"c/0/0 is corrupt"):
        lz.read_sync(tmp_path / "o")
    (loop_thread, first), (worker, second) = calls
    assert first == "refused" and second == "raised" and worker is not loop_thread
