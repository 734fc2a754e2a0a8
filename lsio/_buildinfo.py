"""What lsio's build left out and why, so a missing compiled module is explained once, at first
use, in the words of the build: ``lsio/_build.json``, which the build writes beside the
modules (``lsio/_probe_build.py``; ``{module: null when built, else why not}``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ._errors import BackendWarning

__all__ = ["absent", "warn_absent"]

_REBUILD = ("pip install --force-reinstall --no-deps --no-binary lsio lsio (from a source "
           "checkout: pip install --force-reinstall --no-deps .)")
"""How a user rebuilds lsio once the missing headers are installed."""

_INFO = Path(__file__).resolve().parent / "_build.json"
_warned: set[str] = set()


def _left_out(module: str) -> str | None:
    try:
        info = json.loads(_INFO.read_text())
    except (OSError, ValueError):  # not built by setup.py (a bare source tree) or unreadable
        return None
    reason = info.get(module) if isinstance(info, dict) else None
    return reason if isinstance(reason, str) else None


def absent(module: str, what: str, exc: ImportError) -> str:
    """Why the compiled ``module`` (``lsio._uring``) cannot be imported: the build's reason
    and how to rebuild when the build left it out, else the import's own error (built, but a
    shared library it links is missing, say). ``what`` names it for users (``io_uring``)."""
    reason = _left_out(module)
    if reason is not None:
        return f"lsio was built without {what}: {reason}; then rebuild lsio: {_REBUILD}"
    return f"the {module} extension is not built or does not load ({exc})"


def warn_absent(module: str, what: str, exc: ImportError, consequence: str) -> None:
    """One :class:`lsio.BackendWarning` per process and module: ``consequence`` (what lsio
    does instead), then :func:`absent`'s reason."""
    if module in _warned:
        return
    _warned.add(module)
    warnings.warn(f"lsio: {consequence} because {absent(module, what, exc)}", BackendWarning,
                  stacklevel=3)
