"""A reader's options: checked once, and the backend they choose."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from . import _ring
from ._errors import BackendWarning
from ._presets import PRESETS
from ._ringbatch import IMPORT_ERROR
from ._url import HttpOptions
from .backends._base import LocalBackend

__all__ = ["ROUTES", "BackendName", "DirectMode", "RouteName", "check", "choose_backend",
           "local_backend"]

DirectMode = bool | None
BackendName = Literal["uring", "threads"]
RouteName = Literal["auto", "small", "bulk"]
ROUTES: dict[str, bool | None] = {"auto": None, "small": True, "bulk": False}
"""Each ``Reader(route=...)`` and the ``force`` it gives :func:`lsio._route.route`."""

_probe_result: list[str | None] = []
_warned = False
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def check(*, route: Any, queue_depth: Any, preset: Any, max_gap: Any, max_read: Any,
          direct: Any, max_open_files: Any, threads: Any, http: Any) -> None:
    """``ValueError``/``TypeError`` naming the first bad option."""
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
    if http is not None and not isinstance(http, (HttpOptions, Mapping)):
        raise TypeError(f"lsio: http must be an lsio.HttpOptions or a dict of URL prefix -> "
                        f"settings, got {type(http).__name__}")


def _uring_problem() -> str | None:
    if not _probe_result:
        _probe_result.append(_ring.probe() if sys.platform == "linux" else
                             f"io_uring needs Linux (this is {sys.platform})")
    return _probe_result[0]


def _caller_level() -> int:
    """``stacklevel`` that points a warning at the first frame outside lsio."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(
            os.path.abspath(frame.f_code.co_filename)).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def choose_backend(name: str | None) -> str:
    """``"uring"`` or ``"threads"``: as asked (``name``, ``$LSIO_BACKEND``), else io_uring
    when usable, else threads with one :class:`lsio.BackendWarning` saying why."""
    global _warned
    requested = name or os.environ.get("LSIO_BACKEND") or None
    if requested not in (None, "uring", "threads"):
        raise ValueError(f"lsio: unknown backend {requested!r}; use 'uring' or 'threads'")
    if requested == "threads":
        return "threads"
    problem = _uring_problem()
    if problem is None:
        return "uring"
    hint = "set LSIO_BACKEND=threads to silence this"
    if problem != IMPORT_ERROR and sys.platform == "linux":  # built, but the kernel refuses
        hint = ("io_uring is blocked by Docker's default seccomp profile (run with "
                "--security-opt seccomp=unconfined or a profile allowing io_uring_*) or by "
                f"sysctl kernel.io_uring_disabled=0/1; {hint}")
    if requested == "uring" or os.environ.get("LSIO_REQUIRE_URING") == "1":
        raise _ring.RingUnavailable(f"lsio: io_uring is required but unusable: {problem}. "
                                    f"{hint}")
    # the user hears it once, as a BackendWarning; the log names it for every Reader
    logging.getLogger("lsio").debug("lsio: io_uring is unusable (%s): using the thread-pool "
                                    "backend", problem)
    if not _warned:
        _warned = True
        warnings.warn(f"lsio: using the thread-pool backend because io_uring is unusable: "
                      f"{problem}. {hint}", BackendWarning, stacklevel=_caller_level())
    return "threads"


def local_backend(name: str, threads: int) -> LocalBackend:
    if name == "uring":
        from .backends.local import UringBackend

        return UringBackend()
    from .backends.threads import ThreadsBackend  # its thread pool loads where used

    return ThreadsBackend(threads)
