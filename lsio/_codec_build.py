"""cffi API-mode builder for ``lsio._codecs``: decode many chunks and scatter them into an
output array in one GIL-free C call (``lsio/_c/codecs.c``; ``lsio/_c/codecs.h`` is both the
header and the cdef). Built only where the system's blosc, zstd and zlib headers exist
(``scripts/system-deps.sh`` installs them); lsio otherwise decodes through numcodecs.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run by path (cffi_modules)
from _cbuild import CFLAGS, depends, header_cdef, link_options  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("codecs.h"))
ffibuilder.set_source(
    "lsio._codecs",
    '#include "codecs.c"',
    depends=depends("codecs.h", "codecs.c"),
    **link_options(["blosc", "zstd", "z"]),
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # pragma: no cover - manual build helper
    ffibuilder.compile(verbose=True)
