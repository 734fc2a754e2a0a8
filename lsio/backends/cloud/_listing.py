"""What the providers' listings share: a page's query string and an XML page's root."""

from __future__ import annotations

import errno
import xml.etree.ElementTree as ET
from urllib.parse import quote

from ..http._protocol import HttpError

__all__ = ["query", "xml_root"]


def query(*params: tuple[str, str | int | None]) -> str:
    """``name=value&...`` of the ``params`` whose value is not ``None``, values
    percent-encoded, in the order given."""
    return "&".join(f"{name}={quote(str(value), safe='')}" for name, value in params
                    if value is not None)


def xml_root(body: bytes, url: str) -> ET.Element:
    """The root element of an XML listing page; ``HttpError`` (EIO) naming ``url`` if the
    body is not XML."""
    try:
        return ET.fromstring(body)
    except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown encoding
        raise HttpError(errno.EIO, f"{url}: listing is not XML: {exc}") from None
