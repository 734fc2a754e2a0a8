"""One version per object per call (``lsio/backends/http/_version.py``): an object replaced
while a call reads it in several requests (size probe, parts, a suffix and ranges) comes
back whole, old or new, never mixed; or, if it keeps changing, as a clear ``OSError``.
Against the hostile fault server (strong, weak, no ETag; a server ignoring ``If-Match``),
nginx (strong ETags, honours ``If-Match``), moto (S3, SigV4) and Azurite (Shared Key signs
``If-Match``)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import random_bytes, use_moto_credentials
from servers import Azurite, FaultServer, MotoServer, Nginx, serving_faults

import lsio
from lsio.backends.http import _batch
from lsio.backends.http._client import HttpClient
from lsio.backends.http._protocol import range_header
from lsio.backends.http._version import (
    Validators,
    VersionChanged,
    Versions,
    differs,
    validators,
)

V1 = random_bytes(300_000, seed=71)
V2 = random_bytes(300_000, seed=72)
V2_SHORT = random_bytes(250_000, seed=73)
PART = 100_000
"""max_read of the tests: a whole read of V1 is a size probe and two parts."""


# -- the record, without I/O -----------------------------------------------------------------

def H(**kw: str) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in kw.items()}


@pytest.mark.parametrize(("status", "headers", "want"), [
    (206, H(ETag='"a"', Content_Range="bytes 0-9/100"), Validators('"a"', None, 100)),
    (206, H(Content_Range="bytes 0--1/0"), Validators(None, None, 0)),  # Azurite, empty
    (416, H(Content_Range="bytes */7"), Validators(None, None, 7)),
    (200, H(Content_Length="12", Last_Modified="x"), Validators(None, "x", 12)),
    (206, H(ETag='W/"w"', Content_Range="bytes 0-9/*"), Validators('W/"w"', None, None)),
    (206, H(Content_Range="bytes 0-9/99999999999999999999999"), Validators(None, None, None)),
    (206, {}, Validators(None, None, None)),  # multipart: no Content-Range
    (206, H(Content_Range="bytes 9-0/100"), Validators(None, None, None)),  # invalid
    (200, H(Content_Length="9" * 5000), Validators(None, None, None)),  # hostile length
])
def test_validators(status: int, headers: dict[str, str], want: Validators) -> None:
    assert validators(status, headers) == want


@pytest.mark.parametrize(("first", "later", "changed"), [
    (Validators('"a"', "t1", 10), Validators('"a"', "t2", 10), False),  # strong: ETag rules
    (Validators('"a"', None, 10), Validators('"b"', None, 10), True),
    (Validators('"a"', None, 10), Validators('"a"', None, 11), True),
    (Validators('W/"a"', "t1", 10), Validators('W/"a"', "t2", 10), True),  # weak: all fields
    (Validators('W/"a"', "t1", 10), Validators('W/"b"', "t1", 10), True),
    (Validators(None, "t1", 10), Validators(None, "t1", 10), False),
    (Validators(None, "t1", 10), Validators(None, "t2", 10), True),
    (Validators(None, "t1", 10), Validators(None, None, None), False),  # a 416, multipart
    (Validators('"a"', "t1", 10), Validators(None, None, 10), False),
])
def test_differs(first: Validators, later: Validators, changed: bool) -> None:
    assert (differs(first, later) is not None) is changed


def test_record_pins_strong_etags_only() -> None:
    v = Versions()
    assert v.if_match(0) is None
    v.check(0, "u0", 206, H(ETag='"s"', Content_Range="bytes 0-1/5"), None)
    v.check(1, "u1", 206, H(ETag='W/"w"', Content_Range="bytes 0-1/5"), None)
    v.check(2, "u2", 206, H(Content_Range="bytes 0-1/5"), None)
    assert [v.if_match(f) for f in range(3)] == ['"s"', None, None]
    v.check(0, "u0", 206, H(ETag='"s"', Content_Range="bytes 2-3/5"), '"s"')  # same version
    with pytest.raises(VersionChanged, match="u0 changed while it was read.*412") as info:
        v.check(0, "u0", 412, {}, '"s"')
    assert info.value.errno == errno.ESTALE
    v.check(2, "u2", 412, {}, None)  # a 412 to no If-Match is not ours: the status reports it
    with pytest.raises(VersionChanged, match="size 5 then 6"):
        v.check(2, "u2", 206, H(Content_Range="bytes 0-1/6"), None)


def test_one_version_scope_shares_records_by_url() -> None:
    from lsio.backends.http._version import one_version

    with one_version():
        a = Versions(["u", "w"])
        a.check(0, "u", 206, H(ETag='"s"', Content_Range="bytes 0-1/5"), None)
        b = Versions(["x", "u"])  # a later call of the scope: "u" is its file 1
        assert b.if_match(1) == '"s"' and b.if_match(0) is None
        with pytest.raises(VersionChanged):
            b.check(1, "u", 206, H(ETag='"t"', Content_Range="bytes 0-1/5"), None)
    assert Versions(["u"]).if_match(0) is None  # outside: each call on its own


# -- the hostile server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fs() -> Iterator[FaultServer]:
    yield from serving_faults({"o.bin": V1, "o.bin~2": V2, "s.bin": V1, "s.bin~2": V2_SHORT})


def reader(small: bool, concurrency: int | None = None, **knobs: Any) -> lsio.Reader:
    # bulk: the planner, multipart, the worker pool
    return lsio.Reader(max_read=PART, route="auto" if small else "bulk", http=lsio.HttpOptions(
        backoff=0.001, concurrency=concurrency, **knobs))


def which(got: Any, *versions: bytes) -> int:
    data = bytes(got)
    for k, v in enumerate(versions):
        if data == v:
            return k
    raise AssertionError(f"{len(data)} bytes of no single version (a torn read)")


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("etag", ["strong", "weak", "none", "ignore"])
@pytest.mark.parametrize("name", ["o.bin", "s.bin"])  # the new version: same size, shorter
@pytest.mark.parametrize("after", [1, 2])
async def test_replaced_mid_read_comes_back_whole(fs: FaultServer, small: bool, etag: str,
                                                  name: str, after: int) -> None:
    """Replaced after the size probe (1) or after the first part (2): the new version,
    whole (no request of the old one is final yet), in a bounded number of requests."""
    fs.reset()
    new = fs.files[f"{name}~2"]
    (got,) = await reader(small, 1).read_many([(fs.url(f"v{etag}x{after}", name), 0, None)])
    assert which(got, V1, new) == 1
    sent = fs.requests_for(name)
    assert len(sent) <= 2 * 3  # the attempt that saw the change, and one more
    pins = [e["headers"].get("If-Match") for e in sent]
    assert pins[0] is None  # nothing known before the first answer
    if etag in ("weak", "none"):
        assert pins == [None] * len(pins)  # a weak ETag never matches: no precondition
    else:
        assert all(p is not None for p in pins[1:after])


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("etag", ["strong", "weak", "none", "ignore"])
async def test_requests_of_one_object_in_one_call_are_one_version(
        fs: FaultServer, small: bool, etag: str) -> None:
    """A shard's index (a suffix) and inner chunks (ranges) in one call: one version."""
    fs.reset()
    url = fs.url(f"v{etag}x1", "o.bin")
    reqs = [(url, -16, None), (url, 0, 1000), (url, 200_000, 5000)]
    got = await reader(small, 1).read_many(reqs)
    k = which(b"".join(bytes(g) for g in got), *(v[-16:] + v[:1000] + v[200_000:205_000]
                                                 for v in (V1, V2)))
    assert k == 1


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("etag", ["strong", "weak", "none", "ignore"])
async def test_object_changing_at_every_request_is_a_clear_error(
        fs: FaultServer, small: bool, etag: str) -> None:
    fs.reset()
    url = fs.url(f"v{etag}xalt", "o.bin")
    with pytest.raises(OSError, match="changed while it was read") as info:
        await reader(small).read_many([(url, 0, None)])
    assert info.value.errno == errno.ESTALE and info.value.filename == url
    assert len(fs.requests_for("o.bin")) <= 3 * 3  # bounded: READ_ATTEMPTS x (probe + parts)


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("etag", ["strong", "weak", "none", "ignore"])
async def test_no_extra_requests_when_nothing_changes(fs: FaultServer, small: bool,
                                                      etag: str) -> None:
    fs.reset()
    (got,) = await reader(small).read_many([(fs.url(f"v{etag}x1000", "o.bin"), 0, None)])
    assert bytes(got) == V1
    sent = fs.requests_for("o.bin")
    assert len(sent) == 3  # the size probe and two parts, as without version checks
    pins = [e["headers"].get("If-Match") for e in sent]
    assert pins[1:] == ([None, None] if etag in ("weak", "none") else [pins[1]] * 2)


# -- real servers: the object replaced between two of the call's requests ----------------------

def replace_after(monkeypatch: pytest.MonkeyPatch, n: int, replace: Callable[[], None]
                  ) -> list[str | None]:
    """Call ``replace()`` just before the call's request ``n + 1`` is sent; the ranges of
    the requests sent."""
    sent: list[str | None] = []
    send = HttpClient._open

    async def spy(self: HttpClient, file: int, rng: str | None, url: Any = None) -> Any:
        sent.append(rng)
        if len(sent) == n + 1:
            replace()
        return await send(self, file, rng, url)

    monkeypatch.setattr(HttpClient, "_open", spy)
    real_many = _batch.get_many

    async def many(client: HttpClient, reads: Any, concurrency: int, served: Any = None
                   ) -> Any:
        """A C transport batch sends its requests at once: a replacement due among them
        happens before the batch (the C side checks every answer's version alike)."""
        if len(reads) >= _batch.MIN_BATCH:
            before = len(sent)
            sent.extend(range_header(r.start, r.length) for r in reads)
            if before < n + 1 <= len(sent):
                replace()
        return await real_many(client, reads, concurrency, served)

    monkeypatch.setattr(_batch, "get_many", many)
    return sent


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("after", [0, 1, 2])
async def test_nginx_replaced_mid_read(nginx: Nginx, monkeypatch: pytest.MonkeyPatch,
                                       small: bool, after: int) -> None:
    path = Path(nginx.root) / f"version-{small}-{after}.bin"
    path.write_bytes(V1)
    os.utime(path, (1_700_000_000, 1_700_000_000))

    def replace() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(V2)
        os.utime(tmp, (1_700_000_100, 1_700_000_100))  # nginx's ETag: mtime and size
        os.replace(tmp, path)

    sent = replace_after(monkeypatch, after, replace)
    (got,) = await reader(small, 1).read_many([(nginx.url(path.name), 0, None)])
    assert which(got, V1, V2) == 1
    assert len(sent) == 3 if after == 0 else len(sent) <= 2 * 3, sent  # 3 if nothing changed


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    server.client().create_bucket(Bucket="ver")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("after", [0, 1, 2])
async def test_s3_replaced_mid_read(moto: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                    small: bool, after: int) -> None:
    use_moto_credentials(monkeypatch, moto)
    s3 = moto.client()
    key = f"v-{small}-{after}.bin"
    s3.put_object(Bucket="ver", Key=key, Body=V1)
    sent = replace_after(monkeypatch, after,
                         lambda: s3.put_object(Bucket="ver", Key=key, Body=V2_SHORT))
    r = reader(small, 1, endpoint_url=moto.endpoint)
    (got,) = await r.read_many([(f"s3://ver/{key}", 0, None)])
    assert which(got, V1, V2_SHORT) == 1
    assert len(sent) == 3 if after == 0 else len(sent) <= 2 * 3


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        server.create_container("ver")
        yield server


@pytest.mark.parametrize("small", [True, False], ids=["small", "bulk"])
@pytest.mark.parametrize("after", [0, 1, 2])
async def test_azure_replaced_mid_read(azurite: Azurite, monkeypatch: pytest.MonkeyPatch,
                                       small: bool, after: int) -> None:
    """Shared Key signs ``If-Match``: Azurite checks the signature, then the precondition."""
    for var in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
                "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", azurite.key)
    name = f"v-{small}-{after}.bin"
    azurite.put_blob("ver", name, V1)
    sent = replace_after(monkeypatch, after, lambda: azurite.put_blob("ver", name, V2))
    r = reader(small, 1, azure_endpoint=azurite.endpoint)
    got = await r.read_many([(f"az://ver/{name}", 0, None), (f"az://ver/{name}", -10, None)])
    k = which(got[0], V1, V2)
    assert k == 1
    assert bytes(got[1]) == (V1, V2)[k][-10:]  # the suffix: the same version
    assert len(sent) == 4 if after == 0 else len(sent) <= 2 * 4


# -- a sharded Zarr read: the index in one call, the inner chunks in the next -----------------

@pytest.mark.parametrize("when", ["between-calls", "never"])
async def test_zarr_shard_replaced_between_index_and_chunks(
        nginx: Nginx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """A shard replaced after its index was read: the chunks are not read from the new
    version at the old index's offsets (garbage, or a decode error); the read starts over
    and gives the new array whole."""
    import numpy as np
    import zarr
    import zarr.codecs as zc

    import lsio.zarr as lz

    def write(where: Path, values: Any) -> None:
        codec = zc.ShardingCodec(chunk_shape=(8, 8), codecs=[zc.BytesCodec(), zc.ZstdCodec()])
        arr = zarr.create_array(zarr.storage.LocalStore(where), shape=(32, 32),
                                chunks=(32, 32), dtype="i4", serializer=codec,
                                compressors=None, fill_value=0)
        arr[:] = values

    name = f"zshard-{when}"
    root = Path(nginx.root) / name
    old = np.arange(32 * 32, dtype="i4").reshape(32, 32)
    new = np.random.default_rng(5).integers(0, 1 << 20, (32, 32), dtype="i4")
    write(root, old)
    write(tmp_path / "new", new)
    shard = root / "c" / "0" / "0"
    os.utime(shard, (1_700_000_000, 1_700_000_000))
    sent: list[tuple[str, str | None]] = []
    send = HttpClient._open

    async def spy(self: HttpClient, file: int, rng: str | None, url: Any = None) -> Any:
        target = str(self.urls[file])
        if (when == "between-calls" and target.endswith("c/0/0") and rng is not None
                and not rng.startswith("bytes=-") and not any(
                    t.endswith("c/0/0") and r and not r.startswith("bytes=-")
                    for t, r in sent)):
            tmp = root / "c" / "0" / "new"
            tmp.write_bytes((tmp_path / "new" / "c" / "0" / "0").read_bytes())
            os.utime(tmp, (1_700_000_100, 1_700_000_100))
            os.replace(tmp, shard)
        sent.append((target, rng))
        return await send(self, file, rng, url)

    monkeypatch.setattr(HttpClient, "_open", spy)
    got = await lz.read(nginx.url(name))
    np.testing.assert_array_equal(got, new if when == "between-calls" else old)
    if when == "never":  # zarr.json, the index, the inner chunks (coalesced): nothing more
        assert len(sent) == 3
