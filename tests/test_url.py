"""URL resolution (pure): which paths are remote, and the HTTPS address each is read from."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

import lsio
from lsio._url import HttpOptions, is_url, local_path
from lsio.backends.cloud import resolve


@pytest.mark.parametrize("path,remote", [
    ("http://h/x", True), ("HTTPS://h/x", True), ("s3://b/k", True), ("gs://b/k", True),
    ("gcs://b/k", True), ("az://c/b", True), ("abfs://c@a.dfs.core.windows.net/b", True),
    ("file:///tmp/x", False), ("/tmp/x", False), ("relative/s3://x", False), ("c:\\x", False),
    ("ftp://h/x", False), ("s3a://b/k", True), ("s3n://b/k", True),
    ("abfss://c@a.dfs.core.windows.net/b", True), ("s3x://b/k", False)])
def test_is_url(path: str, remote: bool) -> None:
    assert is_url(path) is remote


@pytest.mark.parametrize("path,url,kind", [
    ("http://h:8080/a b?x=1", "http://h:8080/a b?x=1", "http"),
    ("s3://bkt/dir/a b+c.bin", "https://bkt.s3.eu-west-3.amazonaws.com/dir/a%20b%2Bc.bin", "s3"),
    ("s3://my.bucket/k", "https://s3.eu-west-3.amazonaws.com/my.bucket/k", "s3"),
    ("gs://pub/x/é.zarr",
     "https://storage.googleapis.com/download/storage/v1/b/pub/o/x%2F%C3%A9.zarr?alt=media", "gs"),
    ("az://cont/blob/x", "https://acct.blob.core.windows.net/cont/blob/x", "az"),
    ("abfs://cont@other.dfs.core.windows.net/b", "https://other.blob.core.windows.net/cont/b",
     "az"),
])
def test_resolve(path: str, url: str, kind: str) -> None:
    target = resolve(path, HttpOptions(region="eu-west-3", azure_account="acct"))
    assert (target.url, target.kind) == (url, kind)


def test_s3_endpoint_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio:9000/")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    t = resolve("s3://b/k/x", HttpOptions())
    assert (t.url, t.region) == ("http://minio:9000/b/k/x", "ap-south-1")
    t = resolve("s3://b/k", HttpOptions(endpoint_url="http://other:1"))
    assert t.url == "http://other:1/b/k"


def test_gcs_endpoint_and_emulator_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The option wins over $STORAGE_EMULATOR_HOST; a bare host:port is plain HTTP; the
    object name is one path segment ('/' and '+' encoded)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")
    assert resolve("gs://b/k/a+b", HttpOptions()).url == (
        "http://localhost:4443/download/storage/v1/b/b/o/k%2Fa%2Bb?alt=media")
    assert resolve("gcs://b/k", HttpOptions(gcs_endpoint="https://gcs.corp/")).url == (
        "https://gcs.corp/download/storage/v1/b/b/o/k?alt=media")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    assert resolve("gs://b/k", HttpOptions()).url.startswith(
        "https://storage.googleapis.com/download/")


def test_azure_account_and_sas_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envacct")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=abc")
    assert resolve("az://c/b", HttpOptions()).url == (
        "https://envacct.blob.core.windows.net/c/b?sv=1&sig=abc")


@pytest.mark.parametrize("path,message", [
    ("s3://bucket-only", "s3://bucket/key"), ("gs:///key", "gs://bucket/object"),
    ("http:///nohost", "no host"), ("az://c/b", "Azure storage account")])
def test_bad_urls(path: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    with pytest.raises(ValueError, match=message):
        resolve(path, HttpOptions())


def test_local_path() -> None:
    assert local_path("file:///tmp/a%20b") == "/tmp/a b"
    assert local_path("file://localhost/tmp/x") == "/tmp/x"
    assert local_path("/tmp/x") == "/tmp/x"


# Each numeric option against the same probes: which probes it takes, and a valid value of
# its own. A deadline of 0 would switch the deadline off (aiohttp reads 0 as none), a nan one
# never comes, an inf one overflows when aiohttp schedules it, and True is a slip for 1.
_PROBES = (0, -1, math.nan, math.inf, True)
_OPTIONS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "request_timeout": ((), 0.5),
    "connect_timeout": ((), 0.5),
    "timeout": ((), 0.5),
    "backoff_max": ((), 0.5),
    "backoff": ((0,), 0.5),  # 0: retry at once (tests do, for speed)
    "retries": ((0,), 3),  # 0: no retries
    "connections_per_host": ((), 1),
    "concurrency": ((), 1),
}
_OPTION_CASES = [
    *(pytest.param(name, probe, any(probe is a for a in accepts), id=f"{name}={probe!r}")
      for name, (accepts, _) in _OPTIONS.items() for probe in _PROBES),
    *(pytest.param(name, good, True, id=f"{name}={good!r}-valid")
      for name, (_, good) in _OPTIONS.items()),
    pytest.param("timeout", None, True, id="timeout=None-valid"),
    pytest.param("concurrency", None, True, id="concurrency=None-valid"),
    pytest.param("request_timeout", 30, True, id="request_timeout=30-int-valid"),
    pytest.param("request_timeout", 10**400, False, id="request_timeout=10**400"),
    pytest.param("request_timeout", "30", False, id="request_timeout='30'"),
    pytest.param("retries", 3.0, False, id="retries=3.0"),
]


@pytest.mark.parametrize("name,value,valid", _OPTION_CASES)
def test_http_options_numbers(name: str, value: Any, valid: bool) -> None:
    if valid:
        assert getattr(HttpOptions(**{name: value}), name) is value
    else:
        with pytest.raises(ValueError, match=rf"HttpOptions\.{name} .*, got "
                                             rf"{re.escape(repr(value))}$"):
            HttpOptions(**{name: value})


# -- URL schemes users write ---------------------------------------------------------------

@pytest.mark.parametrize("path,url,kind", [
    ("s3a://bkt/k", "https://bkt.s3.eu-west-3.amazonaws.com/k", "s3"),
    ("S3N://bkt/k", "https://bkt.s3.eu-west-3.amazonaws.com/k", "s3"),
    ("gcs://pub/x", "https://storage.googleapis.com/download/storage/v1/b/pub/o/x?alt=media",
     "gs"),
    ("abfs://cont@acct.dfs.core.windows.net/b", "https://acct.blob.core.windows.net/cont/b",
     "az"),
    ("abfss://cont@acct.dfs.core.windows.net/b", "https://acct.blob.core.windows.net/cont/b",
     "az"),
    ("abfs://cont/b", "https://acct.blob.core.windows.net/cont/b", "az"),  # short form
])
def test_scheme_aliases(path: str, url: str, kind: str, monkeypatch: pytest.MonkeyPatch
                        ) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST",
                "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN",
                "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    target = resolve(path, HttpOptions(region="eu-west-3"))
    assert (target.url, target.kind) == (url, kind)


@pytest.mark.parametrize("path,problem", [
    ("s3x://b/k", "s3x"), ("FTP://h/x", "ftp"), ("hdfs://n/p", "hdfs"), ("s3://b/k", None),
    ("abfss://c@a.dfs.core.windows.net/b", None), ("file:///tmp/x", None), ("/tmp/x", None),
    ("rel/s3x://b", None), ("C://x", None)])
def test_scheme_problem(path: str, problem: str | None) -> None:
    from lsio._url import scheme_problem

    got = scheme_problem(path)
    assert (got is None) if problem is None else (f"'{problem}'" in (got or ""))


BAD = "s3x://b/k"


@pytest.mark.parametrize("requests", [[BAD], [(BAD, 0, 4)], [("/etc/hostname", 0, 4), BAD],
                                      [lsio.Chunk(BAD)]], ids=["path", "tuple", "mixed", "chunk"])
@pytest.mark.parametrize("route", ["auto", "small", "bulk"])
async def test_unknown_scheme_is_refused_on_every_road(requests: list[Any], route: str) -> None:
    reader = lsio.Reader(route=route)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported URL scheme 's3x'"):
        await reader.read_many(requests)
    with pytest.raises(ValueError, match="'s3x'"):
        reader.read_many_sync(requests)
    with pytest.raises(ValueError, match="'s3x'"):
        async for _ in reader.iter_many(requests):
            pass
    with pytest.raises(ValueError, match="'s3x'"):
        await reader.explain(requests)
    if not isinstance(requests[0], lsio.Chunk):  # read_each takes no Chunk
        with pytest.raises(ValueError, match="'s3x'"):
            await reader.read_each(requests, lambda i, v: None)


def test_unknown_scheme_is_refused_by_list_keys_and_the_store() -> None:
    from lsio.zarr import LsioStore

    with pytest.raises(ValueError, match="'s3x'"):
        lsio.Reader().list_keys("s3x://b", "")
    with pytest.raises(ValueError, match="'s3x'"):
        LsioStore("s3x://b/root")


async def test_azure_https_gets_credentials_only_without_a_sas(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from lsio.backends.cloud import PROVIDERS
    from lsio.backends.http._client import HttpClient

    for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    plain = "https://acct.blob.core.windows.net/c/b"
    sas = plain + "?sv=2021&sig=abc"
    other = "https://other.blob.core.windows.net/c/b"

    def kinds() -> list[str]:
        client = HttpClient([plain, sas, other], HttpOptions(), {}, PROVIDERS)
        client._resolve_all()
        return [t.kind for t in client.targets]

    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_KEY", raising=False)
    assert kinds() == ["http", "http", "http"]  # nothing configured: plain HTTPS
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")
    assert kinds() == ["az", "http", "http"]  # the configured account's key, no SAS only
