"""Values the stages exchange, with no engine imports: the backends (io_uring, threads,
HTTP) and the reader share them without importing one another."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Bodies", "OnError", "ProgressFn", "StatResult"]

OnError = Literal["raise", "return"]
"""What a call does about a failed request: raise the lowest one's error, or return each in
its slot (``on_error=``)."""

ProgressFn = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]], None]
"""Called with (indices of reads just finished, bytes done per read, errno per read)."""

Bodies = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
               list[memoryview]]
"""Bytes already in memory: file ``f``'s bytes from offset ``first[f]``, ``have[f]`` of
them (-1: none), are ``buffers[index[f]]`` (as ``(first, have, index, buffers)``)."""


@dataclass(frozen=True, slots=True)
class StatResult:
    """What the stat phase learned about each file."""

    size: npt.NDArray[np.int64]
    """Size in bytes."""

    align: npt.NDArray[np.int64]
    """Direct-I/O offset alignment: >0 known, 0 filesystem refuses O_DIRECT, -1 unknown."""

    err: npt.NDArray[np.int32]
    """errno of the failed stat, 0 if it worked."""

    version: npt.NDArray[np.int64] | None = None
    """A fingerprint of each file's identity (device, inode, size, times) where the backend
    can compare it with the descriptor it reads (threads); ``None`` elsewhere."""

    detail: dict[int, str] = field(default_factory=dict)
    """What happened, per file whose stat failed, beyond the errno (an HTTP status and URL,
    the kind of a special file)."""

    bodies: Bodies | None = None
    """Bytes the stat already read (HTTP size probes: a small object read whole costs one
    request); requests they cover are served from them."""

    state: Any = None
    """The backend's own per-call state, handed back to its ``layout`` and ``read``."""

    operations: int = 0
    """Requests the stat sent (HTTP size probes, retries included)."""

    retries: int = 0
    """Of those, requests sent again after a failure that may pass."""

    transferred: int = 0
    """Bytes those requests received (the probes' bodies)."""

    transport: str = ""
    """HTTP: what sent them (:attr:`lsio.Stats.transport`)."""
