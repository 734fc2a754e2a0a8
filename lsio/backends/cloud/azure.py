"""Azure Blob Storage: URL rules, credentials found the usual way, and List Blobs.

``az://container/blob`` (or ``abfs://container@ACCOUNT.dfs.core.windows.net/blob``) is read
from ``https://ACCOUNT.blob.core.windows.net/container/blob`` (or ``ENDPOINT/container/blob``:
Azurite, Azure Stack, private endpoints); a SAS token joins the URL's query when no account
key is found (:func:`azure_config`), other credentials are headers.

Credentials, first found wins (as azure-storage-blob's users and object_store expect them):

0. ``HttpOptions(azure_credential=...)``: the user's own azure-identity credential;
1. an account key (``$AZURE_STORAGE_ACCOUNT_KEY`` / ``$AZURE_STORAGE_KEY``, the connection
   string's ``AccountKey``, or Azurite's with ``UseDevelopmentStorage=true``): every request
   is signed with Shared Key (:mod:`._sharedkey`, standard library only);
2. a SAS token (``$AZURE_STORAGE_SAS_TOKEN`` or the connection string's
   ``SharedAccessSignature``): it is in each URL's query (:func:`resolve`), listing
   URLs too; nothing else is sent;
3. Microsoft Entra ID tokens from azure-identity's ``DefaultAzureCredential`` (``pip install
   'lsio[azure]'``): a service principal from the environment, workload identity, managed
   identity, the Azure CLI... The token is cached and fetched again when it expires within
   ``lsio._defaults.AZURE_REFRESH_BEFORE`` seconds;
4. none: anonymous requests (public containers). ``HttpOptions(anonymous=False)`` raises
   instead, naming what to install or set.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from yarl import URL

from ... import _fork
from ..._defaults import AZURE_REFRESH_BEFORE, TOKEN_RETRY_AFTER
from ..._url import HttpOptions, Target
from ..http._protocol import HttpError, Retry
from ._listing import query, xml_root
from ._sharedkey import SharedKey
from ._types import Auth, Page, first_env, quote_key, split_bucket

KIND = "az"

API_VERSION = "2021-08-06"
"""``x-ms-version`` sent to Azure Blob storage (ranges need 2011-08-18 or later)."""

HEADERS = {"x-ms-version": API_VERSION}

PAGE_SIZE: int | None = None
"""``maxresults`` of each List Blobs request; ``None``: the service's (and its cap): 5000."""

SCOPE = "https://storage.azure.com/.default"
"""The OAuth scope of Azure Storage's data plane."""


class EntraToken:
    """A bearer token from an azure-identity credential, cached until it nearly expires.

    The credential is azure-identity's synchronous one, called in a worker thread: a token is
    fetched about once an hour, and a synchronous credential is bound to no event loop (lsio
    runs its sync API on a private loop, and a reader may be used from several loops; the
    ``aio`` credentials keep an aiohttp session tied to the loop that made it, which must be
    closed on that loop). A ``threading.Lock`` (not an asyncio one, for the same reason)
    makes concurrent ``ready()`` calls wait for one fetch."""

    BEARER = True
    """Its headers are the same for every request (a token): the C transport sends them as
    they are, one block per object."""

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
        margin = min(AZURE_REFRESH_BEFORE, (self._expires - self._fetched) / 2)
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
        """A token fetch failed: an unexpired token is kept (tried again later); the very
        first fetch finding no identity at all means anonymous access (public containers),
        or an error with ``anonymous=False``; anything else may pass and is retried like a
        failed read, never turned into anonymous requests."""
        now = time.time()
        if self._token is not None and self._expires > now:
            self._retry_at = now + TOKEN_RETRY_AFTER
            return
        unavailable = type(exc).__name__ == "CredentialUnavailableError"
        if self._token is None and unavailable and not self._required:
            self._gave_up = True  # no identity here: public containers still work
            return
        if self._required or unavailable:
            raise PermissionError(
                errno.EACCES, "lsio: no Azure credentials could be used (account key, SAS, "
                f"or Entra ID: {exc})") from None
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


def auth_key(target: Target) -> str:
    """One set of credentials per account (the URL's host)."""
    return target.url.split("://", 1)[1].split("/", 1)[0]


def request_headers(options: HttpOptions) -> Mapping[str, str]:
    """Headers every request to the service carries."""
    return HEADERS


def find_auth(target: Target, options: HttpOptions) -> Auth | None:
    return find_azure_auth(target, options)


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

def list_url(home: URL, prefix: str, delimiter: str | None, token: str | None) -> URL:
    """A List Blobs page of the container of ``home`` (its placeholder blob,
    ``CONTAINER_URL/placeholder``), from the ``marker`` ``token`` on."""
    container = str(home.with_query(None)).rsplit("/", 1)[0]
    sas = home.raw_query_string  # a SAS authorises listing URLs too
    q = query(("restype", "container"), ("comp", "list"), ("prefix", prefix),
              ("delimiter", delimiter or None), ("maxresults", PAGE_SIZE), ("marker", token))
    return URL(f"{container}?{q}&{sas}" if sas else f"{container}?{q}", encoded=True)


def _name(elem: ET.Element) -> str | None:
    """A ``Name`` element's text; names with characters XML cannot carry come
    percent-encoded (``Encoded="true"``, version 2019-12-12 and later)."""
    for c in elem:
        if c.tag == "Name":
            text = c.text or ""
            return unquote(text) if c.get("Encoded", "").lower() == "true" else text
    return None


def parse_page(body: bytes, url: str) -> Page:
    """A List Blobs answer: (blob names, prefixes, the next page's marker or None)."""
    root = xml_root(body, url)
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

# -- URL rules ---------------------------------------------------------------------------------

def config(options: HttpOptions, block: bool) -> AzureConfig:
    """The configured account's :func:`azure_config`, once per call (six variables)."""
    del block
    return azure_config(options)


def resolve(path: str, options: HttpOptions, config: AzureConfig | None) -> Target:
    container, blob = split_bucket(path, "az://container/blob")
    host_account = None
    if "@" in container:  # abfs://container@account.dfs.core.windows.net/blob
        container, host = container.split("@", 1)
        host_account = host.split(".", 1)[0]
    az = config if config is not None and host_account is None else azure_config(
        options, host_account)
    if az.endpoint:
        url = f"{az.endpoint}/{container}/{quote_key(blob)}"
    elif az.account:
        url = f"https://{az.account}.blob.core.windows.net/{container}/{quote_key(blob)}"
    else:
        raise ValueError(f"lsio: {path!r}: no Azure storage account; set "
                         "HttpOptions(azure_account=...) or $AZURE_STORAGE_ACCOUNT_NAME")
    if az.sas and not az.key:
        url += "?" + az.sas
    return Target(url, "az")


def https_target(path: str, options: HttpOptions) -> Target | None:
    """``https://ACCOUNT.blob.core.windows.net/...`` (no SAS in it) as an Azure target when
    credentials for ACCOUNT are configured (``azure_credential``, or that account's key or
    SAS from the options or the environment); ``None``: a plain HTTPS URL, as an anonymous
    public blob is read. azure-identity's discovery is never tried for such a URL."""
    if options.anonymous:
        return None
    account = path.split("://", 1)[1].split("/", 1)[0].split(".", 1)[0]
    az = azure_config(options, account)
    if options.azure_credential is None and not az.key and not az.sas:
        return None
    if az.sas and not az.key:
        return Target(path + ("&" if "?" in path else "?") + az.sas, "az")
    return Target(path, "az")


# -- Azure: where the account, endpoint and secrets come from ---------------------------------

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
"""The storage emulator's fixed, published account and key (``UseDevelopmentStorage=true``)."""
AZURITE_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"


@dataclass(frozen=True, slots=True)
class AzureConfig:
    """One ``az://`` location's account, endpoint and secrets, as found the usual way."""

    account: str
    """Storage account name (``""``: unknown)."""
    endpoint: str
    """Blob endpoint without a trailing ``/`` (``""``: ``https://ACCOUNT.blob.core...``)."""
    key: str = field(repr=False)
    """Account key (base64) for Shared Key signing (``""``: none)."""
    sas: str = field(repr=False)
    """SAS token without its ``?`` (``""``: none)."""


def azure_connection_string() -> dict[str, str]:
    """The fields of ``$AZURE_STORAGE_CONNECTION_STRING`` (``Name=value;...``), names in
    lower case (Azure's SDKs read them case-insensitively); empty when unset."""
    fields = {}
    for part in (os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or "").split(";"):
        name, eq, value = part.partition("=")  # values (keys, SAS) may contain '='
        if eq and name.strip():
            fields[name.strip().lower()] = value.strip()
    return fields


def azure_config(options: HttpOptions, host_account: str | None = None) -> AzureConfig:
    """Account, endpoint, key and SAS for ``az://``: :class:`HttpOptions` fields first, then
    ``$AZURE_STORAGE_ACCOUNT_NAME`` / ``$AZURE_STORAGE_ACCOUNT_KEY`` (or ``_KEY``) /
    ``$AZURE_STORAGE_SAS_TOKEN``, then ``$AZURE_STORAGE_CONNECTION_STRING``. ``host_account``
    is the account an ``abfs://container@ACCOUNT.dfs...`` URL names (it wins). With
    ``anonymous=True`` or an ``azure_credential`` no key or SAS is returned."""
    conn = azure_connection_string()
    dev = conn.get("usedevelopmentstorage", "").lower() == "true"
    endpoint = (options.azure_endpoint or conn.get("blobendpoint")
                or (AZURITE_ENDPOINT if dev else "")).rstrip("/")
    configured = (options.azure_account
                  or first_env("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT")
                  or conn.get("accountname") or (AZURITE_ACCOUNT if dev else ""))
    account = host_account or configured
    if not account and endpoint:
        # path-style endpoints end with the account (Azurite's); host-style ones start with
        # it (https://ACCOUNT.blob.core.windows.net, private links, Azure Stack)
        host, _, base = endpoint.split("://", 1)[-1].partition("/")
        account = base.rsplit("/", 1)[-1] if base else host.split(".", 1)[0]
    if options.anonymous or options.azure_credential is not None:
        return AzureConfig(account, endpoint, "", "")  # no secret, or the user's credential
    if host_account and configured and host_account.lower() != configured.lower():
        # a URL naming another account than the one configured (a path from a reference
        # file, say) gets none of the configured account's secrets
        return AzureConfig(account, endpoint, "", "")
    key = (first_env("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY") or conn.get("accountkey")
           or (AZURITE_KEY if dev else ""))
    sas = first_env("AZURE_STORAGE_SAS_TOKEN") or conn.get("sharedaccesssignature") or ""
    return AzureConfig(account, endpoint, key, sas.lstrip("?"))
