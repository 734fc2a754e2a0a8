"""cffi builder (API mode) for lsio's C HTTP transport, ``lsio._curl``: batches of range GETs
driven by libcurl's multi interface (``lsio/_c/curl.c``; ``lsio/_c/curl.h`` is both the header
and the cdef). Built only where the system's libcurl and OpenSSL headers exist
(``scripts/system-deps.sh`` installs Debian's ``libcurl4-openssl-dev`` and ``libssl-dev``),
dynamically linked; lsio otherwise sends every request through aiohttp.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run by path (cffi_modules)
from _cbuild import C_DIR, CFLAGS, depends, header_cdef  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("curl.h"))
ffibuilder.set_source(
    "lsio._curl",
    '#include "curl.c"',
    depends=depends("curl.h", "curl.c"),
    include_dirs=[str(C_DIR)],
    # the system's (a wheel leaves the module out); libcrypto: SigV4's digests
    libraries=["curl", "crypto"],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # pragma: no cover - manual build helper
    ffibuilder.compile(verbose=True)
