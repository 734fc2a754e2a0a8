"""Turns a plan's finished reads into finished requests, for the bulk road.

A request is finished when every read of its group is; a read that came back short (the
file shrank, or an aligned direct read met EOF) lowers its group's end; a read that came
back other than the planned size predicts flags its file as changed (read again, one version
of it: ``lsio._bulk``).
"""

from __future__ import annotations

import errno

import numpy as np
import numpy.typing as npt

from ._plan import Plan, distinct
from ._request import Requests
from .backends._base import ReadResult

__all__ = ["Tracker", "stale"]


class Tracker:
    """Turns finished reads into finished requests, and their true lengths.

    A request is finished when every read of its group is; a read that came back short
    (the file shrank, or an aligned direct read met EOF) lowers its group's end."""

    def __init__(self, p: Plan, file: npt.NDArray[np.int64] | None = None,
                 file_size: npt.NDArray[np.int64] | None = None) -> None:
        self.plan = p
        self.file = file
        """File of each request; with ``file_size``, reads are checked against the size the
        plan was made with, and requests of files that changed are held back."""
        self.changed = np.zeros(0 if file_size is None else len(file_size), bool)
        """Files whose reads returned other than the planned size predicts."""
        self.reported = np.zeros(len(p.req_length), bool)
        """Requests handed to the caller's progress (final, whatever happens next)."""
        self.expected = (None if file_size is None else
                         np.clip(file_size[p.op_file] - p.op_offset, 0, p.op_length))
        ngroups = len(p.group_start)
        self.left = np.bincount(p.op_group, minlength=ngroups).astype(np.int64)
        self.group_end = p.group_end.copy()
        live = np.flatnonzero(p.req_group >= 0)
        self.by_group = live[np.argsort(p.req_group[live], kind="stable")]
        self.bounds = np.searchsorted(p.req_group[self.by_group], np.arange(ngroups + 1))
        self.lengths = p.req_length.copy()
        """True length of each request; final once the request is finished."""

    def requests_of(self, groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Requests served by ``groups`` (vectorised concatenation of their slices)."""
        lo, hi = self.bounds[groups], self.bounds[groups + 1]
        n = hi - lo
        idx = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        return self.by_group[idx]

    def update(self, ops: npt.NDArray[np.int64], done: npt.NDArray[np.int64]
               ) -> npt.NDArray[np.int64]:
        p = self.plan
        if self.expected is not None:
            self.check(ops, done)
        short = done[ops] < p.op_length[ops]
        if short.any():
            s = ops[short]
            np.minimum.at(self.group_end, p.op_group[s], p.op_offset[s] + done[s])
        groups = p.op_group[ops]
        np.subtract.at(self.left, groups, 1)
        finished = self.requests_of(distinct(groups[self.left[groups] == 0])[0])
        if short.any():
            end = np.minimum(p.req_start[finished] + p.req_length[finished],
                             self.group_end[p.req_group[finished]])
            self.lengths[finished] = np.clip(end - p.req_start[finished], 0,
                                             p.req_length[finished])
        if self.file is not None and self.changed.any():
            finished = finished[~self.changed[self.file[finished]]]
        return finished

    def check(self, ops: npt.NDArray[np.int64], done: npt.NDArray[np.int64]) -> None:
        """Flag the files of reads that came back with more bytes than the planned size
        allows (a read runs one byte past the end to see it) or fewer (it shrank)."""
        assert self.expected is not None
        off = ops[done[ops] != self.expected[ops]]
        if len(off):
            self.changed[self.plan.op_file[off]] = True


def stale(reqs: Requests, p: Plan, res: ReadResult, tracker: Tracker
           ) -> npt.NDArray[np.bool_] | None:
    """The requests to read again because their object changed while this call read it
    (reads failed with ``ESTALE``: ``lsio.backends.http._version``), those handed out
    already excepted (they are final); ``None`` if no object changed. Other failures of the
    reads are reported by the next attempt if they persist."""
    stale = res.err == errno.ESTALE
    if not stale.any():
        return None
    changed = np.zeros(len(reqs.paths), bool)
    changed[p.op_file[stale]] = True
    redo = changed[reqs.file] & ~tracker.reported
    failed = np.flatnonzero(res.err)
    hit = tracker.requests_of(distinct(p.op_group[failed])[0])
    if np.any(~redo[hit]):  # another failure, on a request not read again: report it
        return None
    return redo

