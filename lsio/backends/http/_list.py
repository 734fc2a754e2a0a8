"""Listing the keys under an ``s3://``, ``gs://`` or ``az://`` root (``LsioStore.list*``).

Each service lists one page per request and says where the next page starts: S3's
ListObjectsV2 (``continuation-token``), the GCS JSON API (``pageToken``), Azure's List Blobs
(``marker``). A service module gives :data:`Pages`: the keys and common prefixes of each page
(names relative to the bucket or container), pages fetched with the client's credentials and
retries. Plain ``http(s)://`` has no listing.
"""

from __future__ import annotations

import errno
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, unquote_plus

from yarl import URL

from ..._url import HttpOptions, redact
from .._sign import Auth
from ._client import HttpClient
from ._protocol import HttpError

__all__ = ["Page", "list_keys", "next_token"]

Page = tuple[list[str], list[str]]
"""One page: object names, and common prefixes (each ending with the delimiter)."""

Pages = Callable[[HttpClient, str, str | None], AsyncIterator[Page]]
"""``pages(client, prefix, delimiter)``: a service's listing of ``client``'s bucket (file 0
of the client is a placeholder object of that bucket; its URL's origin and credentials are
the listing's)."""

_PLACEHOLDER = "lsio-list-placeholder"
"""The object name a listing client is made for (never requested)."""


def _split_root(root: str) -> tuple[str, str]:
    """``scheme://bucket/some/path`` -> (``scheme://bucket``, ``some/path/`` or ``""``)."""
    scheme, rest = root.split("://", 1)
    bucket, _, path = rest.partition("/")
    path = path.strip("/")
    return f"{scheme}://{bucket}", f"{path}/" if path else ""


def _service(kind: str) -> Pages:
    if kind == "s3":
        return s3_pages
    if kind == "gs":
        from .._gcs import gcs_pages

        return gcs_pages
    from .._azure import azure_pages

    return azure_pages


async def list_keys(root: str, prefix: str, options: HttpOptions,
                    auths: dict[tuple[str, str], Auth | None], *,
                    delimiter: str | None = None) -> AsyncIterator[str]:
    """Keys under ``root`` starting with ``prefix``, relative to ``root``; with a
    ``delimiter``, what is below the next delimiter comes as one prefix ending with it."""
    bucket, base = _split_root(root)
    client = HttpClient([f"{bucket}/{_PLACEHOLDER}"], options, auths)
    await client.start()
    pages = _service(client.targets[0].kind)
    try:
        async for keys, prefixes in pages(client, base + prefix, delimiter):
            for name in keys:
                yield name[len(base):]
            for name in prefixes:
                yield name[len(base):]
    except HttpError as exc:  # a missing bucket, a refused listing: an OSError naming root
        raise OSError(exc.errno, f"{os.strerror(exc.errno)}: {redact(exc.detail)}",
                      root) from None


def _bucket_url(client: HttpClient) -> str:
    """The listing client's placeholder object URL without the object name (ends in ``/``)."""
    url = str(client.urls[0])
    at = url.rindex(_PLACEHOLDER)
    return url[:at]


def next_token(token: str | None, seen: set[str], url: str) -> str | None:
    """The next page's ``token``, refused if a page gave it before (a server repeating its
    token would be listed forever)."""
    if token is not None:
        if token in seen:
            raise HttpError(errno.EIO, f"{url}: the listing gave page token {token!r} "
                            "twice; stopped")
        seen.add(token)
    return token


async def s3_pages(client: HttpClient, prefix: str, delimiter: str | None
                   ) -> AsyncIterator[Page]:
    """S3 ListObjectsV2, 1000 keys a page."""
    base = _bucket_url(client)
    token: str | None = None
    seen: set[str] = set()
    while True:
        # keys come percent-encoded: XML 1.0 cannot carry every character a key may hold
        query = f"list-type=2&encoding-type=url&prefix={quote(prefix, safe='')}"
        if delimiter:
            query += f"&delimiter={quote(delimiter, safe='')}"
        if token is not None:
            query += f"&continuation-token={quote(token, safe='')}"
        url = URL(f"{base}?{query}", encoded=True)
        body = await client.document(0, url)
        keys, prefixes, token = parse_s3_page(bytes(body), str(url))
        yield keys, prefixes
        if next_token(token, seen, str(url)) is None:
            return


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_s3_page(body: bytes, url: str) -> tuple[list[str], list[str], str | None]:
    """A ListObjectsV2 answer: (keys, common prefixes, next continuation token or None)."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown encoding
        raise HttpError(errno.EIO, f"{url}: listing is not XML: {exc}") from None
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
            for c in child:
                if _local(c.tag) == "Key" and c.text is not None:
                    keys.append(name(c.text))
        elif tag == "CommonPrefixes":
            for c in child:
                if _local(c.tag) == "Prefix" and c.text is not None:
                    prefixes.append(name(c.text))
        elif tag == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif tag == "NextContinuationToken":
            token = child.text
    if truncated and not token:
        raise HttpError(errno.EIO, f"{url}: listing is truncated but gives no "
                        "NextContinuationToken")
    return keys, prefixes, token if truncated else None


