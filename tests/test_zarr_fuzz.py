"""Fuzz of the Zarr parsers lsio owns, with untrusted bytes: ``zarr.json`` (shapes, chunk
shapes, dtypes, codecs, mutated documents), shard indexes, and codec frames handed to the C
decoder (``lsio/_c/codecs.c``) with jobs of any geometry.

Each fuzz test runs its hypothesis loop in a fresh interpreter with a hard timeout (a
regression may crash or hang the process), and each example asserts termination within a
bound and either zarr-python's own answer (its default pipeline, where it decodes) or a
clear error: a ValueError or OSError naming the array or shard (MemoryError naming the array
for a chunk too big to decode). The child also checks its peak RSS stays small: no input
makes lsio allocate what it claims.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import SCALE, examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lsio._defaults import WHOLE_SHARDS_MIN

TESTS = Path(__file__).resolve().parent
STEP_SECONDS = 10.0
"""The most one example may take (a read of a few tiny chunks takes milliseconds)."""
PEAK_RSS = 1 << 30
"""The most memory a fuzz child may ever hold (it starts at ~150 MiB with zarr)."""
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


# -- the parent side: every fuzz loop in a child with a hard timeout --------------------------

def _in_child(name: str, seconds: float) -> None:
    from conftest import check_ok, run_python

    env = {k: os.environ[k] for k in ("LSIO_HYPOTHESIS_PROFILE", "LSIO_FUZZ_SCALE",
                                      "LSIO_REQUIRE_URING") if k in os.environ}
    code = f"""
        import faulthandler, sys
        faulthandler.enable()
        sys.path.insert(0, {str(TESTS)!r})
        import fuzzing
        fuzzing.load_profile()
        import test_zarr_fuzz
        test_zarr_fuzz.{name}()
        test_zarr_fuzz.check_peak_rss()
        print("fuzz ok")
        """
    out = check_ok(run_python(code, env=env, timeout=seconds * SCALE,
                              cwd=str(TESTS.parent)))
    assert out.strip().endswith("fuzz ok"), out


@pytest.mark.fuzz
def test_zarr_json_fuzz() -> None:
    _in_child("fuzz_zarr_json", 240)


@pytest.mark.fuzz
def test_mutated_zarr_json_fuzz() -> None:
    _in_child("fuzz_mutated_zarr_json", 120)


@pytest.mark.fuzz
def test_shard_index_fuzz() -> None:
    _in_child("fuzz_shard_index", 240)


@pytest.mark.fuzz
def test_codec_frames_fuzz() -> None:
    _in_child("fuzz_codec_frames", 120)


# -- the child side ---------------------------------------------------------------------------

def check_peak_rss() -> None:
    # VmHWM, not getrusage's ru_maxrss: a child inherits its parent's ru_maxrss (pytest's,
    # gigabytes by the end of the suite)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    assert peak < PEAK_RSS, f"the fuzz child peaked at {peak >> 20} MiB"


def _outcome(fn: Any) -> tuple[str, Any]:
    start = time.monotonic()
    try:
        got = ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - judged by the caller
        got = ("err", exc)
    took = time.monotonic() - start
    assert took < STEP_SECONDS, f"one read took {took:.1f} s"
    return got


def _zarr_read(root: Path, sel: Any) -> Any:
    """zarr-python's own answer, with its default pipeline."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's own overflow warnings on hostile indexes
        with zarr.config.set({"codec_pipeline.path": DEFAULT}):
            return zarr.open_array(zarr.storage.LocalStore(root), mode="r")[sel]


def _zarr_open(root: Path) -> Any:
    import zarr

    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return zarr.open_array(zarr.storage.LocalStore(root), mode="r")


def _lsio_pipeline_read(root: Path, sel: Any) -> Any:
    import zarr

    import lsio.zarr as lz

    with lz.enable():
        arr = zarr.open_array(zarr.storage.LocalStore(root), mode="r")
        assert type(arr._async_array.codec_pipeline).__name__ == "LsioCodecPipeline"
        return arr[sel]


def _judge(root: Path, what: str, mine: tuple[str, Any], ref: tuple[str, Any],
           names: tuple[str, ...], zarr_first: bool = False) -> None:
    """lsio's outcome against zarr's: the same array where zarr decodes; else (or where
    lsio refuses what zarr took) a clear error naming the array. ``zarr_first``: read
    through zarr, whose indexing may raise before lsio's pipeline is reached."""
    kind, got = mine
    if kind == "ok":
        assert ref[0] == "ok", f"{what}: lsio read {got!r}, zarr raised {ref[1]!r}"
        want = np.asarray(ref[1])
        assert isinstance(got, np.ndarray) and got.shape == want.shape, (what, got, want)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (what, got, want)
        return
    exc = got
    if ref[0] == "err" and type(exc) is type(ref[1]) and (zarr_first or isinstance(
            exc, IndexError)):
        return  # zarr's own error: its indexing (an index out of bounds; the pipeline
        # path: anything zarr raises before its codec pipeline runs)
    assert isinstance(exc, (ValueError, OSError, MemoryError)), (
        f"{what}: not a clear error: {exc!r}")
    text = f"{exc} {getattr(exc, 'filename', '')}"
    assert any(n in text for n in names), f"{what}: the error names none of {names}: {exc!r}"


DIMS = st.one_of(st.integers(0, 5), st.sampled_from(
    [2**31, 2**32 + 1, 2**40, 2**61, 2**62 + 1, 2**63 - 1, 2**63, 2**64 + 3]))
DTYPES = ["uint8", "int16", "float32", "float64"]
BLOSC = {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 1,
                                             "shuffle": "shuffle", "typesize": 4,
                                             "blocksize": 0}}
ZSTD = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}


@st.composite
def documents(draw: Any) -> tuple[dict[str, Any], Any]:
    """A zarr.json with hostile sizes and a selection to read."""
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(DIMS, min_size=ndim, max_size=ndim))
    chunks = draw(st.lists(DIMS, min_size=ndim, max_size=ndim))
    endian = draw(st.sampled_from(["little", "big"]))
    codecs: list[Any] = [{"name": "bytes", "configuration": {"endian": endian}}]
    if draw(st.booleans()):
        order = draw(st.permutations(range(ndim)))
        codecs.insert(0, {"name": "transpose", "configuration": {"order": list(order)}})
    codecs += draw(st.sampled_from([[], [BLOSC], [ZSTD]]))
    if draw(st.integers(0, 3)) == 0:
        inner = draw(st.lists(DIMS, min_size=ndim, max_size=ndim))
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": inner, "codecs": codecs,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                             {"name": "crc32c"}],
            "index_location": draw(st.sampled_from(["start", "end"]))}}]
    doc = {"zarr_format": 3, "node_type": "array", "shape": shape,
           "data_type": draw(st.sampled_from(DTYPES)),
           "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
           "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
           "fill_value": 0, "codecs": codecs}
    sel = []
    for n in shape:
        start = draw(st.sampled_from([0, 1, n // 2, max(0, n - 2), 10**6]))
        if draw(st.booleans()):
            sel.append(min(start, max(0, n - 1)))
        else:
            sel.append(slice(start, start + draw(st.integers(0, 3))))
    return doc, tuple(sel)


def _fresh_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="lsio-fuzz-", dir="/dev/shm"
                                 if os.path.isdir("/dev/shm") else None))


HUGE_DOC = {"zarr_format": 3, "node_type": "array", "shape": [2**62 + 1, 4],
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**62 + 1, 4]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes"}]}


@settings(max_examples=examples(150))
@given(case=documents(), chunk=st.one_of(st.none(), st.binary(max_size=96)))
@example(case=(HUGE_DOC, (slice(0, 2), slice(0, 4))), chunk=b"ABCD")  # issue 20 item 1
@example(case=({**HUGE_DOC, "shape": [1, 1, 2**64 + 3], "chunk_grid": {  # shape > int64
    "name": "regular", "configuration": {"chunk_shape": [1, 1, 1]}}},
    (slice(0, 1), 0, 2**63 + 1)), chunk=None)
@example(case=({**HUGE_DOC, "shape": [2**62 + 5], "chunk_grid": {  # zarr: no chunk
    "name": "regular", "configuration": {"chunk_shape": [3]}}},
    (slice(2**62 + 2, 2**62 + 4),)), chunk=None)
@example(case=({**HUGE_DOC, "shape": [0], "chunk_grid": {  # an index out of bounds
    "name": "regular", "configuration": {"chunk_shape": [1]}}}, (0,)), chunk=None)
@example(case=({**HUGE_DOC, "shape": [1], "chunk_grid": {  # an empty chunk dimension
    "name": "regular", "configuration": {"chunk_shape": [0]}}}, (slice(0, 0),)), chunk=None)
@example(case=(HUGE_DOC, (10**6, slice(0, 4))), chunk=b"ABCD")
def fuzz_zarr_json(case: tuple[dict[str, Any], Any], chunk: bytes | None) -> None:
    import lsio.zarr as lz

    doc, sel = case
    base = _fresh_root()
    try:
        # one chunk file at c/0/0... for the array's dimension count
        root = base / "a"
        root.mkdir()
        (root / "zarr.json").write_text(json.dumps(doc))
        if chunk is not None:
            path = root.joinpath("c", *["0"] * len(doc["shape"]))
            path.parent.mkdir(parents=True)
            path.write_bytes(chunk)
        ref = _outcome(lambda: _zarr_read(root, sel))
        names = (str(root),)
        mine = _outcome(lambda: lz.read_sync(root, sel))
        if max(doc["shape"]) > 2**53:
            # zarr's own read returns uninitialized memory there (its indexers count chunks
            # with float division); lsio's read_sync refuses the array; its pipeline gets
            # what zarr's indexers give, and zarr's answer is no reference
            if _outcome(lambda: _zarr_open(root))[0] == "ok":
                assert mine[0] == "err" and isinstance(mine[1], ValueError), mine
                assert str(root) in str(mine[1]), mine
            mine = _outcome(lambda: _lsio_pipeline_read(root, sel))
            if mine[0] == "err":
                _judge(root, "pipeline", mine, ref, names, zarr_first=True)
            return
        _judge(root, f"read_sync {sel}", mine, ref, names)
        if _outcome(lambda: _zarr_open(root))[0] == "ok":  # else no pipeline is reached
            _judge(root, f"pipeline {sel}", _outcome(lambda: _lsio_pipeline_read(root, sel)),
                   ref, names, zarr_first=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, at, value in edits:
        at %= len(out) + 1
        if kind == 0:  # overwrite
            out[at:at + len(value)] = value
        elif kind == 1:  # insert
            out[at:at] = value
        else:  # delete
            del out[at:at + len(value) + 1]
    return bytes(out)


GOOD_DOC = json.dumps({
    "zarr_format": 3, "node_type": "array", "shape": [6, 5], "data_type": "int16",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 7, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
}).encode()


@settings(max_examples=examples(150))
@given(edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 400),
                                st.one_of(st.binary(min_size=1, max_size=8),
                                          st.sampled_from([b"9" * 20, b"-", b"[", b"{", b"\"",
                                                           b"1e400", b"NaN", b"\xff", b"\x00"]))),
                      min_size=1, max_size=4))
@example(edits=[(0, 0, b"[")])
def fuzz_mutated_zarr_json(edits: list[tuple[int, int, bytes]]) -> None:
    """Random edits of a valid zarr.json (its chunks all written): zarr's answer or a
    ValueError naming the document."""
    import lsio.zarr as lz

    base = _fresh_root()
    try:
        root = base / "a"
        root.mkdir()
        for i, j in itertools.product(range(2), range(2)):
            path = root / "c" / str(i) / str(j)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.arange(16, dtype="<i2").tobytes())
        (root / "zarr.json").write_bytes(_mutate(GOOD_DOC, edits))
        sel = (slice(1, 6), slice(0, 5))
        ref = _outcome(lambda: _zarr_read(root, sel))
        mine = _outcome(lambda: lz.read_sync(root, sel))
        if mine[0] == "err" and ref[0] == "ok":
            # lsio reads only v3 array documents zarr would also read; zarr may accept
            # what lsio refuses only by error class, never by answer
            assert isinstance(mine[1], ValueError), mine
            assert str(root) in str(mine[1]), mine
            return
        _judge(root, "mutated zarr.json", mine, ref, (str(root),))
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- shard indexes ---------------------------------------------------------------------------

SPECIAL = [0, 1, 32, 150, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
ENTRY = st.one_of(st.sampled_from(SPECIAL), st.integers(0, 300), st.integers(0, 2**64 - 1))


def _sharded(root: Path, location: str, compressed: bool) -> bytes:
    import zarr
    import zarr.codecs as zc

    arr = zarr.create_array(
        zarr.storage.LocalStore(root), shape=(8, 8), chunks=(4, 4), shards=(8, 8),
        dtype="<u2", fill_value=3, compressors=zc.ZstdCodec(level=1) if compressed else None,
        overwrite=True, config={"write_empty_chunks": True})
    if location == "start":  # zarr writes the index at the end by default
        meta = json.loads((root / "zarr.json").read_text())
        meta["codecs"][0]["configuration"]["index_location"] = "start"
        (root / "zarr.json").write_text(json.dumps(meta))
        arr = zarr.open_array(zarr.storage.LocalStore(root), mode="r+")
    arr[...] = np.arange(64, dtype="<u2").reshape(8, 8)
    return (root / "c" / "0" / "0").read_bytes()


@settings(max_examples=examples(100))
@given(entries=st.lists(st.tuples(ENTRY, ENTRY), min_size=4, max_size=4),
       keep=st.lists(st.booleans(), min_size=4, max_size=4),
       location=st.sampled_from(["end", "start"]), compressed=st.booleans(),
       fix_crc=st.integers(0, 5), sel=st.sampled_from(
           [(slice(0, 8), slice(0, 8)), (slice(0, 4), slice(0, 4)), (5, slice(1, 7, 2))]),
       whole=st.booleans())
@example(entries=[(2**63 + 5, 32)] * 4, keep=[False, True, True, True], location="end",
         compressed=False, fix_crc=1, sel=(slice(0, 4), slice(0, 4)),
         whole=False)  # issue 20 item 13
@example(entries=[(0, 0)] * 4, keep=[False] * 4, location="end", compressed=False,
         fix_crc=0, sel=(slice(0, 8), slice(0, 8)), whole=True)  # a bad checksum names it
def fuzz_shard_index(entries: list[tuple[int, int]], keep: list[bool], location: str,
                     compressed: bool, fix_crc: int, sel: Any, whole: bool) -> None:
    """A shard whose index entries are replaced (some kept as written): zarr's answer or a
    ValueError/OSError naming the shard; ``whole``: a shard the selection covers whole is
    read in one request (index and inner chunks together)."""
    from numcodecs.checksum32 import CRC32C

    import lsio.zarr as lz
    from lsio.zarr import _shards

    base = _fresh_root()
    _shards.WHOLE_SHARDS_MIN = 1 if whole else 10**9
    _shards.WHOLE_SHARDS = "always"
    try:
        root = base / "a"
        shard = _sharded(root, location, compressed)
        at = len(shard) - 68 if location == "end" else 0
        index = bytearray(shard[at:at + 64])
        for k, ((off, n), same) in enumerate(zip(entries, keep, strict=True)):
            if not same:
                struct.pack_into("<QQ", index, 16 * k, off, n)
        tail = bytes(CRC32C().encode(bytes(index)))[64:] if fix_crc else b"\0\0\0\0"
        shard = shard[:at] + bytes(index) + tail + shard[at + 68:]
        (root / "c" / "0" / "0").write_bytes(shard)
        ref = _outcome(lambda: _zarr_read(root, sel))
        names = (str(root / "c" / "0" / "0"), f"'c/0/0' in {root}")
        _judge(root, "read_sync", _outcome(lambda: lz.read_sync(root, sel)), ref, names)
        _judge(root, "pipeline", _outcome(lambda: _lsio_pipeline_read(root, sel)), ref, names,
               zarr_first=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        _shards.WHOLE_SHARDS_MIN = WHOLE_SHARDS_MIN
        _shards.WHOLE_SHARDS = "remote"


# -- codec frames and jobs handed to the C decoder ------------------------------------------

@st.composite
def jobs_and_frames(draw: Any) -> dict[str, Any]:
    ndim = draw(st.integers(1, 3))
    chunk = draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim))
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    codec = draw(st.sampled_from(["raw", "blosc", "zstd", "zlib"]))
    # HDF5's byte shuffle under the codec: of the elements, or of another size (a size
    # that does not divide the chunk is refused before anything is read)
    shuffle = draw(st.sampled_from([0, 0, itemsize, 2, 3, 4]))
    nbytes = int(np.prod(chunk)) * itemsize
    data = draw(st.binary(min_size=nbytes, max_size=nbytes))
    mutation = draw(st.sampled_from(["none", "none", "flip", "cut", "grow", "junk"]))
    where = draw(st.integers(0, 10**6))
    junk = draw(st.binary(max_size=64))
    jobs = []
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.lists(st.integers(-1, 6), min_size=ndim, max_size=ndim))
        steps = draw(st.lists(st.sampled_from([-2, -1, 0, 1, 1, 1, 2, 2**61]),
                              min_size=ndim, max_size=ndim))
        src_offset = draw(st.one_of(st.integers(-8, nbytes + 8), st.sampled_from(
            [2**62, 2**63 - 1, -(2**63)])))
        dst_offset = draw(st.integers(-8, 80))
        dsteps = draw(st.lists(st.sampled_from([-1, 0, 1, 1, 2, 5, 2**60]),
                               min_size=ndim, max_size=ndim))
        jobs.append((shape, steps, src_offset, dst_offset, dsteps))
    return dict(chunk=chunk, itemsize=itemsize, codec=codec, shuffle=shuffle, data=data,
                mutation=mutation,
                where=where, junk=junk, jobs=jobs, swap=draw(st.booleans()),
                outlen=draw(st.integers(0, 64)), scratch=draw(st.booleans()))


def _frame(codec: str, data: bytes, itemsize: int, mutation: str, where: int,
           junk: bytes, shuffle: int = 0) -> bytes:
    import numcodecs

    if shuffle > 1 and len(data) % shuffle == 0:
        data = bytes(numcodecs.Shuffle(elementsize=shuffle).encode(data))
    if codec == "raw":
        frame = data
    elif codec == "blosc":
        frame = bytes(numcodecs.Blosc(cname="lz4", clevel=1, shuffle=1).encode(
            np.frombuffer(data, f"u{itemsize}") if itemsize > 1 else data))
    elif codec == "zlib":
        frame = bytes(numcodecs.Zlib(level=4).encode(data))
    else:
        frame = bytes(numcodecs.Zstd(level=1).encode(data))
    if mutation == "flip" and frame:
        at = where % len(frame)
        frame = frame[:at] + bytes([frame[at] ^ 0x5A]) + frame[at + 1:]
    elif mutation == "cut":
        frame = frame[:where % (len(frame) + 1)]
    elif mutation == "grow":
        frame = frame + junk
    elif mutation == "junk":
        frame = junk
    return frame


def _reference_decode(codec: str, frame: bytes, nbytes: int, shuffle: int = 0
                      ) -> bytes | None:
    """The decoded chunk numcodecs gives (zarr's default pipeline decodes with it), or None
    where it refuses the frame or gives another size."""
    import numcodecs

    decoders = {"blosc": numcodecs.Blosc(), "zstd": numcodecs.Zstd(), "zlib": numcodecs.Zlib()}
    try:
        got = frame if codec == "raw" else bytes(decoders[codec].decode(frame))
        if len(got) == nbytes and shuffle > 1:
            got = bytes(numcodecs.Shuffle(elementsize=shuffle).decode(got))
    except Exception:  # noqa: BLE001 - any refusal
        return None
    return got if len(got) == nbytes else None


def _positions(shape: list[int], strides: list[int], start: int) -> list[int] | None:
    """Byte offsets of every element of a block, by enumeration (None for a negative
    count): the oracle the C decoder's checked arithmetic is compared with."""
    if any(n < 0 for n in shape):
        return None
    return [start + sum(i * s for i, s in zip(idx, strides, strict=True))
            for idx in itertools.product(*(range(n) for n in shape))]


@settings(max_examples=examples(200))
@given(case=jobs_and_frames())
@example(case=dict(chunk=[1, 4], itemsize=1, codec="raw", data=b"ABCD", mutation="none",
                   where=0, junk=b"", jobs=[([2, 4], [1, 1], 0, 0, [1, 1])],
                   swap=False, outlen=64))
@example(case=dict(chunk=[1], itemsize=1, codec="blosc", data=b"\x00", mutation="cut",
                   where=13, junk=b"", jobs=[([0], [-2], 0, 0, [-1])], swap=False, outlen=0))
@example(case=dict(chunk=[1, 1, 1], itemsize=1, codec="raw", data=b"\x00", mutation="none",
                   where=0, junk=b"", jobs=[([0, 0, -1], [-2, -2, -2], 0, 0, [-1, -1, -1])],
                   swap=False, outlen=0))  # an empty block with a negative count: refused
def fuzz_codec_frames(case: dict[str, Any]) -> None:
    """Frames (valid, bit-flipped, cut, grown, junk) and jobs of any geometry straight into
    ``lsio_decode_scatter``: a job outside its chunk or output is LSIO_DECODE_BOUNDS with
    nothing written; a frame numcodecs refuses (or of another size) is LSIO_DECODE_CORRUPT;
    else the output holds exactly the elements numpy would copy."""
    from lsio import _codecs
    from lsio.zarr._batched import _chunk_dtype

    ffi, lib = _codecs.ffi, _codecs.lib
    chunk, itemsize, codec = case["chunk"], case["itemsize"], case["codec"]
    shuffle = case.get("shuffle", 0)
    nbytes = int(np.prod(chunk)) * itemsize
    frame = _frame(codec, case["data"], itemsize, case["mutation"], case["where"],
                   case["junk"], shuffle)
    decoded = _reference_decode(codec, frame, nbytes, shuffle)
    if case["mutation"] == "none" and not (shuffle > 1 and nbytes % shuffle):
        assert decoded is not None, "numcodecs refused its own frame"
    cstrides = [itemsize] * len(chunk)
    for k in range(len(chunk) - 2, -1, -1):
        cstrides[k] = cstrides[k + 1] * chunk[k + 1]
    guard = 64
    outlen = case["outlen"]
    buf = np.zeros(outlen + 2 * guard, np.uint8)
    out = buf.ctypes.data + guard
    src = np.frombuffer(frame, np.uint8) if frame else np.zeros(1, np.uint8)
    jobs = np.zeros(len(case["jobs"]), _chunk_dtype(ffi))
    fits = True
    expected = buf.copy()
    for j, (shape, steps, src_offset, dst_offset, dsteps) in enumerate(case["jobs"]):
        sstr = [s * c for s, c in zip(steps, cstrides, strict=True)]
        dstr = [s * itemsize for s in dsteps]
        jobs[j]["src"], jobs[j]["srclen"] = src.ctypes.data, len(frame)
        jobs[j]["out"], jobs[j]["outlen"] = out, outlen
        jobs[j]["dst"] = out + dst_offset
        jobs[j]["src_offset"] = src_offset
        nd = len(chunk)
        jobs[j]["shape"][:nd] = shape
        try:
            jobs[j]["src_strides"][:nd] = sstr
            jobs[j]["dst_strides"][:nd] = dstr
        except OverflowError:
            return  # not representable in the C struct: nothing to hand over
        spos = _positions(shape, sstr, src_offset)
        dpos = _positions(shape, dstr, dst_offset)
        if spos is None or dpos is None or (spos and (
                min(spos) < 0 or max(spos) + itemsize > nbytes
                or min(dpos) < 0 or max(dpos) + itemsize > outlen)):
            fits = False
        elif fits and decoded is not None:
            for s, d in zip(spos, dpos, strict=True):
                item = decoded[s:s + itemsize]
                expected[guard + d:guard + d + itemsize] = np.frombuffer(
                    item[::-1] if case["swap"] else item, np.uint8)
    # the caller's scratch (a decompressed chunk, and an unshuffled one), or none (the C
    # call allocates one once a header passes)
    want = nbytes * ((codec != "raw") + (shuffle > 1))
    scratch = np.empty(max(want, 1), np.uint8) if case.get("scratch", True) else None
    failed = ffi.new("int *")
    start = time.monotonic()
    ret = lib.lsio_decode_scatter(
        {"raw": lib.LSIO_CODEC_RAW, "blosc": lib.LSIO_CODEC_BLOSC, "zstd": lib.LSIO_CODEC_ZSTD,
         "zlib": lib.LSIO_CODEC_ZLIB}[codec], shuffle,
        ffi.cast("lsio_chunk *", jobs.ctypes.data),
        len(jobs), len(chunk), nbytes, itemsize, int(case["swap"]),
        ffi.NULL if scratch is None else ffi.cast("char *", scratch.ctypes.data),
        0 if scratch is None else len(scratch), failed)
    assert time.monotonic() - start < STEP_SECONDS
    if shuffle > 1 and nbytes % shuffle:
        assert ret == lib.LSIO_DECODE_BADARGS and not buf.any(), (ret, case)
        return
    if not fits:
        assert ret == lib.LSIO_DECODE_BOUNDS, (ret, case)
        assert not buf.any(), "a refused job wrote"
        return
    if ret == lib.LSIO_DECODE_CORRUPT or decoded is None:
        # a frame numcodecs refuses is refused; the C decoder may be stricter (a blosc frame
        # shorter than its header, which numcodecs reads past)
        assert ret == lib.LSIO_DECODE_CORRUPT and failed[0] == 0, (ret, case)
        assert not buf.any(), "a corrupt chunk wrote"
        return
    assert ret == lib.LSIO_DECODE_OK, (ret, failed[0], case)
    assert buf.tobytes() == expected.tobytes(), case


if __name__ == "__main__":  # run one loop by hand: python tests/test_zarr_fuzz.py NAME
    sys.path.insert(0, str(TESTS))
    globals()[sys.argv[1]]()
