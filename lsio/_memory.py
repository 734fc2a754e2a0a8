"""Result memory: page-aligned arenas, recycled once no result refers to them.

Fresh anonymous memory costs a page fault (and zeroing) per 4 KiB page on first touch,
about as much as a page-cache read of that page; on a VM the first touch of guest memory
is dearer still. So an arena whose results have all been dropped goes back to a small pool
and the next call with a similar size reuses it, already faulted in.
"""

from __future__ import annotations

import mmap
import threading
import weakref

import numpy as np
import numpy.typing as npt

from . import _fork
from ._defaults import POOL_BYTES, REUSE_SLACK, UNMAP_ASIDE

__all__ = ["allocate", "is_fresh"]

PAGE = mmap.PAGESIZE

_lock = _fork.lock()  # the pooled arenas are the child's own copies: it keeps them
_pool: list[mmap.mmap] = []


def _pooled_bytes() -> int:
    return sum(len(m) for m in _pool)



def _give_back(mm: mmap.mmap) -> None:
    with _lock:
        if len(mm) + _pooled_bytes() <= POOL_BYTES:
            _pool.append(mm)
            return
    if len(mm) >= UNMAP_ASIDE:
        threading.Thread(target=_close, args=(mm,), name="lsio-unmap", daemon=True).start()
    else:
        _close(mm)


def _close(mm: mmap.mmap) -> None:
    try:
        mm.close()  # munmap, with the GIL released
    except BufferError:  # still exported somewhere (interpreter exit): let the GC have it
        pass


_fresh: set[int] = set()
"""``id`` of the live arrays whose memory was never touched (new mappings, not pooled)."""


def allocate(nbytes: int) -> npt.NDArray[np.uint8]:
    """A page-aligned uint8 array of ``nbytes``; its memory returns to the pool when the
    array and every view of it are gone."""
    size = max(PAGE, -(-nbytes // PAGE) * PAGE)
    mm = None
    with _lock:
        fits = [m for m in _pool if size <= len(m) <= size * REUSE_SLACK]
        if fits:
            mm = min(fits, key=len)
            _pool.remove(mm)
    fresh = mm is None
    if mm is None:
        mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(mm, np.uint8, nbytes)
    weakref.finalize(arr, _give_back, mm).atexit = False
    if fresh:
        _fresh.add(id(arr))
        weakref.finalize(arr, _fresh.discard, id(arr)).atexit = False
    return arr


def is_fresh(arr: object) -> bool:
    """Whether ``arr`` came from :func:`allocate` with memory never touched (its first
    writes will fault every page in); a pooled arena's pages are present already."""
    return id(arr) in _fresh
