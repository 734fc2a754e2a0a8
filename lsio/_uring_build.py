"""cffi builder (API mode) for lsio's io_uring engine, ``lsio._uring``.

Debian 12 ships liburing 2.3, whose ``io_uring_prep_*`` helpers are ``static inline``: they
only exist once compiled, so ABI mode cannot reach them and this module compiles
``lsio/_c/uring.c`` against the system ``<liburing.h>``. ``lsio/_c/uring.h`` is both the C
header and the cdef. See uring.c for the engine and ``lsio/_ring.py`` for its theory.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run by path (cffi_modules)
from _cbuild import C_DIR, CFLAGS, header_cdef  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("uring.h") + header_cdef("small.h"))
ffibuilder.set_source(
    "lsio._uring",
    '#include "uring.c"\n#include "small.c"',  # one unit: static constants reach cffi
    include_dirs=[str(C_DIR)],
    depends=[str(C_DIR / n) for n in ("uring.h", "uring.c", "small.h", "small.c")],
    libraries=["uring"],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # pragma: no cover - manual build helper
    ffibuilder.compile(verbose=True)
