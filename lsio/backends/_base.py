"""The backend interface: two awaitables, arrays in and arrays out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .._plan import Plan
from .._ring import ProgressFn, StatResult

__all__ = ["Backend", "ReadResult", "StatResult"]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Outcome of executing a plan."""

    done: npt.NDArray[np.int64]
    """Bytes read by each planned read (less than planned: the file ended early)."""

    err: npt.NDArray[np.int32]
    """errno of each planned read, 0 if it worked."""

    file_err: npt.NDArray[np.int32]
    """errno of opening each file, 0 if it worked."""


class Backend(Protocol):
    name: str
    """Short name: ``"uring"`` or ``"threads"``."""

    async def stat(self, paths: list[str], *, queue_depth: int) -> StatResult:
        """Size and direct-I/O alignment of each path; per-path errno instead of raising."""
        ...

    async def read(
        self,
        paths: list[str],
        stat: StatResult,
        file_direct: npt.NDArray[np.int32],
        plan: Plan,
        buffers: list[Any],
        *,
        queue_depth: int,
        max_open: int,
        on_progress: ProgressFn | None,
        workers: int = 1,
    ) -> ReadResult:
        """Execute ``plan``; read ``i`` lands in ``buffers[plan.op_base[i]]`` at
        ``plan.op_buf[i]``. Calls ``on_progress`` with the indices of finished reads."""
        ...
