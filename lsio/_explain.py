"""``Reader.explain``: the road and plan a call would take, without reading its data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._call import parse
from ._plan import LINUX_MAX_RW, plan, resolve_ranges
from ._route import plain_limit, route
from ._url import is_url, local_path

if TYPE_CHECKING:
    from ._reader import Reader

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """What a call would do (:meth:`lsio.Reader.explain`)."""

    route: str
    """``"small"`` (the backend's small path is tried first; it falls back to the bulk plan
    below when the data is not cached or a request is unusual) or ``"bulk"``."""

    backend: str
    """``"uring"``, ``"threads"``, ``"http"`` or ``"mixed"``."""

    requests: int
    """Requests in the call."""

    files: int
    """Distinct files or objects."""

    reads: int
    """Reads (HTTP: range requests) the bulk plan issues."""

    merged: int
    """Requests that share a read with another (coalesced through small gaps, overlaps,
    duplicates)."""

    split: int
    """Requests read by more than one read (split into parallel parts)."""

    bytes_requested: int
    """Bytes the requests return (ranges clamped to the sizes found)."""

    bytes_read: int
    """Bytes the reads fetch: the requested ones, plus gaps read through and alignment."""

    @property
    def over_read(self) -> int:
        """Bytes read that no request returns."""
        return max(self.bytes_read - self.bytes_requested, 0)


async def explain(reader: Reader, requests: Iterable[Any], *, missing_ok: bool
                  ) -> Explanation:
    """Stat the call's files (probe its URLs) and plan it as the bulk road would."""
    call = parse(requests, None, missing_ok, plain_max=plain_limit(reader._force))
    strategy = route(call, reader._force, reader.direct)
    reqs = call.reqs()
    remote = np.fromiter(map(is_url, reqs.paths), bool, len(reqs.paths))
    road = reader._road
    totals = np.zeros(5, np.int64)  # reads, merged, split, requested, read
    for part_remote in (False, True):
        mask = remote == part_remote
        if not mask.any():
            continue
        part = reqs.part(mask)
        if not part_remote:
            part = part.with_paths([local_path(p) for p in part.paths])
        totals += await _plan_part(road, part, part_remote, missing_ok)
    backend = ("mixed" if remote.any() and not remote.all() else
               "http" if remote.any() else reader.backend)
    reads, merged, split, requested, read = (int(x) for x in totals)
    return Explanation("small" if strategy.small else "bulk", backend, len(reqs),
                       len(reqs.paths), reads, merged, split, requested, read)


async def _plan_part(road: Any, reqs: Any, remote: bool, missing_ok: bool) -> Any:
    tune = road.tuning(reqs.paths[0])
    backend = road.remote() if remote else road.local
    stat = await backend.stat(reqs, tune=tune, missing_ok=missing_ok)
    layout = await backend.layout(reqs, stat, tune, direct=road.direct,
                                  own_destinations=False)
    p = plan(reqs.file, reqs.offset, reqs.length, file_size=stat.size,
             file_align=layout.file_align, max_gap=layout.max_gap,
             max_read=layout.max_read or tune.max_read, split_size=LINUX_MAX_RW,
             arena_align=layout.arena_align, own_destinations=False,
             check_eof=layout.check_eof, sparse=layout.sparse)
    live = p.req_group[p.req_group >= 0]
    per_group = np.bincount(live, minlength=len(p.group_start))
    ops_per_group = np.bincount(p.op_group, minlength=len(p.group_start))
    merged = int((per_group[live] > 1).sum()) if len(live) else 0
    split = int((ops_per_group[live] > 1).sum()) if len(live) else 0
    start, end = resolve_ranges(reqs.file, reqs.offset, reqs.length, stat.size)
    return np.array([p.nops, merged, split, int((end - start).sum()), p.bytes_read])
