"""Azure Blob Storage: reads, errors, listing and Zarr against Azurite (Microsoft's emulator,
which checks Shared Key signatures and SAS tokens as the service does), with an account key
and with a SAS; Entra ID tokens with a fake azure-identity credential on the in-process fault
server (caching, refresh, and no credential across a redirect to another host); the Shared
Key canonical string against the examples of Azure's REST documentation."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_bytes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servers import Azurite, FaultServer, serving_faults

import lsio
from lsio._url import HttpOptions
from lsio.backends.cloud import _sharedkey, resolve
from lsio.backends.cloud import azure as _azure

CONTAINER = "data"
BLOBS = {"a.bin": random_bytes(300_000, seed=1), "dir/with space+plus é.bin":
         random_bytes(70_000, seed=2), "one.bin": b"x", "empty.bin": b""}
AZURE_VARS = ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
              "AZURE_FEDERATED_TOKEN_FILE")

pytestmark = pytest.mark.usefixtures("road")  # as shipped, and C first (conftest)


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    """Azurite with CONTAINER holding BLOBS; the environment holds its account key (and no
    other Azure setting) for the module's tests."""
    with Azurite() as server, pytest.MonkeyPatch.context() as mp:
        for var in AZURE_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("AZURE_STORAGE_ACCOUNT_KEY", server.key)
        server.create_container(CONTAINER)
        for name, data in BLOBS.items():
            server.put_blob(CONTAINER, name, data)
        yield server


@pytest.fixture(params=["key", "sas"])
def cred(request: pytest.FixtureRequest, azurite: Azurite,
         monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: signed with the account key, and with a container SAS only."""
    if request.param == "sas":
        monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_KEY")
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?" + azurite.sas(CONTAINER))
    return str(request.param)


def reader(az: Azurite, route: Any = "auto", **knobs: Any) -> lsio.Reader:
    return lsio.Reader(route=route, http=HttpOptions(azure_endpoint=az.endpoint, backoff=0.001,
                                                     **knobs))


def expected(name: str, offset: int, length: int | None) -> bytes:
    data = BLOBS[name]
    start = max(len(data) + offset, 0) if offset < 0 else offset
    return data[start:] if length is None else data[start:start + length]


# -- reads --------------------------------------------------------------------------------------

async def test_ranges_and_whole_blobs(azurite: Azurite, cred: str) -> None:
    reqs = [("dir/with space+plus é.bin", 0, None), ("dir/with space+plus é.bin", 1000, 50),
            ("a.bin", -10, None), ("a.bin", 299_990, 100), ("a.bin", 0, None),
            ("one.bin", 0, None), ("empty.bin", 0, None), ("a.bin", 400_000, 10)]
    got = await reader(azurite).read_many([(f"az://{CONTAINER}/{n}", o, ln)
                                           for n, o, ln in reqs])
    assert [bytes(g) for g in got] == [expected(n, o, ln) for n, o, ln in reqs]


@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("req", [(0, 1), (0, None), (0, 10), (5, 10), (-16, None), (-1, 1)],
                         ids=str)
async def test_empty_blob_is_empty_on_every_route(azurite: Azurite, small: bool,
                                                  req: tuple[int, int | None]) -> None:
    """Azurite answers a range of an empty blob ``206 Content-Range: bytes 0--1/0``: any range
    of it is b"" on the small and the bulk path (the small path's one range was EIO,
    failing the hypothesis test below whenever it drew ``empty.bin``)."""
    r = reader(azurite, route="small" if small else "bulk")
    (got,) = await r.read_many([(f"az://{CONTAINER}/empty.bin", *req)])
    assert bytes(got) == b""


@st.composite
def blob_requests(draw: st.DrawFn) -> list[tuple[str, int, int | None]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.sampled_from(sorted(BLOBS)))
        size = len(BLOBS[name])
        offset = draw(st.one_of(st.integers(0, size + 10), st.integers(-size - 10, -1)))
        out.append((name, offset, draw(st.one_of(st.none(), st.integers(0, 100_000)))))
    return out


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reqs=blob_requests(), gap=st.sampled_from([0, 4096, 1 << 20]))
@example(reqs=[("empty.bin", 0, 1)], gap=0)  # Azurite: 206 bytes 0--1/0 (issue 20, item 11)
@example(reqs=[("one.bin", 1, 1)], gap=0)  # Azurite: 206 bytes 1-0/1, nothing from the end
def test_signed_reads_match_the_source(azurite: Azurite,
                                       reqs: list[tuple[str, int, int | None]],
                                       gap: int) -> None:
    r = lsio.Reader(max_gap=gap, http=HttpOptions(azure_endpoint=azurite.endpoint))
    got = r.read_many_sync([(f"az://{CONTAINER}/{n}", o, ln) for n, o, ln in reqs])
    for (n, o, ln), g in zip(reqs, got, strict=True):
        assert bytes(g) == expected(n, o, ln), (n, o, ln)


async def test_connection_string_alone(azurite: Azurite, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """A connection string is all a user sets: endpoint, account and key come from it."""
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_KEY")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    (got,) = await lsio.read_many([(f"az://{CONTAINER}/a.bin", 5, 20)])
    assert bytes(got) == BLOBS["a.bin"][5:25]


# -- errors -------------------------------------------------------------------------------------

async def test_missing_blob(azurite: Azurite, cred: str) -> None:
    path = f"az://{CONTAINER}/nope.bin"
    with pytest.raises(FileNotFoundError, match="404") as info:
        await reader(azurite).read_many([(f"az://{CONTAINER}/a.bin", 0, 10), (path, 0, 10)])
    assert info.value.filename == path and info.value.request_index == 1  # type: ignore
    if cred == "sas":  # the SAS's signature never shows in a message
        assert "sig=REDACTED" in str(info.value)
        assert azurite.sas(CONTAINER).split("sig=")[1] not in str(info.value)
    got = await reader(azurite).read_many([(path, 0, 10), (f"az://{CONTAINER}/one.bin", 0, 1)],
                                          missing_ok=True)
    assert got[0] is None and bytes(got[1]) == b"x"


async def test_wrong_key_is_refused(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", base64.b64encode(b"k" * 64).decode())
    with pytest.raises(PermissionError, match="403") as info:
        await reader(azurite).read_many([(f"az://{CONTAINER}/a.bin", 0, 10)])
    assert info.value.filename == f"az://{CONTAINER}/a.bin"


async def test_forged_sas_and_no_credentials_are_refused(azurite: Azurite,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_KEY")
    sas = azurite.sas(CONTAINER).replace("sp=rl", "sp=rwl")  # permissions it was not signed for
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    with pytest.raises(PermissionError, match="403"):
        await reader(azurite).read_many([(f"az://{CONTAINER}/a.bin", 0, 10)])
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN")
    monkeypatch.setattr(_azure, "default_credential", _no_azure_identity)
    with pytest.raises(PermissionError):  # anonymous: the container is private
        await reader(azurite).read_many([(f"az://{CONTAINER}/a.bin", 0, 10)])
    with pytest.raises(ImportError, match=r"lsio\[azure\]"):
        await reader(azurite, anonymous=False).read_many([(f"az://{CONTAINER}/a.bin", 0, 10)])


def _no_azure_identity() -> Any:
    raise ImportError("No module named 'azure'")


async def test_anonymous_true_sends_no_key(azurite: Azurite) -> None:
    """``anonymous=True`` sends nothing even with a key in the environment."""
    with pytest.raises(PermissionError):
        await reader(azurite, anonymous=True).read_many([(f"az://{CONTAINER}/a.bin", 0, 10)])


# -- listing ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def many(azurite: Azurite) -> list[str]:
    """A container "many" of 23 blobs, some in "directories"."""
    names = [f"k/{i:03d}" for i in range(20)] + ["k/sub/x", "k/sub/y/z", "top"]
    azurite.create_container("many")
    for name in names:
        azurite.put_blob("many", name, b"x")
    return names


async def test_listing_follows_pages(azurite: Azurite, many: list[str], cred: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Three blobs a page: List Blobs is followed across NextMarker (23 blobs: 8 pages), and by
    prefix and by directory; a SAS authorises listing too."""
    import lsio.zarr as lz

    if cred == "sas":
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", azurite.sas("many"))
    monkeypatch.setattr(_azure, "PAGE_SIZE", 3)
    pages: list[int] = []
    real = _azure.parse_page

    def counting(body: bytes, url: str) -> tuple[list[str], list[str], str | None]:
        out = real(body, url)
        pages.append(len(out[0]) + len(out[1]))
        return out

    monkeypatch.setattr(_azure, "parse_page", counting)
    r = reader(azurite)
    store = lz.LsioStore("az://many", reader=r)
    assert store.supports_listing
    assert sorted([k async for k in store.list()]) == sorted(many)
    assert len(pages) == 8 and pages[:-1] == [3] * 7 and sum(pages) == len(many)
    sub = lz.LsioStore("az://many/k", reader=r)
    assert sorted([k async for k in sub.list_prefix("sub/")]) == ["sub/x", "sub/y/z"]
    assert sorted([k async for k in sub.list_dir("")]) == sorted(
        [f"{i:03d}" for i in range(20)] + ["sub"])
    assert sorted([k async for k in sub.list_dir("sub")]) == ["x", "y"]
    assert [k async for k in sub.list_prefix("nothing/")] == []


async def test_listing_a_missing_container(azurite: Azurite) -> None:
    import lsio.zarr as lz

    store = lz.LsioStore("az://nosuchcontainer/x", reader=reader(azurite))
    with pytest.raises(FileNotFoundError) as info:
        [k async for k in store.list()]
    assert info.value.filename == "az://nosuchcontainer/x"


def test_parse_azure_page() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="c">
  <Prefix>p/</Prefix><Marker/><MaxResults>3</MaxResults><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>p/a</Name><Properties><Content-Length>1</Content-Length></Properties></Blob>
    <BlobPrefix><Name>p/d/</Name></BlobPrefix>
    <Blob><Name Encoded="true">p/%EF%BF%BEodd</Name><Properties/></Blob>
  </Blobs>
  <NextMarker>2!72!MDAwMDA0</NextMarker>
</EnumerationResults>"""
    assert _azure.parse_page(body, "u") == (["p/a", "p/\ufffeodd"], ["p/d/"],
                                                  "2!72!MDAwMDA0")
    last = body.replace(b"<NextMarker>2!72!MDAwMDA0</NextMarker>", b"<NextMarker/>")
    assert _azure.parse_page(last, "u")[2] is None
    with pytest.raises(Exception, match="not XML"):
        _azure.parse_page(b"<html", "u")


# -- Zarr ---------------------------------------------------------------------------------------

def _upload(az: Azurite, container: str, prefix: str, root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            az.put_blob(container, f"{prefix}/{path.relative_to(root)}", path.read_bytes())


async def test_zarr_on_azure(azurite: Azurite, cred: str, tmp_path: Path) -> None:
    """A sharded array with missing chunks, written locally by zarr-python and uploaded: read
    through LsioStore (zarr-python) and lsio.zarr.read (the fast path)."""
    import zarr

    import lsio.zarr as lz

    local = zarr.storage.LocalStore(tmp_path / "arr")
    arr = zarr.create_array(local, shape=(30, 20), chunks=(5, 5), shards=(10, 10), dtype="i4",
                            fill_value=-1)
    arr[:12] = np.arange(12 * 20).reshape(12, 20)
    _upload(azurite, CONTAINER, f"z-{cred}", tmp_path / "arr")
    r = reader(azurite)
    remote = zarr.open_array(lz.LsioStore(f"az://{CONTAINER}/z-{cred}", reader=r), mode="r")
    np.testing.assert_array_equal(remote[:], arr[:])
    np.testing.assert_array_equal(
        await lz.read(f"az://{CONTAINER}/z-{cred}", (slice(3, 29), 7), reader=r), arr[3:29, 7])


async def test_zarr_group_without_consolidated_metadata(azurite: Azurite, tmp_path: Path
                                                        ) -> None:
    import zarr

    import lsio.zarr as lz

    group = zarr.create_group(zarr.storage.LocalStore(tmp_path / "g"))
    group.create_array("a", shape=(4,), dtype="i2")[:] = [1, 2, 3, 4]
    group.create_array("b", shape=(2,), dtype="f4")[:] = [5, 6]
    _upload(azurite, CONTAINER, "g", tmp_path / "g")
    remote = zarr.open_group(lz.LsioStore(f"az://{CONTAINER}/g", reader=reader(azurite)),
                             mode="r", use_consolidated=False)
    assert sorted(remote.array_keys()) == ["a", "b"]
    np.testing.assert_array_equal(remote["a"][:], [1, 2, 3, 4])
    np.testing.assert_array_equal(remote["b"][:], [5, 6])


# -- Entra ID tokens and redirects (the fault server) --------------------------------------------

F = random_bytes(50_000, seed=7)


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    yield from serving_faults({"cont/f.bin": F})


@pytest.fixture
def fs(faults: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultServer:
    for var in AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    faults.reset()
    return faults


class FakeCredential:
    """azure-identity's credential interface: ``get_token(*scopes)`` -> an object with
    ``token`` and ``expires_on`` (epoch seconds); each call gives a new token."""

    def __init__(self, lifetimes: list[float]) -> None:
        self.lifetimes = lifetimes
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        life = self.lifetimes[min(len(self.scopes), len(self.lifetimes)) - 1]
        return AccessToken(f"tok{len(self.scopes)}", int(time.time() + life))


def fault_reader(fs: FaultServer, fault: str, **knobs: Any) -> lsio.Reader:
    return lsio.Reader(http=HttpOptions(azure_endpoint=f"http://127.0.0.1:{fs.port}/{fault}",
                                        backoff=0.001, **knobs))


async def test_entra_token_cached_and_refreshed(fs: FaultServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One token for many requests; a token that expired (or expires within 5 minutes) is
    fetched again before the next request."""
    fake = FakeCredential([3600.0])
    monkeypatch.setattr(_azure, "default_credential", lambda: fake)
    r = fault_reader(fs, "ok", concurrency=4)
    reqs = [("az://cont/f.bin", o, 100) for o in range(0, 50_000, 5000)]
    got = await lsio.Reader(max_gap=0, coalesce=False, http=r.http).read_many(reqs)
    assert [bytes(g) for g in got] == [F[o:o + 100] for _, o, _ in reqs]
    assert fake.scopes == [("https://storage.azure.com/.default",)]
    log = fs.requests_for("cont/f.bin")
    assert len(log) == 10
    assert all(e["headers"]["Authorization"] == "Bearer tok1" for e in log)
    assert all(e["headers"]["x-ms-version"] >= "2017-11-09" for e in log)  # bearer needs it

    fs.reset()  # the user's own credential (HttpOptions.azure_credential) the same way
    stale = FakeCredential([-10.0, 2.0, 3600.0])  # expired, short-lived, fresh
    r = fault_reader(fs, "ok", azure_credential=stale)
    for k in range(5):
        if k == 3:
            await asyncio.sleep(1.1)  # past half of tok2's life: it is replaced
        await r.read_many([("az://cont/f.bin", 0, 10)])
    assert [e["headers"]["Authorization"] for e in fs.requests_for("cont/f.bin")] == [
        "Bearer tok1", "Bearer tok2", "Bearer tok2", "Bearer tok3", "Bearer tok3"]


async def test_entra_refresh_failure_keeps_the_token(fs: FaultServer) -> None:
    """A token service that fails once after the first token: the token still valid is
    kept (never anonymous requests); a first fetch that fails for a reason that may pass
    is a failed read, not anonymous access."""
    class Flaky(FakeCredential):
        fail = False

        def get_token(self, *scopes: str) -> Any:
            if self.fail:
                raise RuntimeError("token service unreachable")
            return super().get_token(*scopes)

    flaky = Flaky([250.0])  # inside the 5-minute margin: every request wants a new one
    r = fault_reader(fs, "ok", azure_credential=flaky, retries=1)
    await r.read_many([("az://cont/f.bin", 0, 10)])
    flaky.fail = True
    for _ in range(3):
        await r.read_many([("az://cont/f.bin", 0, 10)])
    assert [e["headers"].get("Authorization") for e in fs.requests_for("cont/f.bin")] == [
        "Bearer tok1"] * 4
    broken = Flaky([3600.0])
    broken.fail = True
    with pytest.raises(PermissionError, match="could not be fetched") as info:
        await fault_reader(fs, "ok", azure_credential=broken, retries=1).read_many(
            [("az://cont/f.bin", 0, 10)])
    assert info.value.filename == "az://cont/f.bin"


async def test_a_failing_token_service_is_asked_once_per_batch(fs: FaultServer) -> None:
    """A call of many objects whose token cannot be fetched fails naming an object, and the
    C batch asks the token service once, not once per object: the call asks it at most once
    more than the same call on aiohttp alone."""
    class Broken(FakeCredential):
        def get_token(self, *scopes: str) -> Any:
            self.scopes.append(scopes)
            raise RuntimeError("token service unreachable")

    names = [f"az://cont/o{i}.bin" for i in range(40)]
    asked = {}
    for transport in ("aiohttp", "auto"):
        broken = Broken([3600.0])
        with pytest.raises(PermissionError, match="could not be fetched") as info:
            await fault_reader(fs, "ok", azure_credential=broken, retries=1,
                               transport=transport).read_many([(n, 0, 10) for n in names])
        assert info.value.filename in names
        asked[transport] = len(broken.scopes)
    assert 1 <= asked["auto"] <= asked["aiohttp"] + 1, asked


async def test_azure_credential_must_be_synchronous(fs: FaultServer) -> None:
    class AsyncCredential:
        async def get_token(self, *scopes: str) -> Any:
            raise AssertionError("never called")

    for bad, message in ((AsyncCredential(), "synchronous"), ("a token", "get_token")):
        with pytest.raises(TypeError, match=message):
            await fault_reader(fs, "ok", azure_credential=bad).read_many(
                [("az://cont/f.bin", 0, 10)])


async def test_entra_failure(fs: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity found: anonymous requests (public containers), or with
    ``anonymous=False`` a PermissionError saying so."""
    from azure.identity import CredentialUnavailableError

    class Nobody:
        def get_token(self, *scopes: str) -> Any:
            raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a "
                                             "token")

    monkeypatch.setattr(_azure, "default_credential", Nobody)
    (got,) = await fault_reader(fs, "ok").read_many([("az://cont/f.bin", 0, 10)])
    assert bytes(got) == F[:10]
    assert "Authorization" not in fs.requests_for("cont/f.bin")[0]["headers"]
    with pytest.raises(PermissionError, match="no Azure credentials") as info:
        await fault_reader(fs, "ok", anonymous=False).read_many([("az://cont/f.bin", 0, 10)])
    assert info.value.filename == "az://cont/f.bin"


@pytest.mark.parametrize("how", ["key", "token"])
async def test_redirect_keeps_credentials_home(fs: FaultServer, how: str, road: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect to another host gets neither the signature nor the token, nor x-ms-*.
    (C first, the C transport meets the redirect once, home; aiohttp then follows it.)"""
    if how == "key":
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", base64.b64encode(b"s" * 64).decode())
    else:
        monkeypatch.setattr(_azure, "default_credential", lambda: FakeCredential([3600.0]))
    (got,) = await fault_reader(fs, "redirect").read_many([("az://cont/f.bin", 5, 10)])
    assert bytes(got) == F[5:15]
    *homes, second = fs.requests_for("cont/f.bin")
    assert len(homes) == (2 if road == "c-first" else 1)
    for first in homes:
        assert first["headers"]["Authorization"].startswith("SharedKey acct:" if how == "key"
                                                            else "Bearer tok1")
    assert second["host"].startswith("localhost")
    assert not [h for h in second["headers"] if h.lower() in ("authorization", "x-ms-date",
                                                              "x-ms-version")]


# -- pure parts: Shared Key, the connection string, resolve ----------------------------------------

@pytest.mark.parametrize("url,resource", [
    # the examples of "Authorize with Shared Key", Constructing the canonicalized resource string
    ("https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata",
     "/myaccount/mycontainer\ncomp:metadata\nrestype:container"),
    ("https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list"
     "&include=snapshots&include=metadata&include=uncommittedblobs",
     "/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs"
     "\nrestype:container"),
    ("https://myaccount-secondary.blob.core.windows.net/mycontainer/myblob",
     "/myaccount/mycontainer/myblob"),
    # names lower-cased, values decoded; the path stays as sent
    ("http://127.0.0.1:10000/myaccount/c/a%20b?Prefix=x%2Fy&marker=", "/myaccount/myaccount/c/"
     "a%20b\nmarker:\nprefix:x/y"),
])
def test_canonical_resource(url: str, resource: str) -> None:
    assert _sharedkey.canonical_resource("myaccount", url) == resource


def test_string_to_sign_and_signature() -> None:
    headers = {"Range": "bytes=0-99", "x-ms-version": "2021-08-06", "Content-Length": "0",
               "X-MS-Date": "Mon, 30 Nov 2026 14:00:00 GMT", "Accept-Encoding": "identity",
               "x-ms-meta-b": "  two   words ", "x-ms-meta-a": "1"}
    text = _sharedkey.string_to_sign(
        "get", "https://acct.blob.core.windows.net/c/b.bin", headers, "acct")
    assert text == ("GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-99\n"  # Content-Length 0 is empty
                    "x-ms-date:Mon, 30 Nov 2026 14:00:00 GMT\nx-ms-meta-a:1\n"
                    "x-ms-meta-b:two words\nx-ms-version:2021-08-06\n/acct/c/b.bin")
    # HMAC-SHA256 keyed by the decoded key, base64: checked against the stdlib spelled out
    import hashlib
    import hmac

    key = bytes(range(32))
    want = base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()
    assert _sharedkey.sign(key, text) == want
    signed = _sharedkey.SharedKey("acct", base64.b64encode(key).decode()).headers(
        "GET", "https://acct.blob.core.windows.net/c/b.bin", {"x-ms-version": "2021-08-06"})
    again = _sharedkey.string_to_sign("GET", "https://acct.blob.core.windows.net/c/b.bin",
                                      {k: v for k, v in signed.items() if k != "Authorization"},
                                      "acct")
    assert signed["Authorization"] == f"SharedKey acct:{_sharedkey.sign(key, again)}"
    with pytest.raises(ValueError, match="not base64"):
        _sharedkey.SharedKey("acct", "not a key!")


def test_azure_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    assert resolve("az://c/b x", HttpOptions()).url == (
        "http://127.0.0.1:10000/devstoreaccount1/c/b%20x")  # the key signs; no SAS
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "BlobEndpoint=https://blob.example.net/;SharedAccessSignature=sv=1&sig=a=")
    assert resolve("az://c/b", HttpOptions()).url == "https://blob.example.net/c/b?sv=1&sig=a="
    assert resolve("az://c/b", HttpOptions(anonymous=True)).url == "https://blob.example.net/c/b"
    assert resolve("az://c/b", HttpOptions(azure_credential=FakeCredential([1.0]))).url == (
        "https://blob.example.net/c/b")  # the user's own credential, not the SAS
    assert resolve("az://c/b", HttpOptions(azure_endpoint="http://h:1/acc/")).url == (
        "http://h:1/acc/c/b?sv=1&sig=a=")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
                       "EndpointSuffix=core.windows.net")
    target = resolve("az://c/b", HttpOptions())
    assert target.url == "https://acct.blob.core.windows.net/c/b"
    auth = _azure.find_azure_auth(target, HttpOptions())
    assert isinstance(auth, _sharedkey.SharedKey) and auth.account == "acct"
    assert _azure.find_azure_auth(target, HttpOptions(anonymous=True)) is None
    # the account of a private endpoint: the host's first label, or the path's last part
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=a2V5")
    for endpoint, account in (("https://acc2.privatelink.blob.core.windows.net", "acc2"),
                              ("http://127.0.0.1:10000/acc3/", "acc3")):
        options = HttpOptions(azure_endpoint=endpoint)
        auth = _azure.find_azure_auth(resolve("az://c/b", options), options)
        assert isinstance(auth, _sharedkey.SharedKey) and auth.account == account


def test_error_messages_hide_sas_signatures() -> None:
    from lsio._url import redact

    assert redact("HTTP 404 from http://h/c/b?sv=1&sig=ab%2Fc%3D&se=2") == (
        "HTTP 404 from http://h/c/b?sv=1&sig=REDACTED&se=2")
    assert redact("no secret here") == "no secret here"


def test_secrets_stay_with_their_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """An abfs:// URL naming another account than the configured one (a path from a
    reference file, say) gets neither the SAS nor a Shared Key signer."""
    from lsio.backends.cloud import resolve
    from lsio.backends.cloud._sharedkey import SharedKey

    for var in AZURE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "prod")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "sv=2021&sig=SECRET")
    opts = HttpOptions()
    assert "sig=SECRET" in resolve("abfs://c@prod.dfs.core.windows.net/x", opts).url
    assert "sig=" not in resolve("abfs://c@evil.dfs.core.windows.net/x", opts).url
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", base64.b64encode(b"k" * 64).decode())
    home = resolve("abfs://c@prod.dfs.core.windows.net/x", opts)
    elsewhere = resolve("abfs://c@evil.dfs.core.windows.net/x", opts)
    assert isinstance(_azure.find_azure_auth(home, opts), SharedKey)
    assert _azure.find_azure_auth(elsewhere, HttpOptions(anonymous=True)) is None
    assert not isinstance(_azure.find_azure_auth(elsewhere, opts), SharedKey)
