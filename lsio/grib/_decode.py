"""One GRIB2 field decoded by eccodes' C API into the caller's array.

eccodes-python copies each message into fresh ``malloc`` memory and returns each field
in a fresh float64 array: for an HRRR-size field (1.9 M points) 3 + 15 MB of pages touched
for the first time per field. On the workers those page faults took as much system time
as eccodes took decoding (16 fields: ~0.3 s of ~0.9 s of CPU). Here the public C API
(``eccodes.h``: ``codes_handle_new_from_message`` reads the message where lsio's read put
it, ``codes_get_double_array`` writes into a buffer of ours) is called through cffi in ABI
mode on the library eccodes-python loaded (``eccodes.codes_get_library_path()``); cffi
releases the GIL around each call. The values land in a per-thread scratch buffer, reused
from field to field, then one copy converts them into the output's slice.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["decode_into"]

_CDEF = """
typedef struct codes_handle codes_handle;
codes_handle* codes_handle_new_from_message(void* c, const void* data, size_t data_len);
int codes_handle_delete(codes_handle* h);
int codes_get_size(const codes_handle* h, const char* key, size_t* size);
int codes_get_long(const codes_handle* h, const char* key, long* value);
int codes_get_double_array(const codes_handle* h, const char* key, double* vals,
                           size_t* length);
int codes_get_long_array(const codes_handle* h, const char* key, long* vals, size_t* length);
const char* codes_get_error_message(int code);
"""

_api: tuple[Any, Any] | None = None
_api_lock = threading.Lock()
_scratch = threading.local()


def _load() -> tuple[Any, Any]:
    global _api
    with _api_lock:
        if _api is None:
            import cffi
            import eccodes

            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            _api = (ffi, ffi.dlopen(eccodes.codes_get_library_path()))
        return _api


def _buffer(name: str, n: int, dtype: Any) -> npt.NDArray[Any]:
    """This thread's scratch array ``name`` of at least ``n`` items (kept for the next
    field: its pages are faulted in once per thread, not once per field)."""
    buf: npt.NDArray[Any] | None = getattr(_scratch, name, None)
    if buf is None or len(buf) < n:
        buf = np.empty(n, dtype)
        setattr(_scratch, name, buf)
    return buf[:n]


def decode_into(data: Any, slot: npt.NDArray[Any], where: str) -> None:
    """Decode the one-field GRIB2 message ``data`` into ``slot`` (``(ny, nx)``; points the
    bitmap leaves out become NaN). ``ValueError`` naming ``where`` if eccodes cannot."""
    ffi, lib = _load()

    def check(err: int, what: str) -> None:
        if err:
            text = ffi.string(lib.codes_get_error_message(err)).decode(errors="replace")
            raise ValueError(f"lsio.grib: {where}: eccodes cannot decode it ({what}: {text})")

    src = ffi.from_buffer(data)
    h = lib.codes_handle_new_from_message(ffi.NULL, src, len(data))
    if h == ffi.NULL:
        raise ValueError(f"lsio.grib: {where}: eccodes cannot read it")
    try:
        size = ffi.new("size_t*")
        check(lib.codes_get_size(h, b"values", size), "values")
        n = int(size[0])
        if n != slot.size:
            raise ValueError(f"lsio.grib: {where}: {n} values for a grid of {slot.shape}")
        values = _buffer("values", n, np.float64)
        check(lib.codes_get_double_array(h, b"values", ffi.cast("double *", values.ctypes.data),
                                         size), "values")
        _all_written(int(size[0]), n, "values", where)  # no scratch left from another field
        flag = ffi.new("long*")
        check(lib.codes_get_long(h, b"bitmapPresent", flag), "bitmapPresent")
        np.copyto(slot, values.reshape(slot.shape))
        if flag[0]:
            bitmap = _buffer("bitmap", n, np.dtype(f"i{ffi.sizeof('long')}"))
            size[0] = n
            check(lib.codes_get_long_array(h, b"bitmap", ffi.cast("long *", bitmap.ctypes.data),
                                           size), "bitmap")
            _all_written(int(size[0]), n, "bitmap", where)
            slot[bitmap.reshape(slot.shape) == 0] = np.nan
    finally:
        lib.codes_handle_delete(h)


def _all_written(got: int, n: int, key: str, where: str) -> None:
    if got != n:
        raise ValueError(f"lsio.grib: {where}: eccodes gave {got} {key} for a grid of {n} "
                         "points")
