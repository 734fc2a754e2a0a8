"""zarr versions: lsio's use of zarr's private surface (lsio/zarr/_compat.py) per zarr release
it knows, one warning and zarr's own reads on one it does not, the store's ``get_ranges``
(zarr 3.3+) byte for byte, and the pipeline's per-chunk results (zarr 3.2+).

Each known release runs in a subprocess: the installed zarr, or one installed with
``pip install --target DIR zarr==3.X.Y --no-deps`` and named in ``LSIO_ZARR_DIRS``
(``DIR:DIR...``; ``make test-zarr-versions`` fills it; a release this Python cannot run is
left out). A release neither provides is not tried; the installed zarr always is.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from conftest import check_ok, run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.buffer import default_buffer_prototype

import lsio
import lsio.zarr as lz
from lsio.zarr import LsioStore, _compat

WORKTREE = str(Path(lsio.__file__).parents[1])
INSTALLED = tuple(int(x) for x in re.findall(r"\d+", zarr.__version__)[:2])


def _zarr_dirs() -> dict[tuple[int, ...], str]:
    """Extra zarr releases to try: pip --target directories named in LSIO_ZARR_DIRS."""
    found = {}
    for d in filter(None, os.environ.get("LSIO_ZARR_DIRS", "").split(os.pathsep)):
        for info in Path(d).glob("zarr-*.dist-info"):
            needs = re.search(r"^Requires-Python: >=(\d+)\.(\d+)",
                              (info / "METADATA").read_text(), re.M)
            if needs is None or sys.version_info[:2] >= (int(needs[1]), int(needs[2])):
                found[tuple(int(x) for x in re.findall(r"\d+", info.name)[:2])] = d
    return found


# What each known release must give (flags of _compat.Support), run in a fresh interpreter
# that also reads an array (unsharded and sharded, with missing chunks) through lsio's fast
# path and pipeline and compares with zarr's own read, warnings as errors.
PER_VERSION = """
import asyncio, sys, tempfile, warnings
warnings.simplefilter("error")
import numpy as np, zarr, zarr.codecs as zc, zarr.core.codec_pipeline
import lsio.zarr as lz
from lsio.zarr import _compat
s = _compat.support()
root = tempfile.mkdtemp()
for name, shards in (("plain", None), ("sharded", (4, 4))):
    a = zarr.create_array(f"{root}/{name}", shape=(8, 6), chunks=(2, 2), shards=shards,
                          dtype="f4", fill_value=-1, compressors=zc.ZstdCodec(level=1))
    a[:4, :4] = np.arange(16, dtype="f4").reshape(4, 4)
    want = zarr.open_array(f"{root}/{name}", mode="r")[1:7, ::2]
    got = lz.read_sync(f"{root}/{name}", (slice(1, 7), slice(None, None, 2)))
    with lz.enable():
        b = zarr.open_array(lz.LsioStore(f"{root}/{name}", read_only=True), mode="r")
        piped = b[1:7, ::2]
    assert (got == want).all() and (piped == want).all(), name
print(s.version, s.fast, s.split_grid, s.read_results,
      hasattr(zarr.abc.store.Store, "get_ranges"),
      hasattr(zarr.core.codec_pipeline, "FusedCodecPipeline"))
"""


@pytest.mark.parametrize("known", sorted({INSTALLED, *_zarr_dirs()}),
                         ids=lambda v: f"zarr-{v[0]}.{v[1]}")
def test_each_zarr_here(known: tuple[int, ...]) -> None:
    """Per release here (the installed one, those in LSIO_ZARR_DIRS): one lsio knows (or a
    newer 3.x), lsio's reads on, its flags that release's (3.2 split the chunk grid and gave
    ``read`` results; 3.3 added ``get_ranges`` and the fused pipeline), and the fast path
    and the pipeline read what zarr reads."""
    assert known in _compat.KNOWN or (3, 4) < known < (4, 0)
    dirs = _zarr_dirs()
    path = [dirs[known]] if known != INSTALLED else []
    env = {"PYTHONPATH": os.pathsep.join([*path, WORKTREE])}
    out = check_ok(run_python(PER_VERSION, env=env)).split()
    assert tuple(int(x) for x in out[0].split(".")[:2]) == known
    new = known >= (3, 2)
    assert out[1:] == ["True", str(new), str(new), str(known >= (3, 3)),
                       str(known >= (3, 3))]


@pytest.fixture
def fresh_support() -> Iterator[None]:
    _compat.support.cache_clear()
    yield
    _compat.support.cache_clear()


def _array(root: Path) -> tuple[str, np.ndarray[Any, Any]]:
    a = zarr.create_array(str(root / "a"), shape=(6, 5), chunks=(2, 2), dtype="i4",
                          fill_value=7, compressors=zc.ZstdCodec(level=1))
    a[:3, :] = np.arange(15, dtype="i4").reshape(3, 5)
    return str(root / "a"), zarr.open_array(str(root / "a"), mode="r")[...]


@pytest.mark.parametrize("how", ["version-9.0", "indexer-gone"])
def test_an_unknown_zarr_reads_through_zarr_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_support: None,
        how: str) -> None:
    """A zarr lsio does not know (another major version, or a private name gone): one
    ZarrCompatWarning naming the version and what is off; the fast path and the pipeline
    still read what zarr reads, through zarr's own code, never an AttributeError."""
    path, want = _array(tmp_path)
    if how == "version-9.0":
        monkeypatch.setattr(zarr, "__version__", "9.0")
    else:
        from zarr.core import indexing

        monkeypatch.delattr(indexing, "BasicIndexer")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = lz.read_sync(path, (slice(1, 5), 3))
        with lz.enable():
            piped = zarr.open_array(LsioStore(path, read_only=True), mode="r")[...]
        again = lz.read_sync(path, mode="oindex", selection=([0, 5], slice(None)))
    np.testing.assert_array_equal(got, want[1:5, 3])
    np.testing.assert_array_equal(piped, want)
    np.testing.assert_array_equal(again, want[[0, 5], :])
    ours = [w for w in seen if issubclass(w.category, _compat.ZarrCompatWarning)]
    assert len(ours) == 1, [str(w.message) for w in seen]
    text = str(ours[0].message)
    assert zarr.__version__ in text and "lsio.zarr.read" in text and "LsioCodecPipeline" in text
    if how == "indexer-gone":
        assert "BasicIndexer" in text


def test_the_pipeline_reports_each_chunk(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """zarr 3.2+: ``read`` returns one ``{"status": ...}`` per chunk, "missing" for chunks
    read as the fill value (zarr 3.4 raises on them with ``read_missing_chunks`` off);
    zarr 3.1: None, as zarr's own pipeline."""
    path, want = _array(tmp_path)
    returned: list[Any] = []
    real = lz.LsioCodecPipeline.read

    async def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        returned.append(await real(self, *args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(lz.LsioCodecPipeline, "read", spy)
    with lz.enable():
        got = zarr.open_array(LsioStore(path, read_only=True), mode="r")[...]
    np.testing.assert_array_equal(got, want)
    if INSTALLED < (3, 2):
        assert returned == [None]
        return
    (statuses,) = returned
    # a 3x3 grid of 2x2 chunks, rows 0-2 written: grid rows 0 and 1 are present
    assert [s["status"] for s in statuses] == ["present"] * 6 + ["missing"] * 3
    if "array.read_missing_chunks" in str(zarr.config.config) or INSTALLED >= (3, 4):
        from zarr.errors import ChunkNotFoundError  # type: ignore[attr-defined,unused-ignore]

        with lz.enable(), zarr.config.set({"array.read_missing_chunks": False}):
            arr = zarr.open_array(LsioStore(path, read_only=True), mode="r")
            with pytest.raises(ChunkNotFoundError, match="c/2/0"):
                arr[...]


SIZE = 300
_ranges = st.one_of(
    st.none(),
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, SIZE)).filter(lambda t: t[0] < t[1])
    .map(lambda t: RangeByteRequest(*t)),
    st.integers(0, SIZE - 1).map(OffsetByteRequest),
    st.integers(1, SIZE).map(SuffixByteRequest),
)


def _expected(data: bytes, r: Any) -> bytes:
    if r is None:
        return data
    if isinstance(r, RangeByteRequest):
        return data[r.start:r.end]
    if isinstance(r, OffsetByteRequest):
        return data[r.offset:]
    return data[-r.suffix:]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranges=st.lists(_ranges, max_size=12))
def test_get_ranges_byte_for_byte(tmp_path: Path, ranges: list[Any]) -> None:
    """``get_ranges`` (and ``get_ranges_sync``) give each range's bytes of the source,
    each index once, in one ``read_many``."""
    data = os.urandom(SIZE)
    (tmp_path / "k").write_bytes(data)
    store = LsioStore(tmp_path, read_only=True)

    async def collect() -> list[tuple[int, Any]]:
        return [x async for group in store.get_ranges(
            "k", ranges, prototype=default_buffer_prototype()) for x in group]

    for got in (asyncio.run(collect()),
                store.get_ranges_sync("k", ranges, prototype=default_buffer_prototype())):
        assert sorted(i for i, _ in got) == list(range(len(ranges)))
        for i, buf in got:
            assert buf is not None and buf.to_bytes() == _expected(data, ranges[i]), ranges[i]


async def test_get_ranges_is_one_read_many(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k").write_bytes(bytes(range(256)))
    store = LsioStore(tmp_path, read_only=True)
    calls = []
    real = lsio.Reader.read_many

    async def count(self: Any, requests: Any, **kwargs: Any) -> Any:
        calls.append(len(requests))
        return await real(self, requests, **kwargs)

    monkeypatch.setattr(lsio.Reader, "read_many", count)
    ranges = [RangeByteRequest(i, i + 3) for i in range(0, 200, 7)]
    got = [x async for g in store.get_ranges("k", ranges, prototype=default_buffer_prototype())
           for x in g]
    assert calls == [len(ranges)] and len(got) == len(ranges)


@pytest.mark.parametrize("key", ["nope", "dir"])
async def test_get_ranges_of_a_missing_key_name_it(tmp_path: Path, key: str) -> None:
    """As zarr's own: an ExceptionGroup holding a FileNotFoundError, which names the key."""
    (tmp_path / "dir").mkdir()
    store = LsioStore(tmp_path, read_only=True)
    with pytest.raises(ExceptionGroup) as info:
        [x async for x in store.get_ranges(key, [None, RangeByteRequest(0, 1)],
                                           prototype=default_buffer_prototype())]
    (exc,) = info.value.exceptions
    assert isinstance(exc, FileNotFoundError) and repr(key) in str(exc)
    with pytest.raises(ExceptionGroup, match=repr(key)):
        store.get_ranges_sync(key, [None], prototype=default_buffer_prototype())


async def test_get_ranges_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"abc")
    store = LsioStore(tmp_path, read_only=True)
    with pytest.raises(ExceptionGroup) as info:
        [x async for x in store.get_ranges("../k", [None],
                                           prototype=default_buffer_prototype())]
    assert "'../k'" in str(info.value.exceptions[0])


def test_zarrs_sharding_reads_through_get_ranges(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """zarr 3.3+'s own pipeline reads a shard's inner chunks through ``get_ranges``: with
    LsioStore that is lsio's one ``read_many`` (zarr before 3.3 has no ``get_ranges``)."""
    a = zarr.create_array(str(tmp_path / "s"), shape=(16, 16), chunks=(2, 2), shards=(8, 8),
                          dtype="u2", compressors=None)
    data = np.arange(256, dtype="u2").reshape(16, 16)
    a[...] = data
    calls = []
    real = LsioStore.get_ranges

    def spy(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(key)
        return real(self, key, *args, **kwargs)

    monkeypatch.setattr(LsioStore, "get_ranges", spy)
    with lz.disable():
        got = zarr.open_array(LsioStore(tmp_path / "s", read_only=True), mode="r")[1:5, 3:9]
    np.testing.assert_array_equal(got, data[1:5, 3:9])
    assert bool(calls) == hasattr(Store, "get_ranges")
