"""What lsio's two cffi builders share: where the C lives, how it is compiled, and how a
header becomes the cdef (so every struct and constant is written once, in the ``.h``).

Build-time only (``setup.py`` runs the builders); nothing imports it at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CFLAGS", "C_DIR", "depends", "header_cdef", "link_options"]

C_DIR = Path(__file__).resolve().parent / "_c"
"""``lsio/_c``: the C sources and headers."""

CFLAGS = ["-O2", "-Wall", "-Wextra"]
"""Warnings on; ``make test`` also checks the sources with ``-Werror`` (``make cwarn``)."""

VENDOR_PREFIX_ENV = "LSIO_VENDOR_PREFIX"
"""Set by ``make wheel``: a prefix holding static ``lib/lib<name>.a`` and their headers
(``scripts/wheel_vendor.py`` builds it), linked in place of the system's shared libraries."""

_NUMERIC_DEFINE = re.compile(r"#\s*define\s+\w+\s+-?(0x[0-9a-fA-F]+|\d+)\s*$")


def depends(*names: str) -> list[str]:
    """``lsio/_c/<name>`` for each name, relative to the directory the build runs in (the
    project root): setuptools warns about every absolute ``depends=`` path it cannot put in
    the sdist's manifest."""
    return [os.path.relpath(C_DIR / n) for n in names]


def header_cdef(name: str) -> str:
    """The header ``lsio/_c/<name>`` as a cffi cdef: preprocessor lines other than numeric
    ``#define``s (include guards) are dropped, since cffi's parser does not run cpp."""
    lines = (C_DIR / name).read_text().splitlines()
    return "\n".join(line for line in lines
                     if not line.lstrip().startswith("#") or _NUMERIC_DEFINE.match(line.strip()))


def link_options(libs: list[str]) -> dict[str, list[str]]:
    """``set_source`` keywords for a module using the C libraries ``libs`` (``uring``, ...).

    By default, the system's shared libraries and headers. With ``$LSIO_VENDOR_PREFIX`` set,
    its headers and static archives instead, so the module needs no library beyond libc at
    run time (``make wheel``); libpthread is named since c-blosc's threads need it.
    """
    prefix = os.environ.get(VENDOR_PREFIX_ENV)
    if not prefix:
        return {"include_dirs": [str(C_DIR)], "libraries": list(libs)}
    root = Path(prefix)
    archives = [root / "lib" / f"lib{name}.a" for name in libs]
    missing = [str(a) for a in archives if not a.is_file()]
    if missing:
        raise SystemExit(f"{VENDOR_PREFIX_ENV}={prefix}: no {', '.join(missing)}")
    return {"include_dirs": [str(C_DIR), str(root / "include")], "libraries": ["pthread"],
            "extra_objects": [str(a) for a in archives]}
