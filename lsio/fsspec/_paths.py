"""The ``lsio`` protocol's paths: what a caller writes -> the path or URL lsio reads.

Pure functions (no I/O). The rules are the table in :mod:`lsio.fsspec`'s docstring; a
test checks every row.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .._url import is_url, local_path, redact, unsupported

__all__ = ["join", "parent", "split_bucket", "strip", "unstrip"]

PROTOCOL = "lsio"
_OWN = re.compile(r"^lsio(://|::)", re.I)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def strip(path: Any) -> str:
    """The inner path of ``path``: one leading ``lsio://`` (or ``lsio::``) removed;
    ``file://`` URLs and relative or ``~`` paths become absolute local paths; other
    URLs are kept (object-store URLs without a trailing ``/``, ``http(s)://`` verbatim);
    a scheme lsio does not read is a ``ValueError`` naming it."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str):
        raise TypeError(f"lsio: a path is a str or os.PathLike, not {type(path).__name__}")
    m = _OWN.match(text)
    if m:
        text = text[m.end():]
    scheme = _SCHEME.match(text)
    if scheme is None or text[:7].lower() == "file://":
        local = local_path(text)
        return os.path.abspath(os.path.expanduser(local)) if local else os.path.abspath("")
    if not is_url(text):
        raise ValueError(redact(str(unsupported(text))))
    if scheme.group(1).lower() in ("http", "https"):
        return text  # a trailing "/" is part of what a web server answers
    head = text[:scheme.end()]
    rest = text[scheme.end():].rstrip("/")
    return head + rest


def unstrip(path: str) -> str:
    """The full ``lsio://`` name of an inner path: ``strip(unstrip(p)) == p``."""
    return f"{PROTOCOL}://{path}"


def parent(path: str) -> str:
    """The directory above ``path`` (inner form): a local ``dirname``, or the URL less
    its last segment; a bucket, container or host is its own parent, as ``/`` is."""
    inner = strip(path)
    if not is_url(inner):
        return os.path.dirname(inner)
    scheme = _SCHEME.match(inner)
    assert scheme is not None
    head, rest = inner[:scheme.end()], inner[scheme.end():].rstrip("/")
    if "/" not in rest:
        return head + rest
    return head + rest.rsplit("/", 1)[0]


def join(base: str, name: str) -> str:
    """``base`` and a name below it, with one ``/`` between."""
    return f"{base.rstrip('/')}/{name.lstrip('/')}"


def split_bucket(url: str) -> tuple[str, str]:
    """``scheme://bucket/some/key`` -> (``scheme://bucket``, ``some/key``)."""
    scheme = _SCHEME.match(url)
    assert scheme is not None
    bucket, _, key = url[scheme.end():].partition("/")
    return url[:scheme.end()] + bucket, key.strip("/")
