"""``bench_transport``'s records, targets and report: per-round figures of each contender, the
issue's targets judged by ``rules``, the markdown section and the JSON."""

from __future__ import annotations

import dataclasses
import json
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import (
    STALL_HEADER,
    STALL_NOTE,
    Series,
    failed_row,
    format_machine,
    format_stall,
    series_json,
)
from .rules import ROUND_SLACK, ROUNDS_WANTED, format_stall_target, round_verdict
from .transport_contenders import CONCURRENCY, WRK
from .workloads import WorkloadSpec

LSIO, BASELINE = "lsio", "lsio-aiohttp"
CPU_LIMIT_US = 30.0

Case = tuple[WorkloadSpec, str]
"""A workload over a scheme (``http``, ``https``): one table."""


@dataclass(frozen=True)
class Target:
    """lsio's goal on a workload: ``reference is None``: client CPU per request <= ``wanted``
    us; else requests/s >= ``wanted`` x the reference's."""

    reference: str | None
    wanted: float


TARGETS: dict[str, tuple[Target, ...]] = {
    "A": (Target(None, CPU_LIMIT_US), Target("aiohttp", 3.0), Target("obstore", 3.0),
          Target(WRK, 0.5)),
    "B": (Target(BASELINE, 2.0),),
    "C": (Target(BASELINE, 2.0),),
    "D": (Target(BASELINE, 1.0),),
}


@dataclass
class TransportSeries(Series):
    """All rounds of one contender on one workload over one scheme (``state``); per round,
    besides the timing: the client's CPU seconds and lsio's GETs; what sent lsio's GETs, and
    where the client ran."""

    cpu_s: list[float] = field(default_factory=list)
    gets: list[int | None] = field(default_factory=list)
    transport: str = ""
    cpus: list[int] = field(default_factory=list)  # the CPUs the client ran on (last round)

    def cpu_us(self) -> dict[int, float]:
        """Client CPU per request (us) of each round."""
        return {x.round: c / x.n_ops * 1e6
                for x, c in zip(self.samples, self.cpu_s, strict=True)}

    def rates(self) -> dict[int, float]:
        """Requests per second of each round (none when the row failed)."""
        return {x.round: x.n_ops / x.seconds for x in self.samples} if self.ok else {}


def case_key(case: Case) -> str:
    return f"{case[0].key}/{case[1]}"


def case_rows(results: Sequence[TransportSeries], case: Case) -> list[TransportSeries]:
    return [s for s in results if s.workload == case[0].key and s.state == case[1]]


def _find(rows: Sequence[TransportSeries], name: str) -> TransportSeries | None:
    return next((s for s in rows if s.contender == name and s.ok), None)


# --------------------------------------------------------------------------- targets


def judge(rows: Sequence[TransportSeries], t: Target) -> dict[str, Any]:
    """One target on one case: its per-round values, median, worst round and verdict
    (``rules.round_verdict``: the median meets it, no round below 0.95x of it)."""
    lsio = _find(rows, LSIO)
    if t.reference is None:
        what = f"lsio client CPU per request <= {t.wanted:g} us"
        per_round = lsio.cpu_us() if lsio else {}
        ratios = [t.wanted / v for v in per_round.values()]  # >= 1: within the limit
    else:
        what = f"lsio >= {t.wanted:g}x {t.reference} (requests/s)"
        ref = _find(rows, t.reference)
        mine, theirs = (lsio.rates() if lsio else {}), (ref.rates() if ref else {})
        per_round = {r: mine[r] / theirs[r] for r in sorted(mine.keys() & theirs.keys())}
        ratios = list(per_round.values())
    med, worst, verdict = round_verdict(ratios, 1.0 if t.reference is None else t.wanted)
    if t.reference is None and med is not None and worst is not None:
        med, worst = t.wanted / med, t.wanted / worst  # back to us: the worst is the highest
    return {"target": what, "reference": t.reference, "wanted": t.wanted, "median": med,
            "worst": worst, "rounds": len(ratios), "verdict": verdict,
            "per_round": per_round}


def judge_all(results: Sequence[TransportSeries], cases: Sequence[Case]
              ) -> dict[str, list[dict[str, Any]]]:
    """Every target of every case, keyed ``"A/http"``."""
    return {case_key(c): [judge(case_rows(results, c), t) for t in TARGETS[c[0].key]]
            for c in cases}


def format_target(v: dict[str, Any]) -> str:
    if v["median"] is None:
        return f"- {v['target']}: no rounds (a contender FAILED or did not run): **n/a**"
    unit, fmt = (" us", ".1f") if v["reference"] is None else ("x", ".2f")
    return (f"- {v['target']}: median {v['median']:{fmt}}{unit}, worst round "
            f"{v['worst']:{fmt}}{unit} of {v['rounds']}: **{v['verdict']}**")


# --------------------------------------------------------------------------- report


def format_table(rows: Sequence[TransportSeries]) -> str:
    """One row per contender: medians of wall time, requests/s, MB/s, lsio's GETs and the
    client's CPU per request; lsio's requests/s over the row's; worst stall; sent by."""
    lsio = _find(rows, LSIO)
    out = ["| contender | median s | requests/s | MB/s | GETs | CPU / request (us) | "
           f"lsio's requests/s over this | {STALL_HEADER} | sent by | runs |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in rows:
        if not s.ok:
            out.append(failed_row(s, 7))
            continue
        rate = statistics.median(s.rates().values())
        shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"
        vs = f"{statistics.median(lsio.rates().values()) / rate:.2f}x" if lsio else "—"
        gets = [g for g in s.gets if g is not None]
        out.append(f"| {s.contender} | {statistics.median(x.seconds for x in s.samples):.3f} | "
                   f"{shown} | {s.mb_per_s:,.0f} | "
                   f"{f'{statistics.median(gets):,.0f}' if gets else '—'} | "
                   f"{statistics.median(s.cpu_us().values()):,.1f} | {vs} | "
                   f"{format_stall(s)} | {s.transport or '—'} | {len(s.samples)} |")
    return "\n".join(out)


NOTES = (
    "Method. Every read runs in a **fresh process** (`benchmarks/transport_contenders.py`), "
    "the contenders alternated inside each round; medians over rounds. A process builds its "
    "contender, makes one untimed warm-up read (it opens the connections, TLS handshakes "
    "included; in the first round it is checked byte for byte against the files, later "
    "ones by count, total and a few chunks), then the timed read with the warm-up's result "
    "still alive (fresh memory, as for a user who keeps what they read). *median s*: wall "
    "time of that call; *CPU / request*: `time.process_time()` around it (every thread of "
    "the process: obstore's tokio threads, lsio's workers; in every Python row also the "
    "heartbeat's wake-ups, a few us each per ms) over the workload's requests; "
    "*GETs*: lsio's `stats.operations`; *sent by*: lsio's `stats.transport`. Every "
    f"contender keeps {CONCURRENCY} requests in flight: `lsio`: `lsio.Reader(http="
    f"HttpOptions(transport=\"auto\", concurrency={CONCURRENCY}, connections_per_host="
    f"{CONCURRENCY}, multi_range=False))`, one `read_many`; `lsio-aiohttp`: the same with "
    "`transport=\"aiohttp\"` (lsio before the C transport); `aiohttp`: one `ClientSession` "
    "(default connector), `gather` of one GET per request under a semaphore, bodies read "
    "with `await resp.read()` (above 1 MiB: copied into one preallocated buffer); "
    "`obstore`: `HTTPStore.from_url(base)`, `get_async` + `bytes_async` per object or "
    "`get_range_async` per range under a semaphore. HTTPS: nginx's certificate is signed by "
    "a private CA made by the benchmark (rustls, obstore's TLS, refuses a self-signed "
    "certificate that is its own CA), verified by every Python client (`$SSL_CERT_FILE` for "
    "lsio and aiohttp, obstore's `root_certificate`); wrk does not verify. `wrk`: "
    "`wrk -t1 -c64 -d{wrk}s` with a Lua script cycling over the object paths; its CPU is its "
    "rusage over its requests, its check no errors (connect, read, write, timeout, non-2xx) "
    "and at least the object size received per request; *MB/s* counts payload only. "
    "Cores: {layout}. nginx: one worker process, sendfile, keep-alive, files in the page "
    "cache (read once before each workload's rounds). A target holds when the median meets "
    f"it and no round is below {ROUND_SLACK:g}x of it (CPU: no round above the limit / "
    f"{ROUND_SLACK:g}); with fewer than {ROUNDS_WANTED} rounds it is *not judged*.")


def render(results: Sequence[TransportSeries], cases: Sequence[Case],
           verdicts: dict[str, list[dict[str, Any]]], *, repeats: int, wrk_seconds: int,
           details: dict[str, str], layout: str, argv: Sequence[str]) -> str:
    parts = ["## HTTP transports: lsio's C transport vs lsio on aiohttp, aiohttp, obstore, "
             "wrk (`benchmarks/bench_transport.py`)", "",
             f"Command: `python -m benchmarks.bench_transport {shlex.join(argv)}`  ",
             f"{repeats} round(s), every read in a fresh process.", "",
             format_machine(details), ""]
    for case in cases:
        rows = case_rows(results, case)
        parts += [f"### ({case[0].key}) {case[0].title}, {case[1].upper()}", "",
                  format_table(rows), "", "Targets:", "",
                  *map(format_target, verdicts[case_key(case)]),
                  f"- {format_stall_target(rows)}", ""]
    parts += [NOTES.format(wrk=wrk_seconds, layout=layout), "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, config: dict[str, Any], specs: Sequence[WorkloadSpec],
              results: Sequence[TransportSeries], verdicts: dict[str, list[dict[str, Any]]],
              details: dict[str, str]) -> None:
    doc = {"machine": details, "config": config,
           "workloads": {s.key: dataclasses.asdict(s) for s in specs},
           "series": series_json(list(results)),
           "targets": verdicts}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
