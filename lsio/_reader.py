"""The public reader: its options, and the doors a call enters by.

Every door (``read_many``, ``read_many_sync``, ``iter_many``, ``read_each``) parses the call
once (:mod:`lsio._call`), asks :func:`lsio._route.route` for its road, and hands it to a
backend: the small path of the local or HTTP backend (``Backend.read_small``), or the bulk
road (:mod:`lsio._bulk`). What the call did comes back as :attr:`Results.stats`; its errors
are raised by its :class:`lsio._outcome.Outcome`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import _options
from ._bulk import Bulk
from ._call import parse
from ._defaults import DEFAULT_MAX_OPEN, DEFAULT_THREADS
from ._options import ROUTES, BackendName, DirectMode, RouteName
from ._outcome import served
from ._pipeline import PipelineArg
from ._prefix import by_prefix
from ._presets import PRESETS, Preset, detect_preset
from ._progress import ProgressArg, make_progress
from ._redact import redact, redacting
from ._results import Results
from ._route import declined, plain_limit, route
from ._serve import keeps, serve
from ._sync import on_loop_thread, run_sync
from ._types import OnError
from ._url import HttpOptions

if TYPE_CHECKING:
    from ._explain import Explanation
    from ._iterate import Chunks
    from .backends.http import HttpBackend

__all__ = ["Reader", "backend_name", "default_reader"]

log = logging.getLogger("lsio")


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
        ``az://``): concurrency, retries, timeouts, headers, S3 endpoint and credentials;
        or a dict of URL prefix -> settings (:mod:`lsio._prefix`; ``""``: the Reader's).
    route
        Which road serves a call, whatever its size. ``"auto"`` (default): a call of a few
        requests whose data is in the page cache, or of a few URLs each of its own object,
        takes the small-call path (served on the caller's thread, or in one GET per
        object), every other call the bulk path. ``"small"``: every call the small-call
        path can serve takes it, however many requests or bytes it has (a URL call: as
        ``"auto"``). ``"bulk"``: every call takes the bulk path (stat, plan, the backend's
        batched reads); ``pipeline=`` calls and ``iter_many`` always do. Results and
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
        http: HttpOptions | Mapping[str, Any] | None = None,
        route: RouteName = "auto",
    ) -> None:
        _options.check(route=route, queue_depth=queue_depth, preset=preset, max_gap=max_gap,
                       max_read=max_read, direct=direct, max_open_files=max_open_files,
                       threads=threads, http=http)
        self.http, self._prefixes = by_prefix(http)  # the Reader's own, and per prefix
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
        self.backend = _options.choose_backend(backend)
        """Name of the backend this reader uses: ``"uring"`` or ``"threads"``."""
        self._backend = _options.local_backend(self.backend, threads)
        self.route = route
        """Which road serves a call (``route``): ``"auto"``, ``"small"`` or ``"bulk"``."""
        self._force = ROUTES[route]
        self._plain_max = plain_limit(self._force)
        self._url_tunings: dict[tuple[Any, ...], Preset] = {}
        """:meth:`tuning` of the URL small path, by its inputs (it costs ~12 us)."""
        self._road = Bulk(self.tuning, self._backend, self._http_backend, direct,
                          self._max_open, self.http.timeout)
        self._closed = False
        self._identity: str | None = None
        """What a process that unpickles this reader keys its one copy on, when this is
        such a copy (pickled on, it stays the same reader); else worked out per pickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        # settings first (lsio.fsspec reads them there), then the identity a receiving
        # process keeps one reader per (lsio/_shared.py; ~20 us)
        key = self._identity
        if key is None:
            from ._shared import identity

            key = identity(self._settings)
        return (_rebuild_reader, (self._settings, key))

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

    def _http_backend(self) -> HttpBackend:
        """The HTTP backend, made on the first URL (it imports aiohttp)."""
        if self._http is None:
            from .backends.http import HttpBackend

            self._http = HttpBackend(self.http, self._prefixes)
        return self._http

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """Release what this reader holds (its backends' threads, rings and connections);
        idempotent. A closed reader cannot read. Process-wide resources shared by every
        reader (the event loops' rings and HTTP sessions) close with their loop."""
        if self._closed:
            return
        self._closed = True
        for backend in (self._backend, self._http):
            closer = getattr(backend, "close", None)
            if closer is not None:
                closer()

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        if self._closed:
            raise ValueError(f"lsio: {self!r} is closed")

    # -- the doors ----------------------------------------------------------------------
    @redacting  # the door errors leave by: no secret in them
    async def read_many(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                        progress: ProgressArg = False, missing_ok: bool = False,
                        pipeline: PipelineArg = None, on_error: OnError = "raise") -> Any:
        """Read every request; the result is in request order.

        ``on_error="raise"`` (default): on the first failing request, lsio stops starting
        new reads, waits for the reads in flight, and raises that request's ``OSError``
        (the lowest request index among the failures seen); no partial results are
        returned. ``on_error="return"``: every request is read that can be; the item of a
        failed request is its exception (the ``OSError`` subclass naming its path that
        ``"raise"`` would raise for it: ``FileNotFoundError``, ``PermissionError``,
        ``IsADirectoryError``, an HTTP status's error...) and ``results.errors`` is a
        boolean array, ``True`` where a request failed (all ``False`` if none did). The
        ``out=`` buffer of a failed request holds undefined bytes. Past
        ``HttpOptions.timeout`` the requests not read by then fail each with a
        ``TimeoutError`` naming its path, and the others keep their bytes. Errors of the
        call itself (a bad request or ``out=`` buffer, memory) are raised either way.

        ``progress=True`` shows a ``tqdm`` bar of chunks and bytes; a callable gets
        ``(chunks_done, chunks_total, bytes_done)``. ``missing_ok=True``: a file or object
        that does not exist gives ``None`` instead of ``FileNotFoundError`` (also with
        ``on_error="return"``: a missing file is not an error).

        ``pipeline``: steps applied to each chunk as soon as it arrives, on one worker
        thread per core (see :func:`lsio.copy_to` for a sink). Then the result is a list of
        each request's last step output (``None`` after a sink or for a missing file).
        With ``on_error="return"`` the steps do not run for a request that failed, an
        exception a step raises for a chunk is that request's item (the chunk's other
        steps are skipped, other chunks go on), and the list's ``errors`` marks both.

        What the call did is in the result's ``stats`` (:class:`lsio.Stats`), and in the
        ``stats`` of the error it raises.
        """
        self._open()
        keep = on_error != "raise" and keeps(on_error)
        bar = make_progress(progress)
        if pipeline is not None and out is not None:
            raise ValueError("lsio: out= and pipeline= do not go together; end the "
                             "pipeline with lsio.copy_to(array, region) instead")
        call = parse(requests, out, missing_ok, progress=bar, pipeline=pipeline is not None,
                     plain_max=self._plain_max)
        strategy = route(call, self._force, self.direct)
        if strategy.small and not strategy.remote:  # no further frame: a call costs ~20 us
            got = await self._backend.read_small(call, strategy, None, None)
            if got is not None:
                return served(got, bar)
            strategy = declined(call)
        return await serve(self, call, strategy, pipeline, keep)

    @redacting  # the small path's errors too
    def read_many_sync(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                       progress: ProgressArg = False, missing_ok: bool = False,
                       pipeline: PipelineArg = None, on_error: OnError = "raise") -> Any:
        """Blocking :meth:`read_many`; safe to call from inside a running event loop."""
        self._open()
        keep = on_error != "raise" and keeps(on_error)
        if pipeline is not None or on_loop_thread():
            return run_sync(self.read_many(requests, out=out, progress=progress,
                                           missing_ok=missing_ok, pipeline=pipeline,
                                           on_error=on_error))
        call = parse(requests, out, missing_ok, progress=make_progress(progress), sync=True,
                     plain_max=self._plain_max)
        strategy = route(call, self._force, self.direct)
        if strategy.small and not strategy.remote:
            got = self._backend.serve_small(call, strategy)
            if got is not None:
                return served(got, call.progress)
            strategy = declined(call)  # the calling thread could not
        return run_sync(serve(self, call, strategy, None, keep))

    def _tune_url(self, path: str) -> Preset:
        """:meth:`tuning` of the URL small path, kept by its inputs (it costs ~12 us)."""
        # a URL's preset depends on its scheme alone, which its first 5 characters tell
        key = (path[:5].lower(), self.preset, self.queue_depth, self.max_gap,
               self.max_read, self.coalesce)
        tune = self._url_tunings.get(key)
        if tune is None:
            tune = self._url_tunings[key] = self.tuning(path)
        return tune

    def iter_many(self, requests: Iterable[Any], *, out: Sequence[Any] | None = None,
                  progress: ProgressArg = False, missing_ok: bool = False,
                  on_error: OnError = "raise") -> Chunks:
        """Yield ``(index, chunk)`` as each request completes (completion order). The
        iterator's ``stats`` tells what the call did once it is exhausted. With
        ``on_error="return"`` a failed request yields ``(index, exception)`` (as
        :meth:`read_many` puts it in its slot) and the others go on."""
        self._open()
        keep = keeps(on_error)
        from ._iterate import Chunks

        return Chunks(self, requests, out, make_progress(progress), missing_ok, keep)

    async def read_each(self, requests: Sequence[Any],
                        on_chunk: Callable[[int, memoryview | None], Any] | None = None, *,
                        on_chunks: Callable[[int, Results], Any] | None = None,
                        missing_ok: bool = False, progress: ProgressArg = False,
                        threads: bool = False, work_bytes: int = 0,
                        on_error: OnError = "raise") -> None:
        """Read the requests and hand each chunk over as it lands: ``on_chunk(index, view)``
        (``view`` ``None`` for a missing file with ``missing_ok``), or, for a run of chunks
        that landed together, ``on_chunks(start, results)`` (item ``k`` is request
        ``start + k``). The callback owns the views until it returns. With
        ``threads=True`` it is thread-safe and may run on lsio's worker threads, next to
        where the chunks were read; ``work_bytes`` is about what it writes per chunk (it
        sizes those schedules). The first exception a callback raises ends the call and is
        raised; once the call ends (done, failed, cancelled), no callback is running.
        ``on_error`` is ``"raise"`` only (for partial results, see :meth:`iter_many`)."""
        self._open()
        if keeps(on_error):
            raise ValueError("lsio: read_each takes on_error='raise' only; iter_many and "
                             "read_many take on_error='return'")
        from ._each import read_each

        await read_each(self, requests, on_chunk, on_chunks=on_chunks, missing_ok=missing_ok,
                        progress=progress, threads=threads, work_bytes=work_bytes)

    def list_keys(self, root: str, prefix: str, delimiter: str | None = None
                  ) -> AsyncIterator[str]:
        """The keys under ``root`` (an object-store URL: S3, GCS, Azure) starting with
        ``prefix``, page after page; with ``delimiter``, the common prefixes too (ending
        with it). Plain HTTP(S) cannot list: ``NotImplementedError``."""
        self._open()
        from ._url import listable, scheme_problem, unsupported

        if not listable(root):
            if scheme_problem(root):
                raise unsupported(redact(root))
            raise NotImplementedError(f"lsio: {redact(repr(root))}: listing is not "
                                      "possible over plain HTTP(S); open the array with "
                                      "consolidated metadata or read keys by name")
        return self._http_backend().list_keys(root, prefix, delimiter)

    async def explain(self, requests: Iterable[Any], *, missing_ok: bool = False
                      ) -> Explanation:
        """The road and plan a call would take, without reading any data (files are
        stat'ed, URLs probed for sizes where the plan needs them)."""
        self._open()
        from ._explain import explain

        return await explain(self, requests, missing_ok=missing_ok)


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


def _rebuild_reader(settings: dict[str, Any], identity: str | None = None) -> Reader:
    """A pickled :class:`Reader`: built again from its arguments, once per ``identity`` in
    this process (the one built first, while it is open)."""
    if identity is None:
        return Reader(**settings)
    from ._shared import shared

    def build() -> Reader:
        reader = Reader(**settings)
        reader._identity = identity  # pickled on from here, it is the same reader
        return reader

    return shared("reader", identity, build, lambda r: not r._closed)
