"""Credentials: how a request to S3, GCS or Azure is authorised.

Every service's credentials sit behind one small interface, :class:`Auth`: ``ready()`` is
awaited before each request (it refreshes a token about to expire; when the token is fresh
it returns at once), then ``headers()`` adds what authorises the request. The HTTP client
calls them only for requests to the URL's own origin: credentials never follow a redirect to
another host.

- S3: SigV4 (:mod:`._sigv4`, standard library), with botocore's usual credential chain
  (``lsio[s3]``: environment variables, ``~/.aws/credentials`` and ``~/.aws/config``, SSO,
  instance roles).
- GCS: :mod:`lsio.backends._gcs`.
- Azure: :mod:`lsio.backends._azure`.

:func:`auth_for` finds a target's credentials once per backend and service (a lookup can read
files or ask a metadata server).
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any, Protocol

from .._url import HttpOptions, Target
from ._sigv4 import sign

__all__ = ["Auth", "auth_for", "auth_key"]


class Auth(Protocol):
    """What authorises requests to one service (one S3 region, GCS, one Azure account)."""

    async def ready(self) -> None:
        """Make sure :meth:`headers` can sign: refresh a token that expires soon."""

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` plus what authorises ``method url`` (may return a new dict)."""


def auth_key(target: Target) -> tuple[str, str]:
    """Requests with equal keys share credentials: per S3 region, per Azure account (host),
    one for GCS."""
    if target.kind == "s3":
        return ("s3", target.region)
    if target.kind == "az":
        return ("az", target.url.split("://", 1)[1].split("/", 1)[0])
    return (target.kind, "")


def auth_for(target: Target, options: HttpOptions,
             cache: dict[tuple[str, str], Auth | None], path: str | None = None
             ) -> Auth | None:
    """The credentials of ``target`` (``None``: anonymous), found once per key of
    :func:`auth_key` and kept in ``cache``. ``path``: the user's URL, which an error
    finding the credentials names."""
    if target.kind == "http":
        return None
    key = auth_key(target)
    if key not in cache:
        auth: Auth | None = None
        if target.kind == "s3":
            try:
                auth = find_s3_signer(target.region, options.anonymous)
            except OSError as exc:
                exc.filename = path or target.url
                raise
        elif target.kind == "gs":
            from ._gcs import find_gcs_auth

            auth = find_gcs_auth(options)
        elif target.kind == "az":
            from ._azure import find_azure_auth

            auth = find_azure_auth(target, options)
        cache[key] = auth
    return cache[key]


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
            from .http._protocol import HttpError

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
        session.set_config_variable("metadata_service_timeout", METADATA_TIMEOUT)
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


METADATA_TIMEOUT = 1
"""Seconds to wait for the EC2 instance-metadata service (botocore's default, 1 attempt):
off EC2 a closed port answers at once, an unrouted address costs this once per process."""


def _unusable(exc: BaseException) -> str:
    return (f"lsio: AWS credentials were found but cannot be used ({type(exc).__name__}: "
            f"{exc}); renew them (e.g. `aws sso login`), fix the profile, or pass "
            "HttpOptions(anonymous=True) for a public bucket")
