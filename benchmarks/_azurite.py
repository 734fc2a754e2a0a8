"""A minimal Azurite (Azure Blob emulator) server for ``bench_remote``: a stand-in, with the
interface of ``tests.servers.Azurite`` (being added on another branch), until that lands.

    with Azurite(location) as az:
        az.create_container("bench")
        az.put_blob("bench", "a.bin", b"...")
        az.endpoint           # http://127.0.0.1:PORT/devstoreaccount1
        az.connection_string  # for clients that read $AZURE_STORAGE_CONNECTION_STRING

``azurite-blob`` comes from npm (``npm install -g azurite@3``). Requests are signed with the
emulator's well-known Shared Key (standard library only: HMAC-SHA256 of the canonical request).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.servers import free_port, terminate

ACCOUNT = "devstoreaccount1"
# The emulator's published key (https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw"
       "==")
VERSION = "2021-08-06"


def azurite_binary() -> str | None:
    return shutil.which("azurite-blob")


class Azurite:
    """``azurite-blob`` on ``127.0.0.1:port`` while the context is open; blobs are kept under
    ``location`` (a private temporary directory when None, removed by :meth:`stop`)."""

    def __init__(self, location: str | Path | None = None) -> None:
        self.account = ACCOUNT
        self.key = KEY
        self.port = 0
        self._location = Path(location) if location is not None else None
        self._own_location: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};"
                f"AccountKey={self.key};BlobEndpoint={self.endpoint};")

    def start(self) -> Azurite:
        binary = azurite_binary()
        if binary is None:
            raise RuntimeError("azurite is not installed: npm install -g azurite@3")
        if self._location is None:
            self._own_location = tempfile.mkdtemp(prefix="lsio-azurite-", dir="/var/tmp")
            location = Path(self._own_location)
        else:
            location = self._location
            location.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._proc = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
             str(location), "--silent", "--loose", "--skipApiVersionCheck"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:  # ready when a signed request is answered
            try:
                self._request("GET", "", {"comp": "list"})
                return self
            except (OSError, urllib.error.HTTPError):
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("azurite did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None
        if self._own_location is not None:
            shutil.rmtree(self._own_location, ignore_errors=True)
            self._own_location = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- data ---------------------------------------------------------------------------
    def create_container(self, name: str) -> None:
        self._request("PUT", name, {"restype": "container"})

    def put_blob(self, container: str, name: str, data: bytes) -> None:
        self._request("PUT", f"{container}/{name}", {}, data,
                      {"x-ms-blob-type": "BlockBlob"})

    def sas(self, container: str, *, hours: float = 24) -> str:
        """A service SAS (no leading ``?``) reading and listing ``container``."""
        expiry = (_dt.datetime.now(_dt.UTC) + _dt.timedelta(hours=hours)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        perms = "rl"
        to_sign = "\n".join([perms, "", expiry, f"/blob/{self.account}/{container}", "", "",
                             "", VERSION, "c", "", "", "", "", "", "", ""])
        query = {"sv": VERSION, "sr": "c", "sp": perms, "se": expiry, "sig": self._sign(to_sign)}
        return urllib.parse.urlencode(query)

    # -- Shared Key ---------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        mac = hmac.new(base64.b64decode(self.key), text.encode(), hashlib.sha256)
        return base64.b64encode(mac.digest()).decode()

    def _request(self, method: str, path: str, query: dict[str, str], body: bytes = b"",
                 headers: dict[str, str] | None = None) -> bytes:
        quoted = urllib.parse.quote(path)
        url = f"{self.endpoint}/{quoted}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        ms = {"x-ms-date": _dt.datetime.now(_dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
              "x-ms-version": VERSION, **(headers or {})}
        length = str(len(body)) if body else ""
        canon_headers = "".join(f"{k}:{v}\n" for k, v in sorted(ms.items()))
        resource = f"/{self.account}/{self.account}/{quoted}" + "".join(
            f"\n{k}:{v}" for k, v in sorted(query.items()))
        # urllib adds a form Content-Type to any request with a body: name one, and sign it
        ctype = "application/octet-stream" if method == "PUT" else ""
        to_sign = "\n".join([method, "", "", length, "", ctype, "", "", "", "", "", ""]) + "\n"
        signature = self._sign(to_sign + canon_headers + resource)
        ms["Authorization"] = f"SharedKey {self.account}:{signature}"
        if ctype:
            ms["Content-Type"] = ctype
        req = urllib.request.Request(url, data=body if method == "PUT" else None, method=method,
                                     headers=ms)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return bytes(resp.read())
