"""Object stores: one module per provider, as object_store lays out ``aws/``, ``gcp/``,
``azure/`` over a shared client.

- :mod:`.aws`: S3 URLs, botocore's credentials, SigV4 (:mod:`._sigv4`), ListObjectsV2;
- :mod:`.gcp`: GCS URLs (the JSON API), google-auth's credentials, the JSON listing;
- :mod:`.azure`: Azure Blob URLs, account keys (:mod:`._sharedkey`), SAS and Entra ID
  tokens, List Blobs;
- :mod:`._types`: what a provider gives (:class:`~._types.Provider`), the credentials
  interface (:class:`~._types.Auth`) and what the providers share; a leaf.

:data:`PROVIDERS` is the registry (URL scheme -> provider) the HTTP backend hands its client;
the client imports no provider. Optional dependencies (botocore, google-auth,
azure-identity) are imported when first needed.
"""

from __future__ import annotations

from ..._url import ALIASES, HttpOptions, Target, resolve_http, unsupported
from . import aws, azure, gcp
from ._types import Provider, Providers

__all__ = ["PROVIDERS", "Provider"]

_BY_SERVICE: dict[str, Provider] = {"s3": aws, "gs": gcp, "az": azure}
PROVIDERS: Providers = {**_BY_SERVICE, **{a: _BY_SERVICE[s] for a, s in ALIASES.items()}}
"""Each object store's URL scheme (its aliases too: ``s3a``, ``gcs``, ``abfss``...) and its
provider."""


def resolve(path: str, options: HttpOptions) -> Target:
    """The :class:`~lsio._url.Target` of a remote ``path`` (a URL ``is_url`` accepts).

    Raises ``ValueError`` naming the URL when it cannot be read from."""
    scheme = path.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        return resolve_http(path)
    provider = PROVIDERS.get(scheme)
    if provider is None:
        raise unsupported(path)
    return provider.resolve(path, options, provider.config(options, True))
