"""AWS Signature Version 4 for S3 GET requests, with the standard library (``hmac``).

botocore still finds the credentials (its chain: environment, files, SSO, roles); only the
signing is done here: botocore's ``S3SigV4Auth`` costs ~150-230 us a request on this machine
(an ``AWSRequest``, header objects, URL re-parsing), this ~20 us, and a call of 2 000 small
objects signs 2 000 times on the event loop.

Signed: ``host``, ``range`` when present, ``x-amz-content-sha256`` (the hash of the empty body:
GETs carry none), ``x-amz-date`` and ``x-amz-security-token`` for temporary credentials. The
canonical URI is the URL's path as sent (lsio percent-encodes keys once, as S3 wants); the
canonical query is every parameter percent-encoded and sorted. The signing key is derived once
per secret, day and region. Reference: AWS, "Authenticating Requests: Using the Authorization
Header (AWS Signature Version 4)".
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

__all__ = ["Parts", "parts", "sign"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""``x-amz-content-sha256`` of a request without a body."""

_KEYS: dict[tuple[str, str, str], bytes] = {}
"""Signing keys by (secret, date, region); one per day."""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = _KEYS.get((secret, day, region))
    if key is None:
        if len(_KEYS) > 64:
            _KEYS.clear()
        k = _hmac(("AWS4" + secret).encode(), day)
        k = _hmac(_hmac(_hmac(k, region), "s3"), "aws4_request")
        key = _KEYS[(secret, day, region)] = k
    return key


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


class Parts(NamedTuple):
    """A request's signature in the parts that do not depend on its ``Range``, so that a
    batch of ranges of one object is signed in C (``lsio/_c/curl.c``) from them: the
    canonical request is ``pre + "range:" + value + "\\n" + post`` (``pre + post`` with no
    range), the string to sign ``sts_prefix`` + its SHA-256 in hex, the signature its
    HMAC-SHA256 under ``key`` in hex, and ``Authorization`` is :meth:`auth_prefix` +
    signature."""

    headers: dict[str, str]
    """The request's headers but ``Range`` and ``Authorization``."""
    key: bytes
    sts_prefix: str
    pre: str
    amz: str
    """The canonical ``x-amz-*`` header lines."""
    credential: str
    """``AWS4-HMAC-SHA256 Credential=<access key>/<scope>``."""
    names: str
    """The signed headers after ``host`` (and ``range``), joined by ``;``."""

    def post(self, ranged: bool) -> str:
        """The canonical request after the ``range`` line (or ``host``'s)."""
        return (f"{self.amz}\n{self.signed(ranged)}\n{EMPTY_SHA256}")

    def signed(self, ranged: bool) -> str:
        return f"host;{'range;' if ranged else ''}{self.names}"

    def auth_prefix(self, ranged: bool) -> str:
        """``Authorization`` up to the signature, of a request with a ``Range`` or not."""
        return f"{self.credential}, SignedHeaders={self.signed(ranged)}, Signature="


def parts(method: str, url: str, headers: dict[str, str], *, access_key: str,
          secret_key: str, token: str | None, region: str,
          now: datetime.datetime | None = None) -> Parts:
    """The signature of ``method url`` with ``headers`` (a ``Range`` among them is left
    out: :class:`Parts` signs any range)."""
    split = urlsplit(url)
    host = split.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(split.scheme)
    if split.port is not None and split.port != default:
        host = f"{host}:{split.port}"
    when = now or datetime.datetime.now(datetime.UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    out = {k: v for k, v in headers.items() if k.lower() != "range"}
    out["Host"] = host
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = EMPTY_SHA256
    if token:
        out["x-amz-security-token"] = token
    signed = {"x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith("x-amz-"):  # requester-pays is signed
            signed[low] = value.strip()
    if token:
        signed["x-amz-security-token"] = token
    names = sorted(signed)  # all after "host" and "range"
    scope = f"{day}/{region}/s3/aws4_request"
    return Parts(
        out, _signing_key(secret_key, day, region),
        f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n",
        f"{method}\n{split.path or '/'}\n{_canonical_query(split.query)}\nhost:{host}\n",
        "".join(f"{n}:{signed[n]}\n" for n in names),
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}", ";".join(names))


def sign(method: str, url: str, headers: dict[str, str], *, access_key: str, secret_key: str,
         token: str | None, region: str, now: datetime.datetime | None = None
         ) -> dict[str, str]:
    """``headers`` plus ``Host``, ``x-amz-date``, ``x-amz-content-sha256`` (and
    ``x-amz-security-token``) and the ``Authorization`` that signs ``method url``."""
    p = parts(method, url, headers, access_key=access_key, secret_key=secret_key,
              token=token, region=region, now=now)
    rng = next((v.strip() for k, v in headers.items() if k.lower() == "range"), None)
    out = p.headers
    canonical = p.pre + p.post(False)
    if rng is not None:
        out = {**out, "Range": rng}
        canonical = p.pre + f"range:{rng}\n" + p.post(True)
    to_sign = p.sts_prefix + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(p.key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = p.auth_prefix(rng is not None) + signature
    return out
