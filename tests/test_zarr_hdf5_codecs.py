"""HDF5's chunks (zlib under a byte shuffle, as kerchunk's SingleHdf5ToZarr and VirtualiZarr
reference them) in lsio's C decoder (lsio/_c/codecs.c): decoded by the batched GIL-free call,
equal to numcodecs for random data; a hostile zlib frame is an error naming the chunk's key,
never an overrun. numcodecs' decoders are made to fail in these reads: a chunk that left
the C path would fail the test."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsio.zarr as lz
from lsio.virtual import ReferenceStore


@contextmanager
def numcodecs_refuses() -> Iterator[None]:
    """numcodecs' zlib and shuffle decoders fail while inside: only the C decoder decodes."""
    def refuse(self: Any, buf: Any, out: Any = None) -> Any:
        raise AssertionError(f"numcodecs {type(self).__name__} decoded a chunk")

    with mock.patch.object(numcodecs.Zlib, "decode", refuse), \
            mock.patch.object(numcodecs.Shuffle, "decode", refuse):
        yield


def encode(block: np.ndarray, level: int, elementsize: int) -> bytes:
    """One stored chunk as HDF5 writes it: the byte shuffle, then zlib."""
    raw = np.ascontiguousarray(block).tobytes()
    if elementsize > 1:
        raw = bytes(numcodecs.Shuffle(elementsize=elementsize).encode(raw))
    return zlib.compress(raw, level)


def references(data: np.ndarray, chunks: tuple[int, ...], path: Path, level: int,
               elementsize: int, frames: dict[str, bytes] | None = None) -> dict[str, Any]:
    """kerchunk-style v2 references to a file holding every chunk (edge chunks padded to the
    whole chunk, as HDF5 and zarr v2 store them); ``frames``: stored chunks to use instead,
    by key."""
    grid = [range(-(-s // c)) for s, c in zip(data.shape, chunks, strict=True)]
    zarray = {"shape": list(data.shape), "chunks": list(chunks), "dtype": data.dtype.str,
              "fill_value": None, "order": "C", "compressor": None, "zarr_format": 2,
              "filters": [{"id": "shuffle", "elementsize": elementsize},
                          {"id": "zlib", "level": level}]}
    refs: dict[str, Any] = {".zgroup": '{"zarr_format": 2}', "v/.zarray": json.dumps(zarray)}
    blob = bytearray()
    for coords in np.ndindex(*map(len, grid)):
        full = np.zeros(chunks, data.dtype)
        sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, chunks, strict=True))
        part = data[sel]
        full[tuple(slice(0, n) for n in part.shape)] = part
        key = "v/" + ".".join(map(str, coords))
        frame = (frames or {}).get(key, encode(full, level, elementsize))
        refs[key] = [str(path), len(blob), len(frame)]
        blob += frame
    path.write_bytes(bytes(blob))
    return {"version": 1, "refs": refs}


def read(refs: dict[str, Any], selection: Any = ()) -> np.ndarray:
    with lz.enable():
        arr = zarr.open_group(ReferenceStore(refs), mode="r", zarr_format=2)["v"]
        return np.asarray(arr[selection])


@st.composite
def arrays(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...], int, int, Any]:
    dtype = np.dtype(draw(st.sampled_from(["<f4", "<i2", "<f8", "|u1", ">f4", "<u8"])))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw = rng.integers(0, draw(st.sampled_from([2, 256])), int(np.prod(shape)) * dtype.itemsize,
                       dtype=np.uint8)  # few values (compressible) or any byte
    data = raw.view(dtype).reshape(shape)
    # the shuffle of the element size (what kerchunk writes), none, or of another size
    # that divides the chunk
    nbytes = int(np.prod(chunks)) * dtype.itemsize
    sizes = [s for s in (dtype.itemsize, 1, 2, 4) if nbytes % s == 0]
    elementsize = draw(st.sampled_from(sizes))
    sel = tuple(slice(draw(st.integers(0, s - 1)), s, draw(st.integers(1, 3))) for s in shape)
    return data, chunks, draw(st.integers(0, 9)), elementsize, sel


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=arrays())
def test_random_chunks_equal_numcodecs(tmp_path: Path, case: Any) -> None:
    data, chunks, level, elementsize, sel = case
    refs = references(data, chunks, tmp_path / "blob", level, elementsize)
    with lz.disable():  # zarr's own pipeline: numcodecs decodes
        want = zarr.open_group(ReferenceStore(refs), mode="r", zarr_format=2)["v"][:]
    np.testing.assert_array_equal(want, data)
    with numcodecs_refuses():
        np.testing.assert_array_equal(read(refs), want)
        np.testing.assert_array_equal(read(refs, sel), want[sel])


def test_kerchunk_netcdf_takes_the_c_decoder(tmp_path: Path) -> None:
    """A NetCDF4 file written by h5netcdf (zlib 4 + shuffle), referenced by kerchunk."""
    import h5netcdf
    from kerchunk.hdf import SingleHdf5ToZarr

    data = np.random.default_rng(3).random((6, 20, 24), dtype="f4")
    path = tmp_path / "f.nc"
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"t": 6, "y": 20, "x": 24}
        f.create_variable("temp", ("t", "y", "x"), "f4", data=data, chunks=(2, 8, 8),
                          compression="gzip", compression_opts=4, shuffle=True)
    refs = SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
    with numcodecs_refuses(), lz.enable():
        got = zarr.open_group(ReferenceStore(refs), mode="r", zarr_format=2)["temp"]
        np.testing.assert_array_equal(got[:], data)
        np.testing.assert_array_equal(got[1:5, 3:17, ::5], data[1:5, 3:17, ::5])


def test_zarr_v3_numcodecs_zlib_and_shuffle(tmp_path: Path) -> None:
    """zarr 3's numcodecs.shuffle and numcodecs.zlib (how VirtualiZarr writes HDF5's
    codecs) through lsio.zarr.read's fast path and the codec pipeline."""
    from zarr.codecs import numcodecs as zn

    data = np.random.default_rng(4).integers(-9000, 9000, (30, 41), dtype="<i4")
    with lz.disable():
        arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(8, 16),
                                dtype=data.dtype, filters=None,
                                compressors=[zn.Shuffle(elementsize=4), zn.Zlib(level=4)])
        arr[:] = data
    with numcodecs_refuses():
        np.testing.assert_array_equal(lz.read_sync(str(tmp_path / "a.zarr")), data)
        with lz.enable():
            again = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
            np.testing.assert_array_equal(again[3:29, 5:40:3], data[3:29, 5:40:3])


def _hostile(good: bytes, size: int) -> dict[str, bytes]:
    deflated = good[2:-4]
    return {
        "truncated": good[:len(good) // 2],
        "no-checksum": good[:-4],
        "flipped": good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 0x40])
        + good[len(good) // 2 + 1:],
        "bad-adler": good[:-1] + bytes([good[-1] ^ 1]),
        "short": zlib.compress(b"\0" * (size - 4)),
        "long": zlib.compress(b"\0" * (size + 4)),
        "junk": b"\x78\x9c" + bytes(range(200)),
        "empty": b"",
        "raw-deflate": deflated,  # a deflate stream without the zlib header
        "dictionary": b"\x78\xbb" + good[2:],  # FDICT set: a preset dictionary it lacks
        "gzip": bytes(numcodecs.GZip(level=4).encode(b"\0" * size)),
    }


@pytest.mark.parametrize("kind", list(_hostile(zlib.compress(b"x" * 400), 400)))
def test_hostile_frame_names_its_key(tmp_path: Path, kind: str) -> None:
    data = np.arange(4 * 200, dtype="<f4").reshape(4, 200)
    good = encode(data[:2, 100:], 4, 4)
    frame = _hostile(good, 2 * 100 * 4)[kind]
    refs = references(data, (2, 100), tmp_path / "blob", 4, 4, frames={"v/0.1": frame})
    with pytest.raises(ValueError, match=r"'v/0\.1' in .*blob \(bytes \d+\+\d+\)\) is corrupt "
                                         r"or does not decode to 800 bytes"):
        read(refs)
    np.testing.assert_array_equal(read(refs, (slice(None), slice(0, 100))), data[:, :100])


def _call(codec: str, shuffle: int, frame: bytes, chunk_bytes: int,
          scratch: int | None = None) -> tuple[int, int]:
    """``lsio_decode_scatter`` on one 1-d job copying the whole chunk (into an output of
    chunk_bytes, capped at 1 MiB so a refused huge claim allocates nothing)."""
    from lsio import _codecs
    from lsio.zarr._batched import _chunk_dtype

    ffi, lib = _codecs.ffi, _codecs.lib
    out = np.zeros(min(chunk_bytes, 1 << 20), np.uint8)
    src = np.frombuffer(frame, np.uint8) if frame else np.zeros(1, np.uint8)
    jobs = np.zeros(1, _chunk_dtype(ffi))
    jobs["src"], jobs["srclen"] = src.ctypes.data, len(frame)
    jobs["dst"] = jobs["out"] = out.ctypes.data
    jobs["outlen"] = len(out)
    jobs["shape"][0, 0], jobs["src_strides"][0, 0], jobs["dst_strides"][0, 0] = len(out), 1, 1
    buf = None if scratch is None else np.empty(max(scratch, 1), np.uint8)
    failed = ffi.new("int *")
    ret = lib.lsio_decode_scatter(
        getattr(lib, codec), shuffle, ffi.cast("lsio_chunk *", jobs.ctypes.data), 1, 1,
        chunk_bytes, 1, 0, ffi.NULL if buf is None else ffi.cast("char *", buf.ctypes.data),
        0 if buf is None else len(buf), failed)
    return ret, failed[0]


def test_c_refusals() -> None:
    from lsio import _codecs

    lib = _codecs.lib
    tiny = zlib.compress(b"\0" * 1000, 9)
    # metadata claiming a huge chunk for a tiny frame: refused from the header, before the
    # scratch (chunk_bytes) is allocated
    assert _call("LSIO_CODEC_ZLIB", 0, tiny, 1 << 40) == (lib.LSIO_DECODE_CORRUPT, 0)
    assert _call("LSIO_CODEC_ZLIB", 4, tiny, 1 << 40) == (lib.LSIO_DECODE_CORRUPT, 0)
    assert _call("LSIO_CODEC_ZLIB", 0, tiny, 1000) == (lib.LSIO_DECODE_OK, -1)
    shuffled = zlib.compress(bytes(numcodecs.Shuffle(elementsize=4).encode(
        np.arange(250, dtype="<u4").tobytes())))
    assert _call("LSIO_CODEC_ZLIB", 4, shuffled, 1000, scratch=2000) == (
        lib.LSIO_DECODE_OK, -1)
    # a shuffle that does not divide the chunk, a scratch too small for the second half
    assert _call("LSIO_CODEC_ZLIB", 3, tiny, 1000)[0] == lib.LSIO_DECODE_BADARGS
    assert _call("LSIO_CODEC_ZLIB", 4, shuffled, 1000, scratch=1000)[0] == (
        lib.LSIO_DECODE_BADARGS)
    assert _call("LSIO_CODEC_ZLIB", -1, tiny, 1000)[0] == lib.LSIO_DECODE_BADARGS
    # raw chunks under a shuffle: unshuffled into the scratch
    raw = bytes(numcodecs.Shuffle(elementsize=8).encode(np.arange(125, dtype="<u8").tobytes()))
    assert _call("LSIO_CODEC_RAW", 8, raw, 1000) == (lib.LSIO_DECODE_OK, -1)
