"""Azure Blob Storage: credentials found the usual way, and List Blobs.

Credentials, first found wins (as azure-storage-blob's users and object_store expect them):

0. ``HttpOptions(azure_credential=...)``: the user's own azure-identity credential;
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
import inspect
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from yarl import URL

from .. import _fork
from .._url import HttpOptions, Target, azure_config
from ._sharedkey import SharedKey

if TYPE_CHECKING:
    from ._sign import Auth
    from .http._client import HttpClient
    from .http._list import Page

__all__ = ["azure_pages", "find_azure_auth"]

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
        self._fetched = 0.0
        self._gave_up = False
        self._retry_at = 0.0
        """After a failed refresh while the old token still holds: when to try again."""
        self._lock = _fork.lock()
        self.fetches = 0
        """Tokens fetched (the tests check the cache)."""

    def _fresh(self) -> bool:
        if self._gave_up:
            return True
        if self._token is None:
            return False
        now = time.time()
        # refresh REFRESH_BEFORE seconds early, or at half the life of a short-lived token
        margin = min(REFRESH_BEFORE, (self._expires - self._fetched) / 2)
        return self._expires - now > margin or (now < self._retry_at
                                                and self._expires > now)

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
                self._failed(exc)
                return
            self.fetches += 1
            self._token, self._expires = token.token, float(token.expires_on)
            self._fetched = time.time()

    def _failed(self, exc: Exception) -> None:
        """A token fetch failed: an unexpired token is kept (tried again in 30 s); the very
        first fetch finding no identity at all means anonymous access (public containers),
        or an error with ``anonymous=False``; anything else may pass and is retried like a
        failed read, never turned into anonymous requests."""
        now = time.time()
        if self._token is not None and self._expires > now:
            self._retry_at = now + 30.0
            return
        unavailable = type(exc).__name__ == "CredentialUnavailableError"
        if self._token is None and unavailable and not self._required:
            self._gave_up = True  # no identity here: public containers still work
            return
        if self._required or unavailable:
            raise PermissionError(
                errno.EACCES, "lsio: no Azure credentials could be used (account key, SAS, "
                f"or Entra ID: {exc})") from None
        from .http._protocol import HttpError, Retry

        raise Retry(HttpError(errno.EACCES, f"lsio: an Entra ID token could not be fetched: "
                              f"{exc}"))

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
    required = options.anonymous is False
    if options.azure_credential is not None:  # the user's own: it wins
        return EntraToken(_synchronous(options.azure_credential), required)
    # https://ACCOUNT.blob.core.windows.net (abfs:// URLs name it there too); a custom
    # endpoint's account is configured or read from the endpoint
    host_account = None if azure_config(options).endpoint else (
        URL(target.url).host or "").split(".")[0]
    az = azure_config(options, host_account)
    if az.key:  # only the configured account's own key (azure_config)
        return SharedKey(az.account, az.key)
    if az.sas:
        return None  # the SAS is in every URL
    try:
        credential = default_credential()
    except ImportError:
        if options.anonymous is False:
            raise ImportError("lsio: no Azure account key or SAS found, and Entra ID tokens "
                              "need azure-identity: pip install 'lsio[azure]'") from None
        return None
    return EntraToken(credential, required)


def _synchronous(credential: Any) -> Any:
    """``credential`` if its ``get_token`` is synchronous (it runs in a worker thread)."""
    if not callable(getattr(credential, "get_token", None)):
        raise TypeError(f"lsio: HttpOptions.azure_credential must have get_token(*scopes) "
                        f"(an azure-identity credential), got {credential!r}")
    if inspect.iscoroutinefunction(credential.get_token):
        raise TypeError("lsio: HttpOptions.azure_credential must be synchronous: pass "
                        "azure.identity's credential, not azure.identity.aio's (lsio fetches "
                        "tokens in a worker thread, bound to no event loop)")
    return credential


# -- List Blobs --------------------------------------------------------------------------------

async def azure_pages(client: HttpClient, prefix: str, delimiter: str | None
                      ) -> AsyncIterator[Page]:
    """Azure List Blobs of the client's container, page after page (``NextMarker``)."""
    from .http._list import next_token

    home = client.urls[0]  # the container's placeholder blob: CONTAINER_URL/placeholder
    container = str(home.with_query(None)).rsplit("/", 1)[0]
    sas = home.raw_query_string  # a SAS authorises listing URLs too
    marker: str | None = None
    markers: set[str] = set()
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
        if next_token(marker, markers, container) is None:
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
    except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown encoding
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
