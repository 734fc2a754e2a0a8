"""Errors are mapped here, once: an errno from the kernel becomes the matching ``OSError``
subclass (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``...) naming the
path, with the failing request attached."""

from __future__ import annotations

import errno
import os

from ._request import Requests
from ._url import redact

__all__ = ["request_error", "BackendWarning", "MISSING"]

MISSING = (errno.ENOENT, errno.ENOTDIR)
"""Errnos meaning "no such file" under ``missing_ok``: ENOTDIR is a path under a regular
file (``file/child``), which exists no more than a path under a missing directory."""


class BackendWarning(UserWarning):
    """lsio fell back to a slower backend; the message says why and how to fix it."""


def request_error(err: int, reqs: Requests, index: int, detail: str | None = None
                  ) -> OSError:
    """``OSError(err, strerror, path)`` for request ``index``, as ``open`` would raise it;
    ``detail`` (what the server answered, for URLs) joins the message, without the signature
    of a SAS token in a URL it names."""
    path = reqs.paths[int(reqs.file[index])]
    text = os.strerror(err) if detail is None else f"{os.strerror(err)}: {redact(detail)}"
    exc = OSError(err, text, redact(path))  # OSError picks the subclass from errno
    exc.request_index = reqs.caller_index(index)  # type: ignore[attr-defined]
    exc.add_note(f"lsio: while reading {redact(reqs.describe(index))}")
    return exc
