"""Zarr metadata and shard indexes are untrusted input: sizes from ``zarr.json`` that do not fit
64 bits are a ValueError naming the array on every entry point (``read_sync`` on a path or a
URL, zarr through the lsio pipeline), never a copy past a chunk; the C decoder refuses any job
whose block leaves its chunk or output, whatever Python hands it; a shard index entry beyond
any file names the shard. Reads that could crash run in a subprocess."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import check_ok, run_python
from numcodecs.checksum32 import CRC32C
from servers import Nginx

import lsio.zarr as lz

HUGE = 2**62 + 1
"""``[HUGE, 4]`` uint8 holds 2**64 + 4 bytes: ``np.prod`` wrapped it to 4."""


def write_huge_array(root: Path, codecs: list[dict[str, object]] | None = None) -> Path:
    """The issue's reproducer: shape and chunk shape ``[2**62 + 1, 4]``, uint8, one 4-byte
    chunk file ``ABCD``."""
    (root / "c" / "0").mkdir(parents=True, exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "array", "shape": [HUGE, 4], "data_type": "uint8",
           "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [HUGE, 4]}},
           "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
           "fill_value": 0, "codecs": codecs or [{"name": "bytes"}]}
    (root / "zarr.json").write_text(json.dumps(doc))
    (root / "c" / "0" / "0").write_bytes(b"ABCD")
    return root


# Each child reads rows 0-1 (was: b"ABCD" + 4 heap bytes) and row 10**6 (was: SIGSEGV) and
# prints what it got; the parent checks each is a ValueError naming the array.
READS = """
import sys
import lsio.zarr as lz
import zarr
from lsio.zarr import LsioStore
how, where = sys.argv[1], sys.argv[2]
for sel in [(slice(0, 2), slice(0, 4)), (10**6, slice(0, 4))]:
    try:
        if how == "read_sync":
            got = lz.read_sync(where, sel)
        else:
            lz.enable()
            store = LsioStore(where) if "://" in where else where
            got = zarr.open_array(store, mode="r")[sel]
        print("READ", bytes(got.tobytes()))
    except ValueError as exc:
        print("ValueError", exc)
"""


def check_refused(how: str, where: str) -> None:
    out = check_ok(run_python(READS, how, where, timeout=60))
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line in lines:
        assert line.startswith("ValueError lsio.zarr: a chunk of"), out
        assert where in line and str(HUGE) in line, out


CODECS: dict[str, list[dict[str, object]]] = {
    "bytes": [{"name": "bytes"}],
    "zstd": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 1,
                                                                   "checksum": False}}],
    "blosc": [{"name": "bytes"}, {"name": "blosc", "configuration": {
        "cname": "lz4", "clevel": 1, "shuffle": "noshuffle", "typesize": 1, "blocksize": 0}}],
}


@pytest.mark.parametrize("codec", ["bytes", "zstd", "blosc"])
def test_huge_chunk_shape_is_refused_by_read_sync(data_dir: Path, codec: str) -> None:
    root = write_huge_array(data_dir / "huge", CODECS[codec])
    check_refused("read_sync", str(root))


def test_huge_chunk_shape_is_refused_through_zarr(data_dir: Path) -> None:
    root = write_huge_array(data_dir / "huge")
    check_refused("zarr", str(root))


def test_huge_chunk_shape_is_refused_over_http(nginx: Nginx) -> None:
    name = "trust-huge"
    root = nginx.root / name
    shutil.rmtree(root, ignore_errors=True)
    write_huge_array(root)
    url = nginx.url(name)
    check_refused("read_sync", url)
    check_refused("zarr", url)


@pytest.mark.parametrize("codec", ["bytes", "zstd", "blosc"])
def test_chunk_sizes_that_fit_are_checked_against_the_chunk(data_dir: Path, codec: str
                                                            ) -> None:
    """A chunk of 2**40 x 4 bytes fits 64 bits: the 4-byte file is then a corrupt chunk
    (zarr's own pipeline raises too), never a partial copy, nor a 4 TiB scratch buffer
    (MemoryError) for a compressed chunk whose header says otherwise."""
    root = data_dir / "big"
    write_huge_array(root, CODECS[codec])
    doc = json.loads((root / "zarr.json").read_text())
    doc["shape"] = doc["chunk_grid"]["configuration"]["chunk_shape"] = [2**40, 4]
    (root / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=f"{root}/c/0/0 is corrupt"):
        lz.read_sync(root, (slice(0, 2), slice(0, 4)))
    with pytest.raises(ValueError, match=f"{root}/c/0/0 is corrupt"):
        lz.read_sync(root, (0, slice(0, 4)))


DIRECT = """
import numpy as np
from lsio import _codecs
ffi, lib = _codecs.ffi, _codecs.lib
from lsio.zarr._batched import _chunk_dtype
chunk = np.frombuffer(b"ABCD", np.uint8)
buf = np.zeros(16, np.uint8)  # out = buf[4:12], guards on both sides
base = buf.ctypes.data + 4

def run(shape, src_offset=0, src_stride=1, dst_offset=0, dst_stride=1, outlen=8):
    jobs = np.zeros(1, _chunk_dtype(ffi))
    jobs["src"], jobs["srclen"] = chunk.ctypes.data, 4
    jobs["dst"], jobs["out"], jobs["outlen"] = base + dst_offset, base, outlen
    jobs["src_offset"] = src_offset
    jobs["shape"][0, :2] = shape
    jobs["src_strides"][0, :2] = (4, src_stride)
    jobs["dst_strides"][0, :2] = (4, dst_stride)
    failed = ffi.new("int *")
    ret = lib.lsio_decode_scatter(lib.LSIO_CODEC_RAW, 0, ffi.cast("lsio_chunk *", jobs.ctypes.data),
                                  1, 2, 4, 1, 0, ffi.NULL, 0, failed)
    return ret, failed[0]

assert run((1, 4)) == (lib.LSIO_DECODE_OK, -1)
assert bytes(buf[4:8]) == b"ABCD"
buf[:] = 0
for job in [dict(shape=(2, 4)),                              # past the chunk's end
            dict(shape=(10**6, 4)),                           # far past it
            dict(shape=(1, 4), src_offset=-1),                # before it
            dict(shape=(1, 2**62), src_stride=2**62),         # strides that overflow
            dict(shape=(1, 4), dst_offset=6),                 # past the output's end
            dict(shape=(1, 4), dst_offset=-4),                # before it
            dict(shape=(1, 4), dst_stride=-1),                # backwards out of it
            dict(shape=(1, 4), outlen=3),                     # output too small
            dict(shape=(-1, 4))]:                             # a negative count
    assert run(**job) == (lib.LSIO_DECODE_BOUNDS, 0), job
    assert not buf.any(), job  # nothing written, guards included
print("ok")
"""


def test_c_decoder_refuses_jobs_outside_chunk_or_output() -> None:
    """The C decoder checks each job itself: a job reaching outside the decoded chunk or
    its output buffer is LSIO_DECODE_BOUNDS with nothing written."""
    assert check_ok(run_python(DIRECT, timeout=60)).strip() == "ok"


def _sharded(root: Path) -> bytes:
    arr = zarr.create_array(zarr.storage.LocalStore(root), shape=(8, 8), chunks=(4, 4),
                            shards=(8, 8), dtype="u2", compressors=None, fill_value=0)
    arr[...] = np.arange(64).reshape(8, 8)
    return (root / "c" / "0" / "0").read_bytes()


@pytest.mark.parametrize("offset, nbytes", [(2**63 + 5, 32), (2**64 - 2, 32),
                                            (0, 2**63 + 1), (2**63 - 16, 32)])
def test_shard_index_entry_beyond_any_file_names_the_shard(data_dir: Path, offset: int,
                                                           nbytes: int) -> None:
    root = data_dir / "sharded"
    shard = _sharded(root)
    index = bytearray(shard[-68:-4])  # 4 entries of (offset, nbytes), then a crc32c
    struct.pack_into("<QQ", index, 0, offset, nbytes)
    (root / "c" / "0" / "0").write_bytes(shard[:-68] + bytes(CRC32C().encode(bytes(index))))
    message = (f"the shard index of 'c/0/0' in {root} places inner chunk \\(0, 0\\) at bytes "
               f"{offset}\\+{nbytes}")
    with pytest.raises(ValueError, match=message):
        lz.read_sync(root, (slice(0, 4), slice(0, 4)))
    with lz.enable(), pytest.raises(ValueError, match=message):
        zarr.open_array(root, mode="r")[0:4, 0:4]
    # the other inner chunks still read
    assert (lz.read_sync(root, (slice(4, 8), slice(4, 8)))
            == np.arange(64).reshape(8, 8)[4:, 4:]).all()


def _long_array(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    doc = {"zarr_format": 3, "node_type": "array", "shape": [n], "data_type": "uint8",
           "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3]}},
           "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
           "fill_value": 7, "codecs": [{"name": "bytes"}]}
    (root / "zarr.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("mode", ["basic", "oindex"])
def test_dimensions_past_zarrs_exact_indexing_are_refused(data_dir: Path, mode: str) -> None:
    """zarr's indexers count chunks with float division: for a dimension past 2**53 they
    hand over no chunk for the last elements, and the result held whatever its memory held
    (zarr's own read: uninitialized memory). Up to 2**53 the answer is exact."""
    n = 2**62 + 5
    root = _long_array(data_dir / "long", n)
    with pytest.raises(ValueError, match=f"the shape \\[{n}\\] of '{root}' has a dimension"):
        lz.read_sync(root, slice(n - 3, n - 1), mode=mode)
    n = 2**53  # (zarr's oindex allocates per chunk of the dimension: basic only)
    root = _long_array(data_dir / "exact", n)
    assert lz.read_sync(root, slice(n - 3, n - 1)).tolist() == [7, 7]
