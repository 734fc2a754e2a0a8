"""Secrets never shown (issue 20, item 9): a URL's password, a presigned or SAS URL's
signature, credential and token, secret headers and credential objects appear in no error
(message, ``filename``, notes, chained exceptions, the formatted traceback) and no repr,
while the URL's host and path are still named.

And S3 with botocore installed but no AWS configuration at all (item 10): a public object is
read anonymously, credentials that are found but fail are a ``PermissionError`` naming the
URL. Those run in a subprocess with an empty ``HOME`` and the instance-metadata endpoint on
a closed local port (never the real 169.254.169.254)."""

from __future__ import annotations

import asyncio
import os
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import check_ok, random_bytes, run_python
from servers import FaultServer, MotoServer, free_port, serving_faults

import lsio
import lsio.zarr
from lsio._redact import redact, redact_exception

SECRET = "Zs3cr3tV4lu3Q"
"""Each test's secret value: it must appear nowhere."""

DATA = random_bytes(5000, seed=3)


@pytest.fixture(scope="module")
def fs() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": DATA})


def shown(exc: BaseException) -> str:
    """Everything a user or a log can see of ``exc``."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    parts += [str(getattr(exc, "filename", "")), *getattr(exc, "__notes__", [])]
    seen, e = set(), exc
    for link in ("__cause__", "__context__"):
        e = exc
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            parts += [str(e), repr(e), repr(e.args)]
            e = getattr(e, link)
    return "\n".join(parts)


def assert_clean(exc: BaseException, where: str) -> None:
    text = shown(exc)
    assert SECRET not in text, text
    assert where in text  # the host and path are still named


def reader(**options: Any) -> lsio.Reader:
    return lsio.Reader(http=lsio.HttpOptions(retries=1, backoff=0.001, **options))


QUERY_KEYS = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
              "X-Goog-Signature", "X-Goog-Credential", "sig", "Signature", "AWSAccessKeyId",
              "access_token", "api_key", "password", "client_secret"]


def secret_urls(fs: FaultServer, fault: str) -> list[tuple[str, str]]:
    """(URL carrying SECRET, what of it must still be named), one per kind of secret."""
    base = f"127.0.0.1:{fs.port}/{fault}/f.bin"
    urls = [(f"http://reader:{SECRET}@{base}", base)]
    urls += [(f"http://{base}?sv=2022-11-02&{key}={SECRET}&se=2030", base)
             for key in QUERY_KEYS]
    urls.append((f"http://{base}?X-Amz-Date=1&X-Amz-Credential=AKIA{SECRET}%2F20240101"
                 f"&X-Amz-Signature=ff{SECRET}&X-Amz-SignedHeaders=host", base))
    return urls


@pytest.mark.parametrize("route", ["small", "bulk", "sync", "iter"])
@pytest.mark.parametrize("fault", ["status404", "status403", "status503"])
async def test_url_secrets_in_errors(fs: FaultServer, route: str, fault: str) -> None:
    """Not found, refused, and retries ran out: each kind of secret in the URL, on the
    small-call path, the bulk path (a progress callback takes it), the sync API and
    iter_many."""
    for url, where in secret_urls(fs, fault):
        with pytest.raises(OSError) as info:
            if route == "small":
                await reader().read_many([(url, 0, 100)])
            elif route == "bulk":
                await reader().read_many([(url, 0, 100)], progress=lambda *a: None)
            elif route == "iter":
                async for _ in reader().iter_many([(url, 0, 100)]):
                    pass
            else:
                await asyncio.to_thread(reader().read_many_sync, [(url, 0, 100)])
        assert_clean(info.value, where)
        assert where in str(info.value.filename)
        if fault == "status503":  # the retries ran out
            assert "after 2 attempts" in str(info.value)


async def test_deadline_timeout_with_a_sas(fs: FaultServer) -> None:
    """The call's deadline names the first request not read, without its SAS signature
    (it leaked there before)."""
    base = f"127.0.0.1:{fs.port}/slowx99/f.bin"
    url = f"http://{base}?sv=2022-11-02&sr=b&sp=r&sig={SECRET}%2Fab%3D"
    for call in ("async", "sync"):
        with pytest.raises(TimeoutError) as info:
            if call == "async":
                await reader(timeout=0.2).read_many([(url, 0, 10)])
            else:
                await asyncio.to_thread(reader(timeout=0.2).read_many_sync, [(url, 0, 10)])
        assert "HttpOptions.timeout" in str(info.value)
        if call == "async":
            assert_clean(info.value, base)
        else:  # the sync API's TimeoutError loses its filename (issue 20, item 13)
            assert SECRET not in shown(info.value)


async def _bad_header_server() -> tuple[asyncio.Server, int]:
    """A server whose answer has a header longer than aiohttp accepts: aiohttp raises a
    ``ClientResponseError`` naming the request's URL."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_aiohttp_error_naming_the_url() -> None:
    server, port = await _bad_header_server()
    try:
        base = f"127.0.0.1:{port}/c/blob.bin"
        url = f"http://u:{SECRET}@{base}?X-Goog-Signature={SECRET}&X-Goog-Credential={SECRET}"
        headers = {"Authorization": f"Bearer {SECRET}", "Cookie": f"s={SECRET}",
                   "Proxy-Authorization": f"Basic {SECRET}"}
        for progress in (False, lambda *a: None):
            with pytest.raises(OSError) as info:
                await reader(headers=headers).read_many([(url, 0, 10)], progress=progress)
            assert_clean(info.value, base)
    finally:
        server.close()
        await server.wait_closed()


def _client_response_error(url: str) -> Exception:
    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    headers = CIMultiDictProxy(CIMultiDict({
        "Authorization": f"Bearer {SECRET}", "X-Amz-Security-Token": SECRET,
        "Cookie": f"a={SECRET}", "Proxy-Authorization": f"Basic {SECRET}", "Range": "bytes=0-9"}))
    info = aiohttp.RequestInfo(URL(url), "GET", headers, URL(url))
    return aiohttp.ClientResponseError(info, (), status=403, message="Forbidden")


async def test_chained_aiohttp_error_from_a_pipeline_step(tmp_path: Path) -> None:
    """An error raised ``from`` aiohttp's ``ClientResponseError`` (its ``request_info``
    holds the URL and headers) leaves the call without them."""
    base = "bucket.example.com/key.bin"
    cause = _client_response_error(f"https://{base}?X-Amz-Signature={SECRET}&x-id=GetObject")

    def step(chunk: Any) -> Any:
        raise OSError(5, f"lsio-test: fetch of https://{base}?X-Amz-Credential={SECRET} "
                         "failed") from cause

    with pytest.raises(OSError) as info:
        # a local file: a failing step of a pipeline over HTTP is not raised at all today
        (tmp_path / "f.bin").write_bytes(DATA)
        await lsio.Reader().read_many([(str(tmp_path / "f.bin"), 0, 10)], pipeline=[step])
    assert_clean(info.value, base)
    assert "ClientResponseError" in "".join(traceback.format_exception(info.value))


def test_redact_exception_chain_and_group() -> None:
    base = "h.example/p"
    try:
        try:
            try:
                raise _client_response_error(f"https://{base}?sig={SECRET}")
            except Exception as exc:
                raise ValueError(f"https://{base}?token={SECRET}") from exc
        except ValueError:
            e = OSError(13, f"denied: Authorization: Bearer {SECRET}",
                        f"https://x:{SECRET}@{base}")
            e.add_note(f"lsio: while reading https://{base}?key={SECRET}")
            raise e  # noqa: B904 - the implicit context is the point
    except OSError as exc:
        caught = exc
    group = ExceptionGroup("two", [caught, KeyError(f"password={SECRET}")])
    assert SECRET in shown(group)
    redact_exception(group)
    text = "".join(traceback.format_exception(group))
    assert SECRET not in text and base in text
    assert SECRET not in shown(caught) and caught.errno == 13


def test_redact_texts() -> None:
    cases = {
        f"https://u:{SECRET}@h/p?x=1": "https://REDACTED@h/p?x=1",
        f"https://u:a@{SECRET}@h/p": "https://REDACTED@h/p",
        f"https://{SECRET}@h/p": "https://REDACTED@h/p",
        f"s3://{SECRET}:x@h/p@q": "s3://REDACTED@h/p@q",
        f"GET https://h/p?sv=1&amp;sig={SECRET}&se=2": "GET https://h/p?sv=1&amp;sig=REDACTED&se=2",
        f"{{'Authorization': 'Bearer {SECRET}', 'Range': 'bytes=0-1'}}":
            "{'Authorization': 'REDACTED', 'Range': 'bytes=0-1'}",
        f"GET\n/k\nx-amz-security-token:{SECRET}\nhost:h": "GET\n/k\nx-amz-security-token: "
                                                          "REDACTED\nhost:h",
        f"AccountName=a;AccountKey={SECRET}==;EndpointSuffix=x":
            "AccountName=a;AccountKey=REDACTED;EndpointSuffix=x",
        f"AWS4-HMAC-SHA256 Credential=AKIA/x, Signature={SECRET}":
            "AWS4-HMAC-SHA256 REDACTED, Signature=REDACTED",
        "no secret here: s3://bucket/key.bin, http://host:8080/p@x":
            "no secret here: s3://bucket/key.bin, http://host:8080/p@x",
    }
    for text, want in cases.items():
        assert redact(text) == want


class _Credential:
    """Stands for an azure-identity credential whose repr would show a secret."""

    def __repr__(self) -> str:
        return f"_Credential(client_secret={SECRET!r})"

    def get_token(self, *scopes: str) -> Any:
        raise AssertionError("not called")


def test_reprs_hold_no_secret(tmp_path: Path) -> None:
    from lsio._url import Target
    from lsio.backends.cloud._sharedkey import SharedKey
    from lsio.backends.cloud.azure import AzureConfig, EntraToken
    from lsio.zarr import LsioStore

    headers = {"Authorization": f"Bearer {SECRET}", "Proxy-Authorization": f"Basic {SECRET}",
               "Cookie": f"session={SECRET}", "X-Amz-Security-Token": SECRET,
               "x-goog-api-key": SECRET, "Range-Hint": "kept",
               "X-Origin": f"https://u:{SECRET}@h.example/"}
    options = lsio.HttpOptions(headers=headers, azure_credential=_Credential(),
                               endpoint_url=f"http://admin:{SECRET}@minio:9000")
    for text in (repr(options), str(options)):
        assert SECRET not in text
        assert "Range-Hint" in text and "kept" in text and "minio:9000" in text
        assert "_Credential" in text
    reader = lsio.Reader(http=options)
    url = f"https://acct.blob.core.windows.net/c/b?sv=1&sig={SECRET}"
    objects = [reader, Target(url, "az"), AzureConfig("acct", "", SECRET, f"sv=1&sig={SECRET}"),
               LsioStore(f"https://h.example/store.zarr?X-Amz-Signature={SECRET}"),
               LsioStore(f"https://u:{SECRET}@h.example/store.zarr"),
               SharedKey("acct", "a2V5"), EntraToken(_Credential(), False)]
    for obj in objects:
        assert SECRET not in repr(obj), repr(obj)


async def test_zarr_errors_hold_no_secret(fs: FaultServer) -> None:
    """A zarr root with a password: lsio.zarr.read's error, and zarr's own (which shows the
    store's ``str``), name the root without it."""
    import zarr

    from lsio.zarr import LsioStore

    base = f"127.0.0.1:{fs.port}/ok/missing.zarr"
    url = f"http://reader:{SECRET}@{base}"
    with pytest.raises(FileNotFoundError) as info:
        await lsio.zarr.read(url)
    assert_clean(info.value, base)
    store = LsioStore(url)
    assert SECRET not in str(store) and base in str(store)
    with pytest.raises(Exception) as caught:  # zarr's own error type
        await asyncio.to_thread(zarr.open_array, store=store, mode="r")
    assert_clean(caught.value, base)
    with pytest.raises(ValueError) as refused:
        LsioStore(url, read_only=False)
    assert_clean(refused.value, base)


# -- S3 with botocore but no AWS configuration (item 10) ---------------------------------------

@pytest.fixture(scope="module")
def public_bucket() -> Iterator[MotoServer]:
    """moto serving a public object; anonymous requests are allowed (moto's signature
    checks fail on unsigned requests with a 500, where AWS serves public-read objects)."""
    server = MotoServer().start()
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="pub")
        s3.put_object(Bucket="pub", Key="k.bin", Body=DATA, ACL="public-read")
        urllib.request.urlopen(urllib.request.Request(
            f"{server.endpoint}/moto-api/reset-auth", data=b"1000000000", method="POST",
            headers={"Content-Type": "text/plain"}),
            timeout=10).read()
        yield server
    finally:
        server.stop()


READ_PUBLIC = """
import sys, time
import lsio
start = time.monotonic()
try:
    (got,) = lsio.read_many_sync([("s3://pub/k.bin", 10, 100)])
    print("ok", got.tobytes().hex())
except BaseException as exc:
    print("error", type(exc).__name__, isinstance(exc, OSError), getattr(exc, "filename", None))
    print(exc)
print("seconds", time.monotonic() - start)
"""


def _run_without_aws(monkeypatch: pytest.MonkeyPatch, home: Path, moto: MotoServer
                     ) -> list[str]:
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    env = {"HOME": str(home), "AWS_ENDPOINT_URL": moto.endpoint,
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{free_port()}/",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return check_ok(run_python(READ_PUBLIC, env=env, timeout=60)).splitlines()


def test_s3_public_object_without_any_aws_configuration(
        public_bucket: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore finds no credentials (no variables, empty HOME, no metadata service):
    the object is read anonymously, at once (botocore's HTTPClientError before)."""
    out = _run_without_aws(monkeypatch, tmp_path, public_bucket)
    assert out[0] == "ok " + DATA[10:110].hex(), out
    assert float(out[-1].split()[1]) < 10


@pytest.mark.parametrize("config", [
    "[default]\ncredential_process = /bin/false\n",
    # an SSO session never logged in (or expired): botocore has no token for it
    "[default]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Reader\n"
    "[sso-session corp]\nsso_region = us-east-1\n"
    "sso_start_url = https://corp.awsapps.invalid/start\n",
], ids=["credential-process-fails", "sso-not-logged-in"])
def test_s3_credentials_found_but_failing(public_bucket: MotoServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, config: str) -> None:
    """Credentials that are configured but cannot be had are a PermissionError naming the
    URL, never anonymous requests (whose 403 would not say why) nor botocore's errors."""
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text(config)
    out = _run_without_aws(monkeypatch, tmp_path, public_bucket)
    assert out[0] == "error PermissionError True s3://pub/k.bin", out
    assert "AWS credentials were found but cannot be used" in out[1], out


class _ExpiredSession:
    """botocore credentials whose refresh fails, as an SSO session that expired mid-run."""

    def refresh_needed(self) -> bool:
        return True

    def get_frozen_credentials(self) -> Any:
        raise RuntimeError("Token has expired and refresh failed")


@pytest.mark.parametrize("progress", [False, True], ids=["small", "bulk"])
async def test_s3_refresh_failing_mid_run(public_bucket: MotoServer,
                                          monkeypatch: pytest.MonkeyPatch, progress: bool
                                          ) -> None:
    """Credentials that worked but cannot be refreshed: the request fails with a
    PermissionError naming it, not the credential provider's own error."""
    from lsio.backends.cloud import aws as _sign

    monkeypatch.setattr(_sign, "find_s3_signer",
                        lambda region, anonymous: _sign.S3Signer(_ExpiredSession(), region))
    reader = lsio.Reader(http=lsio.HttpOptions(endpoint_url=public_bucket.endpoint,
                                               region="us-east-1", backoff=0.001))
    with pytest.raises(PermissionError, match="found but cannot be used") as info:
        await reader.read_many([("s3://pub/k.bin", 0, 10)],
                               progress=(lambda *a: None) if progress else False)
    assert info.value.filename == "s3://pub/k.bin"


def test_aws_keys_and_key_provider_are_masked_in_reprs() -> None:
    opts = lsio.HttpOptions(aws_access_key_id="AKIDSECRETID", aws_secret_access_key="s3kr1tKey",
                            aws_session_token="t0kenVALUE")
    text = repr(opts) + repr(lsio.Reader(http={"s3://b": opts}))
    assert not any(s in text for s in ("AKIDSECRETID", "s3kr1tKey", "t0kenVALUE"))
    assert "KeyStore" in repr(lsio.HttpOptions(aws_credentials=KeyStore()))


class KeyStore:
    def __call__(self) -> dict[str, str]:
        return {"aws_access_key_id": "x", "aws_secret_access_key": "hidden"}

    def __repr__(self) -> str:
        return "KeyStore(secret=hidden)"
