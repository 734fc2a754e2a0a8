"""Local-disk benchmark: lsio against fio (same offsets, same queue depth) and Python peers.

    python -m benchmarks.bench_local [--quick] [--workload a,b,c,d,e,f,g,h] [--repeats N]
        [--warm-only | --cold-only] [--data-dir DIR] [--contenders NAME,...]
        [--no-plan | --plan-only] [--out docs/benchmarks.md] [--json results.json]

Every contender runs in the same process run, round-robin (A B C A B C ...) for `--repeats`
rounds; tables report medians. Before each single run the cache state is re-established: cold =
`sync; echo 3 > /proc/sys/vm/drop_caches` (root only), warm = every data file read once.
Workloads (d), (e), (f) exercise the planner (coalescing on vs off). (g) and (h) are the
engine's limits: warm small ranges against a plain `os.pread` loop (target >= 1.5x) and cold
small files against fio's best queue depth (`fio best depth ...`: one io_uring job opening,
reading and closing each file, `openfiles` = the depth, swept over `FIO_SWEEP_DEPTHS`,
buffered and O_DIRECT; target >= 0.9x the faster); each target is judged on the median of
alternated rounds (>= 5) with no round below 0.95x of it (`benchmarks/rules.py`). Every table
says whether the rows on the event loop stayed within the 10 ms loop-stall target. After the
reads, the planning speed is measured without I/O (`--plan-only`: just that; `--no-plan`:
skip it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .contenders import CONTENDERS, Contender, RunContext, RunFn, SelfTimed
from .harness import log, stall_text, time_run, verify
from .planbench import PLAN_REQUESTS, PLAN_REQUESTS_QUICK, measure_planning, planned_reads
from .report import (
    KEPT_NOTE,
    STALL_NOTE,
    KeptResult,
    MemoryResult,
    PlannedReads,
    PlanTiming,
    Sample,
    Series,
    filesystem_of,
    format_coalesce_note,
    format_kept_table,
    format_machine,
    format_memory_table,
    format_plan_table,
    format_table,
    machine_details,
    replace_section,
    series_json,
)
from .rules import by_round, format_round_target, format_stall_target, round_ratios
from .workloads import (
    FULL_SPECS,
    QUICK_SPECS,
    State,
    Workload,
    WorkloadSpec,
    can_drop_caches,
    materialize,
    set_state,
)

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench")
DEFAULT_WORKLOADS = "a,b,c,d,e,f,g,h"
MEMORY_WORKLOADS = ("a", "b")
MEMORY_CONTENDERS = ("lsio", "plain loop")
KEPT_WORKLOADS = ("a", "b")
KEPT_CONTENDERS = ("lsio", "plain loop", "fsspec")
KEPT_ROUNDS = 2  # fresh processes per contender and workload, alternated
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    specs: tuple[WorkloadSpec, ...]
    states: tuple[State, ...]
    repeats: int
    queue_depth: int
    data_dir: Path
    quick: bool
    contenders: tuple[str, ...] | None  # None = all
    memory: bool
    plan: bool  # measure planning speed (no I/O)
    plan_only: bool  # ... and nothing else
    out: Path | None
    json_path: Path | None


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(description="lsio local-disk benchmark")
    ap.add_argument("--quick", action="store_true", help="tiny data sets (smoke run)")
    ap.add_argument("--workload", default=DEFAULT_WORKLOADS,
                    help=f"comma list of workloads (default {DEFAULT_WORKLOADS})")
    ap.add_argument("--repeats", type=int, default=5, help="round-robin rounds (median)")
    ap.add_argument("--queue-depth", type=int, default=64)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--contenders", default=None,
                    help="comma list of contender names (default: all)")
    state = ap.add_mutually_exclusive_group()
    state.add_argument("--warm-only", action="store_true")
    state.add_argument("--cold-only", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probe")
    planning = ap.add_mutually_exclusive_group()
    planning.add_argument("--no-plan", action="store_true",
                          help="skip the planning-speed measurement")
    planning.add_argument("--plan-only", action="store_true",
                          help="only measure planning speed (no data, no I/O)")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)

    specs = QUICK_SPECS if a.quick else FULL_SPECS
    keys = [k.strip() for k in a.workload.split(",") if k.strip()]
    unknown = [k for k in keys if k not in specs]
    if unknown or a.repeats < 1:
        ap.error(f"unknown workload(s) {unknown}" if unknown else "--repeats must be >= 1")
    states: tuple[State, ...] = (("warm",) if a.warm_only else ("cold",) if a.cold_only
                                 else ("cold", "warm"))
    names = tuple(n.strip() for n in a.contenders.split(",")) if a.contenders else None
    known = {c.name for c in CONTENDERS}
    if names and (bad := [n for n in names if n not in known]):
        ap.error(f"unknown contender(s) {bad}; known: {sorted(known)}")
    return Config(specs=tuple(specs[k] for k in keys), states=states, repeats=a.repeats,
                  queue_depth=a.queue_depth, data_dir=a.data_dir, quick=a.quick,
                  contenders=names, memory=not a.no_memory, plan=not a.no_plan,
                  plan_only=a.plan_only, out=a.out, json_path=a.json_path)


def usable_states(states: tuple[State, ...]) -> tuple[State, ...]:
    if "cold" not in states:
        return states
    ok, why = can_drop_caches()
    if ok:
        return states
    log(f"NOTE: cold runs are skipped: {why}.")
    return tuple(s for s in states if s != "cold")


def check_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    fstype, dev, _ = filesystem_of(data_dir)
    if fstype in ("tmpfs", "ramfs"):
        log(f"WARNING: {data_dir} is on {fstype}: O_DIRECT is refused or a no-op there and "
            "cold runs measure memory, not the disk. Use --data-dir on a real disk.")
    else:
        log(f"data dir {data_dir}: {fstype} on {dev}")


# --------------------------------------------------------------------------- running


def select(cfg: Config, wl: Workload) -> list[Contender]:
    return [c for c in CONTENDERS
            if wl.spec.kind in c.kinds and (not c.only or wl.key in c.only)
            and (cfg.contenders is None or c.name in cfg.contenders)]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def prepare(contenders: list[Contender], wl: Workload, ctx: RunContext,
            state: State) -> tuple[list[Series], dict[str, RunFn]]:
    """Set up every contender once; a failing setup is recorded, not raised."""
    series: list[Series] = []
    fns: dict[str, RunFn] = {}
    for c in contenders:
        s = Series(workload=wl.key, state=state, contender=c.name, mode=c.mode)
        try:
            fns[c.name] = c.make(wl, ctx)
        except Exception as e:  # a broken contender must not stop the run
            s.error = _error(e)
            log(f"  {c.name}: setup FAILED: {s.error}")
        series.append(s)
    return series, fns


def run_once(runner: asyncio.Runner, fn: RunFn, wl: Workload, rnd: int, *,
             on_loop: bool) -> tuple[Sample, str]:
    """One timed, verified run (loop stalls watched when `on_loop`) and what a self-timed tool
    says it chose ("" otherwise); the returned buffers are released on return."""
    seconds, payload, stall = time_run(runner, fn, watch_loop=on_loop)
    nbytes, n_ops = verify(wl, payload)
    detail = payload.detail if isinstance(payload, SelfTimed) else ""
    return (Sample(round=rnd, seconds=seconds, nbytes=nbytes, n_ops=n_ops, loop_stall_s=stall),
            detail)


def run_state(cfg: Config, wl: Workload, state: State, runner: asyncio.Runner,
              scratch: Path, details: dict[str, list[str]] | None = None) -> list[Series]:
    """Every contender on one workload and state, alternated per round; `details` collects
    per series (`workload/state/contender`) what self-timed tools chose each round."""
    ctx = RunContext(state=state, queue_depth=cfg.queue_depth, scratch_dir=scratch)
    with ctx.cleanup:
        contenders = select(cfg, wl)
        on_loop = {c.name: c.on_loop for c in contenders}
        series, fns = prepare(contenders, wl, ctx, state)
        for rnd in range(cfg.repeats):
            for s in series:
                if s.error is not None:
                    continue
                tag = f"  [{wl.key} {state} {rnd + 1}/{cfg.repeats}] {s.contender}:"
                set_state(wl, state)
                try:
                    sample, detail = run_once(runner, fns[s.contender], wl, rnd,
                                              on_loop=on_loop[s.contender])
                except Exception as e:  # report it, keep going
                    s.error = _error(e)
                    log(f"{tag} FAILED: {s.error}")
                    continue
                s.samples.append(sample)
                if detail and details is not None:
                    details.setdefault(f"{wl.key}/{state}/{s.contender}", []).append(detail)
                log(f"{tag} {sample.seconds * 1e3:.1f} ms, "
                    f"{sample.n_ops / sample.seconds:,.0f} ops/s"
                    f"{stall_text(sample.loop_stall_s)}"
                    + (f" ({detail})" if detail else ""))
    return series


def measure_memory(cfg: Config, workloads: dict[str, Workload]) -> list[MemoryResult]:
    results = []
    for key in MEMORY_WORKLOADS:
        if key not in workloads:
            continue
        for name in MEMORY_CONTENDERS:
            if cfg.contenders is not None and name not in cfg.contenders:
                continue
            set_state(workloads[key], "warm")
            results.append(_memprobe(cfg, key, name))
    return results


def measure_kept(cfg: Config, workloads: dict[str, Workload]) -> list[KeptResult]:
    """Results kept alive in fresh processes (``keptprobe``), contenders alternated."""
    results: dict[tuple[str, str], KeptResult] = {}
    for key in KEPT_WORKLOADS:
        if key not in workloads:
            continue
        names = [n for n in KEPT_CONTENDERS if cfg.contenders is None or n in cfg.contenders]
        for _ in range(KEPT_ROUNDS):
            for name in names:
                set_state(workloads[key], "warm")
                got = _keptprobe(cfg, key, name)
                log(f"  [({key}) kept, fresh process] {name}: kept "
                    f"{[round(x * 1e3, 1) for x in got.kept_s]} ms, recycled "
                    f"{[round(x * 1e3, 1) for x in got.recycled_s]} ms"
                    + (f" FAILED: {got.error}" if got.error else ""))
                have = results.setdefault((key, name), KeptResult(key, name))
                have.kept_s += got.kept_s
                have.recycled_s += got.recycled_s
                have.error = have.error or got.error
    return list(results.values())


def _keptprobe(cfg: Config, key: str, contender: str) -> KeptResult:
    cmd = [sys.executable, "-m", "benchmarks.keptprobe", "--data-dir", str(cfg.data_dir),
           "--workload", key, "--contender", contender]
    cmd += ["--quick"] if cfg.quick else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PACKAGE_ROOT, timeout=3600)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return KeptResult(key, contender, error=tail[0])
    return KeptResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _memprobe(cfg: Config, key: str, contender: str) -> MemoryResult:
    cmd = [sys.executable, "-m", "benchmarks.memprobe", "--data-dir", str(cfg.data_dir),
           "--workload", key, "--contender", contender, "--queue-depth", str(cfg.queue_depth)]
    cmd += ["--quick"] if cfg.quick else []
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PACKAGE_ROOT, timeout=3600)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return MemoryResult(key, contender, error=tail[0])
    return MemoryResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- targets

# Issue 25's engine targets, each on one workload: (workload, contender, reference(s), ratio
# wanted). Several references: per round the fastest of them.
FIO_BEST = ("fio best depth buffered", "fio best depth direct=1")
ENGINE_TARGETS: tuple[tuple[str, str, tuple[str, ...], float, str], ...] = (
    ("g", "lsio", ("plain loop",), 1.5, "a plain Python `os.pread` loop"),
    ("h", "lsio", FIO_BEST, 0.9, "fio's best (the faster I/O mode at its best queue depth "
     "of each round)"),
)


def target_lines(key: str, rows: list[Series], details: dict[str, list[str]]) -> list[str]:
    """The engine targets of one table (medians of alternated rounds, issue 25's rule), fio's
    chosen depths, and the loop-stall target."""
    lines = []
    for wl_key, who, refs, wanted, what in ENGINE_TARGETS:
        if wl_key != key:
            continue
        mine = by_round(next((s for s in rows if s.contender == who), None))
        theirs = [by_round(next((s for s in rows if s.contender == r), None)) for r in refs]
        common = set.intersection(*(set(t) for t in theirs)) if theirs else set()
        best = {r: min(t[r] for t in theirs) for r in common}
        lines.append(format_round_target(f"{who} >= {wanted:g}x {what}",
                                         round_ratios(best, mine), wanted))
    for s in rows:
        if chosen := details.get(f"{key}/{s.state}/{s.contender}"):
            lines.append(f"{s.contender}: " + ", ".join(chosen) + " (per round).")
    lines.append(format_stall_target(rows) + ".")
    return lines


# --------------------------------------------------------------------------- output


def render(cfg: Config, results: list[Series], memory: list[MemoryResult],
           planned: dict[str, PlannedReads], timing: PlanTiming | None,
           details: dict[str, str], argv: Sequence[str],
           kept: Sequence[KeptResult] = (), chosen: dict[str, list[str]] | None = None) -> str:
    parts = ["## Local disk: lsio vs fio and Python peers (`benchmarks/bench_local.py`)", "",
             f"Command: `python -m benchmarks.bench_local {shlex.join(argv)}`  "]
    if not cfg.plan_only:
        parts += [f"Median of {cfg.repeats} round-robin round(s); queue depth "
                  f"{cfg.queue_depth}; cold = `sync; echo 3 > /proc/sys/vm/drop_caches` before "
                  "every run, warm = data read into the page cache before every run."]
    parts += ["", format_machine(details), ""]
    for spec in cfg.specs:
        for state in cfg.states:
            rows = [s for s in results if s.workload == spec.key and s.state == state]
            if rows:
                parts += [f"### ({spec.key}) {spec.title} — {state}", "", format_table(rows), ""]
                if spec.kind == "gaps":
                    parts += [format_coalesce_note(rows, planned.get(spec.key)), ""]
                parts += ["  \n".join(target_lines(spec.key, rows, chosen or {})), ""]
    if memory:
        parts += ["### Peak memory of one read (fresh process, warm cache)", "",
                  format_memory_table(memory), ""]
    if kept:
        parts += ["### Results kept alive (fresh process, warm cache)", "", KEPT_NOTE, "",
                  format_kept_table(kept), ""]
    if timing is not None:
        parts += ["### Planning speed (no I/O)", "", format_plan_table(timing), ""]
    if not results:
        return "\n".join(parts) + "\n"
    parts += ["Notes: *vs fio* compares with fio in the same I/O mode (O_DIRECT rows with "
              "`fio direct=1`, buffered rows with `fio buffered`, lsio's automatic mode with the "
              "faster of the two); fio replays the identical requests from an iolog "
              "(`--ioengine=io_uring`) and is timed by its own `runtime` (1 ms resolution, process "
              "start excluded), the Python contenders by wall clock around one call, with "
              "one-off setup (reader, thread pool, store, request list) done before timing. "
              "Every contender's result is checked (total bytes, content of a few requests). "
              "Python peers read through the page cache. (d)-(f) are the planner workloads: "
              "`lsio coalesce` is the default `lsio.Reader()` (it merges reads of one file "
              "separated by gaps up to the preset's `max_gap`), `lsio no coalesce` is "
              "`Reader(coalesce=False)`, the `direct` variants add `direct=True`; of the peers "
              "only fio and the plain `os.pread` loop run them. Raw per-round numbers: `--json`.",
              "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, results: list[Series], memory: list[MemoryResult],
              planned: dict[str, PlannedReads], timing: PlanTiming | None,
              details: dict[str, str], kept: Sequence[KeptResult] = (),
              chosen: dict[str, list[str]] | None = None) -> None:
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "queue_depth": cfg.queue_depth,
                   "states": list(cfg.states), "data_dir": str(cfg.data_dir)},
        "workloads": {} if cfg.plan_only else {s.key: dataclasses.asdict(s) for s in cfg.specs},
        "series": series_json(results),
        "memory": [dataclasses.asdict(m) for m in memory],
        "kept": [dataclasses.asdict(k) for k in kept],
        "planned_reads": {k: dataclasses.asdict(v) for k, v in planned.items()},
        "planning": dataclasses.asdict(timing) if timing is not None else None,
        "chosen": chosen or {},  # workload/state/contender -> what fio's sweep chose per round
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def plan_workloads(workloads: dict[str, Workload]) -> dict[str, PlannedReads]:
    """What the planner makes of each planner workload (coalescing on and off)."""
    planned: dict[str, PlannedReads] = {}
    for key, wl in workloads.items():
        if wl.spec.kind != "gaps":
            continue
        try:
            planned[key] = planned_reads(wl)
        except Exception as e:  # only a note under the table: never stop the run
            log(f"({key}) planning the reads FAILED: {_error(e)}")
    return planned


def measure_plan_speed(cfg: Config) -> PlanTiming:
    n = PLAN_REQUESTS_QUICK if cfg.quick else PLAN_REQUESTS
    log(f"planning speed: {n:,} requests (no I/O) ...")
    timing = measure_planning(n)
    log(f"  normalize {min(timing.normalize_s) * 1e3:.1f} ms, plan "
        f"{min(timing.plan_s) * 1e3:.1f} ms (best of {len(timing.plan_s)})")
    return timing


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    workloads: dict[str, Workload] = {}
    results: list[Series] = []
    memory: list[MemoryResult] = []
    kept: list[KeptResult] = []
    chosen: dict[str, list[str]] = {}  # what fio's sweep chose, per series and round
    if not cfg.plan_only:
        cfg = dataclasses.replace(cfg, states=usable_states(cfg.states))
        if not cfg.states:
            log("nothing to run")
            return 1
        check_data_dir(cfg.data_dir)

        for spec in cfg.specs:
            log(f"preparing data for ({spec.key}) {spec.title} ...")
            workloads[spec.key] = materialize(spec, cfg.data_dir)

        with (tempfile.TemporaryDirectory(prefix="lsio-bench-") as scratch,
              asyncio.Runner() as runner):
            for spec in cfg.specs:
                for state in cfg.states:
                    log(f"({spec.key}) {state}:")
                    results += run_state(cfg, workloads[spec.key], state, runner,
                                         Path(scratch), chosen)

        memory = measure_memory(cfg, workloads) if cfg.memory else []
        kept = measure_kept(cfg, workloads) if cfg.memory else []
    planned = plan_workloads(workloads)
    timing = measure_plan_speed(cfg) if cfg.plan else None
    details = machine_details(cfg.data_dir)
    text = render(cfg, results, memory, planned, timing, details, argv, kept, chosen)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, results, memory, planned, timing, details, kept, chosen)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
