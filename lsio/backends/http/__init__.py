"""HTTP(S), S3, GCS and Azure reads, behind the backend interface.

- ``_protocol``: sans-IO (pure, table-tested): Content-Range, multipart bodies, statuses to
  errnos, Range headers, backoff, size probes, multipart jobs;
- ``_session``: the transport: one aiohttp session per loop, proxies, bodies, and the one
  place aiohttp's errors are mapped;
- ``_client``: one call's requests: URLs, signing, redirects, answers checked, the one retry
  loop;
- ``_backend``: :class:`HttpBackend`, the backend interface (stat, layout, read);
- ``_small``: the small-call path: a few requests, each of its own object, each sent as the
  one GET (or size probe) the bulk path would send, without planning the call;
- ``_list``: listing an object store's keys, one pager for every provider.

HttpBackend is imported on first use: the cloud providers import this package's sans-IO
modules (``_protocol``: errors), and the backend imports the providers' registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backend import HttpBackend

__all__ = ["HttpBackend"]


def __getattr__(name: str) -> Any:
    if name == "HttpBackend":
        from ._backend import HttpBackend

        return HttpBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
