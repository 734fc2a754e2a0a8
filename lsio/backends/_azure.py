"""Azure Blob Storage: credentials found the usual way, and List Blobs.

Credentials, first found wins (as azure-storage-blob's users and object_store expect them):

1. an account key (``$AZURE_STORAGE_ACCOUNT_KEY`` / ``$AZURE_STORAGE_KEY``, the connection
   string's ``AccountKey``, or Azurite's with ``UseDevelopmentStorage=true``): every request
   is signed with Shared Key (:mod:`lsio.backends._sharedkey`, standard library only);
2. a SAS token (``$AZURE_STORAGE_SAS_TOKEN`` or the connection string's
   ``SharedAccessSignature``): it is in each URL's query (:func:`lsio._url.resolve`), listing
   URLs too; nothing else is sent;
3. Microsoft Entra ID tokens from azure-identity's ``DefaultAzureCredential`` (``pip install
   'lsio[azure]'``): a service principal from the environment, workload identity, managed
   identity, the Azure CLI... The token is cached and fetched again when it expires within
   :data:`REFRESH_BEFORE` seconds;
4. none: anonymous requests (public containers). ``HttpOptions(anonymous=False)`` raises
   instead, naming what to install or set.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from yarl import URL

from .._url import HttpOptions, Target, azure_config
from ._sharedkey import SharedKey

if TYPE_CHECKING:
    from ._sign import Auth
    from .http._client import HttpClient
    from .http._list import Page

__all__ = ["EntraToken", "azure_pages", "find_azure_auth", "parse_azure_page"]

SCOPE = "https://storage.azure.com/.default"
"""The OAuth scope of Azure Storage's data plane."""

REFRESH_BEFORE = 300.0
"""Seconds before its expiry a token is replaced (Azure's SDKs refresh 5 minutes early)."""

PAGE_SIZE: int | None = None
"""``maxresults`` of each List Blobs request; ``None``: the service's (and its cap): 5000."""


class EntraToken:
    """A bearer token from an azure-identity credential, cached until it nearly expires.

    The credential is azure-identity's synchronous one, called in a worker thread: a token is
    fetched about once an hour, and a synchronous credential is bound to no event loop (lsio
    runs its sync API on a private loop, and a reader may be used from several loops; the
    ``aio`` credentials keep an aiohttp session tied to the loop that made it, which must be
    closed on that loop). A ``threading.Lock`` (not an asyncio one, for the same reason)
    makes concurrent ``ready()`` calls wait for one fetch."""

    def __init__(self, credential: Any, required: bool) -> None:
        self._credential = credential
        self._required = required
        """``anonymous=False``: a failed token fetch raises instead of going anonymous."""
        self._token: str | None = None
        self._expires = 0.0
        self._gave_up = False
        self._lock = threading.Lock()
        self.fetches = 0
        """Tokens fetched (the tests check the cache)."""

    def _fresh(self) -> bool:
        return self._gave_up or (self._token is not None
                                 and self._expires - time.time() > REFRESH_BEFORE)

    async def ready(self) -> None:
        if not self._fresh():
            await asyncio.to_thread(self._refresh)

    def _refresh(self) -> None:
        with self._lock:
            if self._fresh():  # another caller fetched it while this one waited
                return
            try:
                token = self._credential.get_token(SCOPE)
            except Exception as exc:  # azure.core's ClientAuthenticationError and friends
                if self._required:
                    raise PermissionError(
                        errno.EACCES, "lsio: HttpOptions(anonymous=False) but no Azure "
                        f"credentials were found (account key, SAS, or Entra ID: {exc})"
                        ) from None
                self._gave_up = True  # no identity here: public containers still work
                return
            self.fetches += 1
            self._token, self._expires = token.token, float(token.expires_on)

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        del method, url
        if self._token is None or self._gave_up:
            return headers
        return {**headers, "Authorization": f"Bearer {self._token}"}


def default_credential() -> Any:
    """azure-identity's ``DefaultAzureCredential`` (raises ImportError without it); the
    interactive browser flow stays off, as in its default."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def find_azure_auth(target: Target, options: HttpOptions) -> Auth | None:
    """The credentials of ``target``'s account, in the order of this module's docstring."""
    if options.anonymous:
        return None
    az = azure_config(options)
    if az.key:
        # https://ACCOUNT.blob.core.windows.net (abfs:// URLs name it there too); a custom
        # endpoint's account is configured or ends its path
        account = az.account if az.endpoint else (URL(target.url).host or "").split(".")[0]
        return SharedKey(account, az.key)
    if az.sas:
        return None  # the SAS is in every URL
    try:
        credential = default_credential()
    except ImportError:
        if options.anonymous is False:
            raise ImportError("lsio: no Azure account key or SAS found, and Entra ID tokens "
                              "need azure-identity: pip install 'lsio[azure]'") from None
        return None
    return EntraToken(credential, required=options.anonymous is False)


# -- List Blobs --------------------------------------------------------------------------------

async def azure_pages(client: HttpClient, prefix: str, delimiter: str | None
                      ) -> AsyncIterator[Page]:
    """Azure List Blobs of the client's container, page after page (``NextMarker``)."""
    from .http._list import _bucket_url

    container = _bucket_url(client).rstrip("/")
    sas = client.urls[0].raw_query_string  # a SAS authorises listing URLs too
    marker: str | None = None
    while True:
        query = f"restype=container&comp=list&prefix={quote(prefix, safe='')}"
        if delimiter:
            query += f"&delimiter={quote(delimiter, safe='')}"
        if PAGE_SIZE is not None:
            query += f"&maxresults={PAGE_SIZE}"
        if marker is not None:
            query += f"&marker={quote(marker, safe='')}"
        if sas:
            query += f"&{sas}"
        url = URL(f"{container}?{query}", encoded=True)
        body = await client.document(0, url)
        names, prefixes, marker = parse_azure_page(bytes(body), container)
        yield names, prefixes
        if marker is None:
            return


def _name(elem: ET.Element) -> str | None:
    """A ``Name`` element's text; names with characters XML cannot carry come
    percent-encoded (``Encoded="true"``, version 2019-12-12 and later)."""
    for c in elem:
        if c.tag == "Name":
            text = c.text or ""
            return unquote(text) if c.get("Encoded", "").lower() == "true" else text
    return None


def parse_azure_page(body: bytes, url: str) -> tuple[list[str], list[str], str | None]:
    """A List Blobs answer: (blob names, prefixes, the next page's marker or None)."""
    from .http._protocol import HttpError

    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise HttpError(errno.EIO, f"{url}: listing is not XML: {exc}") from None
    names: list[str] = []
    prefixes: list[str] = []
    for group in root.iter("Blobs"):
        for item in group:
            name = _name(item)
            if name is None:
                continue
            if item.tag == "Blob":
                names.append(name)
            elif item.tag == "BlobPrefix":
                prefixes.append(name)
    marker = root.findtext("NextMarker") or None
    return names, prefixes, marker
