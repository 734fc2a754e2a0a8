"""Remote locations: which paths are URLs, how lsio talks to them (:class:`HttpOptions`), and
where each is read from (:class:`Target`).

Pure functions (no I/O). ``s3://``, ``gs://`` and ``az://`` URLs become the HTTPS URLs of
their services' REST APIs, so one HTTP engine reads them all; each service's rules live with
its provider (:mod:`lsio.backends.cloud`):

- ``http(s)://host/path``: itself; anonymous, or with :attr:`HttpOptions.headers`.
- ``s3://bucket/key``: ``https://bucket.s3.REGION.amazonaws.com/key`` (or ``ENDPOINT/bucket/key``
  for S3-compatible stores); SigV4-signed when credentials are found (``lsio[s3]``), else
  anonymous.
- ``gs://bucket/object``: the JSON API's media URL,
  ``https://storage.googleapis.com/download/storage/v1/b/bucket/o/object?alt=media`` (or on
  :attr:`HttpOptions.gcs_endpoint` / ``$STORAGE_EMULATOR_HOST``); a bearer token from
  google-auth's application default credentials (``lsio[gcs]``) when found, else anonymous.
- ``az://container/blob``: ``https://ACCOUNT.blob.core.windows.net/container/blob`` (or
  ``ENDPOINT/container/blob``: Azurite, Azure Stack, private endpoints); a SAS token joins the
  URL's query when no account key is found, other credentials are
  headers (:mod:`lsio.backends.cloud.azure`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from ._redact import redact as redact
from ._redact import redact_headers

__all__ = ["ALIASES", "HttpOptions", "Target", "file_url_problem", "is_url", "listable",
           "local_path", "redact", "resolve_http", "scheme_problem", "tls_context", "unsupported"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}
"""URL schemes users write for the same services (Hadoop's ``s3a``/``s3n``, fsspec's ``gcs``,
``abfs``/``abfss`` with the account in the host): each is read as its service's own."""
REMOTE_SCHEMES = frozenset({"http", "https", "s3", "gs", "az", *ALIASES})

Kind = Literal["http", "s3", "gs", "az"]


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How lsio talks to HTTP servers and object stores (``lsio.Reader(http=...)``).

    Defaults and where they come from are in the README's options table."""

    concurrency: int | None = None
    """Requests in flight per call; ``None``: the preset's queue depth (32 for ``cloud``)."""

    connections_per_host: int = 64
    """Connection-pool cap per host and event loop, for each transport (aiohttp's
    ``limit_per_host``, libcurl's ``CURLMOPT_MAX_HOST_CONNECTIONS``)."""

    retries: int = 5
    """Further attempts after a failure that may pass (429, 5xx, reset, timeout, short
    body); kvikio retries 3 times, obstore 10, botocore's standard mode 3 (4 attempts)."""

    backoff: float = 0.1
    """First retry delay in seconds; doubled each attempt, with full jitter (AWS's
    "exponential backoff and jitter"); a ``Retry-After`` header is honoured."""

    backoff_max: float = 10.0
    """Longest single retry delay (seconds)."""

    request_timeout: float = 30.0
    """Deadline of one attempt, headers and body (seconds): obstore's default timeout."""

    connect_timeout: float = 5.0
    """Deadline to open a connection (seconds): obstore's default connect timeout."""

    timeout: float | None = None
    """Deadline of the whole call (seconds); ``None``: none beyond the retries'."""

    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers (e.g. ``Authorization``) sent to the URL's own host only, never across
    a redirect to another host."""

    endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph, moto...); default ``$AWS_ENDPOINT_URL_S3``,
    ``$AWS_ENDPOINT_URL``, else AWS."""

    region: str | None = None
    """S3 region; default ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, the AWS config file,
    else the bucket's own (its ``x-amz-bucket-region`` header, asked once per bucket and
    process), else ``us-east-1``."""

    requester_pays: bool = False
    """S3: the reader pays for requests to a requester-pays bucket (sends
    ``x-amz-request-payer: requester``, signed)."""

    aws_access_key_id: str | None = None
    """S3: an access key to sign with instead of botocore's discovery (with
    :attr:`aws_secret_access_key`, and :attr:`aws_session_token` for temporary keys)."""

    aws_secret_access_key: str | None = None
    """S3: the secret of :attr:`aws_access_key_id` (never shown in reprs or errors)."""

    aws_session_token: str | None = None
    """S3: the session token of temporary keys."""

    aws_credentials: Any = None
    """S3: a callable returning the keys, called again when they expire: a mapping with
    ``aws_access_key_id``, ``aws_secret_access_key`` and optionally ``aws_session_token``
    and ``expiry`` (an aware ``datetime`` or POSIX seconds; none: they never expire). It
    must pickle (a module-level function or an instance of a module-level class) for a
    Reader to travel to other processes, and it travels with its secrets."""

    anonymous: bool | None = None
    """S3, GCS and Azure: ``True`` never signs (nor sends a SAS); ``None`` signs when
    credentials are found; ``False`` requires them (an error names what is missing)."""

    azure_account: str | None = None
    """Storage account for ``az://``; default ``$AZURE_STORAGE_ACCOUNT_NAME``."""

    ssl: Any = None
    """TLS for ``https://``: ``None`` verifies against the system's CAs (aiohttp's
    default), an ``ssl.SSLContext`` uses that context (a private CA), ``False`` does not
    verify (never for production data)."""

    ca: str | None = None
    """TLS: a CA bundle file, or a directory of hashed CA certificates, to trust instead of
    the system's (a private CA), for both transports; not with an ``ssl`` context."""

    client_cert: str | None = None
    """TLS: a client certificate (PEM) to present, with :attr:`client_key` unless the key is
    in the same file."""

    client_key: str | None = None
    """TLS: the key of :attr:`client_cert` (PEM, unencrypted)."""

    trust_env: bool = True
    """Honour ``HTTP(S)_PROXY`` / ``NO_PROXY`` (read once per call), as HPC clusters
    behind a proxy need."""

    transport: str = "auto"
    """What sends the GETs: ``"auto"``, lsio's C transport (libcurl's multi interface, where
    lsio was built with libcurl) for every request it can take, aiohttp for the rest (a
    proxied URL, an ``ssl.SSLContext``, and every answer other than the plain ``206`` a
    range asks for: redirects, errors, retries); ``"aiohttp"``: aiohttp alone."""

    multi_range: bool = True
    """Plain HTTP servers: ask for several ranges in one request (``multipart/byteranges``,
    RFC 9110 14.6) when the server supports it (probed once per host); never for S3, GCS
    and Azure, which do not."""

    max_transfer_ratio: float | None = 2.0
    """Bytes a call may fetch per byte it asks for: merging nearby ranges into one request
    reads through the gaps between them, and egress is billed per byte. Merging stops
    before the gaps would add more than ``ratio - 1`` times the requested bytes, spent on
    the smallest gaps first; ``1.0`` never fetches a byte no request wants, ``None``: the
    gap alone decides. 2.0 is the bound issue #14 sets (obstore and zarr merge through
    1 MiB gaps with no bound: 20 000 random 4 KiB ranges of 2 GiB fetch the whole object)."""

    gcs_endpoint: str | None = None
    """Google Cloud Storage endpoint for ``gs://`` (an emulator, a private endpoint); default
    ``$STORAGE_EMULATOR_HOST`` (what google-cloud-storage honours; a bare ``host:port`` means
    ``http://host:port``, and credentials are then not looked up unless
    ``anonymous=False``), else ``https://storage.googleapis.com``."""

    azure_credential: Any = None
    """Entra ID credential for ``az://``: an azure-identity credential object (synchronous,
    e.g. ``ClientSecretCredential``, ``InteractiveBrowserCredential``: anything with
    ``get_token(*scopes)``); default: an account key or SAS from the environment, else
    azure-identity's ``DefaultAzureCredential`` when ``lsio[azure]`` is installed."""

    azure_endpoint: str | None = None
    """Blob service endpoint for ``az://`` (Azurite ``http://127.0.0.1:10000/devstoreaccount1``,
    Azure Stack, private endpoints), path-style: ``ENDPOINT/container/blob``; default the
    ``BlobEndpoint`` of ``$AZURE_STORAGE_CONNECTION_STRING`` (Azurite's address with
    ``UseDevelopmentStorage=true``), else ``https://ACCOUNT.blob.core.windows.net``."""

    def __post_init__(self) -> None:
        _check_count("retries", self.retries, 0)
        if self.max_transfer_ratio is not None:
            r = self.max_transfer_ratio
            if (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)
                    or r < 1.0):
                raise ValueError("lsio: HttpOptions.max_transfer_ratio must be a finite number "
                                 f">= 1.0 or None, got {r!r}")
        _check_count("connections_per_host", self.connections_per_host, 1)
        _check_tls(self)
        if self.transport not in ("auto", "aiohttp"):
            raise ValueError("lsio: HttpOptions.transport must be 'auto' or 'aiohttp', got "
                             f"{self.transport!r}")
        if self.concurrency is not None:
            _check_count("concurrency", self.concurrency, 1)
        # a deadline of 0 is no deadline to aiohttp and a nan one never comes (a hanging
        # server would hang the call forever); inf overflows when aiohttp schedules it
        for name in ("request_timeout", "connect_timeout", "backoff_max"):
            _check_seconds(name, getattr(self, name), zero_ok=False)
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout, zero_ok=False)
        _check_seconds("backoff", self.backoff, zero_ok=True)  # 0: retry at once
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("lsio: HttpOptions.aws_access_key_id and aws_secret_access_key "
                             "go together")
        if self.aws_credentials is not None and (
                self.aws_access_key_id is not None or not callable(self.aws_credentials)):
            raise ValueError("lsio: HttpOptions.aws_credentials must be a callable, given "
                             "instead of aws_access_key_id/aws_secret_access_key")

    def __repr__(self) -> str:
        """The options, without their secrets: secret headers' values are masked, a
        credential object shows as its type, endpoints lose a password they carry."""
        shown = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "headers":
                text = redact(repr(redact_headers(value)))
            elif name in _SECRETS and value is not None:
                text = "'***'"
            elif name in ("azure_credential", "aws_credentials") and value is not None:
                text = f"<{getattr(value, '__qualname__', type(value).__name__)}>"
            else:
                text = redact(repr(value))
            shown.append(f"{name}={text}")
        return f"HttpOptions({', '.join(shown)})"


def _check_tls(o: HttpOptions) -> None:
    """``ca``, ``client_cert`` and ``client_key`` name files (or a directory: ``ca``) that
    exist, and go with the default verification only."""
    import os

    for name in ("ca", "client_cert", "client_key"):
        value = getattr(o, name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"lsio: HttpOptions.{name} must be a path (str), got "
                            f"{type(value).__name__}")
        if not os.path.exists(value):
            raise ValueError(f"lsio: HttpOptions.{name}: no such file: {value!r}")
    if o.client_key is not None and o.client_cert is None:
        raise ValueError("lsio: HttpOptions.client_key needs client_cert")
    if o.ssl is not None and (o.ca or o.client_cert):
        raise ValueError("lsio: HttpOptions.ca and client_cert go with ssl=None (put them in "
                         "your ssl.SSLContext instead)")


def tls_context(o: HttpOptions) -> Any:
    """What aiohttp (and urllib) are given for ``o``'s TLS: ``o.ssl`` if set, a context
    trusting ``o.ca`` and presenting ``o.client_cert`` when those are set, else ``None``
    (the system's CAs)."""
    if o.ssl is not None or not (o.ca or o.client_cert):
        return o.ssl
    return _context(o.ca, o.client_cert, o.client_key)


@functools.lru_cache(maxsize=16)
def _context(ca: str | None, cert: str | None, key: str | None) -> Any:
    import os
    import ssl

    ctx = ssl.create_default_context(
        cafile=ca if ca and not os.path.isdir(ca) else None,
        capath=ca if ca and os.path.isdir(ca) else None)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


_SECRETS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token"})
"""Fields shown masked (the key id too: it names the account that pays)."""


def _check_count(name: str, value: object, low: int) -> None:
    # bool is an int to Python, but True here is a slip, not 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"lsio: HttpOptions.{name} must be an int >= {low}, got {value!r}")


def _check_seconds(name: str, value: object, *, zero_ok: bool) -> None:
    try:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (value >= 0 if zero_ok else value > 0))
    except OverflowError:  # an int beyond float's range: no deadline could be scheduled
        ok = False
    if not ok:
        raise ValueError(f"lsio: HttpOptions.{name} must be a finite number of seconds "
                         f"{'>=' if zero_ok else '>'} 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one remote path is fetched from."""

    url: str
    """HTTP(S) URL, percent-encoded, sent as is."""

    kind: Kind
    """Which service: decides signing and whether multi-range requests may be tried."""

    region: str = ""
    """S3 region for signing."""

    def __repr__(self) -> str:  # the URL may hold a SAS token
        return f"Target(url={redact(repr(self.url))}, kind={self.kind!r}, region={self.region!r})"


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote object (``file://`` URLs are local paths)."""
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() in REMOTE_SCHEMES


def listable(root: str) -> bool:
    """Whether keys under ``root`` can be listed: an object store's URL (S3, GCS, Azure);
    plain HTTP(S) servers have no listing."""
    m = _SCHEME.match(root)
    if m is None:
        return False
    scheme = m.group(1).lower()
    return ALIASES.get(scheme, scheme) in ("s3", "gs", "az")


def scheme_problem(path: str) -> str | None:
    """Why ``path``'s ``scheme://`` cannot be read, or ``None`` (no scheme, ``file://``, or
    one lsio reads). An unknown scheme is never a relative local path (``s3x://b/k`` is a
    typo, not the file ``./s3x:/b/k``). One-letter schemes are left alone: ``C://x`` is a
    Windows drive."""
    m = _SCHEME.match(path)
    if m is None or len(m.group(1)) == 1:
        return None
    scheme = m.group(1).lower()
    if scheme == "file" or scheme in REMOTE_SCHEMES:
        return None
    return (f"unsupported URL scheme {scheme!r}; lsio reads local paths, file://, "
            f"{', '.join(s + '://' for s in sorted(REMOTE_SCHEMES))}")


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; other paths unchanged."""
    if path[:7].lower() == "file://":
        rest = path[7:]
        if rest[:10].lower() == "localhost/":  # host names ignore case
            rest = rest[9:]
        return unquote(rest)
    return path


def file_url_problem(path: str) -> str | None:
    """Why a ``file://`` URL cannot name a local file, or ``None``: a host other than
    empty or ``localhost`` names another machine, and a query or fragment is no part of a
    file's name (lsio would otherwise read ``host/p`` or ``p?x=1``)."""
    if path[:7].lower() != "file://":
        return None
    host, slash, rest = path[7:].partition("/")
    if host.lower() not in ("", "localhost"):
        return f"file:// URL names host {host!r}: only local files (no host, or localhost)"
    if "?" in rest or "#" in rest:
        return "file:// URL has a query or fragment ('?' or '#'; percent-encode them as %3F, %23)"
    return None


def resolve_http(path: str) -> Target:
    """The :class:`Target` of an ``http(s)://`` URL; ``ValueError`` naming it if it has no
    host. Object stores' URLs are resolved by their providers
    (:func:`lsio.backends.cloud.resolve`)."""
    host = path.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    if not host or host.startswith(":"):
        raise ValueError(f"lsio: {path!r} has no host")
    return Target(path, "http")


def unsupported(path: str) -> ValueError:
    """The error of a URL whose scheme lsio cannot read."""
    scheme = path.split("://", 1)[0].lower()
    return ValueError(f"lsio: {path!r}: " + (scheme_problem(path) or
                      f"unsupported URL scheme {scheme!r}"))
