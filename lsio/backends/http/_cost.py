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
it with one request of the call itself (:data:`PROBE_BYTES`) before planning a call with
many ranges.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..._defaults import (
    COST_SAMPLES,
    GAP_MAX,
    MIN_TTFB,
    PART_FACTOR,
    PART_MAX,
    PROBE_BYTES,
    RATE_MIN_BYTES,
)

__all__ = ["PROBE_BYTES", "cost_of"]


@dataclass(slots=True)
class HostCost:
    """The answers of one host."""

    ttfb: deque[float] = field(default_factory=lambda: deque(maxlen=COST_SAMPLES))
    """Seconds from sending a request to its answer's headers."""
    rate: deque[float] = field(default_factory=lambda: deque(maxlen=COST_SAMPLES))
    """Bytes per second of bodies of at least ``RATE_MIN_BYTES``."""

    def answer(self, ttfb: float, nbytes: int, body_seconds: float) -> None:
        self.ttfb.append(ttfb)
        if nbytes >= RATE_MIN_BYTES and body_seconds > 0:
            self.rate.append(nbytes / body_seconds)

    def gap(self) -> int | None:
        """The break-even gap in bytes, or ``None`` before enough answers."""
        cost = self._bytes_per_request()
        return None if cost is None else int(min(cost, GAP_MAX))

    def part(self, floor: int) -> int | None:
        """How long the parts of a split read should be (at least ``floor``: the preset's
        read size), or ``None`` before enough answers."""
        cost = self._bytes_per_request()
        return None if cost is None else int(min(max(PART_FACTOR * cost, floor), PART_MAX))

    def _bytes_per_request(self) -> float | None:
        """What one more request costs, in bytes of stream: low TTFB x best rate."""
        if len(self.ttfb) < MIN_TTFB or not self.rate:
            return None
        ordered = sorted(self.ttfb)
        return ordered[len(ordered) // 10] * max(self.rate)


_COSTS: dict[Any, HostCost] = {}


def cost_of(where: Any) -> HostCost:
    """The record of host ``where`` (``origin(url)``), made on first use."""
    cost = _COSTS.get(where)
    if cost is None:
        cost = _COSTS[where] = HostCost()
    return cost
