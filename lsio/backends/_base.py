"""The backend interface: two awaitables, arrays in and arrays out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .._plan import Plan
from .._types import ProgressFn, StatResult

__all__ = ["Backend", "ReadResult"]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Outcome of executing a plan."""

    done: npt.NDArray[np.int64]
    """Bytes read by each planned read (less than planned: the file ended early)."""

    err: npt.NDArray[np.int32]
    """errno of each planned read, 0 if it worked."""

    file_err: npt.NDArray[np.int32]
    """errno of opening each file, 0 if it worked."""

    changed: npt.NDArray[np.bool_] | None = None
    """Files the backend saw replaced or changed since the stat (the descriptor it opened is
    not the file the plan was made for); their reads are not to be trusted."""


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
        missing_ok: bool = False,
        caller_memory: bool = False,
        changed: npt.NDArray[np.bool_] | None = None,
    ) -> ReadResult:
        """Execute ``plan``; read ``i`` lands in ``buffers[plan.op_base[i]]`` at
        ``plan.op_buf[i]``. Calls ``on_progress`` with the indices of finished reads.

        Each file is read through descriptors of one version of it. ``missing_ok``: a file
        gone since the stat fails with ENOENT without stopping the other reads.
        ``caller_memory``: the buffers are the caller's, so a cancelled read returns only
        once nothing can write into them any more. ``changed`` (one flag per file) is set
        as soon as the backend sees that a file is no longer the one it stat'ed."""
        ...
