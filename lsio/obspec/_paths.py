"""A store's root (a URL prefix or a local directory) and the paths under it.

Paths given to a store are relative to its root, as obstore's are: ``"a/b.nc"`` under
``s3://bucket/dir`` is ``s3://bucket/dir/a/b.nc``. A path that would leave the root (``..``
or ``.`` segments, an absolute path, a URL, empty segments) is a ``ValueError`` naming it:
a store handed to other code (VirtualiZarr's registry, a Dask worker) reads under its root
and nowhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from .._url import file_url_problem, is_url, local_path, redact, unsupported

__all__ = ["Root", "root_of"]

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class Root:
    """Where a store's paths start."""

    base: str
    """The root with a trailing ``/``: a URL prefix or an absolute local directory."""
    remote: bool
    """Whether the root is a URL (else a local directory)."""
    prefix: str
    """The root's path as obstore's stores have it: the path inside the bucket or host
    (no leading ``/``) of a URL, the absolute directory of a local root."""
    url: str
    """The root as a URL without a trailing ``/`` (``file://`` for a local directory)."""

    def join(self, path: str) -> str:
        """The full path or URL of ``path`` (relative to the root)."""
        check_relative(path)
        return self.base + path

    def key(self, prefix: str | None) -> str:
        """A listing's prefix under the root (``""`` for all): whole segments only, so
        ``"a/b"`` lists ``a/b/x`` and not ``a/bc``."""
        if prefix is None or prefix.strip("/") == "":
            return ""
        check_relative(prefix.rstrip("/"))
        return prefix.rstrip("/") + "/"


def check_relative(path: str) -> None:
    """``ValueError`` naming ``path`` unless it is a relative path that stays under the
    root."""
    if not isinstance(path, str):
        raise TypeError(f"lsio: a store path must be a str, got {type(path).__name__}")
    why = None
    if path == "":
        why = "is empty"
    elif path.startswith("/") or _SCHEME.match(path) or "\\" in path:
        why = "is absolute (a store's paths are relative to its prefix)"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        why = "has an empty, '.' or '..' segment (a store's paths stay under its prefix)"
    elif "\0" in path:
        why = "holds a NUL character"
    if why is not None:
        raise ValueError(f"lsio: store path {redact(repr(path))} {why}")


def root_of(prefix: str | os.PathLike[str]) -> Root:
    """The :class:`Root` of a store's ``prefix``: a URL prefix (``s3://bucket/dir``,
    ``https://host/path``, ``gs://``, ``az://``), a ``file://`` URL or a local directory."""
    text = os.fspath(prefix)
    if not isinstance(text, str):
        raise TypeError(f"lsio: a store prefix must be a str or os.PathLike[str], got {text!r}")
    if is_url(text):
        if "?" in text or "#" in text:
            raise ValueError(f"lsio: store prefix {redact(repr(text))} has a query or "
                             "fragment; give credentials in the settings (http=HttpOptions)")
        url = text.rstrip("/")
        scheme, rest = url.split("://", 1)
        inside = rest.partition("/")[2]
        return Root(url + "/", True, inside.strip("/"), url)
    if _SCHEME.match(text) and text[:7].lower() != "file://":
        raise unsupported(text)
    problem = file_url_problem(text)
    if problem is not None:
        raise ValueError(f"lsio: store prefix {redact(repr(text))}: {problem}")
    directory = os.path.abspath(local_path(text))
    base = directory if directory.endswith("/") else directory + "/"
    return Root(base, False, directory, "file://" + quote(directory))
