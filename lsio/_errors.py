"""Errors are mapped here, once: an errno from the kernel becomes the matching ``OSError``
subclass (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``...) naming the
path, with the failing request attached."""

from __future__ import annotations

import errno
import os
from typing import Any

import numpy as np

from ._request import Requests
from ._url import redact

__all__ = ["request_error", "no_memory", "BackendWarning", "MISSING"]

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


def no_memory(reqs: Requests, lengths: Any, nbytes: int) -> OSError:
    """``OSError(ENOMEM)`` for a call whose ``nbytes`` of results cannot be allocated
    (``RLIMIT_AS``, overcommit refusing, a size no machine has), naming its largest request
    (``lengths``: bytes each request returns), which the caller can shrink or split."""
    index = int(np.argmax(lengths)) if len(lengths) else 0
    return request_error(errno.ENOMEM, reqs, index,
                         f"{nbytes} bytes for this call's results, "
                         f"{int(lengths[index]) if len(lengths) else 0} for this request")
