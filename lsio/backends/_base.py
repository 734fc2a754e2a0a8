"""The backend interface: a small path, three bulk steps, and close.

Every backend (io_uring, threads, HTTP) implements the same methods, so the reader only
routes (:mod:`lsio._route`). A small call goes to :meth:`Backend.read_small`, which serves
it or declines before handing anything out. The bulk road asks the backend what the files
are (:meth:`Backend.stat`), how the backend wants them planned (:meth:`Backend.layout`),
plans with the pure planner, and has the backend execute the plan (:meth:`Backend.read`).
What is particular to a storage (O_DIRECT and page-cache policy and worker fan-out for the
ring; size probes, multipart verdicts and bytes the probes already hold for HTTP) stays
inside its backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from .._plan import Plan
from .._presets import Preset
from .._request import Requests
from .._types import ProgressFn, StatResult

if TYPE_CHECKING:
    from .._call import Call
    from .._outcome import Outcome
    from .._results import Results
    from .._route import Strategy

__all__ = ["Backend", "Layout", "LocalBackend", "ReadResult", "RunOptions"]


@dataclass(frozen=True, slots=True)
class Layout:
    """How a backend wants one call's reads planned and run."""

    file_direct: npt.NDArray[np.int32]
    """Per file: read with O_DIRECT (``lsio._ring.DIRECT_ON``) or through the page cache."""

    file_align: npt.NDArray[np.int64]
    """Per file: the alignment its reads must keep (1: none)."""

    arena_align: int
    """Alignment of each merged read's region in the result memory."""

    max_gap: int | None
    """The coalescing gap the backend advises for this call (e.g. the cloud gap for an HTTP
    server found not to answer multipart ranges); the reader keeps a gap the user set."""

    check_eof: bool
    """Size-dependent requests read one byte past the end, and a file that turns out to
    have changed is planned again (local files; see ``lsio._plan.plan``)."""

    parallel: bool = False
    """The reads may be spread over one ring per core (page-cache copies are CPU-bound)."""

    sparse: bool = False
    """Lay out only requested bytes (``lsio._plan.plan(sparse=True)``): a merged read's
    gap bytes are received and dropped, not kept in the result memory (remote reads)."""

    max_read: int | None = None
    """The read size the backend advises for this call (HTTP: parts long enough that a
    request's fixed cost does not dominate, ``lsio.backends.http._cost``); ``None``: the
    preset's."""

    gap_budget_ratio: float | None = None
    """Bytes a call may fetch per byte requested (egress is billed): merging reads through
    gaps stops when the gaps would add more than ``ratio - 1`` times the requested bytes."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the reader wants one plan executed."""

    queue_depth: int
    """Reads (HTTP: requests) in flight at most."""

    max_open: int
    """Files open at once at most."""

    on_progress: ProgressFn | None = None
    """Told about reads as they finish."""

    missing_ok: bool = False
    """A file gone since the stat fails its reads with ENOENT without stopping the others."""

    keep_going: bool = False
    """No failure stops the other reads (``on_error="return"``)."""

    caller_memory: bool = False
    """The buffers are the caller's: a cancelled read returns only once nothing can write
    into them any more."""

    changed: npt.NDArray[np.bool_] | None = None
    """One flag per file, set as soon as the backend sees that a file is no longer the one
    it stat'ed (layouts with ``check_eof``)."""

    hold: list[float] | None = None
    """``[seconds]``: raised to the longest span the backend's completion handling held
    the event loop during this read (backends that run callbacks on the loop)."""


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Outcome of executing a plan."""

    done: npt.NDArray[np.int64]
    """Bytes read by each planned read (less than planned: the file ended early)."""

    err: npt.NDArray[np.int32]
    """errno of each planned read, 0 if it worked."""

    changed: npt.NDArray[np.bool_] | None = None
    """Files the backend saw replaced or changed since the stat (the descriptor it opened is
    not the file the plan was made for); their reads are not to be trusted."""

    detail: dict[int, str] = field(default_factory=dict)
    """What happened, per failed read, where the backend knows more than the errno (an HTTP
    status and URL)."""

    operations: int | None = None
    """Requests the backend sent for this call since its stat, that stat's own included
    (HTTP: every GET, size probes and retries counted); ``None``: one per planned read."""

    retries: int = 0
    """Requests sent again after a failure that may pass (HTTP: a 503, a timeout)."""

    transport: str = ""
    """HTTP: what sent the requests counted in :attr:`operations` (:attr:`lsio.Stats.transport`)."""


class Backend(Protocol):
    name: str
    """Short name: ``"uring"``, ``"threads"`` or ``"http"``."""

    async def read_small(self, call: Call, strategy: Strategy, tune: Preset | None,
                         outcome: Outcome | None) -> Results | None:
        """Serve a small call (:mod:`lsio._route`) on this storage's fast path, or decline
        with ``None`` before handing anything out (the bulk road then serves it). Failures
        of requests it served go to ``outcome`` (remote backends)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (threads, connections); idempotent."""
        ...


    async def stat(self, reqs: Requests, *, tune: Preset, missing_ok: bool,
                   keep_going: bool = False) -> StatResult:
        """What the call needs to know of each file before planning: its size (and
        direct-I/O alignment), per-file errno instead of raising, and any bytes already
        read on the way (:attr:`StatResult.bodies`). ``keep_going``: one file's failure
        does not stop the others' stat (``on_error="return"``)."""
        ...

    async def layout(self, reqs: Requests, stat: StatResult, tune: Preset, *,
                     direct: bool | None, own_destinations: bool) -> Layout:
        """How to plan this call's reads on this storage. ``direct`` is the reader's
        O_DIRECT choice (``None``: the backend decides), ``own_destinations`` says reads go
        straight to the caller's buffers."""
        ...

    async def read(self, reqs: Requests, stat: StatResult, layout: Layout, plan: Plan,
                   buffers: list[Any], run: RunOptions) -> ReadResult:
        """Execute ``plan`` as ``run`` says; read ``i`` lands in
        ``buffers[plan.op_base[i]]`` at ``plan.op_buf[i]``. Each file is read through
        descriptors of one version of it."""
        ...


class LocalBackend(Backend, Protocol):
    """A backend of local files: its small path can also run on a blocking caller's
    thread."""

    def serve_small(self, call: Call, strategy: Strategy) -> Results | None:
        """The small call served on this thread, which may wait for the disk, or ``None``."""
        ...
