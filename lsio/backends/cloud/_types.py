"""What every cloud provider gives the HTTP backend, and what the providers share.

A leaf: it imports nothing of lsio, so the providers (:mod:`.aws`, :mod:`.gcp`,
:mod:`.azure`), the registry (:mod:`lsio.backends.cloud`) and the HTTP client can all import
it without a circle. A provider is a module that has the attributes of :class:`Provider`;
the HTTP backend hands the client the registry (scheme -> provider), so the client never
imports a provider.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from yarl import URL

    from ..._url import Target

__all__ = ["AZURE_BLOB_HOST", "Auth", "Page", "Provider", "Providers", "WouldBlock",
           "first_env", "getenv", "quote_key", "split_bucket"]

AZURE_BLOB_HOST = ".blob.core.windows.net"
"""Azure Blob storage's public host suffix (``https://ACCOUNT.blob.core.windows.net``)."""


class WouldBlock(Exception):  # noqa: N818 - a signal, not an error
    """A provider's ``resolve`` needs a lookup that may block (an S3 bucket's region): the
    client resolves the path again in a worker thread."""


Page = tuple[list[str], list[str], str | None]
"""One listing page as parsed: object names, common prefixes (each ending with the
delimiter), and the next page's token (``None``: the last page)."""


class Auth(Protocol):
    """What authorises requests to one service (one S3 region, GCS, one Azure account).

    ``ready()`` is awaited before each request (it refreshes a token about to expire; when
    the token is fresh it returns at once), then ``headers()`` adds what authorises the
    request. The HTTP client calls them only for requests to the URL's own origin:
    credentials never follow a redirect to another host."""

    async def ready(self) -> None:
        """Make sure :meth:`headers` can sign: refresh a token that expires soon."""

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` plus what authorises ``method url`` (may return a new dict)."""


class Provider(Protocol):
    """One object store (a module of this package): URL rules, credentials, listing."""

    @property
    def KIND(self) -> str:  # noqa: N802 - a module constant
        """``Target.kind`` of its URLs: ``"s3"``, ``"gs"`` or ``"az"``."""

    @property
    def HEADERS(self) -> Mapping[str, str]:  # noqa: N802 - a module constant
        """Headers every request to the service carries (Azure's ``x-ms-version``)."""

    def request_headers(self, options: Any) -> Mapping[str, str]:
        """Headers every request to the service carries with ``options`` (S3's
        requester-pays; the others: :attr:`HEADERS`)."""

    def config(self, options: Any, block: bool) -> Any:
        """What resolving a call's URLs needs, found once per call (the S3 region, the Azure
        account and secrets); ``None`` when finding it may block and ``block`` is false
        (the client then resolves in a worker thread)."""

    def resolve(self, path: str, options: Any, config: Any) -> Target:
        """The ``lsio._url.Target`` of ``path`` with the call's ``config``; ``ValueError``
        naming the URL when it cannot be read from."""

    def auth_key(self, target: Any) -> str:
        """Requests whose targets have equal keys share credentials."""

    def find_auth(self, target: Any, options: Any) -> Auth | None:
        """The credentials of ``target`` (``None``: anonymous); may block (files, a metadata
        server): the client calls it in a worker thread, once per key."""

    def list_url(self, home: URL, prefix: str, delimiter: str | None, token: str | None
                 ) -> URL:
        """The URL of one listing page of the bucket ``home`` (a placeholder object's URL)
        holds, from the page ``token`` on (``None``: the first page)."""

    def parse_page(self, body: bytes, url: str) -> Page:
        """A listing page's names, prefixes and next token; ``HttpError`` if malformed."""


Providers = Mapping[str, Provider]
"""The registry: lower-case URL scheme -> its provider."""


_POSIX = os.name == "posix"
_FS_ENCODING = sys.getfilesystemencoding()


def getenv(name: str) -> str | None:
    """``os.environ.get(name)``. For a variable that is not set (the usual case for
    proxies) that lookup raises and catches two KeyErrors, ~2 us each on a loaded machine:
    4-6% of a loopback GET for the two a call makes. CPython keeps ``os.environ``'s
    contents in a dict of bytes (``_data``) on POSIX, read here the way ``os.environ``
    reads it; anywhere else (or if ``os.environ`` was replaced) the public lookup."""
    data = getattr(os.environ, "_data", None)
    if type(data) is not dict or not _POSIX:
        return os.environ.get(name)
    value = data.get(name.encode(_FS_ENCODING, "surrogateescape"))
    return None if value is None else value.decode(_FS_ENCODING, "surrogateescape")


def first_env(*names: str) -> str | None:
    """The first of the environment variables ``names`` that is set and not empty."""
    for name in names:
        value = getenv(name)
        if value:
            return value
    return None


def split_bucket(url: str, what: str) -> tuple[str, str]:
    """``scheme://bucket/key`` -> (bucket, key); ``ValueError`` naming the URL if either
    is missing (``what``: the form expected)."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"lsio: {url!r} must look like {what}")
    return bucket, key


def quote_key(key: str) -> str:
    """An object name in a URL path (S3, Azure): every byte but unreserved characters and
    ``/`` is encoded, as SigV4's canonical URI wants (RFC 3986 unreserved set)."""
    return quote(key, safe="/~")
