"""What lsio's two cffi builders share: where the C lives, how it is compiled, and how a
header becomes the cdef (so every struct and constant is written once, in the ``.h``).

Build-time only (``setup.py`` runs the builders); nothing imports it at run time.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CFLAGS", "C_DIR", "header_cdef"]

C_DIR = Path(__file__).resolve().parent / "_c"
"""``lsio/_c``: the C sources and headers."""

CFLAGS = ["-O2", "-Wall", "-Wextra"]
"""Warnings on; ``make test`` also checks the sources with ``-Werror`` (``make cwarn``)."""

_NUMERIC_DEFINE = re.compile(r"#\s*define\s+\w+\s+-?(0x[0-9a-fA-F]+|\d+)\s*$")


def header_cdef(name: str) -> str:
    """The header ``lsio/_c/<name>`` as a cffi cdef: preprocessor lines other than numeric
    ``#define``s (include guards) are dropped, since cffi's parser does not run cpp."""
    lines = (C_DIR / name).read_text().splitlines()
    return "\n".join(line for line in lines
                     if not line.lstrip().startswith("#") or _NUMERIC_DEFINE.match(line.strip()))
