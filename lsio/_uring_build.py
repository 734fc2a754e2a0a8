"""cffi builder (API mode) for lsio's io_uring engine, ``lsio._uring``.

Debian 12 ships liburing 2.3, whose ``io_uring_prep_*`` helpers are ``static inline``: they
only exist once compiled, so ABI mode cannot reach them and this module compiles
``lsio/_c/uring.c`` against the system ``<liburing.h>``. ``lsio/_c/uring.h`` is both the C
header and the cdef. See uring.c for the engine and ``lsio/_ring.py`` for its theory. The same
module carries the small-call path (``small.c``) and the OS helpers beside the ring
(``os.c``: page-cache probes, faulting memory in, the filesystem's type).
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run by path (cffi_modules)
from _cbuild import CFLAGS, depends, header_cdef, link_options  # noqa: E402

ffibuilder = FFI()
_PARTS = ("uring", "small", "os")
ffibuilder.cdef("\n".join(header_cdef(f"{n}.h") for n in _PARTS))
ffibuilder.set_source(
    "lsio._uring",
    "".join(f'#include "{n}.c"\n' for n in _PARTS),  # one unit: static constants reach cffi
    depends=depends(*(f"{n}.{ext}" for n in _PARTS for ext in ("h", "c"))),
    **link_options(["uring"]),
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # pragma: no cover - manual build helper
    ffibuilder.compile(verbose=True)
