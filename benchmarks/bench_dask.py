"""Dask benchmark: zarr-python on a distributed cluster, lsio's codec pipeline against zarr's.

    python -m benchmarks.bench_dask [--quick] [--repeats N] [--data-dir DIR]
        [--warm-only | --cold-only] [--out docs/benchmarks.md] [--json results.json]

The data is bench_zarr's array (a) (8192² float32 in chunks of 256², blosc-zstd; `--quick`:
1024²), written by bench_zarr's code under the same `--data-dir` (and reused from there). It is
read through `dask.array.from_zarr` in two chunkings, one table each: dask chunks equal to the
zarr chunks (one chunk per task) and blocks of 4x4 zarr chunks (2x2 with `--quick`), and
reduced to its column sums, `.sum(axis=0, dtype="float64")`. Every value is a multiple of 1/16
well below 2^8, so these sums are exact in any order: each result is compared exactly with the
column sums of zarr-python's own read.

One `distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
dashboard_address=None)` serves both contenders, alternated round-robin for `--repeats`
rounds (default 5, 2 with `--quick`), warm (every chunk file read just before each run) and
cold (`sync; echo 3 > /proc/sys/vm/drop_caches` before each run; root only):

- `zarr + lsio pipeline`: the array opened with `lsio.zarr.LsioCodecPipeline`;
  `lsio.zarr.enable()` on every worker (`client.run`) before each run.
- `zarr + default pipeline`: opened with zarr's `BatchedCodecPipeline`;
  `lsio.zarr.disable()` on every worker before each run.

zarr picks an array's codec pipeline when it opens the array and pickles it with the array, so
the worker's config alone does not decide which one a task reads with: each contender opens
its array in the client inside its config, and before every run each worker reports the
pipeline of the array as it unpickles it, its own `codec_pipeline.path`, and whether reading
one chunk of that copy went through the store's `get` (zarr's pipeline) or not (lsio's reads
the chunk files itself); a run whose workers disagree with the contender fails. The timed
span is `client.compute(graph).result()` (a fresh graph name per run, built before timing,
with no task left on the scheduler), so it includes the scheduler's work, the same for both
contenders. Target: lsio pipeline >= 2x the default pipeline with several zarr chunks per
task, warm and cold; one chunk per task is reported (the scheduler's cost per task dominates).

`--out FILE` writes the section between `<!-- bench_dask:start -->` and
`<!-- bench_dask:end -->`; `--json` the raw samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bench_zarr import (
    DEFAULT_DATA_DIR,
    DEFAULT_PIPELINE,
    LSIO_PIPELINE_CONFIG,
    ArraySpec,
    array_files,
    array_specs,
    ensure_array,
    pipeline_name,
    ratio_text,
)
from .harness import log
from .report import (
    Sample,
    Series,
    format_machine,
    machine_details_with,
    replace_section,
    series_json,
)
from .workloads import chosen_states, drop_caches, warm_paths

START_MARK = "<!-- bench_dask:start -->"
END_MARK = "<!-- bench_dask:end -->"
STATES = ("warm", "cold")
LSIO = "zarr + lsio pipeline"
DEFAULT = "zarr + default pipeline"
TARGET_RATIO = 2.0  # lsio pipeline >= 2x zarr's default pipeline, several chunks per task
REDUCTION = 'sum(axis=0, dtype="float64")'
IDLE_TIMEOUT_S = 30.0  # how long to wait for the scheduler to forget the previous run's tasks
RUN_TIMEOUT_S = 900.0  # a run that takes longer fails its row instead of stalling make bench


@dataclass(frozen=True)
class Chunking:
    key: str  # table key: "a" and the zarr chunks per dask chunk along each axis
    per_side: int  # zarr chunks per dask chunk along each axis

    def edge(self, spec: ArraySpec) -> int:
        return spec.chunk * self.per_side

    def tasks(self, spec: ArraySpec) -> int:
        return (spec.n // self.edge(spec)) ** 2

    def title(self, spec: ArraySpec) -> str:
        e = self.edge(spec)
        blocks = ("one zarr chunk" if self.per_side == 1
                  else f"{self.per_side}x{self.per_side} zarr chunks")
        return f"(a) in dask chunks of {e}² ({blocks}, {self.tasks(spec):,} tasks)"


def chunkings(quick: bool) -> tuple[Chunking, ...]:
    big = 2 if quick else 4  # --quick: (a) is 4x4 chunks, 4x4 would be one task
    return (Chunking("a1", 1), Chunking(f"a{big}", big))


@dataclass(frozen=True)
class Contender:
    name: str
    config: dict[str, Any]  # zarr config the array is opened in
    worker_setup: Callable[[], None]  # run on every worker (client.run) before each run


def enable_lsio() -> None:
    """``lsio.zarr.enable()``, returning nothing: ``client.run`` ships a function's result
    back, and enable's is a donfig ``ConfigSet`` holding a copy of the worker's config."""
    import lsio.zarr

    lsio.zarr.enable()


def disable_lsio() -> None:
    """``lsio.zarr.disable()``, returning nothing (see :func:`enable_lsio`)."""
    import lsio.zarr

    lsio.zarr.disable()


def contenders() -> tuple[Contender, ...]:
    return (Contender(LSIO, LSIO_PIPELINE_CONFIG, enable_lsio),
            Contender(DEFAULT, DEFAULT_PIPELINE, disable_lsio))


@dataclass(frozen=True)
class Config:
    spec: ArraySpec
    chunkings: tuple[Chunking, ...]
    repeats: int
    data_dir: Path
    quick: bool
    states: tuple[str, ...]
    cold_note: str
    out: Path | None
    json_path: Path | None


@dataclass(frozen=True)
class TargetResult:
    workload: str
    state: str
    contender: str
    reference: str
    ratio_wanted: float
    ratio: float | None  # median seconds of the reference / of the contender
    met: bool
    note: str = ""


@dataclass
class Checks:
    """What every worker reported before the last run: contender -> worker address ->
    [the array's pipeline, the worker's config, store gets reading one chunk]."""

    workers: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    addresses: frozenset[str] = frozenset()  # the workers at the start: a restart is an error


# --------------------------------------------------------------------------- workers


def worker_pipeline(arr: Any) -> tuple[str, str, int]:
    """On a worker: the codec pipeline of `arr` as unpickled there (as the tasks unpickle it),
    the worker's `codec_pipeline.path`, and how many times reading the first chunk through
    this copy called its store's `get` (zarr's pipeline reads each chunk with one `get`,
    lsio's reads the chunk files itself: 0)."""
    import zarr

    pipe = arr.async_array.codec_pipeline
    store = arr.async_array.store_path.store
    gets = 0
    store_get = store.get

    async def counting_get(*args: Any, **kwargs: Any) -> Any:
        nonlocal gets
        gets += 1
        return await store_get(*args, **kwargs)

    store.get = counting_get  # this unpickled copy only
    arr[tuple(slice(0, c) for c in arr.chunks)]
    return (f"{type(pipe).__module__}.{type(pipe).__qualname__}",
            str(zarr.config.get("codec_pipeline.path")), gets)


def prepare_workers(client: Any, c: Contender, arr: Any, checks: Checks) -> None:
    """Set the contender's config on every worker and check what each will read with (and
    that they are the workers the cluster started with: the nanny restarts a crashed one)."""
    client.run(c.worker_setup)
    want = c.config["codec_pipeline.path"]
    seen = {addr: list(v) for addr, v in client.run(worker_pipeline, arr).items()}
    if set(seen) != checks.addresses:
        raise RuntimeError(f"the workers changed (a crash and a restart?): {sorted(seen)}, "
                           f"started with {sorted(checks.addresses)}")
    ok = len(seen) == 2 and all(
        v[:2] == [want, want] and (v[2] > 0) == (c.name == DEFAULT) for v in seen.values())
    if not ok:
        raise RuntimeError(f"workers would not read with {want}: {seen} (pipeline of the "
                           "array, worker config, store gets reading one chunk)")
    checks.workers[c.name] = seen


def wait_idle(client: Any) -> None:
    """Until the scheduler holds no task: the previous run's results are released."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler still holds tasks of an earlier run")
        time.sleep(0.01)


# --------------------------------------------------------------------------- running


def open_array(root: Path, c: Contender) -> Any:
    import zarr

    with zarr.config.set(c.config):
        arr = zarr.open_array(store=str(root), mode="r")
    if (got := pipeline_name(arr)) != c.config["codec_pipeline.path"]:
        raise RuntimeError(f"opened with {got}, not {c.config['codec_pipeline.path']}")
    return arr


def graph(arr: Any, edge: int, name: str) -> Any:
    import dask.array as da

    return da.from_zarr(arr, chunks=(edge, edge), name=name).sum(axis=0, dtype="float64")


def timed_compute(client: Any, x: Any) -> tuple[float, np.ndarray]:
    gc.collect()
    t0 = time.perf_counter()
    result = client.compute(x).result(timeout=RUN_TIMEOUT_S)
    return time.perf_counter() - t0, np.asarray(result)


def check(got: np.ndarray, ref: np.ndarray) -> None:
    if got.shape != ref.shape or got.dtype != ref.dtype:
        raise RuntimeError(f"returned {got.dtype} {got.shape}, expected {ref.dtype} {ref.shape}")
    if not np.array_equal(got, ref):
        bad = np.flatnonzero(got != ref)
        raise RuntimeError(f"{len(bad):,} column sums differ from zarr's read, first at "
                           f"column {int(bad[0])}: {got[bad[0]]!r} != {ref[bad[0]]!r}")


def reference_sums(root: Path) -> np.ndarray:
    """Column sums of zarr-python's own read (default pipeline), in the client."""
    import zarr

    with zarr.config.set(DEFAULT_PIPELINE):
        data = zarr.open_array(store=str(root), mode="r")[...]
    return np.asarray(data).sum(axis=0, dtype=np.float64)


def run_all(cfg: Config, root: Path, client: Any, checks: Checks) -> list[Series]:
    spec = cfg.spec
    files = array_files(root)
    ref = reference_sums(root)
    cs = contenders()
    series = {(ch.key, st, c.name): Series(workload=ch.key, state=st, contender=c.name,
                                           mode=REDUCTION)
              for ch in cfg.chunkings for st in cfg.states for c in cs}
    arrays: dict[str, Any] = {}
    for c in cs:  # open, check the workers, one untimed checked run (warms the workers up)
        try:
            arrays[c.name] = arr = open_array(root, c)
            prepare_workers(client, c, arr, checks)
            for ch in cfg.chunkings:
                wait_idle(client)
                check(timed_compute(client, graph(arr, ch.edge(spec),
                                                  f"setup-{c.name}-{ch.key}"))[1], ref)
        except Exception as e:  # a broken contender must not stop the run
            for (_, _, name), s in series.items():
                if name == c.name:
                    s.error = f"{type(e).__name__}: {e}"
            log(f"  {c.name}: setup/check FAILED: {type(e).__name__}: {e}")
    for ch in cfg.chunkings:
        log(f"({ch.key}) {ch.title(spec)}")
        for state in cfg.states:
            for rnd in range(cfg.repeats):
                for c in cs:
                    s = series[(ch.key, state, c.name)]
                    if s.error is not None:
                        continue
                    tag = f"  [{ch.key} {state} {rnd + 1}/{cfg.repeats}] {c.name}:"
                    try:
                        prepare_workers(client, c, arrays[c.name], checks)
                        x = graph(arrays[c.name], ch.edge(spec),
                                  f"run-{c.name}-{ch.key}-{state}-{rnd}")
                        wait_idle(client)
                        if state == "cold":
                            drop_caches()
                        else:
                            warm_paths(files)
                        seconds, got = timed_compute(client, x)
                        check(got, ref)
                    except Exception as e:  # report it, keep going
                        s.error = f"{type(e).__name__}: {e}"
                        log(f"{tag} FAILED: {s.error}")
                        continue
                    nbytes = spec.n ** 2 * 4
                    s.samples.append(Sample(round=rnd, seconds=seconds, nbytes=nbytes,
                                            n_ops=ch.tasks(spec)))
                    log(f"{tag} {seconds * 1e3:.1f} ms, {nbytes / seconds / 1e9:.2f} GB/s")
    return list(series.values())


# --------------------------------------------------------------------------- targets, output


def median_s(s: Series) -> float:
    return statistics.median(x.seconds for x in s.samples)


def _find(series: list[Series], name: str) -> Series | None:
    return next((s for s in series if s.contender == name), None)


def judge(key: str, state: str, series: list[Series]) -> TargetResult:
    who, ref = _find(series, LSIO), _find(series, DEFAULT)
    for name, s in ((LSIO, who), (DEFAULT, ref)):
        if s is None or not s.ok:
            return TargetResult(key, state, LSIO, DEFAULT, TARGET_RATIO, None, False,
                                f"{name} {'not run' if s is None else 'FAILED'}")
    assert who is not None and ref is not None
    ratio = median_s(ref) / median_s(who)
    return TargetResult(key, state, LSIO, DEFAULT, TARGET_RATIO, ratio, ratio >= TARGET_RATIO)


def format_target(r: TargetResult) -> str:
    wanted = f"{r.contender} >= {r.ratio_wanted:g}x {r.reference}"
    if r.ratio is None:
        return f"Target: {wanted}: **missed** ({r.note})."
    return (f"Target: {wanted}: {ratio_text(r.ratio, r.ratio_wanted)}x, "
            f"**{'met' if r.met else 'missed'}**.")


def format_table(series: list[Series]) -> str:
    ref = _find(series, DEFAULT)
    rows = ["| contender | median s | GB/s | vs zarr + default pipeline | runs |",
            "|---|---:|---:|---:|---:|"]
    for s in series:
        if not s.ok:
            reason = (s.error or "no runs").replace("|", "/").replace("\n", " ")[:160]
            rows.append(f"| {s.contender} | FAILED | — | — | {reason} |")
            continue
        sec = median_s(s)
        vs = f"{median_s(ref) / sec:.2f}x" if ref is not None and ref.ok else "—"
        rows.append(f"| {s.contender} | {sec:.4f} | {s.samples[0].nbytes / sec / 1e9:.2f} | "
                    f"{vs} | {len(s.samples)} |")
    return "\n".join(rows)


def dask_machine_details(data_dir: Path) -> dict[str, str]:
    return machine_details_with(data_dir, ("numcodecs", "dask", "distributed"))


def render(cfg: Config, results: list[Series], targets: list[TargetResult],
           details: dict[str, str], argv: Sequence[str]) -> str:
    spec = cfg.spec
    parts = ["## Dask: zarr-python on a distributed cluster, lsio's codec pipeline against "
             "zarr's (`benchmarks/bench_dask.py`)", "",
             f"Command: `python -m benchmarks.bench_dask {shlex.join(argv)}`  ",
             f"Median of {cfg.repeats} round-robin round(s) per table on one "
             "`LocalCluster(processes=True, n_workers=2, threads_per_worker=1)`; states: "
             + ", ".join(cfg.states) + (f" ({cfg.cold_note})" if cfg.cold_note else "") + ".",
             "", format_machine(details), ""]
    for ch in cfg.chunkings:
        for state in cfg.states:
            rows = [s for s in results if s.workload == ch.key and s.state == state]
            parts += [f"### ({ch.key}) {state}: {ch.title(spec)}", "",
                      f"`dask.array.from_zarr(arr, chunks=({ch.edge(spec)}, {ch.edge(spec)}))"
                      f".{REDUCTION}` of {spec.title}: {spec.n ** 2 * 4 / 1e6:,.1f} MB "
                      "decoded.", "", format_table(rows), ""]
            parts += [format_target(t) for t in targets
                      if t.workload == ch.key and t.state == state] + [""]
            if ch.per_side == 1:
                parts += ["Reported, no target: one zarr chunk per task, where the scheduler's "
                          "cost per task dominates the read.", ""]
    met = sum(t.met for t in targets)
    parts += [f"Targets met: {met} of {len(targets)}.", "",
              "Notes: wall clock of `client.compute(graph).result()` in the client (graph "
              "built before timing, a fresh name per run, the scheduler idle); each contender's "
              "array is opened once in the client inside its codec-pipeline config (zarr "
              "pickles the pipeline with the array), its workers set to the same config "
              "(`lsio.zarr.enable()` / `lsio.zarr.disable()` through `client.run`) and checked "
              "before every run (the array's pipeline as a worker unpickles it, the worker's "
              "config, and one chunk read there: through the store's `get` for zarr's "
              "pipeline, not for lsio's), and a first untimed run per table warms the worker "
              "processes up. Every result is compared exactly with the column sums of "
              "zarr-python's own read. *GB/s*: decoded bytes of the array per second. *vs X*: "
              "median seconds of X over the contender's. No loop-stall column: the reads run "
              "on the workers' event loops (zarr's sync API), not on one this harness can "
              "watch. Raw per-round numbers: `--json`."]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, results: list[Series], targets: list[TargetResult],
              checks: Checks, details: dict[str, str]) -> None:
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "data_dir": str(cfg.data_dir),
                   "states": list(cfg.states), "cold_note": cfg.cold_note,
                   "contenders": [LSIO, DEFAULT], "reduction": REDUCTION,
                   "cluster": "LocalCluster(processes=True, n_workers=2, threads_per_worker=1)",
                   "reference": DEFAULT},
        "array": dataclasses.asdict(cfg.spec) | {"path": str(cfg.data_dir / cfg.spec.dirname)},
        "workloads": {ch.key: {"title": ch.title(cfg.spec), "dask_chunk": ch.edge(cfg.spec),
                               "tasks": ch.tasks(cfg.spec)} for ch in cfg.chunkings},
        "series_note": "nbytes are decoded bytes of the array, n_ops the dask chunks (tasks "
                       "reading zarr)",
        "series": series_json(results),
        "targets": [dataclasses.asdict(t) for t in targets],
        "worker_checks": checks.workers,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> Config:
    ap = argparse.ArgumentParser(description="lsio Dask benchmark")
    ap.add_argument("--quick", action="store_true", help="a 1024² array (smoke run)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin rounds, medians reported (default 5, --quick 2)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--warm-only", action="store_true")
    only.add_argument("--cold-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    states, cold_note = chosen_states(ap, a.warm_only, a.cold_only, STATES)
    return Config(spec=array_specs(a.quick)["a"], chunkings=chunkings(a.quick),
                  repeats=repeats, data_dir=a.data_dir, quick=a.quick, states=states,
                  cold_note=cold_note, out=a.out, json_path=a.json_path)


def main(argv: Sequence[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = cfg.data_dir.resolve()
    root = ensure_array(cfg.spec, data_dir)
    checks = Checks()
    log("starting LocalCluster(processes=True, n_workers=2, threads_per_worker=1) ...")
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        checks.addresses = frozenset(client.scheduler_info()["workers"])
        results = run_all(cfg, root, client, checks)
    targets = [judge(ch.key, state, [s for s in results if s.workload == ch.key
                                     and s.state == state])
               for ch in cfg.chunkings for state in cfg.states if ch.per_side > 1]
    details = dask_machine_details(data_dir)
    text = render(cfg, results, targets, details, argv)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, results, targets, checks, details)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
