"""Settings per URL prefix (``Reader(http={prefix: ...})``), against moto and a recording
HTTP server: matching on parsed parts, overlay, requester-pays, the user's own S3 keys or
key provider (pickled with the Reader), headers sent only where they were set."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import random_bytes, use_moto_credentials
from servers import FaultServer, MotoServer, serving_faults

import lsio
from lsio._prefix import CALL_WIDE, Prefixes


@pytest.mark.parametrize("url,expect", [
    ("s3://bucket-a/k", "a"),
    ("s3a://bucket-a/k", "a"),  # aliases are the same service
    ("s3://bucket-a-evil/k", None),  # never a string prefix
    ("s3://bucket-a/dir/x", "dir"),
    ("s3://bucket-a/dir2/x", "a"),  # whole segments only
    ("s3://bucket-a//dir/x", "dir"),
    ("gs://bucket-a/k", None),  # another scheme
    ("https://Host:8443/p/q", "host"),  # host names ignore case
    ("https://host:8443/pq", None),
    ("http://host:8443/p/q", None),  # another origin
    ("https://host/p/q", None),  # another port
    ("abfs://c@acct.dfs.core.windows.net/x", "acct"),
    ("abfss://c@ACCT.dfs.core.windows.net/x", "acct"),
    ("az://c/x", None),  # no account named: not that account's container
    ("abfs://c@other.dfs.core.windows.net/x", None),
])
def test_prefix_matching(url: str, expect: str | None) -> None:
    table = Prefixes(lsio.HttpOptions(), {
        "s3://bucket-a": {"region": "a"}, "s3://bucket-a/dir/": {"headers": {"x": "1"}},
        "https://host:8443/p": {"region": "host"},
        "abfs://c@acct.dfs.core.windows.net": {"region": "acct"}})
    got = table.options_for(url)
    if expect == "dir":  # the longer prefix overlays the shorter one, field by field
        assert (got.region, dict(got.headers)) == ("a", {"x": "1"})
    else:
        assert got.region == expect and not got.headers


def test_prefix_overlays_the_readers_fields() -> None:
    base = lsio.HttpOptions(request_timeout=7.0, retries=2)
    table = Prefixes(base, {"s3://b": lsio.HttpOptions(region="eu-west-1")})
    got = table.options_for("s3://b/k")
    assert (got.region, got.request_timeout, got.retries) == ("eu-west-1", 7.0, 2)
    assert table.options_for("s3://c/k") is base


@pytest.mark.parametrize("field", sorted(CALL_WIDE))
def test_call_wide_fields_come_from_the_reader_only(field: str) -> None:
    value = {"timeout": 1.0, "concurrency": 2, "connections_per_host": 3, "trust_env": False,
             "retries": 1, "backoff": 0.5, "backoff_max": 1.0, "max_transfer_ratio": 1.5,
             "multi_range": False, "transport": "aiohttp"}[field]
    with pytest.raises(ValueError, match=f"s3://b.*{field}"):
        lsio.Reader(http={"s3://b": {field: value}})


@pytest.mark.parametrize("http,exc", [
    ({"s3://b": {"nope": 1}}, ValueError), ({"b/k": {}}, ValueError),
    ({"s3://b": 3}, TypeError), ({"s3://b": {}, "s3a://b/": {}}, ValueError), (3, TypeError)])
def test_bad_prefix_settings(http: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        lsio.Reader(http=http)


# -- headers only where they were set -----------------------------------------------------

@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": random_bytes(1000, seed=5)})


async def test_headers_are_sent_only_to_their_prefix(faults: FaultServer) -> None:
    faults.reset()
    ok = faults.url("ok", "f.bin")  # http://127.0.0.1:PORT/ok/f.bin
    reader = lsio.Reader(http={f"{ok.rsplit('/', 2)[0]}/ok": lsio.HttpOptions(
        headers={"X-Only-Here": "1"})})
    other_path = faults.url("okx1", "f.bin")  # same host, another first segment
    other_host = faults.url("ok", "f.bin", host="localhost")
    await reader.read_many([(ok, 0, 10), (other_path, 0, 10), (other_host, 0, 10)])
    sent = {(e["fault"], e["host"].split(":")[0]): "X-Only-Here" in e["headers"]
            for e in faults.log}
    assert sent == {("ok", "127.0.0.1"): True, ("okx1", "127.0.0.1"): False,
                    ("ok", "localhost"): False}


# -- S3 (moto) ------------------------------------------------------------------------------

DATA = random_bytes(50_000, seed=3)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    s3 = server.client()
    s3.create_bucket(Bucket="east")
    s3.create_bucket(Bucket="west", CreateBucketConfiguration={
        "LocationConstraint": "eu-west-1"})
    s3.create_bucket(Bucket="payer")
    s3.put_bucket_request_payment(Bucket="payer", RequestPaymentConfiguration={
        "Payer": "Requester"})
    for bucket in ("east", "west", "payer"):
        s3.put_object(Bucket=bucket, Key="k.bin", Body=DATA)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def creds(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, road: str) -> MotoServer:
    """moto's keys; each test twice, as shipped and C first (``conftest.road``)."""
    use_moto_credentials(monkeypatch, moto)
    return moto


async def test_two_buckets_two_regions_one_call(creds: MotoServer) -> None:
    reader = lsio.Reader(http={"": lsio.HttpOptions(endpoint_url=creds.endpoint),
                               "s3://west": {"region": "eu-west-1"}})
    got = await reader.read_many([("s3://east/k.bin", 0, 100), ("s3://west/k.bin", 5, 100)])
    assert [bytes(g) for g in got] == [DATA[:100], DATA[5:105]]
    client = reader._http_backend().client(["s3://east/k.bin", "s3://west/k.bin"])
    await client.start()
    assert [t.region for t in client.targets][1] == "eu-west-1"


async def test_requester_pays_is_sent_and_signed(creds: MotoServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []
    from lsio.backends.cloud import _sigv4

    real = _sigv4.sign

    def spy(method: str, url: str, headers: dict[str, str], **kw: Any) -> dict[str, str]:
        out = real(method, url, headers, **kw)
        seen.append(out)
        return out

    real_parts = _sigv4.parts

    def spy_parts(method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        p = real_parts(method, url, headers, **kw)  # the C transport signs each range
        seen.append({**p.headers, "Authorization": p.auth_prefix(True)})
        return p

    monkeypatch.setattr("lsio.backends.cloud.aws.sign", spy)
    monkeypatch.setattr("lsio.backends.cloud.aws.parts", spy_parts)
    reader = lsio.Reader(http={"": lsio.HttpOptions(endpoint_url=creds.endpoint),
                               "s3://payer": {"requester_pays": True}})
    got = await reader.read_many([("s3://payer/k.bin", 0, 10), ("s3://east/k.bin", 0, 10)])
    assert [bytes(g) for g in got] == [DATA[:10]] * 2
    payer = [h for h in seen if "/payer/" in str(h.get("Host", "")) or
             h.get("x-amz-request-payer")]
    assert payer and all("x-amz-request-payer" in h["Authorization"] for h in payer)
    assert sum("x-amz-request-payer" in h for h in seen) == 1  # not sent to "east"


def _moto_keys() -> dict[str, Any]:
    import os

    return {"aws_access_key_id": os.environ["LSIO_TEST_KEY"],
            "aws_secret_access_key": os.environ["LSIO_TEST_SECRET"], "expiry": None}


class KeyProvider:
    """A picklable provider that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return _moto_keys()


@pytest.fixture
def no_env_keys(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, road: str) -> MotoServer:
    use_moto_credentials(monkeypatch, moto)
    monkeypatch.setenv("LSIO_TEST_KEY", moto.key_id)
    monkeypatch.setenv("LSIO_TEST_SECRET", moto.secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")  # discovery would find these
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    return moto


async def test_explicit_keys_instead_of_discovery(no_env_keys: MotoServer) -> None:
    m = no_env_keys
    reader = lsio.Reader(http={"": lsio.HttpOptions(endpoint_url=m.endpoint),
                               "s3://east": {"aws_access_key_id": m.key_id,
                                             "aws_secret_access_key": m.secret}})
    got = await reader.read_many([("s3://east/k.bin", 0, 10)])
    assert bytes(got[0]) == DATA[:10]
    with pytest.raises(PermissionError):  # the environment's wrong keys elsewhere
        await reader.read_many([("s3://west/k.bin", 0, 10)])
    assert m.secret not in repr(reader._prefixes.options_for("s3://east/k"))  # type: ignore[union-attr]


async def test_key_provider_pickled_reader_round_trip(no_env_keys: MotoServer) -> None:
    provider = KeyProvider()
    reader = lsio.Reader(http=lsio.HttpOptions(endpoint_url=no_env_keys.endpoint,
                                               aws_credentials=provider))
    again = pickle.loads(pickle.dumps(reader))
    for r in (reader, again):
        got = await r.read_many([("s3://east/k.bin", 0, 10), ("s3://west/k.bin", 0, 10)])
        assert [bytes(g) for g in got] == [DATA[:10]] * 2
    assert provider.calls == 1  # keys without expiry: asked once per reader
    assert "KeyProvider" in repr(reader.http) and no_env_keys.secret not in repr(reader.http)


async def test_key_provider_is_asked_again_when_keys_expire(no_env_keys: MotoServer) -> None:
    calls = []

    def expiring() -> dict[str, Any]:
        calls.append(1)
        return {**_moto_keys(), "expiry": 0.0}  # long expired: asked before each use

    reader = lsio.Reader(http=lsio.HttpOptions(endpoint_url=no_env_keys.endpoint,
                                               aws_credentials=expiring))
    await reader.read_many([("s3://east/k.bin", 0, 10)])
    await reader.read_many([("s3://east/k.bin", 0, 10)])
    assert len(calls) >= 2


async def test_bucket_region_found_when_none_is_configured(
        creds: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsio.backends.cloud import aws

    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(aws, "_BUCKET_REGIONS", {})
    monkeypatch.setattr(aws, "_REGIONS", {})
    reader = lsio.Reader(http=lsio.HttpOptions(endpoint_url=creds.endpoint))
    client = reader._http_backend().client(["s3://east/k.bin", "s3://west/k.bin"])
    await client.start()
    assert [t.region for t in client.targets] == ["us-east-1", "eu-west-1"]
    assert set(aws._BUCKET_REGIONS.values()) == {"us-east-1", "eu-west-1"}  # cached
    got = await reader.read_many([("s3://west/k.bin", 0, 10)])
    assert bytes(got[0]) == DATA[:10]
