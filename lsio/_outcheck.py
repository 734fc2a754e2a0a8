"""Which caller buffers lsio may write file bytes into: raw bytes, numbers and records of
them, never objects or pointers (file bytes written over a pointer crash the process on
its next use)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["holds_pointers"]

_NAMES = re.compile(r":[^:]*:")  # field names of a struct format ("T{<B:Origin:}")


def holds_pointers(buf: Any, view: memoryview) -> bool:
    """Whether ``buf`` (exported as ``view``) holds Python objects or raw pointers: a numpy
    dtype with objects, or a buffer format with ``O`` (object) or ``P`` (void pointer)."""
    dtype = getattr(buf, "dtype", None)
    if getattr(dtype, "hasobject", False):
        return True
    fmt = view.format
    if fmt in ("B", "b", "c"):  # the common case, without a regex
        return False
    code = _NAMES.sub("", fmt)
    return "O" in code or "P" in code
