"""Google Cloud Storage credentials (placeholder: anonymous access, or a token the user put in
``HttpOptions.headers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .._url import HttpOptions

if TYPE_CHECKING:
    from ._sign import Auth
    from .http._client import HttpClient
    from .http._list import Page

__all__ = ["find_gcs_auth", "gcs_pages"]


def find_gcs_auth(options: HttpOptions) -> Auth | None:
    del options
    return None


async def gcs_pages(client: HttpClient, prefix: str, delimiter: str | None
                    ) -> AsyncIterator[Page]:
    """The GCS JSON API's object listing (not yet: the GCS issue work fills this in)."""
    raise NotImplementedError("lsio: listing gs:// roots is not implemented yet")
    yield [], []  # pragma: no cover
