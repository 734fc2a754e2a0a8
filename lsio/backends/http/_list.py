"""Listing the keys under an ``s3://``, ``gs://`` or ``az://`` root (``LsioStore.list*``).

Each service lists one page per request and says where the next page starts: S3's
ListObjectsV2 (``continuation-token``), the GCS JSON API (``pageToken``), Azure's List Blobs
(``marker``). Its provider (:mod:`lsio.backends.cloud`) tells a page's URL and how to read
one; :func:`pages` is the one pager that walks them all, with the client's credentials and
retries. Plain ``http(s)://`` has no listing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable

from ..._url import redact
from ..cloud import PROVIDERS, Provider
from ._client import HttpClient
from ._protocol import HttpError

__all__ = ["list_keys"]

PLACEHOLDER = "lsio-list-placeholder"
"""The object name a listing client is made for (never requested)."""


def split_root(root: str) -> tuple[str, str]:
    """``scheme://bucket/some/path`` -> (``scheme://bucket``, ``some/path/`` or ``""``)."""
    scheme, rest = root.split("://", 1)
    bucket, _, path = rest.partition("/")
    path = path.strip("/")
    return f"{scheme}://{bucket}", f"{path}/" if path else ""


async def list_keys(client_for: Callable[[list[str]], HttpClient], root: str, prefix: str,
                    delimiter: str | None) -> AsyncIterator[str]:
    """Keys under the object-store ``root`` (``s3://``, ``gs://``, ``az://``) starting with
    ``prefix``, relative to ``root``; with a ``delimiter``, what is below the next delimiter
    comes as one prefix ending with it. A failed listing raises an ``OSError`` naming
    ``root``. ``client_for(paths)``: the backend's client of ``paths``."""
    bucket, base = split_root(root)
    provider = PROVIDERS[bucket.split("://", 1)[0].lower()]
    client = client_for([f"{bucket}/{PLACEHOLDER}"])
    await client.start()
    try:
        async for keys, prefixes in pages(client, provider, base + prefix, delimiter):
            for name in keys:
                yield name[len(base):]
            for name in prefixes:
                yield name[len(base):]
    except HttpError as exc:  # a missing bucket, a refused listing: an OSError naming root
        raise OSError(exc.errno, f"{os.strerror(exc.errno)}: {redact(exc.detail)}",
                      root) from None


async def pages(client: HttpClient, provider: Provider, prefix: str, delimiter: str | None
                ) -> AsyncIterator[tuple[list[str], list[str]]]:
    """The listing of ``client``'s bucket, page after page: (names, common prefixes not
    given by an earlier page: fake-gcs-server repeats them)."""
    token: str | None = None
    seen: set[str] = set()
    tokens: set[str] = set()
    while True:
        url = provider.list_url(client.urls[0], prefix, delimiter, token)
        body = await client.document(0, url)
        names, prefixes, token = provider.parse_page(bytes(body), str(url))
        fresh = [p for p in prefixes if p not in seen]
        seen.update(fresh)
        yield names, fresh
        if next_token(token, tokens, str(url)) is None:
            return


def next_token(token: str | None, seen: set[str], url: str) -> str | None:
    """The next page's ``token``, refused if a page gave it before (a server repeating its
    token would be listed forever)."""
    if token is not None:
        if token in seen:
            raise HttpError(errno.EIO, f"{url}: the listing gave page token {token!r} "
                            "twice; stopped")
        seen.add(token)
    return token
