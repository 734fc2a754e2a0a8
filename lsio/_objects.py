"""What lsio knows of an object without reading its data: its size, validators, version and
attributes (obspec's ``head``), for local files and URLs alike.

A local file is ``os.stat``-ed on a worker thread (a stat of a cold network filesystem can
take milliseconds: never on the loop); a URL is asked by the reader's HTTP backend, one GET
of its first byte (:mod:`lsio.backends.http._head`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from ._url import is_url, local_path

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["ObjectInfo", "object_info"]

EPOCH = datetime.fromtimestamp(0, UTC)
"""The modification time of an object whose server does not tell one."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's metadata."""

    size: int
    """Size in bytes."""
    last_modified: datetime
    """Last modification (UTC); :data:`EPOCH` when a server does not tell it."""
    etag: str | None
    """The ``ETag`` as the server sent it; for a local file, made of its inode, modification
    time and size (as obstore's local store does), so it changes when the file does."""
    version: str | None = None
    """The object's version, where the store tells it (S3, GCS, Azure)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """``Content-Type`` and the other attributes the server sent."""


async def object_info(reader: Reader, path: str) -> ObjectInfo:
    """The metadata of the file or object at ``path`` (a local path, ``file://`` or a URL):
    ``FileNotFoundError`` naming it if there is none (a directory is no object), other
    ``OSError`` s naming it for what went wrong."""
    if is_url(path):
        reader._open()
        head = await reader._http_backend().head(path)
        return ObjectInfo(head.size, _http_date(head.last_modified), head.etag, head.version,
                          head.attributes)
    st = await asyncio.to_thread(os.stat, local_path(path))
    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(errno.ENOENT, "not a file (a directory is no object)", path)
    return ObjectInfo(st.st_size, datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
                      f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")


def _http_date(value: str | None) -> datetime:
    """An HTTP date (``Last-Modified``) as a UTC datetime; :data:`EPOCH` if absent or not
    a date."""
    if value is None:
        return EPOCH
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return EPOCH
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
