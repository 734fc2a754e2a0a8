"""How a target is judged: issue 25's rule, shared by the harnesses that print target lines.

A target holds when the median of >= `ROUNDS_WANTED` alternated rounds meets it and no round
falls below `ROUND_SLACK` of it. Each round's ratio pairs the contenders' samples of that
round (the harnesses alternate contenders inside a round, so the pair saw the same machine).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from .report import STALL_TARGET_MS, Series

ROUNDS_WANTED = 5
ROUND_SLACK = 0.95


def by_round(s: Series | None) -> dict[int, float]:
    """Seconds of each round of a series that ran (empty when it did not)."""
    return {x.round: x.seconds for x in s.samples} if s is not None and s.ok else {}


def round_ratios(reference: dict[int, float], contender: dict[int, float]) -> list[float]:
    """Per round both ran: the reference's seconds over the contender's (> 1: faster)."""
    return [reference[r] / contender[r] for r in sorted(reference.keys() & contender.keys())]


def round_verdict(ratios: Sequence[float], wanted: float = 1.0
                  ) -> tuple[float | None, float | None, str]:
    """(median, worst, verdict) of per-round ratios against `wanted`: "met", "missed", "not
    judged" (fewer than ROUNDS_WANTED rounds) or "n/a" (no round)."""
    if not ratios:
        return None, None, "n/a"
    med, worst = statistics.median(ratios), min(ratios)
    if len(ratios) < ROUNDS_WANTED:
        return med, worst, "not judged"
    return med, worst, ("met" if med >= wanted and worst >= ROUND_SLACK * wanted
                        else "missed")


def format_round_target(what: str, ratios: Sequence[float], wanted: float) -> str:
    """`Target: <what>: median 1.23x, worst round 1.01x of 5: **met**.`"""
    med, worst, verdict = round_verdict(ratios, wanted)
    got = ("no rounds" if med is None else
           f"median {med:.2f}x, worst round {worst:.2f}x of {len(ratios)}")
    return f"Target: {what}: {got}: **{verdict}**."


def is_lsio(s: Series) -> bool:
    """A row the loop-stall target is for: one of lsio's (its name says lsio)."""
    return "lsio" in s.contender.lower()


def format_stall_target(series: Sequence[Series],
                        keep: Callable[[Series], bool] = is_lsio) -> str:
    """`Worst loop stall <= 10 ms: **met** by every lsio row` (of the rows `keep` selects,
    those that await on the loop), or the rows that missed it with their worst stall."""
    watched = [(s.contender, s.worst_loop_stall_s) for s in series
               if s.ok and s.worst_loop_stall_s is not None and keep(s)]
    over = [(n, w) for n, w in watched if w is not None and w * 1e3 > STALL_TARGET_MS]
    if not watched:
        return f"Worst loop stall <= {STALL_TARGET_MS} ms: no lsio row on the loop"
    return (f"Worst loop stall <= {STALL_TARGET_MS} ms: "
            + ("**met** by every lsio row" if not over else "**missed** by "
               + ", ".join(f"{n} ({w * 1e3:,.1f} ms)" for n, w in over)))
