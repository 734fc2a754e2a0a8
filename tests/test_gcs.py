"""Google Cloud Storage: reads, listings and Zarr against an emulator (fake-gcs-server), and
the credential flows (service account, authorized user, metadata server) against a local
token endpoint, with a recording proxy in front of the emulator to see which token each
request carried (the emulator checks none). Every read is checked against the source bytes."""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import check_ok, random_bytes, run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import GcsEmulator, RecordingProxy, TokenServer

import lsio
from lsio.backends.cloud import gcp as _gcs
from lsio.backends.cloud import resolve
from lsio.backends.http._protocol import HttpError

A = random_bytes(300_000, seed=1)
ODD = "dir/with space+plus é.bin"
B = random_bytes(70_000, seed=2)

pytestmark = pytest.mark.usefixtures("road")  # as shipped, and C first (conftest)


@pytest.fixture(scope="module")
def emulator() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        server.create_bucket("bkt")
        server.put_object("bkt", "a.bin", A)
        server.put_object("bkt", ODD, B)
        server.put_object("bkt", "empty.bin", b"")
        yield server


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing of the machine's own Google setup is seen: no ADC file (an empty gcloud config
    directory, returned), no metadata server, no emulator variable."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GCE_METADATA_HOST",
                "GCE_METADATA_ROOT", "GCE_METADATA_IP", "K_SERVICE", "CLOUD_RUN_JOB",
                "FUNCTION_TARGET", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "gcloud"
    config.mkdir()
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    return config


@pytest.fixture
def emulated(emulator: GcsEmulator, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
             ) -> GcsEmulator:
    """``$STORAGE_EMULATOR_HOST`` names the emulator, as its users set it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint.removeprefix("http://"))
    return emulator


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    server = TokenServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_server(tokens: TokenServer) -> Iterator[TokenServer]:
    tokens.issued.clear()
    tokens.refused.clear()
    tokens.scopes.clear()
    tokens.expires_in = 3600
    yield tokens
    assert tokens.refused == []


@pytest.fixture(scope="module")
def module_proxy(emulator: GcsEmulator) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(emulator.endpoint).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxy(module_proxy: RecordingProxy, no_credentials: Path) -> RecordingProxy:
    module_proxy.log.clear()
    return module_proxy


def gcs_reader(endpoint: str | None = None, **knobs: Any) -> lsio.Reader:
    return lsio.Reader(http=lsio.HttpOptions(gcs_endpoint=endpoint, backoff=0.001, **knobs))


# -- reads -------------------------------------------------------------------------------------

CASES = [("a.bin", 0, None), ("a.bin", 1000, 50), ("a.bin", -10, None),
         ("a.bin", 299_990, 100), ("a.bin", 400_000, 10), ("a.bin", 5, 0), (ODD, 0, None),
         (ODD, 69_000, 5000), ("empty.bin", 0, None)]


def expected(name: str, offset: int, length: int | None) -> bytes:
    data = {"a.bin": A, ODD: B, "empty.bin": b""}[name]
    start = max(len(data) + offset, 0) if offset < 0 else offset
    return data[start:] if length is None else data[start:start + length]


async def test_emulator_answers_ranges_with_206(emulated: GcsEmulator) -> None:
    """What the reads below rely on: the emulator honours Range (so these tests exercise
    lsio's 206 path, not its whole-body fallback)."""
    import urllib.request

    url = resolve("gs://bkt/a.bin", lsio.HttpOptions()).url
    request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 10-19/{len(A)}"
        assert resp.read() == A[10:20]


async def test_gcs_table(emulated: GcsEmulator) -> None:
    got = await gcs_reader().read_many([(f"gs://bkt/{n}", o, ln) for n, o, ln in CASES])
    for (n, o, ln), g in zip(CASES, got, strict=True):
        assert bytes(g) == expected(n, o, ln), (n, o, ln)


@st.composite
def gcs_requests(draw: st.DrawFn) -> list[tuple[str, int, int | None]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.sampled_from(["a.bin", ODD]))
        size = len(A) if name == "a.bin" else len(B)
        offset = draw(st.one_of(st.integers(0, size + 10), st.integers(-size - 10, -1)))
        out.append((name, offset, draw(st.one_of(st.none(), st.integers(0, 100_000)))))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reqs=gcs_requests(), gap=st.sampled_from([None, 0, 1 << 20]))
def test_gcs_matches_source(emulated: GcsEmulator, reqs: list[tuple[str, int, int | None]],
                            gap: int | None) -> None:
    reader = lsio.Reader(max_gap=gap, coalesce=gap is not None)
    got = reader.read_many_sync([(f"gs://bkt/{n}", o, ln) for n, o, ln in reqs])
    for (n, o, ln), g in zip(reqs, got, strict=True):
        assert bytes(g) == expected(n, o, ln), (n, o, ln)


async def test_gcs_missing_object(emulated: GcsEmulator) -> None:
    reqs: list[Any] = [("gs://bkt/a.bin", 0, 10), ("gs://bkt/no/such.bin", 0, 10)]
    with pytest.raises(FileNotFoundError, match="404") as info:
        await gcs_reader().read_many(reqs)
    assert info.value.filename == "gs://bkt/no/such.bin"
    got = await gcs_reader().read_many(reqs, missing_ok=True)
    assert bytes(got[0]) == A[:10] and got[1] is None


async def test_gcs_forbidden_is_a_permission_error(proxy: RecordingProxy) -> None:
    with pytest.raises(PermissionError, match="403") as info:
        await gcs_reader(proxy.endpoint).read_many([("gs://bkt/denied/a.bin", 0, 10)])
    assert info.value.filename == "gs://bkt/denied/a.bin"


# -- listing and Zarr --------------------------------------------------------------------------

@pytest.mark.parametrize("road", ["as-shipped"], indirect=True)  # listings: aiohttp's
async def test_gcs_listing_across_pages(emulator: GcsEmulator, emulated: GcsEmulator,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """LsioStore on a gs:// root lists with the JSON API, following nextPageToken (7 names
    a page here), by prefix and by directory; names with spaces, '+' and non-ASCII come
    back as written."""
    import lsio.zarr as lz

    emulator.create_bucket("many")
    names = [f"k/{i:03d}" for i in range(20)] + ["k/sub/x y", "k/sub/é/z+1", "top"]
    for name in names:
        emulator.put_object("many", name, b"x")
    monkeypatch.setattr(_gcs, "GCS_PAGE_SIZE", 7)
    pages: list[int] = []
    real = _gcs.parse_page

    def counting(body: bytes, url: str) -> tuple[list[str], list[str], str | None]:
        out = real(body, url)
        pages.append(len(out[0]) + len(out[1]))
        return out

    monkeypatch.setattr(_gcs, "parse_page", counting)
    store = lz.LsioStore("gs://many", reader=gcs_reader())
    assert store.supports_listing
    assert sorted([k async for k in store.list()]) == sorted(names)
    assert pages == [7, 7, 7, 2]
    sub = lz.LsioStore("gs://many/k", reader=gcs_reader())
    assert sorted([k async for k in sub.list_prefix("sub/")]) == ["sub/x y", "sub/é/z+1"]
    assert sorted([k async for k in sub.list_dir("")]) == [f"{i:03d}" for i in range(20)] + [
        "sub"]
    assert sorted([k async for k in sub.list_dir("sub")]) == ["x y", "é"]
    assert [k async for k in sub.list_prefix("nothing/")] == []


def test_parse_gcs_page() -> None:
    body = b'{"items": [{"name": "a/b"}, {"name": "c"}], "prefixes": ["d/"], ' \
           b'"nextPageToken": "t"}'
    assert _gcs.parse_page(body, "u") == (["a/b", "c"], ["d/"], "t")
    assert _gcs.parse_page(b'{"kind": "storage#objects"}', "u") == ([], [], None)
    for bad in (b"<xml/>", b"[]", b'{"items": [{"size": "1"}]}', b'{"prefixes": "d/"}'):
        with pytest.raises(HttpError, match="listing"):
            _gcs.parse_page(bad, "u")


def _upload(emulator: GcsEmulator, bucket: str, root: Path, prefix: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            emulator.put_object(bucket, f"{prefix}/{path.relative_to(root)}", path.read_bytes())


async def test_zarr_on_gcs(emulated: GcsEmulator, tmp_path: Path) -> None:
    """A sharded Zarr array with missing chunks, written locally by zarr-python and uploaded:
    zarr-python through LsioStore and lsio's fast path read it back; a group without
    consolidated metadata opens through the listing."""
    import zarr

    import lsio.zarr as lz

    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "arr"), shape=(30, 20),
                            chunks=(5, 5), shards=(10, 10), dtype="i4", fill_value=-1)
    arr[:12] = np.arange(12 * 20).reshape(12, 20)
    _upload(emulated, "bkt", tmp_path / "arr", "z")
    reader = gcs_reader()
    remote = zarr.open_array(lz.LsioStore("gs://bkt/z", reader=reader), mode="r")
    np.testing.assert_array_equal(remote[:], arr[:])
    np.testing.assert_array_equal(await lz.read("gs://bkt/z", (slice(3, 29), 7), reader=reader),
                                  arr[3:29, 7])

    group = zarr.create_group(zarr.storage.LocalStore(tmp_path / "g"))
    group.create_array("a", shape=(4,), dtype="i2")[:] = [1, 2, 3, 4]
    group.create_array("b", shape=(2,), dtype="f4")[:] = [5, 6]
    _upload(emulated, "bkt", tmp_path / "g", "g")
    opened = zarr.open_group(lz.LsioStore("gs://bkt/g", reader=reader), mode="r",
                             use_consolidated=False)
    assert sorted(opened.array_keys()) == ["a", "b"]
    np.testing.assert_array_equal(opened["b"][:], [5, 6])


# -- credentials -------------------------------------------------------------------------------

@pytest.mark.parametrize("now,lifetime,fresh_for", [
    (1000.0, 3600, 3300), (1000.0, 900, 600), (1000.0, 301, 150.5), (1000.0, 2, 1)])
def test_refresh_margin(now: float, lifetime: float, fresh_for: float) -> None:
    """5 minutes before expiry; a token living less than twice that, after half its life
    (else a short-lived token would be fetched again for every request)."""
    assert _gcs.fresh_until(now, now + lifetime) == pytest.approx(now + fresh_for)
    assert _gcs.fresh_until(now, None) == math.inf


async def test_service_account_token_is_cached(proxy: RecordingProxy,
                                               token_server: TokenServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """$GOOGLE_APPLICATION_CREDENTIALS names a service-account key: one signed-JWT exchange
    (checked by the token endpoint) serves every request of several calls and a listing,
    each of which carries that token."""
    key = token_server.service_account_file(tmp_path / "sa.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    reader = gcs_reader(proxy.endpoint)
    for _ in range(3):
        got = await reader.read_many([("gs://bkt/a.bin", i * 1000, 100) for i in range(20)]
                                     + [(f"gs://bkt/{ODD}", 5, 10)])
        assert bytes(got[7]) == A[7000:7100] and bytes(got[-1]) == B[5:15]
    import lsio.zarr as lz

    listed = [k async for k in lz.LsioStore("gs://bkt/dir", reader=reader).list()]
    assert listed == [ODD.removeprefix("dir/")]
    assert token_server.issued == ["sa-token-1"]
    assert token_server.scopes == ["https://www.googleapis.com/auth/devstorage.read_only"]
    assert any("/storage/v1/b/bkt/o?" in e["path"] for e in proxy.log)  # the listing
    assert len(proxy.log) >= 4 and set(proxy.bearers()) == {"Bearer sa-token-1"}


async def test_expiring_token_is_refreshed(proxy: RecordingProxy, token_server: TokenServer,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A token that expires within the margin is replaced before the next request."""
    token_server.expires_in = 2  # fresh for 1 s (half its life)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                       str(token_server.service_account_file(tmp_path / "sa.json")))
    reader = gcs_reader(proxy.endpoint)
    assert bytes((await reader.read_many([("gs://bkt/a.bin", 0, 10)]))[0]) == A[:10]
    assert bytes((await reader.read_many([("gs://bkt/a.bin", 10, 10)]))[0]) == A[10:20]
    time.sleep(1.1)
    assert bytes((await reader.read_many([("gs://bkt/a.bin", 20, 10)]))[0]) == A[20:30]
    assert token_server.issued == ["sa-token-1", "sa-token-2"]
    assert proxy.bearers() == ["Bearer sa-token-1"] * 2 + ["Bearer sa-token-2"]


async def test_token_does_not_follow_a_redirect_to_another_host(
        proxy: RecordingProxy, token_server: TokenServer, tmp_path: Path, road: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(C first, the C transport meets the redirect once, home; aiohttp then follows it.)"""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                       str(token_server.service_account_file(tmp_path / "sa.json")))
    got = await gcs_reader(proxy.endpoint).read_many([("gs://bkt/moved/a.bin", 100, 50)])
    assert bytes(got[0]) == A[100:150]
    hosts = [(e["host"].split(":")[0], e["authorization"]) for e in proxy.log]
    home = [("127.0.0.1", "Bearer sa-token-1")] * (2 if road == "c-first" else 1)
    assert hosts == [*home, ("localhost", None)]


async def test_authorized_user_adc_file(proxy: RecordingProxy, token_server: TokenServer,
                                        no_credentials: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The gcloud ADC file (``gcloud auth application-default login``) holds an authorized
    user: its refresh token is exchanged once. google-auth always sends that exchange to
    Google's token URI, so the test points its module constant at the local server."""
    import google.oauth2.credentials

    token_server.authorized_user_file(no_credentials / "application_default_credentials.json")
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT",
                        token_server.token_uri)
    reader = gcs_reader(proxy.endpoint)
    got = await reader.read_many([("gs://bkt/a.bin", 0, 100), ("gs://bkt/a.bin", -100, None)])
    assert [bytes(g) for g in got] == [A[:100], A[-100:]]
    assert token_server.issued == ["user-token-1"]
    assert set(proxy.bearers()) == {"Bearer user-token-1"}


def test_metadata_server(proxy: RecordingProxy, token_server: TokenServer) -> None:
    """$GCE_METADATA_HOST points google-auth at a metadata server (as on GCE/GKE): its token
    is used. In a fresh interpreter: google-auth reads the variable when first imported."""
    code = f"""
        import lsio
        reader = lsio.Reader(http=lsio.HttpOptions(gcs_endpoint={proxy.endpoint!r}))
        got = reader.read_many_sync([("gs://bkt/a.bin", 5, 5), ("gs://bkt/a.bin", 50, 5)])
        print([bytes(g).hex() for g in got])
    """
    env = {"GCE_METADATA_HOST": token_server.metadata_host}
    out = check_ok(run_python(code, env=env, timeout=60))
    assert out.strip() == str([A[5:10].hex(), A[50:55].hex()])
    assert token_server.issued == ["md-token-1"]
    assert set(proxy.bearers()) == {"Bearer md-token-1"}


def test_required_credentials_missing_is_a_clear_error(proxy: RecordingProxy) -> None:
    """anonymous=False and nothing configured: a PermissionError naming the object and
    google-auth's explanation, quickly (NO_GCE_CHECK: no metadata server to wait for)."""
    code = f"""
        import lsio, time
        reader = lsio.Reader(http=lsio.HttpOptions(gcs_endpoint={proxy.endpoint!r},
                                                   anonymous=False, retries=0))
        t = time.monotonic()
        try:
            reader.read_many_sync([("gs://bkt/a.bin", 0, 5)])
        except PermissionError as exc:
            print(type(exc).__name__, exc.filename, "|", exc, "|", time.monotonic() - t < 5)
    """
    out = check_ok(run_python(code, timeout=60))
    assert out.startswith("PermissionError gs://bkt/a.bin |"), out
    assert "no usable GCS credentials" in out and "anonymous=False" in out, out
    assert out.strip().endswith("| True"), out
    assert proxy.log == []  # nothing was sent without the credentials asked for


def test_required_credentials_need_google_auth(no_credentials: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gcs, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"lsio\[gcs\]"):
        _gcs.find_gcs_auth(lsio.HttpOptions(anonymous=False))
    assert _gcs.find_gcs_auth(lsio.HttpOptions()) is None  # public buckets still work


def test_which_credentials_are_looked_up(no_credentials: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing configured: anonymous, with no lookup; a credentials file: ADC; the emulator
    variable or a user's Authorization header: no lookup; anonymous=True: none."""
    find = _gcs.find_gcs_auth
    assert find(lsio.HttpOptions()) is None
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    auth = find(lsio.HttpOptions())
    assert auth is not None and auth.source == "adc"
    assert find(lsio.HttpOptions(anonymous=True)) is None
    assert find(lsio.HttpOptions(headers={"authorization": "Bearer mine"})) is None
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:1")
    assert find(lsio.HttpOptions()) is None
    auth = find(lsio.HttpOptions(gcs_endpoint="http://private:1"))
    assert auth is not None and auth.source == "adc"
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")
    auth = find(lsio.HttpOptions())
    assert auth is not None and auth.source == "metadata"


async def test_explicit_authorization_header_wins(proxy: RecordingProxy,
                                                  token_server: TokenServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                       str(token_server.service_account_file(tmp_path / "sa.json")))
    reader = gcs_reader(proxy.endpoint, headers={"Authorization": "Bearer mine"})
    assert bytes((await reader.read_many([("gs://bkt/a.bin", 0, 10)]))[0]) == A[:10]
    assert proxy.bearers() == ["Bearer mine"] and token_server.issued == []



async def test_broken_credentials_are_clear_errors(proxy: RecordingProxy,
                                                   token_server: TokenServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file that is not there: PermissionError naming it; a token endpoint that does
    not answer: retried like a failed read, then an I/O error saying so. Nothing is sent to
    the bucket without a token."""
    import json

    from servers import free_port

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nope.json"))
    with pytest.raises(PermissionError, match="no usable GCS credentials.*nope.json") as info:
        await gcs_reader(proxy.endpoint).read_many([("gs://bkt/a.bin", 0, 10)])
    assert info.value.filename == "gs://bkt/a.bin"

    key = token_server.service_account_file(tmp_path / "sa.json")
    dead = json.loads(key.read_text())
    dead["token_uri"] = f"http://127.0.0.1:{free_port()}/token"
    key.write_text(json.dumps(dead))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(OSError, match=r"GCS token request failed.*after 2 attempts") as err:
        await gcs_reader(proxy.endpoint, retries=1).read_many([("gs://bkt/a.bin", 0, 10)])
    assert err.value.errno == errno.EIO
    assert proxy.log == [] and token_server.issued == []


async def test_a_failed_refresh_keeps_a_valid_token() -> None:
    """The token service unreachable while the token is within its refresh margin: the
    token still valid is used (asked again 30 s later); once it has expired, the failure
    is a read failure that may pass (retried), never an unsigned request."""
    import datetime

    from google.auth import exceptions

    from lsio.backends.cloud.gcp import GcsAuth
    from lsio.backends.http._protocol import Retry

    class Creds:
        token: str | None = None
        expiry: datetime.datetime | None = None
        calls = 0
        fail = False

        def refresh(self, request: object) -> None:
            self.calls += 1
            if self.fail:
                raise exceptions.TransportError("token service unreachable")
            self.token = f"tok{self.calls}"
            # naive UTC, as google-auth keeps it; inside the 5-minute margin
            self.expiry = (datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                           + datetime.timedelta(seconds=200))

    creds = Creds()
    auth = GcsAuth("adc", "unused", timeout=1.0)
    auth._credentials, auth._request = creds, object()
    await auth.ready()
    assert auth.headers("GET", "u", {})["Authorization"] == "Bearer tok1"
    creds.fail = True
    auth._fresh_until = 0.0  # due for a refresh
    await auth.ready()
    assert creds.calls == 2
    assert auth.headers("GET", "u", {})["Authorization"] == "Bearer tok1"
    await auth.ready()
    assert creds.calls == 2  # not asked again at once
    auth._fresh_until, auth._expires = 0.0, 0.0  # now expired
    with pytest.raises(Retry):
        await auth.ready()
