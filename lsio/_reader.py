"""The public reader: options, backend choice, and the request -> plan -> backend -> result
flow. Every default tuning number lives here, with where it comes from."""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from . import _ring, _small
from ._callbacks import Guard
from ._defaults import (
    DEFAULT_MAX_OPEN,
    DEFAULT_THREADS,
    OFF_LOOP_REQUESTS,
    OUT_INFLIGHT_BYTES,
    READ_ATTEMPTS,
    SMALL_BYTES,
    SMALL_OFF_LOOP_BYTES,
    SMALL_URLS,
)
from ._errors import MISSING, BackendWarning, no_memory, request_error
from ._memory import allocate
from ._outcheck import holds_pointers
from ._pipeline import WINDOW, PipelineArg, PipelineRun, steps_for
from ._plan import LINUX_MAX_RW, Plan, distinct, plan, resolve_ranges
from ._presets import PRESETS, Preset, detect_preset
from ._progress import Progress, ProgressArg, make_progress
from ._redact import redact_exception, redacting
from ._request import Chunk, Requests, normalize, plain_requests
from ._results import Results, shared_columns
from ._sync import on_loop_thread, run_sync
from ._types import Bodies, StatResult
from ._url import HttpOptions, is_url, local_path
from .backends._base import Backend, ReadResult, RunOptions
from .backends.local import UringBackend, special_detail

if TYPE_CHECKING:
    from .backends.http import HttpBackend

__all__ = ["Reader", "backend_name", "default_reader"]

DirectMode = bool | None
_Progress = Callable[[npt.NDArray[np.int64], "Results", npt.NDArray[np.int64]], None]
"""Told (request indices in the caller's list, the part's results, indices in the part)."""
BackendName = Literal["uring", "threads"]
RouteName = Literal["auto", "small", "bulk"]
ROUTES: dict[str, bool | None] = {"auto": None, "small": True, "bulk": False}
"""Each ``Reader(route=...)`` and what it makes of ``Reader._small``."""

_probe_result: list[str | None] = []
_warned = False


def _uring_problem() -> str | None:
    if not _probe_result:
        _probe_result.append(_ring.probe() if sys.platform == "linux" else
                             f"io_uring needs Linux (this is {sys.platform})")
    return _probe_result[0]


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_level() -> int:
    """``stacklevel`` that points a warning at the first frame outside lsio."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(
            os.path.abspath(frame.f_code.co_filename)).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _choose_backend(name: str | None) -> str:
    global _warned
    requested = name or os.environ.get("LSIO_BACKEND") or None
    if requested not in (None, "uring", "threads"):
        raise ValueError(f"lsio: unknown backend {requested!r}; use 'uring' or 'threads'")
    if requested == "threads":
        return "threads"
    problem = _uring_problem()
    if problem is None:
        return "uring"
    hint = ("io_uring is blocked by Docker's default seccomp profile (run with "
            "--security-opt seccomp=unconfined or a profile allowing io_uring_*) or by "
            "sysctl kernel.io_uring_disabled=0/1; set LSIO_BACKEND=threads to silence this")
    if requested == "uring" or os.environ.get("LSIO_REQUIRE_URING") == "1":
        raise _ring.RingUnavailable(f"lsio: io_uring is required but unusable: {problem}. "
                                    f"{hint}")
    if not _warned:
        _warned = True
        warnings.warn(f"lsio: using the thread-pool backend because io_uring is unusable: "
                      f"{problem}. {hint}", BackendWarning, stacklevel=_caller_level())
    return "threads"


class _Tracker:
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


class Reader:
    """Configuration for reading many chunks; the module functions use a default one.

    Parameters
    ----------
    preset
        Tuning for a kind of storage: ``"nvme"``, ``"hdd"``, ``"network_fs"``, ``"http"``,
        ``"cloud"``
        (``lsio/_presets.py`` gives each number's source). ``None`` (default): picked per
        call from where the first path lives (sysfs ``rotational``, the filesystem type, a
        URL scheme).
    queue_depth
        Reads in flight per call (default: the preset's; 64 for ``nvme``).
    coalesce
        Merge reads of one file separated by small gaps (default ``True``). Overlapping and
        duplicate requests are always read once.
    max_gap
        Largest gap in bytes read through to merge two requests (default: the preset's).
    max_read
        Largest merged read, and the size long reads are split into (default: the
        preset's).
    direct
        ``True``: O_DIRECT wherever the filesystem allows it; ``False``: always through the
        page cache; ``None`` (default): per file, O_DIRECT when most of what the call reads
        is not in the page cache, else buffered. Files on filesystems that refuse O_DIRECT
        (tmpfs) are read buffered in every mode.
    backend
        ``"uring"``, ``"threads"`` or ``None`` (``$LSIO_BACKEND``, else io_uring when usable,
        else threads with one :class:`lsio.BackendWarning`).
    max_open_files
        Files open at once per call (default 128, at most a quarter of ``ulimit -n``).
    threads
        Worker threads of the fallback backend.
    http
        :class:`lsio.HttpOptions` for URLs (``http(s)://``, ``s3://``, ``gs://``,
        ``az://``): concurrency, retries, timeouts, headers, S3 endpoint and credentials.
    route
        Which path serves a call, whatever its size. ``"auto"`` (default): a call of a few
        requests whose data is in the page cache, or of a few URLs each of its own object,
        takes the small-call path (served on the caller's thread, or in one GET per
        object), every other call the bulk path. ``"small"``: every call the small-call
        path can serve takes it, however many requests or bytes it has (a URL call: as
        ``"auto"``). ``"bulk"``: every call takes the bulk path (stat, plan, the backend's
        batched reads); calls with ``progress=`` or ``pipeline=`` always do. Results and
        errors are the same on every route; this is for tests and measurements. The
        backend of the bulk path is chosen by ``backend``.
    """

    def __init__(
        self,
        *,
        preset: str | None = None,
        queue_depth: int | None = None,
        coalesce: bool = True,
        max_gap: int | None = None,
        max_read: int | None = None,
        direct: DirectMode = None,
        backend: BackendName | None = None,
        max_open_files: int | None = None,
        threads: int = DEFAULT_THREADS,
        http: HttpOptions | None = None,
        route: RouteName = "auto",
    ) -> None:
        if not isinstance(route, str) or route not in ROUTES:
            raise ValueError(f"lsio: route must be one of {', '.join(map(repr, ROUTES))}, "
                             f"got {route!r}")
        if queue_depth is not None and (not isinstance(queue_depth, int) or isinstance(
                queue_depth, bool) or not 1 <= queue_depth <= _ring.RING_ENTRIES):
            raise ValueError(f"lsio: queue_depth must be an int in 1..{_ring.RING_ENTRIES}, "
                             f"got {queue_depth!r}")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"lsio: unknown preset {preset!r}; one of {sorted(PRESETS)}")
        for name, value, low in (("max_gap", max_gap, 0), ("max_read", max_read, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < low):
                raise ValueError(f"lsio: {name} must be an int >= {low}, got {value!r}")
        if direct not in (None, True, False):
            raise TypeError(f"lsio: direct must be None, True or False, got {direct!r}")
        if max_open_files is not None and (not isinstance(max_open_files, int)
                                           or max_open_files < 1):
            raise ValueError(f"lsio: max_open_files must be a positive int, got "
                             f"{max_open_files!r}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"lsio: threads must be a positive int, got {threads!r}")
        if http is not None and not isinstance(http, HttpOptions):
            raise TypeError(f"lsio: http must be an lsio.HttpOptions, got {type(http).__name__}")
        self.http = http or HttpOptions()
        self._http: HttpBackend | None = None
        self.preset = preset
        self.queue_depth = queue_depth
        self.coalesce = coalesce
        self.max_gap = max_gap
        self.max_read = max_read
        self.direct = direct
        self.max_open_files = max_open_files
        self._settings = {"preset": preset, "queue_depth": queue_depth, "coalesce": coalesce,
                          "max_gap": max_gap, "max_read": max_read, "direct": direct,
                          "backend": backend, "max_open_files": max_open_files,
                          "threads": threads, "http": http, "route": route}
        """The arguments, as given: a pickled reader is built again from them (in the
        receiving process: its own rings and threads, its own backend choice)."""
        self.backend = _choose_backend(backend)
        """Name of the backend this reader uses: ``"uring"`` or ``"threads"``."""
        self._backend: Backend
        if self.backend == "uring":
            self._backend = UringBackend()
        else:  # the fallback and its thread pool load only where they are used
            from .backends.threads import ThreadsBackend

            self._backend = ThreadsBackend(threads)
        self.route = route
        """Which path serves a call (``route``): ``"auto"``, ``"small"`` or ``"bulk"``."""
        self._small: bool | None = ROUTES[route]
        """The small-call path (``_small``), as ``route`` says: ``None`` for calls within
        its limits, ``True`` for every call, ``False`` never. ``False`` also turns off the
        one for URLs (``backends/http/_small``)."""
        self._url_tunings: dict[tuple[Any, ...], Preset] = {}
        """:meth:`tuning` of the URL small-call path, by its inputs (it costs ~12 us)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reader, (self._settings,))

    def __repr__(self) -> str:
        route = "" if self.route == "auto" else f", route={self.route!r}"
        return (f"lsio.Reader(backend={self.backend!r}, preset={self.preset!r}, "
                f"queue_depth={self.queue_depth}, direct={self.direct!r}{route})")

    def tuning(self, path: str) -> Preset:
        """The knobs a call whose first request is ``path`` uses: the preset (named, or
        detected from ``path``) with this reader's overrides."""
        base = PRESETS[self.preset or detect_preset(path)]
        tuned = base.with_(queue_depth=self.queue_depth, max_gap=self.max_gap,
                           max_read=self.max_read)
        fixed = replace(tuned, gap_fixed=self.max_gap is not None or not self.coalesce,
                        read_fixed=self.max_read is not None)
        return fixed if self.coalesce else replace(fixed, max_gap=None)

    def _max_open(self) -> int:
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError):  # pragma: no cover - not POSIX
            soft = 1024
        cap = max(1, soft // 4) if soft > 0 else DEFAULT_MAX_OPEN
        return min(self.max_open_files or DEFAULT_MAX_OPEN, cap)

    # -- the flow -------------------------------------------------------------------
    async def _run(self, requests: Iterable[Any], out: Sequence[Any] | None,
                   progress: _Progress | None = None, missing_ok: bool = False) -> Results:
        return await self._run_reqs(await _normalize(requests), out, progress, missing_ok)

    async def _run_reqs(self, reqs: Requests, out: Sequence[Any] | None,
                        progress: _Progress | None, missing_ok: bool) -> Results:
        caps = _check_out(out, len(reqs))
        start = getattr(progress, "start", None)
        if start is not None:
            start(len(reqs))
        joined = "\n".join(reqs.paths)  # one C-speed scan instead of a regex per path
        remote = (np.fromiter(map(is_url, reqs.paths), bool, len(reqs.paths))
                  if "://" in joined else np.zeros(len(reqs.paths), bool))
        if not remote.any():
            return await self._run_part(reqs, out, caps, progress, missing_ok, remote=False)
        pending = np.ones(len(reqs), bool)  # for the deadline's error: what was not read

        def seen(idx: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
            pending[idx] = False
            if progress is not None:
                progress(idx, results, local)

        watch = seen if self.http.timeout is not None else progress
        async with _deadline(self.http.timeout, reqs, pending):
            if remote.all():
                return await self._run_part(reqs, out, caps, watch, missing_ok, remote=True)
            return await self._run_mixed(reqs, remote, out, caps, watch, missing_ok)

    async def _run_mixed(self, reqs: Requests, remote: npt.NDArray[np.bool_],
                         out: Sequence[Any] | None, caps: npt.NDArray[np.int64],
                         progress: _Progress | None, missing_ok: bool) -> Results:
        """Local and remote requests in one call: each part planned for its own storage,
        both running at once."""
        parts = [reqs.part(~remote), reqs.part(remote)]
        tasks = []
        for is_remote, part in zip((False, True), parts, strict=True):
            assert part.number is not None
            sub_out = None if out is None else [out[i] for i in part.number]
            tasks.append(asyncio.ensure_future(self._run_part(
                part, sub_out, caps[part.number] if out is not None else caps, progress,
                missing_ok, remote=is_remote)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            outcome = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in outcome if isinstance(e, BaseException)
                  and not isinstance(e, asyncio.CancelledError)]
        if errors:
            raise min(errors, key=lambda e: getattr(e, "request_index", len(reqs)))
        if any(isinstance(e, BaseException) for e in outcome):
            raise asyncio.CancelledError()
        return Results.merge(len(reqs), [(r, part.number)  # type: ignore[misc]
                                         for r, part in zip(outcome, parts, strict=True)])

    async def _run_part(self, reqs: Requests, out: Sequence[Any] | None,
                        caps: npt.NDArray[np.int64], progress: _Progress | None,
                        missing_ok: bool, *, remote: bool, attempt: int = 0) -> Results:
        """request -> stat -> plan -> backend -> result for requests of one kind of storage.
        ``attempt``: how many times these requests were read before, their files having
        changed under the read. Remote objects that changed while read (and kept changing
        ``READ_ATTEMPTS`` times) fail with ``ESTALE``."""
        try:
            return await self._run_part_once(reqs, out, caps, progress, missing_ok,
                                             remote=remote, attempt=attempt)
        except _Changed:  # nothing handed out yet: the whole part again, one version each
            return await self._run_part(reqs, out, caps, progress, missing_ok, remote=remote,
                                        attempt=attempt + 1)

    async def _run_part_once(self, reqs: Requests, out: Sequence[Any] | None,
                             caps: npt.NDArray[np.int64], progress: _Progress | None,
                             missing_ok: bool, *, remote: bool, attempt: int = 0) -> Results:
        tune = self.tuning(reqs.paths[0]) if len(reqs) else PRESETS["nvme"]
        backend = self._http_backend() if remote else self._backend
        if not remote and "file://" in "\n".join(reqs.paths).lower():
            reqs = reqs.with_paths([local_path(p) for p in reqs.paths])
        stat = await backend.stat(reqs, tune=tune, missing_ok=missing_ok)
        if remote and attempt + 1 < READ_ATTEMPTS and np.any(stat.err == errno.ESTALE):
            raise _Changed()  # between a size probe's requests: nothing is handed out yet
        err = stat.err[reqs.file]
        gone = np.isin(err, MISSING) if missing_ok else np.zeros(len(reqs), bool)
        bad = np.flatnonzero(err * ~gone)
        if len(bad):
            file = int(reqs.file[bad[0]])
            raise request_error(int(stat.err[file]), reqs, int(bad[0]), stat.detail.get(file))
        parts: list[tuple[Results, npt.NDArray[np.int64]]] = []
        left = ~gone
        if gone.any():
            idx = np.flatnonzero(gone)
            absent = Results.absent(len(idx))
            parts.append((absent, idx))
            if progress is not None:
                progress(_caller(reqs, idx), absent, np.arange(len(idx), dtype=np.int64))
        if stat.bodies is not None:
            served = _serve_from_memory(stat.bodies, reqs, stat.size, out, caps, progress, left)
            if served is not None:
                done, early = served
                parts.append((early, np.flatnonzero(done)))
                left &= ~done
        if not parts:
            return await self._read_part(backend, reqs, stat, tune, out, caps, progress,
                                         missing_ok, attempt)
        late = await self._read_part(backend, reqs.select(left), stat, tune, _pick(out, left),
                                     caps[left] if out is not None else caps, progress,
                                     missing_ok, attempt)
        parts.append((late, np.flatnonzero(left)))
        return Results.merge(len(reqs), parts)

    async def _read_part(self, backend: Backend, reqs: Requests, stat: StatResult,
                         tune: Preset, out: Sequence[Any] | None,
                         caps: npt.NDArray[np.int64], progress: _Progress | None,
                         missing_ok: bool, attempt: int = 0) -> Results:
        """layout -> plan -> backend read -> result, once the sizes are known."""
        layout = await backend.layout(reqs, stat, tune, direct=self.direct,
                                      own_destinations=out is not None)
        p = await _off_loop(
            len(reqs), plan, reqs.file, reqs.offset, reqs.length, file_size=stat.size,
            file_align=layout.file_align, max_gap=layout.max_gap,
            max_read=layout.max_read or tune.max_read,
            split_size=LINUX_MAX_RW, arena_align=layout.arena_align,
            own_destinations=out is not None, check_eof=layout.check_eof,
            sparse=layout.sparse and out is None,
            gap_budget=_gap_budget(reqs, stat.size, layout.gap_budget_ratio))
        buffers = self._buffers(reqs, p, out, caps)
        tracker = await _off_loop(len(reqs), _Tracker, p, *(
            (reqs.file, stat.size) if layout.check_eof else ()))
        results = Results(buffers[:len(reqs)] if out is not None else buffers, p.req_base,
                          p.req_buf, tracker.lengths)

        def report(finished: npt.NDArray[np.int64]) -> None:
            assert progress is not None
            tracker.reported[finished] = True
            progress(_caller(reqs, finished), results, finished)

        if p.nops == 0:
            if progress is not None:
                report(np.arange(len(reqs), dtype=np.int64))
            return results

        on_progress = None
        guard = None
        if progress is not None:
            empty = np.flatnonzero(p.req_group < 0)  # nothing to read: finished already
            if len(empty):
                report(empty)

            def finished_reads(ops: npt.NDArray[np.int64], done: npt.NDArray[np.int64],
                               err: npt.NDArray[np.int32]) -> None:
                ok = ops[err[ops] == 0]
                finished = tracker.update(ok, done)
                if len(finished):
                    report(finished)

            # the caller's callback runs inside the backend's completion handling: one
            # that raises must end the read (and the call), not the backend
            guard = Guard()
            on_progress = guard.wrap(finished_reads)

        depth = tune.queue_depth
        if out is not None:
            depth = min(depth, max(4, OUT_INFLIGHT_BYTES * p.nops // max(p.bytes_read, 1)))
        reading = backend.read(reqs, stat, layout, p, buffers, RunOptions(
            queue_depth=depth, max_open=self._max_open(), on_progress=on_progress,
            missing_ok=missing_ok, caller_memory=out is not None,
            changed=tracker.changed if layout.check_eof else None))
        res = await (reading if guard is None else guard.run(reading))
        if backend.name == "http" and attempt + 1 < READ_ATTEMPTS:
            redo = _stale(reqs, p, res, tracker)  # objects that changed while read
            if redo is not None and progress is None:
                raise _Changed()  # (requests served by size probes too): all again
            if redo is not None:  # those handed out are final; the others again
                return await self._read_again(reqs, results, redo, out, caps, progress,
                                              missing_ok, attempt, remote=True)
        self._raise_failures(reqs, p, res, tracker, results, missing_ok,
                             report if progress is not None else None)
        if progress is None and np.any(res.done != p.op_length):
            tracker.update(np.arange(p.nops, dtype=np.int64), res.done)
        if not layout.check_eof:
            return results
        tracker.check(np.flatnonzero(res.err == 0), res.done)
        redo = tracker.changed[reqs.file] & ~tracker.reported & ~results.missing
        if not redo.any():
            return results
        return await self._read_again(reqs, results, redo, out, caps, progress, missing_ok,
                                      attempt)

    async def _read_again(self, reqs: Requests, results: Results,
                          redo: npt.NDArray[np.bool_], out: Sequence[Any] | None,
                          caps: npt.NDArray[np.int64], progress: _Progress | None,
                          missing_ok: bool, attempt: int, remote: bool = False) -> Results:
        """Files replaced or changed while they were read: their requests not yet handed
        out (``redo``) are planned and read again from a fresh stat, so each returns one
        version; after ``READ_ATTEMPTS``, each such file is read to its end at once (a
        local file; a URL's last attempt reports the change, ``ESTALE``)."""
        rest = reqs.select(redo)
        sub_out, sub_caps = _pick(out, redo), caps[redo] if out is not None else caps
        if attempt + 1 < READ_ATTEMPTS or remote:
            again = await self._run_part(rest, sub_out, sub_caps, progress, missing_ok,
                                         remote=remote, attempt=attempt + 1)
        else:
            again = await _read_to_end(rest, sub_out, sub_caps, progress, missing_ok)
        keep = np.flatnonzero(~redo)
        return Results.merge(len(reqs), [(results.take(keep), keep),
                                         (again, np.flatnonzero(redo))])

    @staticmethod
    def _buffers(reqs: Requests, p: Plan, out: Sequence[Any] | None,
                 caps: npt.NDArray[np.int64]) -> list[Any]:
        """Where the plan's reads land: a fresh arena, or the caller's buffers (checked to
        be large enough) and a scratch buffer for end-of-file probes."""
        if out is None:
            try:
                return [allocate(p.arena_size)]
            except (OSError, MemoryError) as exc:  # mmap: ENOMEM; numpy: MemoryError
                raise no_memory(reqs, p.req_length, p.arena_size) from exc
        small = np.flatnonzero(caps < p.req_length)
        if len(small):
            i = int(small[0])
            raise ValueError(f"lsio: out[{reqs.caller_index(i)}] holds {caps[i]} bytes "
                             f"but {reqs.describe(i)} returns {p.req_length[i]}")
        buffers = list(out)
        if p.eof_scratch:
            buffers.append(bytearray(p.eof_scratch))
        return buffers

    @staticmethod
    def _raise_failures(reqs: Requests, p: Plan, res: ReadResult, tracker: _Tracker,
                        results: Results, missing_ok: bool,
                        report: Callable[[npt.NDArray[np.int64]], None] | None) -> None:
        """Turn failed reads into the call's outcome: with ``missing_ok``, files or objects
        found gone while reading (deleted since the stat; a URL range read needs no size
        probe first) become missing results; any other failure raises the lowest failing
        request's error."""
        failed = np.flatnonzero(res.err)
        if len(failed) and missing_ok:
            lost = failed[np.isin(res.err[failed], MISSING)]
            if len(lost):
                victims = tracker.requests_of(distinct(p.op_group[lost])[0])
                results.missing[victims] = True
                results.lengths[victims] = 0
                failed = failed[~np.isin(res.err[failed], MISSING)]
                if report is not None:
                    report(victims[~tracker.reported[victims]])
        if len(failed):
            groups = distinct(p.op_group[failed])[0]
            victims = tracker.requests_of(groups)
            first = int(victims.min())
            op = failed[np.flatnonzero(p.op_group[failed] == p.req_group[first])[0]]
            raise request_error(int(res.err[op]), reqs, first, res.detail.get(int(op)))

    def _http_backend(self) -> HttpBackend:
        """The HTTP backend, made on the first URL (it imports aiohttp)."""
        if self._http is None:
            from .backends.http import HttpBackend

            self._http = HttpBackend(self.http)
        return self._http

    @redacting  # the door errors leave by: no secret in them
    async def read_many(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                        progress: ProgressArg = False, missing_ok: bool = False,
                        pipeline: PipelineArg = None) -> Any:
        """Read every request; the result is in request order.

        On the first failing request, lsio stops starting new reads, waits for the reads in
        flight, and raises that request's ``OSError`` (the lowest request index among the
        failures seen); no partial results are returned. ``progress=True`` shows a
        ``tqdm`` bar of chunks and bytes; a callable gets ``(chunks_done, chunks_total,
        bytes_done)``. ``missing_ok=True``: a file or object that does not exist gives
        ``None`` instead of ``FileNotFoundError``.

        ``pipeline``: steps applied to each chunk as soon as it arrives, on one worker
        thread per core (see :func:`lsio.copy_to` for a sink). Then the result is a list of
        each request's last step output (``None`` after a sink or for a missing file).
        """
        if pipeline is None and not progress:
            small = None
            urls = self._small_urls(requests)
            if urls is not None:
                small = await self._read_urls(requests, *urls, out, missing_ok)
            if small is None:
                small = await self._read_small_async(requests, out, missing_ok)
            if small is not None:
                return small
        bar = make_progress(progress)
        try:
            if pipeline is None:
                return await self._run(requests, out, bar, missing_ok)
            if out is not None:
                raise ValueError("lsio: out= and pipeline= do not go together; end the "
                                 "pipeline with lsio.copy_to(array, region) instead")
            return await self._run_pipeline(await _normalize(requests), pipeline, bar,
                                            missing_ok)
        finally:
            if bar is not None:
                bar.close()

    @property
    def _small_allowed(self) -> bool:
        """Whether local calls may take the small-call path (``_small``): not turned off
        (``_small``), and not O_DIRECT by request (the small path reads the page cache)."""
        return self._small is not False and self.direct is not True

    async def _read_small_async(self, requests: Any, out: Sequence[Any] | None,
                                missing_ok: bool) -> Results | None:
        """The call served by the small-call path (``_small``) for a caller on the loop, or
        ``None``."""
        if not self._small_allowed:
            return None
        return await _small.read_async(requests, out, missing_ok, force=self._small is True)

    def _read_small(self, requests: Any, out: Sequence[Any] | None, missing_ok: bool, *,
                    on_loop: bool = False) -> Results | None:
        """The call served by the small-call path (``_small``) on this thread, or ``None``:
        up to ``SMALL_BYTES`` ``on_loop``, else (a blocking caller, whose thread waits
        either way) up to ``SMALL_OFF_LOOP_BYTES``, a few cold requests included."""
        if not self._small_allowed:
            return None
        return _small.read(requests, out, missing_ok, force=self._small is True,
                           limit=SMALL_BYTES if on_loop else SMALL_OFF_LOOP_BYTES,
                           wait=not on_loop)

    def _small_urls(self, requests: Any) -> tuple[list[str], list[int]] | None:
        """A call the small-call path for URLs may serve, parsed (``backends/http/_small``:
        a few requests, each of its own object, each one GET); ``None`` at once for any
        other (a local call goes on to the local small-call path)."""
        if self._small is False or type(requests) not in (list, tuple) or not (
                0 < len(requests) <= SMALL_URLS):
            return None
        first = requests[0]
        kind = type(first)
        path = first[0] if kind is tuple and first else first.path if kind is Chunk else first
        if type(path) is not str or "://" not in path:
            return None
        return _parse_urls(requests)

    async def _read_urls(self, requests: Any, paths: list[str], flat: list[int],
                         out: Sequence[Any] | None, missing_ok: bool) -> Results | None:
        """The call, parsed by :meth:`_small_urls`, served by the small-call path for URLs,
        or ``None``: the bulk path must serve it. Errors are raised as the bulk path raises
        them."""
        n = len(requests)
        caps = None if out is None else _check_out(out, n)
        # a URL's preset depends on its scheme alone, which its first 5 characters tell
        key = (paths[0][:5].lower(), self.preset, self.queue_depth, self.max_gap,
               self.max_read, self.coalesce)
        tune = self._url_tunings.get(key)
        if tune is None:
            tune = self._url_tunings[key] = self.tuning(paths[0])
        backend = self._http or self._http_backend()
        seconds = self.http.timeout
        if seconds is None:
            job = backend.read_small(paths, flat, out, caps, tune, missing_ok, None)
            if job is None:
                return None
            views, lengths, failed = await job
        else:
            pending = np.ones(n, bool)
            job = backend.read_small(paths, flat, out, caps, tune, missing_ok,
                                     lambda i: pending.__setitem__(i, False))
            if job is None:
                return None
            async with _deadline(seconds, lambda: normalize(requests), pending):
                views, lengths, failed = await job
        missing = None
        if failed:
            bad = [i for i in sorted(failed)
                   if not (missing_ok and failed[i][0] in MISSING)]
            if bad:  # the lowest failing request, as the bulk path reports
                code, detail = failed[bad[0]]
                raise request_error(code, normalize(requests), bad[0], detail)
            missing = np.zeros(n, bool)
            missing[list(failed)] = True
        index, zeros, _ = shared_columns(n)
        return Results(views if out is None else list(out), index, zeros,
                       np.array(lengths, np.int64), missing)

    async def _run_pipeline(self, reqs: Requests, pipeline: PipelineArg,
                            bar: Progress | None, missing_ok: bool) -> list[Any]:
        """Read in windows; hand each finished chunk to the pinned workers (_pipeline)."""
        n = len(reqs)
        steps = steps_for(pipeline, n)
        if bar is not None:
            bar.start(n)
        outputs: list[Any] = [None] * n
        guard = Guard()  # a failed step ends the window's read at once
        run = PipelineRun(asyncio.get_running_loop(), steps, outputs, reqs.describe,
                          on_error=lambda: guard.fail(run.errors[0]))
        window = 0

        def hand_off(finished: npt.NDArray[np.int64], results: Results,
                     local: npt.NDArray[np.int64]) -> None:
            if bar is not None:
                bar(finished, results, local)
            if not run.stop.is_set():
                run.put(window, [(g, results[k]) for g, k in zip(
                    finished.tolist(), local.tolist(), strict=True)])

        try:
            for lo in range(0, n, WINDOW):
                window = lo // WINDOW
                try:
                    await guard.run(self._run_reqs(reqs.window(lo, min(lo + WINDOW, n)),
                                                   None, hand_off, missing_ok))
                except BaseException as exc:
                    if exc is not guard.error:
                        raise
                    run.raise_first()  # the lowest failing request's step, as below
                    raise
                if window:  # the window before is decoded: its memory can go
                    await run.window_done(window - 1)
                run.raise_first()
            await run.window_done(window)
        except BaseException:
            run.stop.set()  # running steps finish the chunk they are on; no new ones
            raise
        finally:
            await run.close()
        return outputs

    @redacting  # the small path's errors too
    def read_many_sync(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                       progress: ProgressArg = False, missing_ok: bool = False,
                       pipeline: PipelineArg = None) -> Any:
        """Blocking :meth:`read_many`; safe to call from inside a running event loop."""
        if pipeline is None and not progress and not on_loop_thread():
            small = self._read_small(requests, out, missing_ok)
            if small is not None:
                return small
        return run_sync(self.read_many(requests, out=out, progress=progress,
                                       missing_ok=missing_ok, pipeline=pipeline))

    async def iter_many(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                        progress: ProgressArg = False, missing_ok: bool = False
                        ) -> AsyncIterator[tuple[int, memoryview]]:
        """Yield ``(index, chunk)`` as each request completes (completion order)."""
        bar = make_progress(progress)
        queue: asyncio.Queue[tuple[npt.NDArray[np.int64], Results, npt.NDArray[np.int64]]
                             | None] = asyncio.Queue()

        def report(finished: npt.NDArray[np.int64], results: Results,
                   local: npt.NDArray[np.int64]) -> None:
            queue.put_nowait((finished, results, local))
            if bar is not None:
                bar(finished, results, local)
        report.start = bar.start if bar is not None else None  # type: ignore[attr-defined]

        task = asyncio.ensure_future(self._run(requests, out, report, missing_ok))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                batch = await queue.get()
                if batch is None:
                    try:
                        task.result()  # raises the read's error, if any
                    except Exception as exc:
                        redact_exception(exc)
                        raise
                    return
                finished, results, local = batch
                for i, k in zip(finished.tolist(), local.tolist(), strict=True):
                    yield i, results[k]
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if bar is not None:
                bar.close()


def _gap_budget(reqs: Requests, size: npt.NDArray[np.int64], ratio: float | None
                ) -> int | None:
    """Gap bytes a call may read through: ``ratio - 1`` times the bytes its requests ask
    for (ranges clamped to the sizes known; a range of an object whose size was not asked
    counts in full)."""
    if ratio is None:
        return None
    start, end = resolve_ranges(reqs.file, reqs.offset, reqs.length, size)
    asked = float((end - start).astype(np.float64).sum())
    return int(min(max(ratio - 1.0, 0.0) * asked, 2.0**62))


@asynccontextmanager
async def _deadline(seconds: float | None, reqs: Requests | Callable[[], Requests],
                    pending: npt.NDArray[np.bool_]) -> AsyncIterator[None]:
    """The call's overall deadline (``HttpOptions.timeout``), as a TimeoutError naming the
    first request not read by then (``request_index``, ``filename``), as I/O errors do.
    ``reqs`` may be a function that makes them (only needed for the error)."""
    if seconds is None:
        yield
        return
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        if not isinstance(reqs, Requests):
            reqs = reqs()
        late = np.flatnonzero(pending)
        first = int(late[0]) if len(late) else 0
        error = TimeoutError(errno.ETIMEDOUT, f"lsio: read_many of {len(reqs)} requests did "
                             f"not finish within HttpOptions.timeout={seconds} s "
                             f"({len(late)} not read)", reqs.paths[int(reqs.file[first])])
        error.request_index = reqs.caller_index(first)  # type: ignore[attr-defined]
        error.add_note(f"lsio: the first request not read: {reqs.describe(first)}")
        raise error from None


T = TypeVar("T")


class _Changed(Exception):
    """A remote object changed while the call read it, before any request was handed out:
    the call's remote part is read again (``Reader._run_part``)."""


def _stale(reqs: Requests, p: Plan, res: ReadResult, tracker: _Tracker
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


async def _off_loop(n: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, in a thread when the call has ``OFF_LOOP_REQUESTS`` requests
    or more: normalizing and planning 50 000 requests takes ~35 ms, which would stall the
    event loop; a thread hop costs ~0.1 ms."""
    if n < OFF_LOOP_REQUESTS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _normalize(requests: Iterable[Any]) -> Requests:
    """:func:`normalize`, off the loop for long lists (generators are listed first, so a
    long one is not checked on the loop either; a lone path goes straight to ``normalize``,
    which refuses it)."""
    if isinstance(requests, (str, bytes, os.PathLike)):
        return normalize(requests)
    items = requests if isinstance(requests, (list, tuple)) else list(requests)
    return await _off_loop(len(items), normalize, items)


def _parse_urls(requests: list[Any] | tuple[Any, ...]) -> tuple[list[str], list[int]] | None:
    """For the small-call path for URLs: the call's URLs and, per request, ``(index,
    offset, length)`` in one flat list (a length of -1: to the end), for a call whose
    requests are all of the plain shapes (``_request.plain_requests``), each naming its own
    object; ``None`` for anything else (the bulk path serves it, or names what is wrong)."""
    plain = plain_requests(requests)
    if plain is None:
        return None
    paths, offsets, lengths = plain
    if not all(map(is_url, paths)) or len(set(paths)) != len(paths):
        return None  # a local path; or an object asked for twice: the planner merges
    joined = "\n".join(paths)
    if "\0" in joined:
        return None
    try:
        joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    flat: list[int] = []
    for i, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        flat += (i, offset, length)
    return paths, flat


def _caller(reqs: Requests, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Indices in the caller's list of requests ``idx`` of ``reqs``."""
    return idx if reqs.number is None else reqs.number[idx]


def _pick(out: Sequence[Any] | None, mask: npt.NDArray[np.bool_]) -> list[Any] | None:
    """The caller's buffers of the requests ``mask`` selects."""
    return None if out is None else [out[int(i)] for i in np.flatnonzero(mask)]


def _slurp(path: str) -> bytes:
    """The whole file, read to its end through one descriptor (one version of it, whatever
    size it reports: ``/proc`` files report 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, special_detail(path), path)
        pieces = []
        step = max(st.st_size + 1, 1 << 16)
        while piece := os.read(fd, step):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


async def _read_to_end(reqs: Requests, out: Sequence[Any] | None,
                       caps: npt.NDArray[np.int64], progress: _Progress | None,
                       missing_ok: bool) -> Results:
    """The last resort for files that kept changing while they were read: each is read to
    its end in a thread, and its requests are served from those bytes."""
    bodies: list[memoryview] = []
    size = np.zeros(len(reqs.paths), np.int64)
    gone = np.zeros(len(reqs.paths), bool)
    for f, path in enumerate(reqs.paths):
        try:
            body = await asyncio.to_thread(_slurp, path)
        except OSError as exc:
            if missing_ok and exc.errno in MISSING:
                gone[f] = True
                body = b""
            else:
                first_req = int(np.flatnonzero(reqs.file == f)[0])
                raise request_error(exc.errno or errno.EIO, reqs, first_req,
                                    exc.strerror if exc.errno == errno.EINVAL else None
                                    ) from None
        bodies.append(memoryview(body))
        size[f] = len(body)
    n = len(reqs.paths)
    first, index = np.zeros(n, np.int64), np.arange(n, dtype=np.int64)
    have: npt.NDArray[np.int64] = np.where(gone, -1, size)
    served = _serve_from_memory((first, have, index, bodies), reqs, size, out, caps, progress,
                                ~gone[reqs.file])
    parts: list[tuple[Results, npt.NDArray[np.int64]]] = []
    if served is not None:
        done, early = served
        parts.append((early, np.flatnonzero(done)))
    lost = np.flatnonzero(gone[reqs.file])
    if len(lost):
        absent = Results.absent(len(lost))
        parts.append((absent, lost))
        if progress is not None:
            progress(_caller(reqs, lost), absent, np.arange(len(lost), dtype=np.int64))
    return Results.merge(len(reqs), parts)


def _serve_from_memory(bodies: Bodies, reqs: Requests, size: npt.NDArray[np.int64],
                       out: Sequence[Any] | None, caps: npt.NDArray[np.int64],
                       progress: _Progress | None, left: npt.NDArray[np.bool_]
                       ) -> tuple[npt.NDArray[np.bool_], Results] | None:
    """Requests whose bytes are already in memory (a small object read whole costs one GET;
    a file read to its end): their results are views of those bodies, or copied into
    ``out``."""
    first, have, index, buffers = bodies
    if not buffers:
        return None
    f = reqs.file
    start, end = resolve_ranges(f, reqs.offset, reqs.length, size)
    done = left & (have[f] >= 0) & (start >= first[f]) & (end <= first[f] + have[f])
    if not done.any():
        return None
    idx = np.flatnonzero(done)
    lengths = end[idx] - start[idx]
    if out is not None:
        small = np.flatnonzero(caps[idx] < lengths)
        if len(small):
            i = int(idx[small[0]])
            raise ValueError(f"lsio: out[{reqs.caller_index(i)}] holds {caps[i]} bytes but "
                             f"{reqs.describe(i)} returns {int(end[i] - start[i])}")
        for k, i in enumerate(idx.tolist()):
            body = buffers[int(index[f[i]])]
            at = int(start[i] - first[f[i]])
            memoryview(out[i]).cast("B")[:lengths[k]] = body[at:at + int(lengths[k])]
        early = Results(list(out), idx, np.zeros(len(idx), np.int64), lengths)
    else:
        early = Results(buffers, index[f[idx]], start[idx] - first[f[idx]], lengths)
    if progress is not None:
        progress(_caller(reqs, idx), early, np.arange(len(idx), dtype=np.int64))
    return done, early


def _check_out(out: Sequence[Any] | None, n: int) -> npt.NDArray[np.int64]:
    if out is None:
        return np.zeros(0, np.int64)
    if len(out) != n:
        raise ValueError(f"lsio: out has {len(out)} buffers for {n} requests")
    caps = np.zeros(n, np.int64)
    for i, buf in enumerate(out):
        try:
            view = memoryview(buf)
        except TypeError:
            raise TypeError(f"lsio: out[{i}] ({type(buf).__name__}) does not support the "
                            "buffer protocol") from None
        if view.readonly:
            raise TypeError(f"lsio: out[{i}] is read-only")
        if holds_pointers(buf, view):
            raise TypeError(f"lsio: out[{i}] holds Python objects or pointers (format "
                            f"{view.format!r}): file bytes cannot be written over them")
        if not view.c_contiguous:
            raise ValueError(f"lsio: out[{i}] is not C-contiguous")
        caps[i] = view.nbytes
    return caps


_default: Reader | None = None


def default_reader() -> Reader:
    """The reader behind ``lsio.read_many`` and friends (created on first use)."""
    global _default
    if _default is None:
        _default = Reader()
    return _default


def backend_name() -> str:
    """The backend the module-level functions use: ``"uring"`` or ``"threads"``."""
    return default_reader().backend


def _rebuild_reader(settings: dict[str, Any]) -> Reader:
    """A pickled :class:`Reader`, built again from its arguments."""
    return Reader(**settings)
