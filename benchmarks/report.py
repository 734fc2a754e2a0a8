"""Result records, tables, machine details and the markdown section writer."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .contenders import COALESCE_PAIRS, FIO_BY_MODE, LSIO_REFERENCES
from .machine import cpu_model, memory_gib

START_MARK = "<!-- bench_local:start -->"
END_MARK = "<!-- bench_local:end -->"
PACKAGES = ("lsio", "numpy", "cffi", "fsspec", "obstore", "zarr", "aiofiles", "uvloop")
STALL_TARGET_MS = 10  # lsio's goal: no event-loop stall above this
STALL_HEADER = "worst loop stall (ms)"
STALL_NOTE = (
    f"*{STALL_HEADER}*: the largest gap, minus the 1 ms period, between consecutive wake-ups "
    "of a heartbeat task (`await asyncio.sleep(0.001)` in a loop, `harness.LoopStall`) on the "
    "same event loop during the contender's timed calls, worst of all rounds (target for "
    f"lsio: no stall above {STALL_TARGET_MS} ms; — for contenders that do not await on the "
    "loop: fio, and synchronous calls that block it while threads or a process do the work).")


@dataclass(frozen=True)
class Sample:
    round: int
    seconds: float
    nbytes: int
    n_ops: int
    loop_stall_s: float | None = None  # worst event-loop stall of the run; None: not watched


@dataclass
class Series:
    """All rounds of one contender on one workload in one cache state."""

    workload: str
    state: str
    contender: str
    mode: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def ops_per_s(self) -> float:
        return statistics.median(s.n_ops / s.seconds for s in self.samples)

    @property
    def mb_per_s(self) -> float:
        return statistics.median(s.nbytes / s.seconds / 1e6 for s in self.samples)

    @property
    def worst_loop_stall_s(self) -> float | None:
        """The worst event-loop stall over all rounds; None when the loop was not watched."""
        stalls = [s.loop_stall_s for s in self.samples if s.loop_stall_s is not None]
        return max(stalls, default=None)


def series_json(series: list[Series]) -> list[dict[str, Any]]:
    """The `series` of a harness's JSON: every field, plus the worst loop stall (seconds)."""
    return [asdict(s) | {"worst_loop_stall_s": s.worst_loop_stall_s} for s in series]


def format_stall(s: Series) -> str:
    """The worst loop stall cell of a table row (ms; — when the loop was not watched)."""
    worst = s.worst_loop_stall_s
    return "—" if worst is None else f"{worst * 1e3:,.1f}"


@dataclass(frozen=True)
class PlannedReads:
    """What lsio's planner makes of a workload, coalescing on and off (no I/O)."""

    workload: str
    preset: str
    max_gap: int | None
    max_read: int
    n_requests: int
    reads_on: int
    reads_off: int
    bytes_on: int
    bytes_off: int


@dataclass(frozen=True)
class PlanTiming:
    """Planning speed without I/O: `normalize` and `plan` of one request list."""

    n_requests: int
    n_files: int
    file_size: int
    max_length: int
    preset: str
    max_gap: int | None
    max_read: int
    arena_align: int
    n_reads: int
    bytes_requested: int
    bytes_read: int
    normalize_s: list[float]  # one per repeat
    plan_s: list[float]
    normalize_peak: int  # peak extra bytes during the step (tracemalloc)
    plan_peak: int


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of one read of a workload in a fresh process (bytes)."""

    workload: str
    contender: str
    nbytes: int = 0
    rss_before: int = 0
    rss_peak: int = 0
    error: str | None = None


@dataclass
class KeptResult:
    """Seconds per call of one contender in a fresh process, results kept alive (fresh memory,
    the first call left out) and dropped at once (recycled memory)."""

    workload: str
    contender: str
    kept_s: list[float] = field(default_factory=list)
    recycled_s: list[float] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------- tables


def _reference(series: list[Series], *names: str) -> Series | None:
    """The first successful series among `names` (in that order of preference)."""
    for name in names:
        for s in series:
            if s.contender == name and s.ok:
                return s
    return None


def _fio_reference(series: list[Series], mode: str) -> float | None:
    """Median ops/s of fio in the same I/O mode; `auto` compares with the faster fio mode."""
    names = list(FIO_BY_MODE.values()) if mode == "auto" else [FIO_BY_MODE[mode]]
    refs = [r.ops_per_s for n in names if (r := _reference(series, n)) is not None]
    return max(refs) if refs else None


def failed_row(s: Series, dashes: int, *lead: str) -> str:
    """The table row of a contender that failed: its name, the ``lead`` cells, FAILED,
    ``dashes`` empty cells, then why (the first 120 characters of its error)."""
    reason = (s.error or "no runs").replace("|", "/").replace("\n", " ")[:120]
    return "| " + " | ".join([s.contender, *lead, "FAILED", *["—"] * dashes, reason]) + " |"


def _ratio(value: float, ref: float | None) -> str:
    return f"{value / ref:.2f}x" if ref else "—"


def format_table(series: list[Series]) -> str:
    """Markdown table, one row per contender (same text is printed and written to the doc)."""
    lsio = _reference(series, *LSIO_REFERENCES)
    rows = ["| contender | I/O mode | ops/s | MB/s | vs fio | vs lsio | "
            f"{STALL_HEADER} | runs |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in series:
        if not s.ok:
            rows.append(failed_row(s, 4, s.mode))
            continue
        ops = s.ops_per_s
        rows.append(
            f"| {s.contender} | {s.mode} | {ops:,.0f} | {s.mb_per_s:,.1f} | "
            f"{_ratio(ops, _fio_reference(series, s.mode))} | "
            f"{_ratio(ops, lsio.ops_per_s if lsio else None)} | {format_stall(s)} | "
            f"{len(s.samples)} |"
        )
    return "\n".join(rows)


def _size(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def format_coalesce_note(series: list[Series], planned: PlannedReads | None) -> str:
    """The lines under a planner workload's table: coalescing on / off, per I/O mode."""
    ratios = []
    for mode, (on_name, off_name) in COALESCE_PAIRS.items():
        on, off = _reference(series, on_name), _reference(series, off_name)
        ratios.append(f"{mode} **{_ratio(on.ops_per_s, off.ops_per_s) if on and off else '—'}**"
                      f" (`{on_name}` / `{off_name}`)")
    lines = [f"Coalescing on / off, ops/s in the same I/O mode: {', '.join(ratios)}."]
    if planned is not None:
        p = planned
        lines.append(
            f"Planner ({p.preset} preset: max_gap {_size(p.max_gap)}, max_read "
            f"{_size(p.max_read)}): {p.n_requests:,} requests become {p.reads_on:,} reads "
            f"of {p.bytes_on / 1e6:,.1f} MB with coalescing, {p.reads_off:,} reads of "
            f"{p.bytes_off / 1e6:,.1f} MB without.")
    return "  \n".join(lines)


def format_plan_table(t: PlanTiming) -> str:
    """Planning speed: one row per step, medians of the repeats."""
    norm, pln = statistics.median(t.normalize_s), statistics.median(t.plan_s)
    n = t.n_requests
    rows = [f"| step ({n:,} requests, {t.n_files} files) | median of {len(t.plan_s)} | "
            "per request | peak extra memory |",
            "|---|---:|---:|---:|",
            f"| `lsio._request.normalize` (list of `(path, offset, length)` tuples) | "
            f"{norm * 1e3:,.1f} ms | {norm / n * 1e9:,.0f} ns | {_mib(t.normalize_peak)} |",
            f"| `lsio._plan.plan` ({t.preset}: max_gap {_size(t.max_gap)}, max_read "
            f"{_size(t.max_read)}) | {pln * 1e3:,.1f} ms | {pln / n * 1e9:,.0f} ns | "
            f"{_mib(t.plan_peak)} |",
            f"| both | {(norm + pln) * 1e3:,.1f} ms | {(norm + pln) / n * 1e9:,.0f} ns | — |"]
    notes = (f"Random requests: offsets uniform over {t.n_files} files of {_size(t.file_size)}, "
             f"lengths 1 B-{_size(t.max_length)}; buffered alignment (file_align 1, "
             f"arena_align {t.arena_align}); no I/O. The plan has {t.n_reads:,} reads covering "
             f"{t.bytes_read / 1e6:,.1f} MB ({t.bytes_requested / 1e6:,.1f} MB requested). "
             "Peak extra memory: tracemalloc's peak (Python and numpy allocations) during the "
             "step, above what was allocated before it, in a separate untimed pass; it includes "
             "the step's output.")
    return "\n".join(rows) + "\n\n" + notes


def format_memory_table(rows: list[MemoryResult]) -> str:
    out = ["| workload | contender | bytes returned | RSS before read | peak RSS | "
           "peak - before | (peak - before) / bytes |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.error is not None:
            reason = r.error.replace("|", "/").replace("\n", " ")[:120]
            out.append(f"| {r.workload} | {r.contender} | FAILED | — | — | — | {reason} |")
            continue
        extra = r.rss_peak - r.rss_before
        ratio = f"{extra / r.nbytes:.2f}" if r.nbytes else "—"
        out.append(f"| {r.workload} | {r.contender} | {_mib(r.nbytes)} | {_mib(r.rss_before)} | "
                   f"{_mib(r.rss_peak)} | {_mib(extra)} | {ratio} |")
    return "\n".join(out)


KEPT_NOTE = (
    "Each row: one contender in fresh processes, the calls' results all kept alive (every "
    "call gets fresh memory, as for a user who keeps what they read; the first call, which "
    "also pays the process's warm-up, is left out), then the same calls with each result "
    "dropped at once (recycled memory: lsio's arena pool, the allocator's free lists). "
    "Medians over every call of every process.")


def format_kept_table(rows: Sequence[KeptResult]) -> str:
    out = ["| workload | contender | kept (ms) | recycled (ms) | kept / recycled | "
           "lsio kept is faster by |",
           "|---|---|---:|---:|---:|---:|"]
    lsio = {r.workload: statistics.median(r.kept_s) for r in rows
            if r.contender == "lsio" and r.kept_s}
    for r in rows:
        if r.error is not None or not r.kept_s or not r.recycled_s:
            reason = (r.error or "no samples").replace("|", "/").replace("\n", " ")[:120]
            out.append(f"| {r.workload} | {r.contender} | FAILED | — | — | {reason} |")
            continue
        kept, recycled = statistics.median(r.kept_s), statistics.median(r.recycled_s)
        vs = f"{kept / lsio[r.workload]:.2f}x" if r.workload in lsio else "—"
        out.append(f"| {r.workload} | {r.contender} | {kept * 1e3:,.1f} | "
                   f"{recycled * 1e3:,.1f} | {kept / recycled:.2f} | {vs} |")
    return "\n".join(out)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


# --------------------------------------------------------------------------- machine


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


def _memory() -> str:
    gib = memory_gib()
    return "unknown" if gib is None else f"{gib:.1f} GiB"


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(fstype, device, mountpoint) of the mount holding `path`, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("unknown", "unknown", "")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[2]):
                    best = (fstype, dev, mnt)
    except OSError:
        pass
    return best


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_details(data_dir: Path) -> dict[str, str]:
    fstype, dev, mnt = filesystem_of(data_dir)
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "nproc": str(os.cpu_count()),
        "memory": _memory(),
        "data dir": f"{data_dir} ({fstype} on {dev}, mounted at {mnt})",
        "fio": _run(["fio", "--version"]),
        "python": platform.python_version(),
        "packages": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
    }


def format_machine(details: dict[str, str]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in details.items())


# --------------------------------------------------------------------------- markdown file


def replace_section(path: Path, body: str, *, start_mark: str = START_MARK,
                    end_mark: str = END_MARK) -> None:
    """Write `body` between the markers of `path` (bench_local's unless given), creating what
    is missing (absent markers are appended at the end of the file)."""
    section = f"{start_mark}\n{body.rstrip()}\n{end_mark}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine_details_with(data_dir: Path, packages: Sequence[str]) -> dict[str, str]:
    """:func:`machine_details` without fio, with the versions of ``packages`` added (the
    Zarr and Dask benchmarks run no fio but more libraries)."""
    import importlib.metadata

    details = machine_details(data_dir)
    details.pop("fio", None)
    extra = []
    for pkg in packages:
        try:
            extra.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            extra.append(f"{pkg} not installed")
    details["packages"] += ", " + ", ".join(extra)
    return details
