# setuptools needs this shim only to pass `cffi_modules`, which pyproject.toml cannot express.
import os

from setuptools import setup

modules = ["lsio/_uring_build.py:ffibuilder"]
# Batched GIL-free chunk decoding needs the system's blosc and zstd headers
# (scripts/system-deps.sh installs them); without them lsio decodes through numcodecs.
if all(os.path.exists(f"/usr/include/{h}") for h in ("blosc.h", "zstd.h")):
    modules.append("lsio/_codec_build.py:ffibuilder")

setup(cffi_modules=modules)
