# setuptools needs this shim only to pass `cffi_modules`, which pyproject.toml cannot express.
import os
import sysconfig

from setuptools import setup

modules = ["lsio/_uring_build.py:ffibuilder"]
# Batched GIL-free chunk decoding needs blosc's and zstd's headers: the system's
# (scripts/system-deps.sh installs them) or, for a wheel, $LSIO_VENDOR_PREFIX's (make wheel);
# without them lsio decodes through numcodecs.
include = os.path.join(os.environ.get("LSIO_VENDOR_PREFIX") or "/usr", "include")
if all(os.path.exists(os.path.join(include, h)) for h in ("blosc.h", "zstd.h")):
    modules.append("lsio/_codec_build.py:ffibuilder")

# cffi compiles the modules for the stable ABI, so one wheel serves CPython 3.11 and newer;
# a free-threaded CPython has no stable ABI (cffi then builds version-specific modules).
abi3 = not sysconfig.get_config_var("Py_GIL_DISABLED")
setup(cffi_modules=modules, options={"bdist_wheel": {"py_limited_api": "cp311"}} if abi3 else {})
