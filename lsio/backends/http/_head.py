"""An object's metadata without its data (obspec's ``head``): one GET of its first byte.

A ``Range: bytes=0-0`` GET is signed and answered like every other read (a ``HEAD`` would
need its own signature and is refused by some presigned URLs), and its answer carries what
a ``HEAD`` would: the size (the total of ``Content-Range``; 0 for the 416 of an empty
object, whose first byte does not exist; ``Content-Length`` when the server ignores
``Range``), the validators and the object's attributes.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass

from ._client import HttpClient
from ._protocol import HttpError, status_error
from ._version import validators

__all__ = ["Head", "head"]

ATTRIBUTES = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language",
              "Cache-Control")
"""The answer's headers that are the object's attributes (obspec's ``Attributes``)."""

VERSION_HEADERS = ("x-amz-version-id", "x-goog-generation", "x-ms-version-id")
"""Where S3, GCS and Azure tell the version of the object that answered."""


@dataclass(frozen=True, slots=True)
class Head:
    """What an answer tells about its object."""

    size: int
    """The object's size in bytes."""
    etag: str | None
    """The ``ETag`` header as sent (quotes and ``W/`` kept), ``None`` if none."""
    last_modified: str | None
    """The ``Last-Modified`` header as sent (an HTTP date), ``None`` if none."""
    version: str | None
    """The object's version (S3 version id, GCS generation, Azure version id), if told."""
    attributes: Mapping[str, str]
    """The answer's :data:`ATTRIBUTES` that it has."""


async def head(client: HttpClient, file: int) -> Head:
    """The metadata of ``client``'s object ``file``, retried like a read; a status that is
    not an answer raises ``HttpError`` (404: ``ENOENT``)."""
    url = client.urls[file]

    async def step() -> Head:
        resp = await client._open(file, "bytes=0-0")
        try:
            if resp.status not in (200, 206, 416):
                raise status_error(resp.status, resp.reason, str(url), resp.headers)
            told = validators(resp.status, resp.headers)
            size = told.size
            if size is None and resp.status == 416:  # bytes=0-0 unsatisfiable: no byte 0
                size = 0  # (moto sends no Content-Range; the read path reads b"" here too)
            if size is None:
                raise HttpError(errno.EIO, f"{url} did not tell the object's size "
                                f"(HTTP {resp.status})")
            version = next((resp.headers[h] for h in VERSION_HEADERS if h in resp.headers),
                           None)
            attributes = {h: resp.headers[h] for h in ATTRIBUTES if h in resp.headers}
            return Head(size, told.etag, told.last_modified, version, attributes)
        finally:
            resp.release()

    return await client.retrying(step, client._gave_up(url))
