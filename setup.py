# setuptools needs this shim only to pass `cffi_modules`, which pyproject.toml cannot express.
import os
import sys
import sysconfig

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsio"))
from _probe_build import ProbingBuildExt  # noqa: E402

# Both modules are optional: ProbingBuildExt builds each only where a test program using its
# C libraries compiles and links (liburing for io_uring, else the thread-pool backend; blosc
# and zstd for the Zarr fast path's batch decoder, else numcodecs), and says which it left out.
# With $LSIO_VENDOR_PREFIX (make wheel) the probes use its headers and static archives.
# cffi compiles the modules for the stable ABI, so one wheel serves CPython 3.11 and newer;
# a free-threaded CPython has no stable ABI (cffi then builds version-specific modules).
abi3 = not sysconfig.get_config_var("Py_GIL_DISABLED")
setup(
    cffi_modules=["lsio/_uring_build.py:ffibuilder", "lsio/_codec_build.py:ffibuilder",
                   "lsio/_curl_build.py:ffibuilder"],
    cmdclass={"build_ext": ProbingBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if abi3 else {},
)
