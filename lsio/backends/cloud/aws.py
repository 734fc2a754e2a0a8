"""Amazon S3 (and S3-compatible stores): URL rules, credentials, SigV4, ListObjectsV2.

- URLs: ``s3://bucket/key`` is read from ``https://bucket.s3.REGION.amazonaws.com/key``, or
  ``ENDPOINT/bucket/key`` for S3-compatible stores (MinIO, Ceph, moto...: path-style).
- Credentials: botocore's usual chain (``lsio[s3]``: environment variables,
  ``~/.aws/credentials`` and ``~/.aws/config``, SSO, instance roles), found once per
  backend and region; requests are signed with SigV4 by :mod:`._sigv4` (standard library).
  No credentials found: anonymous requests (public buckets).
- Listing: ListObjectsV2, ``continuation-token`` from page to page.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import math
import time
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from yarl import URL

from ..._defaults import AWS_METADATA_TIMEOUT, AWS_REFRESH_BEFORE
from ..._url import HttpOptions, Target, tls_context
from ..http._protocol import HttpError
from ._listing import query, xml_root
from ._sigv4 import Parts, parts, sign
from ._types import Page, WouldBlock, first_env, getenv, quote_key, split_bucket

KIND = "s3"
HEADERS: dict[str, str] = {}

_REGIONS: dict[tuple[str | None, str | None, str | None], str] = {}
"""The S3 region found for (``HttpOptions.region``, ``$AWS_REGION``,
``$AWS_DEFAULT_REGION``): finding it may make a botocore session (~0.1-0.3 s, once)."""


# -- URL rules -----------------------------------------------------------------------------

def region(options: HttpOptions) -> str:
    """The S3 region configured: the option, ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, the
    AWS config file (when botocore is installed); ``""``: none (each bucket's own is asked
    for, :func:`bucket_region`)."""
    if options.region:
        return options.region
    env = first_env("AWS_REGION", "AWS_DEFAULT_REGION")
    if env:
        return env
    try:  # the config file (profile's region), when botocore is installed
        import botocore.session

        found = botocore.session.get_session().get_config_variable("region")
        if found:
            return str(found)
    except Exception:  # noqa: BLE001 - no botocore, or an unreadable config: none
        pass
    return ""


def config(options: HttpOptions, block: bool) -> tuple[str, bool] | None:
    """The call's configured region (``""``: none) and whether resolving may block,
    remembered per options and environment; ``None`` if it is not known yet and ``block``
    is false (finding it may read files)."""
    key = (options.region, getenv("AWS_REGION"), getenv("AWS_DEFAULT_REGION"))
    found = _REGIONS.get(key)
    if found is None and block:
        found = _REGIONS[key] = region(options)
    return None if found is None else (found, block)


_BUCKET_REGIONS: dict[tuple[str, str], str] = {}
"""Each (endpoint, bucket)'s region as its ``x-amz-bucket-region`` header told, per process."""


def bucket_region(endpoint: str | None, bucket: str, options: HttpOptions) -> str:
    """The region S3 says ``bucket`` is in: one ``HEAD`` of the bucket, whose
    answer carries ``x-amz-bucket-region`` even when it is a 301 or a 403; ``us-east-1``
    when none comes (an S3-compatible server without regions, no network)."""
    import ssl
    import urllib.error

    if endpoint:
        url = f"{endpoint.rstrip('/')}/{bucket}"
    else:
        url = (f"https://s3.amazonaws.com/{bucket}" if "." in bucket
               else f"https://{bucket}.s3.amazonaws.com/")
    handlers: list[Any] = [_NoRedirect()]
    if not options.trust_env:
        handlers.append(urllib.request.ProxyHandler({}))
    if options.ssl is False:
        handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
    elif tls_context(options) is not None:  # an SSLContext, or the ca/client_cert options'
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(options)))
    headers: dict[str, str] = {}
    try:  # signed when keys are found (with us-east-1: S3 answers the region anyway)
        signer = find_auth(Target(url, "s3", "us-east-1"), options)
        if signer is not None:
            headers = signer.headers("HEAD", url, {})
    except Exception:  # noqa: BLE001 - unusable keys: ask unsigned; the reads will tell
        pass
    request = urllib.request.Request(url, headers=headers, method="HEAD")
    try:
        with urllib.request.build_opener(*handlers).open(
                request, timeout=options.request_timeout) as resp:
            found = resp.headers.get("x-amz-bucket-region")
    except urllib.error.HTTPError as exc:  # 301, 403: the header is there too
        found = exc.headers.get("x-amz-bucket-region")
    except (OSError, ValueError):
        found = None
    return found or "us-east-1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 301 names the region: read it, go nowhere


def resolve(path: str, options: HttpOptions, config: tuple[str, bool] | None) -> Target:
    bucket, key = split_bucket(path, "s3://bucket/key")
    where, block = config or (region(options), True)
    endpoint = options.endpoint_url or first_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if not where:  # none configured: the bucket's own, asked once per process
        where = _BUCKET_REGIONS.get((endpoint or "", bucket), "")
        if not where:
            if not block:
                raise WouldBlock(path)
            where = _BUCKET_REGIONS[(endpoint or "", bucket)] = bucket_region(
                endpoint, bucket, options)
    if endpoint:  # S3-compatible servers: path-style addressing
        return Target(f"{endpoint.rstrip('/')}/{bucket}/{quote_key(key)}", "s3", where)
    if "." in bucket:  # virtual-hosted names with dots break TLS host matching
        return Target(f"https://s3.{where}.amazonaws.com/{bucket}/{quote_key(key)}", "s3",
                      where)
    return Target(f"https://{bucket}.s3.{where}.amazonaws.com/{quote_key(key)}", "s3", where)


# -- credentials ---------------------------------------------------------------------------

def auth_key(target: Target) -> str:
    """One set of credentials per region."""
    return target.region


def find_auth(target: Target, options: HttpOptions) -> S3Signer | None:
    if options.anonymous:
        return None
    if options.aws_access_key_id is not None or options.aws_credentials is not None:
        return S3Signer(GivenKeys(options), target.region)  # the user's: no discovery
    return find_s3_signer(target.region, options.anonymous)


def request_headers(options: HttpOptions) -> dict[str, str]:
    """Headers every request to S3 carries with ``options``: requester-pays'."""
    return _PAYER if options.requester_pays else HEADERS


_PAYER = {"x-amz-request-payer": "requester"}


class _Frozen(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None


class GivenKeys:
    """Keys the user gave (``HttpOptions.aws_access_key_id``...) or a callable returns
    (``aws_credentials``), in botocore's credentials interface: the callable is called
    again ``AWS_REFRESH_BEFORE`` seconds before the ``expiry`` it gave."""

    def __init__(self, options: HttpOptions) -> None:
        self._source = options.aws_credentials
        self._keys: _Frozen | None = None
        self._expiry = math.inf
        if self._source is None:
            self._keys = _Frozen(str(options.aws_access_key_id),
                                 str(options.aws_secret_access_key), options.aws_session_token)

    def __repr__(self) -> str:
        return "GivenKeys(***)"

    def refresh_needed(self) -> bool:
        return self._keys is None or time.time() > self._expiry - AWS_REFRESH_BEFORE

    def get_frozen_credentials(self) -> _Frozen:
        if self.refresh_needed():
            got = self._source()
            try:
                keys = _Frozen(str(got["aws_access_key_id"]), str(got["aws_secret_access_key"]),
                               got.get("aws_session_token"))
            except (KeyError, TypeError):
                raise ValueError("lsio: HttpOptions.aws_credentials() must return a mapping "
                                 "with aws_access_key_id and aws_secret_access_key") from None
            expiry = got.get("expiry")
            if isinstance(expiry, datetime.datetime):
                expiry = expiry.timestamp()
            self._expiry = math.inf if expiry is None else float(expiry)
            self._keys = keys
        assert self._keys is not None
        return self._keys


class S3Signer:
    """Signs GET/HEAD requests with AWS Signature Version 4."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self.region = region

    async def ready(self) -> None:
        """Refreshable credentials (SSO, assumed roles, instance roles) about to expire are
        refreshed in a worker thread: botocore would otherwise do it inside :meth:`headers`,
        blocking the event loop for a network round trip."""
        due = getattr(self._credentials, "refresh_needed", None)
        if due is not None and due():
            await asyncio.to_thread(self._frozen)

    def sigv4(self, method: str, url: str, headers: dict[str, str]) -> Parts:
        """The parts of the SigV4 signature of any range of ``method url`` (the C transport
        signs each range from them: :class:`._sigv4.Parts`)."""
        creds = self._frozen()
        return parts(method, url, headers, access_key=creds.access_key,
                     secret_key=creds.secret_key, token=creds.token, region=self.region)

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """SigV4 by :mod:`._sigv4` (~20 us; botocore's ``S3SigV4Auth`` ~150-230 us) with
        botocore's current credentials (renewed in :meth:`ready` when due)."""
        creds = self._frozen()
        return sign(method, url, headers, access_key=creds.access_key,
                    secret_key=creds.secret_key, token=creds.token, region=self.region)

    def _frozen(self) -> Any:
        """botocore's current credentials; a failed refresh (an expired SSO session, a
        revoked role) is a permission error of the request, never botocore's own error."""
        try:
            return self._credentials.get_frozen_credentials()
        except Exception as exc:  # noqa: BLE001 - any provider's failure, mapped once
            raise HttpError(errno.EACCES, _unusable(exc)) from None


def find_s3_signer(region: str, anonymous: bool | None) -> S3Signer | None:
    """A signer if credentials are found (``anonymous=None``) or required (``False``);
    ``None`` (anonymous requests: public buckets) when none are found. Credentials found
    but unusable (an expired SSO session, a failing ``credential_process``, an unknown
    profile) raise ``PermissionError``: never anonymous requests that a private bucket
    would refuse with a puzzling 403."""
    if anonymous:
        return None
    try:
        import botocore.session
    except ImportError:
        if anonymous is False:
            raise ImportError("lsio: signed S3 access needs botocore: pip install 'lsio[s3]'"
                              ) from None
        return None  # no signer installed: public buckets still work
    try:
        session = botocore.session.get_session()
        # one quick try of the instance-metadata service, not botocore's 1 s x 1 default
        # wait; botocore keeps whole seconds (int): 0.5 would be a connect timeout of 0,
        # which urllib3 refuses with an error botocore does not catch
        session.set_config_variable("metadata_service_timeout", AWS_METADATA_TIMEOUT)
        session.set_config_variable("metadata_service_num_attempts", 1)
        credentials = session.get_credentials()
        if credentials is not None:
            # SSO, assumed roles and credential processes fetch lazily: fetch now (this
            # runs in a worker thread), so a failure is told here, once
            credentials.get_frozen_credentials()
    except Exception as exc:  # noqa: BLE001 - botocore's errors are no OSError
        raise PermissionError(errno.EACCES, _unusable(exc)) from None
    if credentials is None:
        if anonymous is False:
            raise PermissionError(errno.EACCES, "lsio: HttpOptions(anonymous=False) but "
                                  "botocore found no AWS credentials (environment, ~/.aws, "
                                  "or an instance role)")
        return None
    return S3Signer(credentials, region)


def _unusable(exc: BaseException) -> str:
    return (f"lsio: AWS credentials were found but cannot be used ({type(exc).__name__}: "
            f"{exc}); renew them (e.g. `aws sso login`), fix the profile, or pass "
            "HttpOptions(anonymous=True) for a public bucket")


# -- ListObjectsV2 -------------------------------------------------------------------------

def list_url(home: URL, prefix: str, delimiter: str | None, token: str | None) -> URL:
    """A ListObjectsV2 page of ``home``'s bucket (1000 keys a page)."""
    base = str(home).rsplit("/", 1)[0] + "/"
    # keys come percent-encoded: XML 1.0 cannot carry every character a key may hold
    q = query(("list-type", 2), ("encoding-type", "url"), ("prefix", prefix),
              ("delimiter", delimiter or None), ("continuation-token", token))
    return URL(f"{base}?{q}", encoded=True)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_page(body: bytes, url: str) -> Page:
    """A ListObjectsV2 answer: (keys, common prefixes, next continuation token or None)."""
    root = xml_root(body, url)
    keys: list[str] = []
    prefixes: list[str] = []
    token = None
    truncated = False
    encoded = any(_local(c.tag) == "EncodingType" and (c.text or "").strip().lower() == "url"
                  for c in root)
    name = unquote_plus if encoded else str
    for child in root:
        tag = _local(child.tag)
        if tag == "Contents":
            keys.extend(name(c.text) for c in child
                        if _local(c.tag) == "Key" and c.text is not None)
        elif tag == "CommonPrefixes":
            prefixes.extend(name(c.text) for c in child
                            if _local(c.tag) == "Prefix" and c.text is not None)
        elif tag == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif tag == "NextContinuationToken":
            token = child.text
    if truncated and not token:
        raise HttpError(errno.EIO, f"{url}: listing is truncated but gives no "
                        "NextContinuationToken")
    return keys, prefixes, token if truncated else None
