"""What one more request to a host costs, learned from its answers: the gap worth reading
through rather than asking again.

A merged read fetches the gap between two ranges in place of a second request. On one
connection, the second request costs about its time to first byte (TTFB: a round trip plus
the server's work per request), while the gap costs ``gap / throughput``. So the break-even
gap is ``TTFB x throughput``: on loopback moto a request costs ~1 ms and a stream moves
~0.5 GB/s (gap ~0.5 MB); a cloud region 20 ms away at 100 MB/s per stream gives ~2 MB.

Per host (scheme, host, port) and process, the client records every ranged answer: its
TTFB, and, for bodies of at least :data:`RATE_MIN_BYTES`, the body's bytes per second. The
gap uses a low TTFB (the 10th percentile: answers queued behind other requests of the same
call overstate what one more request costs) and the best stream rate seen. Until a host has
:data:`MIN_TTFB` and one rate sample, it has no gap of its own; the backend then measures
it with two requests of the call itself (:data:`PROBE_BYTES`) before planning a call with
many ranges.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROBE_BYTES", "cost_of"]

SAMPLES = 64
"""Answers remembered per host (the newest)."""

MIN_TTFB = 2
"""TTFB samples needed before the host's gap is trusted."""

RATE_MIN_BYTES = 256 << 10
"""Bodies shorter than this say little about throughput (their time is mostly latency)."""

PROBE_BYTES = 1 << 20
"""The calibration read: long enough that its body time shows the stream rate."""

GAP_MAX = 8 << 20
"""Largest gap a calibration can give: the cloud preset's read size (a merged read is
split there anyway)."""


@dataclass(slots=True)
class HostCost:
    """The answers of one host."""

    ttfb: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    """Seconds from sending a request to its answer's headers."""
    rate: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    """Bytes per second of bodies of at least ``RATE_MIN_BYTES``."""

    def answer(self, ttfb: float, nbytes: int, body_seconds: float) -> None:
        self.ttfb.append(ttfb)
        if nbytes >= RATE_MIN_BYTES and body_seconds > 0:
            self.rate.append(nbytes / body_seconds)

    def gap(self) -> int | None:
        """The break-even gap in bytes, or ``None`` before enough answers."""
        if len(self.ttfb) < MIN_TTFB or not self.rate:
            return None
        ordered = sorted(self.ttfb)
        low = ordered[len(ordered) // 10]
        return int(min(low * max(self.rate), GAP_MAX))


_COSTS: dict[Any, HostCost] = {}


def cost_of(where: Any) -> HostCost:
    """The record of host ``where`` (``origin(url)``), made on first use."""
    cost = _COSTS.get(where)
    if cost is None:
        cost = _COSTS[where] = HostCost()
    return cost
