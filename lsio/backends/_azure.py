"""Azure Blob Storage credentials (placeholder: anonymous access, or a SAS in the URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .._url import HttpOptions, Target

if TYPE_CHECKING:
    from ._sign import Auth
    from .http._client import HttpClient
    from .http._list import Page

__all__ = ["azure_pages", "find_azure_auth"]


def find_azure_auth(target: Target, options: HttpOptions) -> Auth | None:
    del target, options
    return None


async def azure_pages(client: HttpClient, prefix: str, delimiter: str | None
                      ) -> AsyncIterator[Page]:
    """Azure List Blobs (not yet: the Azure issue work fills this in)."""
    raise NotImplementedError("lsio: listing az:// roots is not implemented yet")
    yield [], []  # pragma: no cover
