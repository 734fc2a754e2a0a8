"""Azure Storage Shared Key signing, with the standard library only.

A request is authorised by ``Authorization: SharedKey ACCOUNT:SIGNATURE``, where the signature
is the base64 HMAC-SHA256, keyed by the base64-decoded account key, of a canonical string
("Authorize with Shared Key", Azure Storage REST docs, versions 2009-09-19 and later)::

    VERB \\n Content-Encoding \\n Content-Language \\n Content-Length \\n Content-MD5 \\n
    Content-Type \\n Date \\n If-Modified-Since \\n If-Match \\n If-None-Match \\n
    If-Unmodified-Since \\n Range \\n
    x-ms-a:value \\n x-ms-b:value \\n ...          (every x-ms- header, names lower-cased, sorted)
    /ACCOUNT/url/path \\n name:value,value ...     (query names lower-cased and sorted, values
                                                   decoded and sorted)

``Content-Length`` is empty when it is 0 (version 2015-02-21 and later); ``Date`` is empty
because ``x-ms-date`` carries the time. The path is the URL's as sent (percent-encoded); for a
path-style endpoint (Azurite ``http://host:10000/ACCOUNT/container/blob``) it starts with the
account again, as the service expects.

This is ~40 lines of HMAC; azure-storage-blob would bring a large dependency tree for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from email.utils import formatdate
from urllib.parse import parse_qsl, urlsplit

__all__ = ["SharedKey"]

_STANDARD = ("content-encoding", "content-language", "content-length", "content-md5",
             "content-type", "date", "if-modified-since", "if-match", "if-none-match",
             "if-unmodified-since", "range")
"""The standard headers of the string to sign, in its order."""


def canonical_resource(account: str, url: str) -> str:
    """``/ACCOUNT/path`` and a line ``name:values`` per query parameter (the SAS-free URL)."""
    parts = urlsplit(url)
    out = f"/{account}{parts.path or '/'}"
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        params.setdefault(name.lower(), []).append(value)
    for name in sorted(params):
        out += f"\n{name}:{','.join(sorted(params[name]))}"
    return out


def string_to_sign(method: str, url: str, headers: dict[str, str], account: str) -> str:
    """The canonical string of a request: what the signature is the HMAC of."""
    lower = {k.lower(): v for k, v in headers.items()}
    standard = [lower.get(name, "") for name in _STANDARD]
    if standard[2] == "0":
        standard[2] = ""
    ms = sorted((k, " ".join(v.split())) for k, v in lower.items() if k.startswith("x-ms-"))
    return "\n".join([method.upper(), *standard, *(f"{k}:{v}" for k, v in ms),
                      canonical_resource(account, url)])


def sign(key: bytes, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` keyed by the decoded account key."""
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


class SharedKey:
    """Signs each request with an account key (the :class:`~._types.Auth`
    interface); nothing to refresh."""

    def __init__(self, account: str, key: str) -> None:
        self.account = account
        try:
            self._key = base64.b64decode(key, validate=True)
        except ValueError:
            raise ValueError("lsio: the Azure storage account key is not base64 (check "
                             "$AZURE_STORAGE_ACCOUNT_KEY or the connection string's "
                             "AccountKey)") from None

    async def ready(self) -> None:
        """A key never expires."""

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        out["x-ms-date"] = formatdate(usegmt=True)  # RFC 1123, as the service wants
        text = string_to_sign(method, url, out, self.account)
        out["Authorization"] = f"SharedKey {self.account}:{sign(self._key, text)}"
        return out
