"""Hypothesis budgets: ``make test`` runs a derandomized, fixed set of examples (the same on
every run) plus every ``@example`` in the tests; ``make fuzz`` explores at random,
``LSIO_FUZZ_SCALE`` times longer, keeping what fails in ``.hypothesis/`` to replay first on the
next fuzz run. Every failure a fuzz run finds becomes an ``@example`` of its test, so
``make test`` replays it forever (hypothesis cannot combine derandomize with a database).

The profile is chosen by ``LSIO_HYPOTHESIS_PROFILE`` (``ci``, the default, or ``fuzz``) and
loaded by ``conftest.py`` before any test module is imported, so every ``@settings(...)`` in
the suite inherits it (derandomize, database) and overrides only what it names.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

FUZZ_DB = Path(__file__).parent.parent / ".hypothesis" / "fuzz"

SCALE = max(1, int(os.environ.get("LSIO_FUZZ_SCALE", "1")))
"""How many times more examples each test draws (``make fuzz`` sets 50)."""


def examples(n: int) -> int:
    """``n`` examples in ``make test``; ``n * LSIO_FUZZ_SCALE`` under ``make fuzz``."""
    return n * SCALE


def load_profile() -> str:
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    settings.register_profile(
        "fuzz", derandomize=False, database=DirectoryBasedExampleDatabase(str(FUZZ_DB)),
        deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow])
    name = os.environ.get("LSIO_HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(name)
    return name
