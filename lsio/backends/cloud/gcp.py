"""Google Cloud Storage: URL rules, credentials (a bearer token), listing (the JSON API).

``gs://bucket/object`` (or ``gcs://``) is read from the JSON API's media URL,
``https://storage.googleapis.com/download/storage/v1/b/bucket/o/object?alt=media`` (or on
:attr:`HttpOptions.gcs_endpoint` / ``$STORAGE_EMULATOR_HOST``).

Theory of operation
-------------------
Credentials are google-auth's *application default credentials* (``lsio[gcs]``), looked up
the way every Google client library does: ``$GOOGLE_APPLICATION_CREDENTIALS`` (a service
account key, an authorized-user file, workload identity federation, impersonation...), the
gcloud ADC file (``gcloud auth application-default login``), then the metadata server of GCE,
GKE and Cloud Run. google-auth is maintained by Google and follows every variant of these; a
stdlib version would still have to sign RS256 JWTs (so need ``cryptography``).

google-auth's I/O blocks, and a bare ``google.auth.default()`` off Google Cloud may wait
seconds for a metadata server that is not there. So:

- :func:`find_gcs_auth` runs on the event loop, once per backend: it only looks at
  environment variables and whether one file exists (microseconds) to decide if credentials
  may be there; it loads nothing and asks no server.
- :class:`GcsAuth` loads the credentials and refreshes the token in a worker thread, the
  first time a request needs it and again when the token expires within
  ``lsio._defaults.GCS_REFRESH_MARGIN``; one refresh at a time (a thread lock, and per
  event loop an asyncio lock so waiting requests do not each take a thread). Between refreshes
  :meth:`GcsAuth.ready` is one clock comparison.

With ``$STORAGE_EMULATOR_HOST`` set, no credentials are looked up (as google-cloud-storage
does), unless ``HttpOptions(anonymous=False)``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import math
import os
import time
import warnings
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.util import find_spec
from typing import Any, Literal
from urllib.parse import quote

from yarl import URL

from ... import _fork
from ..._defaults import GCS_PAGE_SIZE, GCS_REFRESH_MARGIN, TOKEN_RETRY_AFTER
from ..._url import HttpOptions, Target
from ..http._protocol import HttpError, Retry
from ._listing import query
from ._types import Page, first_env, split_bucket

KIND = "gs"
HEADERS: dict[str, str] = {}

OBJECTS = "/download/storage/v1/b/{}/o/"
"""Path of a bucket's objects for media downloads (JSON API), after the endpoint."""

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_only",)
"""OAuth scope asked for (lsio only reads); credentials that carry their own scopes (user
credentials, the metadata server's) keep theirs."""

_LIST_FIELDS = "items(name),prefixes,nextPageToken"
"""Ask only for what is used (a full object resource is ~1 kB of JSON)."""

Source = Literal["adc", "metadata", "any"]
"""Where :class:`GcsAuth` loads credentials from: an ADC file, the metadata server, or
wherever ``google.auth.default()`` finds them (it may wait seconds for a metadata server off
Google Cloud: only when credentials are required and no quick check found any)."""


# -- URL rules -----------------------------------------------------------------------------

def endpoint(options: HttpOptions) -> str:
    """Where ``gs://`` is read: :attr:`HttpOptions.gcs_endpoint`, ``$STORAGE_EMULATOR_HOST``,
    else Google's; no trailing ``/``."""
    found = (options.gcs_endpoint or first_env("STORAGE_EMULATOR_HOST")
             or "https://storage.googleapis.com")
    if "://" not in found:  # host:port, as emulators' instructions write it
        found = "http://" + found
    return found.rstrip("/")


def config(options: HttpOptions, block: bool) -> str:
    """The call's endpoint (reading it never blocks)."""
    del block
    return endpoint(options)


def resolve(path: str, options: HttpOptions, config: str | None) -> Target:
    bucket, key = split_bucket(path, "gs://bucket/object")
    # the JSON API's media download (ranges work; the object name is one path segment)
    return Target(f"{config or endpoint(options)}{OBJECTS.format(quote(bucket, safe=''))}"
                  f"{quote(key, safe='~')}?alt=media", "gs")


# -- finding credentials -----------------------------------------------------------------

def auth_key(target: Target) -> str:
    """One set of credentials for all of GCS."""
    del target
    return ""


def request_headers(options: HttpOptions) -> Mapping[str, str]:
    """Headers every request to the service carries."""
    return HEADERS


def find_auth(target: Target, options: HttpOptions) -> GcsAuth | None:
    del target
    return find_gcs_auth(options)


def _env(name: str) -> str:
    return os.environ.get(name, "")


def _adc_file() -> str | None:
    """The credentials file ``google.auth.default()`` would use, if any (no network):
    ``$GOOGLE_APPLICATION_CREDENTIALS`` (when set, used: a missing file is an error that
    google-auth reports by name), else gcloud's ADC file if it exists."""
    explicit = _env("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return explicit
    config = _env("CLOUDSDK_CONFIG") or (
        os.path.join(_env("APPDATA"), "gcloud") if os.name == "nt"
        else os.path.expanduser("~/.config/gcloud"))
    path = os.path.join(config, "application_default_credentials.json")
    return path if os.path.isfile(path) else None


def _metadata_server_likely() -> bool:
    """Whether a metadata server should answer: pointed at by google-auth's variables, or
    running on Google Cloud (the DMI product name google-auth checks too; Cloud Run and
    Cloud Functions set their own variables)."""
    if any(_env(v) for v in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP")):
        return True
    if _env("NO_GCE_CHECK").lower() == "true":  # google-auth's opt-out
        return False
    if any(_env(v) for v in ("K_SERVICE", "CLOUD_RUN_JOB", "FUNCTION_TARGET")):
        return True
    try:
        with open("/sys/class/dmi/id/product_name") as f:
            return f.read().startswith("Google")
    except OSError:
        return False


def find_gcs_auth(options: HttpOptions) -> GcsAuth | None:
    """GCS credentials if they may exist (``anonymous=None``) or are required (``False``);
    ``None``: anonymous requests (public buckets). An ``Authorization`` header in
    ``options.headers`` wins: nothing is looked up."""
    if options.anonymous or any(k.lower() == "authorization" for k in options.headers):
        return None
    required = options.anonymous is False
    if not required and options.gcs_endpoint is None and _env("STORAGE_EMULATOR_HOST"):
        return None  # an emulator, as google-cloud-storage reads the variable
    if find_spec("google.auth") is None or find_spec("requests") is None:
        if required:
            raise ImportError("lsio: GCS credentials need google-auth: pip install 'lsio[gcs]'")
        return None  # public buckets still work
    path = _adc_file()
    if path is not None:
        return GcsAuth("adc", path, timeout=options.request_timeout)
    if _metadata_server_likely():
        return GcsAuth("metadata", timeout=options.request_timeout)
    return GcsAuth("any", timeout=options.request_timeout) if required else None


# -- the token ---------------------------------------------------------------------------

def _timestamp(expiry: datetime) -> float:
    if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
        expiry = expiry.replace(tzinfo=UTC)
    return expiry.timestamp()


def fresh_until(now: float, expires: float | None) -> float:
    """Until when a token fetched at ``now`` (epoch seconds) and expiring at ``expires``
    (``None``: never) needs no refresh: ``GCS_REFRESH_MARGIN`` before it expires, or after
    half its life if it lives less than twice the margin (else a short-lived token, such as
    a metadata server's nearly expired one, would be fetched again for every request)."""
    if expires is None:
        return math.inf
    return expires - min(GCS_REFRESH_MARGIN, (expires - now) / 2)


class GcsAuth:
    """A bearer token from google-auth's credentials, refreshed before it expires."""

    BEARER = True
    """Its headers are the same for every request (a token): the C transport sends them as
    they are, one block per object."""

    def __init__(self, source: Source, path: str | None = None, *,
                 timeout: float = 30.0) -> None:
        self.source = source
        self.path = path
        self.timeout = timeout
        """Deadline of one token request (``HttpOptions.request_timeout``; google-auth's
        own is 120 s)."""
        self._expires = -math.inf
        """The credentials file (``source="adc"``)."""
        self._credentials: Any = None
        self._request: Any = None
        self._token: str | None = None
        self._quota_project: str | None = None
        self._fresh_until = -math.inf
        """``time.time()`` until which the token needs no refresh."""
        self._thread_lock = _fork.lock()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())

    async def ready(self) -> None:
        """Refresh the token (in a worker thread) if it expires within the margin."""
        if time.time() < self._fresh_until:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            if time.time() < self._fresh_until:  # refreshed while this request waited
                return
            await loop.run_in_executor(None, self._refresh)

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
            if self._quota_project:
                headers["x-goog-user-project"] = self._quota_project
        return headers

    def _refresh(self) -> None:
        """Load the credentials if not yet done, and fetch a token (blocking)."""
        with self._thread_lock:
            if time.time() < self._fresh_until:  # another loop's thread just did
                return
            from google.auth import exceptions

            try:
                if self._credentials is None:
                    self._credentials = self._load()
                    from google.auth.transport.requests import Request

                    self._request = functools.partial(Request(), timeout=self.timeout)
                self._credentials.refresh(self._request)
            except exceptions.DefaultCredentialsError as exc:
                hint = (" (HttpOptions(anonymous=False) asks for credentials)"
                        if self.source == "any" else "")
                raise HttpError(errno.EACCES, f"lsio: no usable GCS credentials{hint}: "
                                f"{exc}") from None
            except exceptions.TransportError as exc:  # the token server could not be reached
                if self._keep_token():
                    return
                raise Retry(HttpError(errno.EIO, f"lsio: GCS token request failed: {exc}")
                            ) from None
            except exceptions.RefreshError as exc:
                final = HttpError(errno.EACCES, f"lsio: GCS token refresh refused: {exc}")
                if getattr(exc, "retryable", False):
                    if self._keep_token():
                        return
                    raise Retry(final) from None
                raise final from None
            creds = self._credentials
            now = time.time()
            self._token = creds.token
            self._quota_project = getattr(creds, "quota_project_id", None)
            self._expires = math.inf if creds.expiry is None else _timestamp(creds.expiry)
            self._fresh_until = fresh_until(
                now, None if creds.expiry is None else _timestamp(creds.expiry))

    def _keep_token(self) -> bool:
        """After a refresh that failed for a reason that may pass: keep a token that has not
        expired yet (tried again in ``TOKEN_RETRY_AFTER`` s) rather than fail the reads."""
        now = time.time()
        if self._token is None or self._expires <= now + 1.0:
            return False
        self._fresh_until = min(now + TOKEN_RETRY_AFTER, self._expires - 1.0)
        return True

    def _load(self) -> Any:
        if self.source == "metadata":  # not google.auth.default(): it pings the default IP
            from google.auth import compute_engine

            return compute_engine.Credentials()  # type: ignore[no-untyped-call]
        import google.auth
        from google.auth.credentials import with_scopes_if_required

        if self.source == "adc" and self.path is not None:
            # the file google.auth.default() would load, without what default() does after:
            # finding a project id (lsio needs none) runs `gcloud config get project` for
            # gcloud's file (~1.5 s) or asks an STS server for federated identities. The
            # function warns that loading an untrusted file is risky; default() silences
            # that for ADC files, which the user set up, and so does this
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                load = google.auth.load_credentials_from_file
                credentials, _project = load(self.path)  # type: ignore[no-untyped-call]
        else:
            credentials, _project = google.auth.default()
        # as default() does: scopes for service accounts, none forced on user credentials
        scoped = with_scopes_if_required(credentials, list(SCOPES))  # type: ignore[no-untyped-call]
        return scoped


# -- listing -------------------------------------------------------------------------------

def list_url(home: URL, prefix: str, delimiter: str | None, token: str | None) -> URL:
    """A page of the JSON API's object listing (``GET /storage/v1/b/BUCKET/o``) of the
    bucket of ``home`` (``ENDPOINT/download/storage/v1/b/BUCKET/o/PLACEHOLDER?alt=media``)."""
    url = str(home)
    head = OBJECTS.split("{}")[0]
    at = url.rindex(head)
    bucket = url[at + len(head):].split("/", 1)[0]  # percent-encoded already
    q = query(("prefix", prefix), ("maxResults", GCS_PAGE_SIZE), ("fields", _LIST_FIELDS),
              ("delimiter", delimiter or None), ("pageToken", token))
    return URL(f"{url[:at]}/storage/v1/b/{bucket}/o?{q}", encoded=True)


def parse_page(body: bytes, url: str) -> Page:
    """A JSON API listing page: (object names, prefixes, next page token or None)."""
    try:
        page = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: deep nesting
        raise HttpError(errno.EIO, f"{url}: listing is not JSON: {exc}") from None
    if not isinstance(page, dict):
        raise HttpError(errno.EIO, f"{url}: listing is not a JSON object")
    items = page.get("items", [])
    prefixes = page.get("prefixes", [])
    token = page.get("nextPageToken") or None
    if not (isinstance(items, list) and all(isinstance(i, dict) and isinstance(i.get("name"),
                                                                               str)
                                            for i in items)
            and isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes)
            and (token is None or isinstance(token, str))):
        raise HttpError(errno.EIO, f"{url}: listing has unexpected fields: {body[:200]!r}")
    return [i["name"] for i in items], prefixes, token
