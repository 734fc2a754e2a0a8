"""HTTPS through the C HTTP transport, against nginx serving certificates made here: with
its CA trusted, a batch lands byte for byte; an untrusted certificate (no CA given, or
another one), a certificate for another host name and an expired one are refused (no
answer, a libcurl error, not a byte landed), even on a transport holding connections and
TLS sessions to that very server made without verification or with another CA. Through
``read_many`` the same certificates fail the call with an ``OSError`` whatever the
transport (``PermissionError``: not trusted).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import random_bytes
from servers import Nginx
from test_http_transport import CONNECTIONS, REQUIRED, batch, ok, run

import lsio
from lsio.backends.http import _curl

pytestmark = pytest.mark.skipif(not _curl.AVAILABLE and not REQUIRED,
                                 reason="lsio built without libcurl")

DATA = {f"tls{i}.bin": random_bytes(30_000 + 101 * i, seed=900 + i) for i in range(6)}


def self_signed(d: Path, name: str, san: str) -> tuple[str, str]:
    """A self-signed certificate (its own CA) for ``san``, and its key."""
    cert, key = str(d / f"{name}.pem"), str(d / f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)
    return cert, key


def expired(d: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, valid from 30 days ago to yesterday."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return expired_by_openssl_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / "expired.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "expired.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(d / "expired.pem"), str(d / "expired.key")


def expired_by_openssl_ca(d: Path) -> tuple[str, str]:
    """:func:`expired` with the openssl CLI alone: 3.0's ``req``/``x509`` take no start
    date, ``ca -selfsign`` takes both dates."""
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    (d / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n"
        f"serial = {d}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
        "unique_subject = no\n[p]\ncommonName = supplied\n")
    cert, key, csr = str(d / "expired.pem"), str(d / "expired.key"), str(d / "expired.csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=expired", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-config", str(d / "ca.cnf"), "-selfsign",
                    "-keyfile", key, "-in", csr, "-out", cert, "-startdate", "20200101000000Z",
                    "-enddate", "20200102000000Z"], check=True, capture_output=True)
    return cert, key


@dataclass(frozen=True)
class Site:
    server: Nginx
    ca: str
    """The certificate that makes the server's trusted (it is its own CA)."""


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site | str]]:
    """``good`` (for 127.0.0.1), ``localhost`` (for DNS:localhost only) and ``expired``
    nginx servers of :data:`DATA`, and ``other``: a CA none of them uses."""
    www, certs = tmp_path_factory.mktemp("tls-www"), tmp_path_factory.mktemp("tls-certs")
    for name, content in DATA.items():
        (www / name).write_bytes(content)
    pairs = {"good": self_signed(certs, "good", "IP:127.0.0.1"),
             "localhost": self_signed(certs, "localhost", "DNS:localhost"),
             "expired": expired(certs)}
    other = self_signed(certs, "other", "IP:127.0.0.1")[0]
    with contextlib.ExitStack() as stack:
        out: dict[str, Site | str] = {
            name: Site(stack.enter_context(Nginx(www, tls=pair)), pair[0])
            for name, pair in pairs.items()}
        out["other"] = other
        yield out


def site(sites: dict[str, Site | str], name: str) -> Site:
    s = sites[name]
    assert isinstance(s, Site)
    return s


async def fetch(server: Nginx, tls: _curl.Tls) -> tuple[npt.NDArray[Any], list[np.ndarray]]:
    """Every object of :data:`DATA` but its first 10 bytes, in one batch into buffers
    filled with 0xA5; the batch and the buffers."""
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    bufs = [np.full(len(c) - 10, 0xA5, np.uint8) for c in DATA.values()]
    reqs = batch([(i, 10, len(b)) for i, b in enumerate(bufs)], [memoryview(b) for b in bufs])
    await run(t, reqs, [server.url(n) for n in DATA], tls)
    return reqs, bufs


async def test_a_trusted_certificate_serves_a_batch(sites: dict[str, Site | str]) -> None:
    good = site(sites, "good")
    reqs, bufs = await fetch(good.server, _curl.Tls(verify=True, cafile=good.ca))
    assert ok(reqs).all() and (reqs["status"] == 206).all()
    assert [b.tobytes() for b in bufs] == [c[10:] for c in DATA.values()]


@pytest.mark.parametrize("case", ["no-ca", "another-ca", "wrong-host", "expired"])
async def test_bad_certificates_are_refused(sites: dict[str, Site | str], case: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused, though this loop's transport first read the same server without
    verification (and, for the untrusted cases, with its own CA): neither a kept
    connection nor a resumed TLS session gets past the verification."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # "no-ca": libcurl's own store
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    name = {"wrong-host": "localhost", "expired": "expired"}.get(case, "good")
    s = site(sites, name)
    warm = [_curl.Tls(verify=False)]
    if name == "good":
        warm.append(_curl.Tls(verify=True, cafile=s.ca))
    for tls in warm:
        reqs, _ = await fetch(s.server, tls)
        assert ok(reqs).all(), (tls, reqs)
    other = sites["other"]
    assert isinstance(other, str)
    tls = {"no-ca": _curl.Tls(verify=True), "another-ca": _curl.Tls(verify=True, cafile=other)
           }.get(case, _curl.Tls(verify=True, cafile=s.ca))
    reqs, bufs = await fetch(s.server, tls)
    assert not ok(reqs).any()
    assert (reqs["code"] != 0).all() and (reqs["status"] == 0).all() and (reqs["got"] == 0).all()
    assert all((b == 0xA5).all() for b in bufs), "bytes landed from a refused server"


@pytest.mark.parametrize("transport", ["auto", "aiohttp"])
@pytest.mark.parametrize("case", ["no-ca", "another-ca", "wrong-host", "expired"])
async def test_read_many_refuses_bad_certificates(sites: dict[str, Site | str], case: str,
                                                  transport: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``SSL_CERT_FILE`` names the server's own CA for the wrong host and the expired
    certificate, so the C transport refuses them for that, not for an unknown CA."""
    name = {"wrong-host": "localhost", "expired": "expired"}.get(case, "good")
    s = site(sites, name)
    other = sites["other"]
    assert isinstance(other, str)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if case == "no-ca":
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", other if case == "another-ca" else s.ca)
    urls = [s.server.url(n) for n in DATA]
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    reader = lsio.Reader(route="bulk", http=lsio.HttpOptions(retries=0, transport=transport))
    with pytest.raises(PermissionError if "ca" in case else OSError) as info:
        await reader.read_many([(u, 0, 1000) for u in urls])
    assert info.value.filename in urls
    assert (t.sent > before) == (transport == "auto")


async def test_read_many_over_https_takes_the_c_transport(sites: dict[str, Site | str],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The control of the refusals above: its CA in ``SSL_CERT_FILE``, the good server's
    objects come through the C transport, one request each."""
    good = site(sites, "good")
    monkeypatch.setenv("SSL_CERT_FILE", good.ca)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    t = _curl.transport_for(CONNECTIONS)
    assert t is not None
    before = t.sent
    got = await lsio.read_many([(good.server.url(n), 5, 20_000) for n in DATA])
    assert [bytes(g) for g in got] == [c[5:20_005] for c in DATA.values()]
    assert t.sent - before == len(DATA)


async def test_ca_and_client_certificate_options(tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    """``HttpOptions(ca=, client_cert=, client_key=)``: a private CA trusted and a client
    certificate presented, by both transports (the C one sending the call's requests); a
    server requiring the certificate refuses a call without it."""
    www, certs = tmp_path_factory.mktemp("mtls-www"), tmp_path_factory.mktemp("mtls-certs")
    for name, content in DATA.items():
        (www / name).write_bytes(content)
    server_pair = self_signed(certs, "server", "IP:127.0.0.1")
    client_cert, client_key = self_signed(certs, "client", "DNS:client.example")
    with Nginx(www, tls=server_pair, client_ca=client_cert) as server:
        reqs = [(server.url(n), 5, 1000) for n in DATA]
        for transport in ("auto", "aiohttp"):
            reader = lsio.Reader(http=lsio.HttpOptions(
                transport=transport, retries=0, ca=server_pair[0], client_cert=client_cert,
                client_key=client_key))
            got = await reader.read_many(reqs)
            assert [bytes(g) for g in got] == [c[5:1005] for c in DATA.values()]
            assert got.stats.transport == ("curl" if transport == "auto" else "aiohttp")
            with pytest.raises(OSError, match="400"):  # nginx: no certificate was sent
                await lsio.Reader(http=lsio.HttpOptions(
                    transport=transport, retries=0, ca=server_pair[0])).read_many(reqs)


def test_tls_file_options_are_checked_early(tmp_path: Path) -> None:
    import ssl

    with pytest.raises(ValueError, match="no such file"):
        lsio.HttpOptions(ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="needs client_cert"):
        lsio.HttpOptions(client_key=str(tmp_path))
    with pytest.raises(ValueError, match="ssl=None"):
        lsio.HttpOptions(ca=str(tmp_path), ssl=ssl.create_default_context())
    with pytest.raises(TypeError, match="path"):
        lsio.HttpOptions(client_cert=b"/x")  # type: ignore[arg-type]
