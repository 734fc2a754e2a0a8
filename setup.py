# setuptools needs this shim only to pass `cffi_modules`, which pyproject.toml cannot express.
from setuptools import setup

setup(cffi_modules=["lsio/_uring_build.py:ffibuilder"])
