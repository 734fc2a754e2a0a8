"""lsio.grib: inventories (sidecars and scans), reads equal to eccodes decoding whole files
on every packing, errors naming the file and message, remote reads on nginx and moto."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import eccodes  # noqa: E402 - the grib extra (make test installs it): fail, never skip
import numpy as np
import pytest
from grib_data import PACKINGS, decode_all, write_grib
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import MotoServer, Nginx

import lsio
import lsio.grib
from lsio.grib._message import parse_idx, parse_index


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One file a packing; the simple one with a bitmap, each with a two-field message."""
    d = tmp_path_factory.mktemp("grib")
    out = []
    for k, packing in enumerate(PACKINGS):
        path = d / f"{packing}.grib2"
        write_grib(path, packing=packing, seed=k, multi=True, bitmap=k == 0)
        out.append(path)
    return out


def _reference(paths: list[Path]) -> np.ndarray:
    return np.stack([v for p in paths for v in decode_all(p)])


def _hide(paths: list[Path], *suffixes: str) -> Iterator[None]:
    moved = []
    for p in paths:
        for side in (Path(f"{p}.idx"), p.with_suffix(".index")):
            if side.name.endswith(suffixes):
                side.rename(f"{side}.away")
                moved.append(side)
    try:
        yield
    finally:
        for side in moved:
            Path(f"{side}.away").rename(side)


@pytest.mark.parametrize("hide", [(), (".idx",), (".idx", ".index")],
                         ids=["idx", "index", "scan"])
def test_read_equals_eccodes_on_every_packing(files: list[Path], hide: tuple[str, ...]
                                              ) -> None:
    """0.3 s. Every packing, bitmap (NaN), sub-messages: from each inventory road."""
    for _ in _hide(files, *hide) if hide else [None]:
        msgs = lsio.grib.inventory_sync(files)
        assert len(msgs) == 48
        assert (msgs[0].grid is not None) == (hide == (".idx", ".index"))
        got = lsio.grib.read_sync(msgs)
    ref = _reference(files)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.isnan(got[0]).sum() == np.isnan(ref[0]).sum() > 0
    np.testing.assert_array_equal(got, ref)


def test_match_and_subset(files: list[Path]) -> None:
    msgs = lsio.grib.inventory_sync(files, match=":(UGRD|VGRD):10 m above ground:6 hour")
    assert [m.submessage for m in msgs] == [0, 1] * 4
    got = lsio.grib.read_sync(msgs, dtype=np.float64)
    ref = _reference(files)
    np.testing.assert_array_equal(got, ref[[7, 8, 19, 20, 31, 32, 43, 44]])
    assert got.dtype == np.float64
    two = lsio.grib.inventory_sync(files[:1], match=lambda m: m.variable == "RH")
    assert len(two) == 2 and all(m.level == "2 m above ground" for m in two)


def test_eccodes_is_thread_safe(tmp_path: Path) -> None:
    """The hammer (~3 s): 6 threads x 12 rounds of 24 messages of every packing decode
    equal to a serial decode. If this failed, decoding would have to go to processes."""
    msgs = []
    for packing in PACKINGS:
        path = tmp_path / f"{packing}.grib2"
        recs = write_grib(path, packing=packing, ni=120, nj=90, steps=(0,), sidecars=False)
        data = path.read_bytes()
        msgs += [data[r["offset"]:r["offset"] + r["length"]] for r in recs]

    def decode(m: bytes) -> np.ndarray:
        h = eccodes.codes_new_from_message(memoryview(m))
        try:
            return eccodes.codes_get_values(h)  # type: ignore[no-any-return]
        finally:
            eccodes.codes_release(h)

    serial = [decode(m) for m in msgs]
    bad: list[int] = []

    def hammer() -> None:
        for _ in range(12):
            bad.extend(i for i, m in enumerate(msgs) if not np.array_equal(decode(m), serial[i]))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and bad == []


def test_corrupt_and_truncated_messages_name_source_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.grib2"
    recs = write_grib(path, packing="grid_complex_spatial_differencing", steps=(0,))
    msgs = lsio.grib.inventory_sync([path])
    third = recs[3]["offset"]
    data = bytearray(path.read_bytes())
    data[third + recs[3]["length"] - 40:third + recs[3]["length"] - 4] = bytes(36)  # data
    data[third + 20] ^= 0xFF  # and section 1's length: the walk cannot go on
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"bad.grib2: message at offset {third}"):
        lsio.grib.read_sync(msgs)
    short = [lsio.grib.Message(str(path), third, recs[3]["length"] + 99, "X", "", None, None)]
    with pytest.raises(ValueError, match=rf"bad.grib2: message at offset {third}"):
        lsio.grib.read_sync(short)
    os.truncate(path, third + 100)
    with pytest.raises(ValueError, match=rf"bad.grib2: message at offset {third}.*truncated"):
        lsio.grib.read_sync(msgs[3:4])
    Path(f"{path}.idx").unlink()
    path.with_suffix(".index").unlink()
    with pytest.raises(ValueError, match=rf"bad.grib2: message at offset {third}: section"):
        lsio.grib.inventory_sync([path])  # the scan meets the corrupt section 1
    cut = tmp_path / "cut.grib2"
    write_grib(cut, packing="grid_complex_spatial_differencing", steps=(0,), sidecars=False)
    os.truncate(cut, third + 100)
    with pytest.raises(ValueError, match=rf"cut.grib2: message at offset {third}: the file "
                                         "ends inside a message"):
        lsio.grib.inventory_sync([cut])


def test_different_grids_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.grib2", tmp_path / "b.grib2"
    write_grib(a, steps=(0,))
    write_grib(b, steps=(0,), ni=10, nj=8)
    msgs = lsio.grib.inventory_sync([a, b], match="TMP:2 m")
    with pytest.raises(ValueError, match=r"different grids: .*[ab].grib2: message at offset 0 "
                                         r"is on grid template 0, (8 x 10|18 x 24), .*; "
                                         r".*[ab].grib2: message at offset 0 on grid "
                                         r"template 0, (18 x 24|8 x 10)"):
        lsio.grib.read_sync(msgs)
    for side in (Path(f"{a}.idx"), a.with_suffix(".index"), Path(f"{b}.idx"),
                 b.with_suffix(".index")):
        side.unlink()
    scanned = lsio.grib.inventory_sync([a, b], match="TMP:2 m")  # grids known up front
    with pytest.raises(ValueError, match="different grids"):
        lsio.grib.read_sync(scanned)


def test_bad_sidecar_lines_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"x.idx line 2: not a wgrib2"):
        parse_idx("x", b"1:0:d=2024010100:TMP:2 m above ground:anl:\nnonsense\n", "x.idx")
    with pytest.raises(ValueError, match=r"x.idx line 1: longer than"):
        parse_idx("x", b"1:0:d=2024010100:" + b"A" * 10000 + b":l:anl:\n", "x.idx")
    with pytest.raises(ValueError, match=r"x.index line 1: not an ECMWF index entry"):
        parse_index("x", b'{"_offset": -1, "_length": 3, "date": "20240101"}\n', "x.index")
    with pytest.raises(ValueError, match=r"x.index line 1"):
        parse_index("x", b"[1, 2]\n", "x.index")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 3)), min_size=1, max_size=30),
       st.booleans())
def test_inventory_lengths(messages: list[tuple[int, int]], ecmwf: bool) -> None:
    """Random message sizes and sub-message counts: lengths run to the next different
    offset, sub-messages share their message's offset and length, the last runs to EOF
    (``None``) in an ``.idx``; an ECMWF ``.index`` gives lengths as they are."""
    lines, expect, offset = [], [], 0
    for n, (size, fields) in enumerate(messages, 1):
        for k in range(fields):
            if ecmwf:
                lines.append(f'{{"date": "20240101", "time": "0600", "step": "{n}", '
                             f'"param": "t", "levtype": "sfc", "_offset": {offset}, '
                             f'"_length": {size}}}')
            else:
                label = f"{n}.{k + 1}" if fields > 1 else str(n)
                lines.append(f"{label}:{offset}:d=2024010106:TMP:2 m above ground:{n} hour fcst:")
            last = n == len(messages) and not ecmwf
            expect.append((offset, None if last else size, k))
        offset += size
    text = ("\n".join(lines) + "\n").encode()
    got = (parse_index if ecmwf else parse_idx)("f", text, "f.side")
    assert [(m.offset, m.length, m.submessage) for m in got] == expect
    assert all(m.time is not None and m.time.hour == 6 for m in got)


@pytest.fixture(scope="module")
def served(files: list[Path], nginx: Nginx) -> list[str]:
    """The files, their sidecars beside them, on the session's nginx; and a copy with no
    sidecars (scanned over HTTP)."""
    root = Path(nginx.root) / "grib"
    root.mkdir(exist_ok=True)
    for f in files:
        for p in (f, Path(f"{f}.idx"), f.with_suffix(".index")):
            shutil.copy(p, root / p.name)
        shutil.copy(f, root / f"bare-{f.name}")
    return [nginx.url(f"grib/{f.name}") for f in files]


def test_remote_nginx_sidecars_and_scan(files: list[Path], served: list[str]) -> None:
    ref = _reference(files)
    msgs = lsio.grib.inventory_sync(served)
    assert len(msgs) == 48 and msgs[0].grid is None
    np.testing.assert_array_equal(lsio.grib.read_sync(msgs), ref)
    bare = [u.replace("/grib/", "/grib/bare-") for u in served]
    scanned = lsio.grib.inventory_sync(bare)
    assert [(m.offset, m.submessage, m.line) for m in scanned] == [
        (m.offset, m.submessage, m.line) for m in msgs]
    np.testing.assert_array_equal(lsio.grib.read_sync(scanned), ref)


def test_remote_moto(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import use_moto_credentials

    server = MotoServer().start()
    try:
        use_moto_credentials(monkeypatch, server)
        s3 = server.client()
        s3.create_bucket(Bucket="grib")
        for f in files:
            for p in (f, Path(f"{f}.idx")):
                s3.put_object(Bucket="grib", Key=p.name, Body=p.read_bytes())
        reader = lsio.Reader(http=lsio.HttpOptions(endpoint_url=server.endpoint))
        urls = [f"s3://grib/{f.name}" for f in files]
        msgs = lsio.grib.inventory_sync(urls, reader=reader, match=":TMP:")
        assert len(msgs) == 24
        got = lsio.grib.read_sync(msgs, reader=reader)
        ref = _reference(files)
        keep = [i for i, m in enumerate(lsio.grib.inventory_sync(files)) if ":TMP:" in m.line]
        np.testing.assert_array_equal(got, ref[keep])
    finally:
        server.stop()


_ONE = bytearray()


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 2999), st.integers(0, 255)), max_size=8),
       hop=st.integers(1, 400), cut=st.integers(0, 3000))
def test_walker_on_mutated_bytes_ends(flips: list[tuple[int, int]], hop: int, cut: int,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """Untrusted bytes (a message with bytes changed, cut short, read in any hop size):
    the walk ends with fields or a ValueError naming the file, in a bounded number of
    hops."""
    from lsio.grib._sections import Walker

    if not _ONE:
        path = tmp_path_factory.mktemp("fuzz") / "f.grib2"
        write_grib(path, steps=(0,), multi=True, sidecars=False)
        _ONE.extend(path.read_bytes())
    data = bytearray(_ONE[:len(_ONE) - cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    walker = Walker("f.grib2")
    try:
        for _ in range(len(data) + 2):
            ask = walker.want()
            if ask is None:
                break
            n = max(hop, ask[1])
            buf = bytes(data[ask[0]:ask[0] + n])
            walker.feed(ask[0], buf, eof=len(buf) < n)
        else:
            raise AssertionError("the walk did not end")
    except ValueError as exc:
        assert "f.grib2" in str(exc)


def test_open_dataset(files: list[Path]) -> None:
    """Variables by GRIB name and level kind on (time, step, level, y, x); latitude and
    longitude from eccodes, computed once per grid."""
    ds = lsio.grib.open_dataset(files[1:2], match=":(TMP|UGRD):")
    assert sorted(ds.data_vars) == ["TMP_m_above_ground", "TMP_mb", "UGRD"]
    assert ds["TMP_mb"].dims == ("time", "step", "level_mb", "y", "x")
    assert list(ds["level_mb"].values) == [500.0, 850.0]
    assert list(ds["step"].values.astype("timedelta64[h]").astype(int)) == [0, 6]
    ref = decode_all(files[1])  # fields: TMP 2 m, UGRD, VGRD, RH, TMP 500, TMP 850; x 2 steps
    np.testing.assert_array_equal(ds["TMP_mb"].values[0, 1, 1], ref[6 + 5])
    np.testing.assert_array_equal(ds["UGRD"].values[0, 0, 1], ref[1])
    assert np.isnan(ds["UGRD"].values[0, 0, 0]).all()  # no UGRD at 2 m: NaN
    with open(files[1], "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
    try:
        lat = eccodes.codes_get_array(h, "latitudes").reshape(18, 24)
        lon = eccodes.codes_get_array(h, "longitudes").reshape(18, 24)
    finally:
        eccodes.codes_release(h)
    np.testing.assert_array_equal(ds["latitude"].values, lat)
    np.testing.assert_array_equal(ds["longitude"].values, lon)
    again = lsio.grib.open_dataset(files[2:3], match="RH")  # the same grid: cached arrays
    assert again["latitude"].values.base is ds["latitude"].values.base or np.shares_memory(
        again["latitude"].values, ds["latitude"].values)


def test_message_repr_hides_a_signed_urls_secret() -> None:
    m = lsio.grib.Message("https://h/f.grib2?X-Amz-Signature=deadbeef&X-Amz-Credential=AK",
                          0, 10, "TMP", "2 m above ground", None, None, line="1:0:d=x:TMP:")
    assert "deadbeef" not in repr(m) and "f.grib2" in repr(m) and "TMP" in repr(m)


def test_oversized_sidecar_is_refused_unread(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A sidecar over the cap is read only up to the cap plus one byte, then refused."""
    import lsio.grib._inventory as inv
    import lsio.grib._message as msg

    path = tmp_path / "big.grib2"
    write_grib(path, steps=(0,))
    monkeypatch.setattr(inv, "GRIB_SIDECAR_BYTES", 100)
    monkeypatch.setattr(msg, "GRIB_SIDECAR_BYTES", 100)
    with pytest.raises(ValueError, match=r"big.grib2.idx: 101 bytes, more than a sidecar"):
        lsio.grib.inventory_sync([path])


class _Counting:
    """A reader that counts the calls made through it."""

    def __init__(self) -> None:
        self.reader, self.calls = lsio.Reader(), []

    async def read_many(self, requests: list, **kw: object) -> object:
        self.calls.append(len(requests))
        return await self.reader.read_many(requests, **kw)


def test_one_call_for_all_sidecars_and_one_for_all_messages(files: list[Path]) -> None:
    counting = _Counting()
    msgs = lsio.grib.inventory_sync(files, reader=counting)
    assert counting.calls == [2 * len(files)]  # every .idx and .index at once
    lsio.grib.read_sync(msgs, reader=counting)
    assert counting.calls[1:] == [48]
    for _ in _hide(files, ".idx", ".index"):
        counting.calls.clear()
        lsio.grib.inventory_sync(files, reader=counting)
    # sidecars, then hops: every file walks in the same calls (4 files a hop); the test
    # files are small: one 64 KiB hop reads a whole file, and its short read ends the walk
    assert counting.calls == [8, 4], counting.calls
