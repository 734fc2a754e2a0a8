"""Zarr benchmark: lsio's Zarr fast path and store against zarr-python and tensorstore.

    python -m benchmarks.bench_zarr [--quick] [--workload a,b,c] [--repeats N]
        [--contenders NAME,...] [--data-dir DIR] [--warm-only | --cold-only]
        [--out docs/benchmarks.md] [--json results.json]

Five Zarr v3 arrays (float32, smooth + noise quantized to 1/16, so blosc-zstd compresses them
about 3x; fixed seed; written once with zarr-python under `--data-dir` and reused while their
metadata matches): (a) 8192² in chunks of 256², (b) the same in chunks of 64² (16 384 chunks),
(c) (a) sharded, shards of 2048² holding inner chunks of 256²; (d) 4096² in chunks of 128²,
(e) (d) sharded, shards of 1024². `--quick`: 1024² arrays, chunks 256² / 64² / 128², shards
512² / 256².

Each array is read whole and through a sub-selection (`[1000:3000, 2500:6100]` of the 8192²
arrays, `[300:2900, 1000:1700]` of the 4096² ones, scaled for `--quick`), warm (every chunk
file read just before each run) and cold (`sync; echo 3 > /proc/sys/vm/drop_caches` before
each run; needs root, skipped with a note otherwise).

Contenders, set up once per table and alternated round-robin (A B C D A B C D ...) on one
asyncio event loop for `--repeats` rounds (default 5, 2 with `--quick`); tables report medians:

- `lsio fast path`: `await lsio.zarr.read(path, selection)`.
- `zarr + lsio pipeline`: zarr-python's async API (`await arr.getitem(selection)`) on
  `zarr.storage.LocalStore`, the array opened with `lsio.zarr.LsioCodecPipeline`.
- `zarr + zarrs`: the same with zarrs-python's `ZarrsCodecPipeline` (`ZARRS_CONFIG`: strict,
  so it never falls back to zarr's pipeline; its other settings at zarrs' defaults).
- `zarr + fused pipeline`: the same with zarr 3.3+'s opt-in `FusedCodecPipeline` (sync codecs
  in bulk on a thread pool); "n/a (zarr < 3.3)" on older zarr.
- `zarr + LsioStore`: zarr-python's async API on `lsio.zarr.LsioStore`, zarr's default codec
  pipeline (`BatchedCodecPipeline`).
- `zarr + LocalStore`: the same on `zarr.storage.LocalStore`.
- `tensorstore`: `ts.open({"driver": "zarr3", "kvstore": {"driver": "file", ...}})`,
  `await arr[selection].read()`.
- (a) and (b), whole array only: `lsio read-all-then-decode` (one `lsio.read_many` of every
  chunk file, then blosc decode + copy of every chunk on a thread pool of one thread per core)
  against `lsio pipelined` (the same requests and the same decode + copy steps through
  `read_many(..., pipeline=...)`, each chunk decoded as soon as it has arrived).
- `decode floor`: every (inner) chunk the selection touches, its bytes already in memory,
  decoded by blosc into a scratch chunk and its selected part copied into a fresh output per
  call, on all cores, whichever of three ways was fastest in setup (named under the table):
  numcodecs' blosc on a pool of one thread per core over chunks (it releases the GIL),
  numcodecs with blosc's own threads, or one GIL-free C call per thread over its share of
  the chunks (`lsio._codecs`, the system's blosc: no Python per chunk, which on 64² chunks
  costs as much as the decode). Every row's "vs decode floor" is the fraction of that limit
  it reaches.
- `zarr's own time`: zarr-python's async API with a codec pipeline that reads and fills
  nothing (`benchmarks/zarr_noop.py`): its indexing and per-chunk list, which every
  `zarr + ...` row pays. The time before the pipeline's `read` is called holds the event loop;
  each table names it next to the loop-stall target.

zarr picks an array's codec pipeline when it opens the array, so each `zarr + ...` contender
opens its own array inside its config (`zarr.config.set`) and checks the pipeline it got.

Checks: in setup, one untimed read of each contender is compared with zarr-python's own read
(LocalStore, default pipeline) of the same selection, exactly; every timed run's result is
checked for shape, dtype and a few sample blocks. Targets (`TARGETS`), each judged on every
array, warm and cold, whole array and sub-selection unless said: zarr + lsio pipeline >= 1.0x
tensorstore, >= 1.0x zarr + zarrs and >= 0.9x the lsio fast path; the fast path >= 1.0x
tensorstore and >= 1.0x zarr + zarrs on sub-selections; zarr + LsioStore >= 1.0x zarr +
LocalStore. A table at the end sums them up. Issue 25's cell rules (`CellRule`), per array,
selection and state: where zarr's own time is at most half of tensorstore's, zarr + lsio
pipeline >= 1.0x tensorstore, elsewhere within 1.1x of zarr's own time + the decode floor; met
when the median of >= 5 alternated rounds meets it and no round falls below 0.95x of it
("not judged" with fewer rounds). Each table also says whether every row stayed within the
10 ms loop-stall target.
The output names the Python and zarr versions it ran with. A contender that cannot run with
the installed zarr (the fused pipeline before zarr 3.3, zarrs-python where it fails on zarr
3.2+) shows "n/a" and why instead of figures.
When `perf stat` can count `cache-misses,instructions`, the two pipeline modes are measured in
a subprocess each (reading (a) warm). `--out FILE` writes the section between
`<!-- bench_zarr:start -->` and `<!-- bench_zarr:end -->`; `--json` the raw samples.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .contenders import RunFn
from .harness import log, stall_text, time_run
from .report import (
    STALL_HEADER,
    STALL_NOTE,
    Sample,
    Series,
    format_machine,
    format_stall,
    machine_details_with,
    replace_section,
    series_json,
)
from .rules import (
    ROUND_SLACK,
    ROUNDS_WANTED,
    by_round,
    format_stall_target,
    round_ratios,
    round_verdict,
)
from .workloads import chosen_states, drop_caches, warm_paths

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-zarr")
DEFAULT_WORKLOADS = "a,b,c,d,e"
START_MARK = "<!-- bench_zarr:start -->"
END_MARK = "<!-- bench_zarr:end -->"
STATES = ("warm", "cold")
SELECTIONS = ("whole", "sub")
SEED = 20_240_601
DATA_VERSION = 1  # bump when the generated values change: arrays are rewritten
FULL_N = 8192
SUB_FULL = ((1000, 3000), (2500, 6100))  # the sub-selection at 8192², scaled for other sizes
SMALL_N = 4096  # the side-by-side arrays (d), (e)
SUB_SMALL = ((300, 2900), (1000, 1700))  # their sub-selection (~150 chunks of 128²)
PERF_EVENTS = "cache-misses,instructions"
PERF_BYTES = 1 << 30  # decoded bytes each perf subprocess reads (a) for, at least 3 reads

FAST = "lsio fast path"
LSIO_PIPELINE = "zarr + lsio pipeline"
ZARRS = "zarr + zarrs"
FUSED = "zarr + fused pipeline"
LSIOSTORE = "zarr + LsioStore"
LOCALSTORE = "zarr + LocalStore"
TENSORSTORE = "tensorstore"
READ_ALL = "lsio read-all-then-decode"
PIPELINED = "lsio pipelined"
FLOOR = "decode floor"
ZARR_OWN = "zarr's own time"


# --------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class ArraySpec:
    key: str
    title: str
    n: int  # the array is n x n float32
    chunk: int  # (inner) chunk edge
    shard: int | None = None  # shard edge, None = not sharded
    base: int = FULL_N  # the array edge `sub` is written for; scaled to `n`
    sub: tuple[tuple[int, int], tuple[int, int]] = SUB_FULL  # the sub-selection at `base`

    @property
    def dirname(self) -> str:
        shard = f"_s{self.shard}" if self.shard else ""
        return f"{self.key}_{self.n}{shard}_c{self.chunk}.zarr"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def band(self) -> int:
        """Rows generated and written at once: whole rows of chunks (shards)."""
        return self.shard or 1024

    def create_kwargs(self) -> dict[str, Any]:
        import zarr.codecs

        kw: dict[str, Any] = dict(
            shape=self.shape, dtype="float32", chunks=(self.chunk, self.chunk),
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
            fill_value=0.0)
        if self.shard:
            kw["shards"] = (self.shard, self.shard)
        return kw


def array_specs(quick: bool) -> dict[str, ArraySpec]:
    n = 1024 if quick else FULL_N
    shard = 512 if quick else 2048
    m = 1024 if quick else SMALL_N  # (d), (e)
    small_shard = 256 if quick else 1024
    q = " (quick)" if quick else ""
    return {
        "a": ArraySpec("a", f"{n}² float32, chunks 256², blosc zstd{q}", n, 256),
        "b": ArraySpec("b", f"{n}² float32, chunks 64² ({(n // 64) ** 2:,} chunks), blosc "
                       f"zstd{q}", n, 64),
        "c": ArraySpec("c", f"{n}² float32, shards {shard}² of chunks 256², blosc zstd{q}",
                       n, 256, shard),
        "d": ArraySpec("d", f"{m}² float32, chunks 128², blosc zstd{q}", m, 128,
                       base=SMALL_N, sub=SUB_SMALL),
        "e": ArraySpec("e", f"{m}² float32, shards {small_shard}² of chunks 128², blosc "
                       f"zstd{q}", m, 128, small_shard, base=SMALL_N, sub=SUB_SMALL),
    }


def selection_of(spec: ArraySpec, name: str) -> tuple[slice, slice]:
    if name == "whole":
        return (slice(0, spec.n), slice(0, spec.n))
    scale = spec.n / spec.base
    return tuple(slice(int(a * scale), int(b * scale)) for a, b in spec.sub)  # type: ignore[return-value]


def describe(sel: tuple[slice, slice]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in sel) + "]"


def chunks_touched(spec: ArraySpec, sel: tuple[slice, slice]) -> int:
    """Number of (inner) chunks a selection touches."""
    c = spec.chunk
    return math.prod((s.stop - 1) // c - s.start // c + 1 for s in sel)


def generate_band(n: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of the benchmark data: smooth waves plus noise, quantized to 1/16 so the
    low mantissa bits are zero (blosc-zstd with shuffle: about 3x)."""
    rng = np.random.default_rng([SEED, r0])
    y = np.arange(r0, r1, dtype=np.float64)[:, None]
    x = np.arange(n, dtype=np.float64)[None, :]
    band = np.sin(x / 50.0) * np.cos(y / 70.0) * 100.0 + rng.normal(0.0, 1.0, (r1 - r0, n))
    return (np.round(band * 16.0) / 16.0).astype(np.float32)


def _expected_metadata(spec: ArraySpec) -> dict[str, Any]:
    import zarr

    arr = zarr.create_array(store=zarr.storage.MemoryStore(), **spec.create_kwargs())
    doc = json.loads(json.dumps(arr.metadata.to_dict()))
    doc.pop("attributes", None)
    return doc


def _attributes(spec: ArraySpec) -> dict[str, Any]:
    return {"lsio_bench": {"seed": SEED, "version": DATA_VERSION, "complete": True}}


def array_matches(spec: ArraySpec, root: Path) -> bool:
    """The array on disk has the expected metadata and was written to the end."""
    try:
        doc = json.loads((root / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attributes = doc.pop("attributes", {})
    return doc == _expected_metadata(spec) and attributes == _attributes(spec)


def ensure_array(spec: ArraySpec, data_dir: Path) -> Path:
    """Write the array unless a complete one with matching metadata is there."""
    import zarr

    root = data_dir / spec.dirname
    if array_matches(spec, root):
        return root
    log(f"writing ({spec.key}) {spec.title} to {root} (zarr {zarr.__version__}) ...")
    shutil.rmtree(root, ignore_errors=True)
    arr = zarr.create_array(store=str(root), **spec.create_kwargs())
    for r0 in range(0, spec.n, spec.band):
        r1 = min(spec.n, r0 + spec.band)
        arr[r0:r1, :] = generate_band(spec.n, r0, r1)
    arr.attrs.update(_attributes(spec))  # last: marks the array complete
    os.sync()
    return root


def array_files(root: Path) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def stored_bytes(root: Path) -> int:
    return sum(os.path.getsize(p) for p in array_files(root))


# --------------------------------------------------------------------------- contenders


@dataclass
class Case:
    """One table: an array, a selection, and what every contender must return."""

    spec: ArraySpec
    root: Path
    selection: str  # "whole" or "sub"
    sel: tuple[slice, slice]
    files: list[str]
    reference: np.ndarray | None = None  # zarr-python's own read (LocalStore)
    floor_note: str = ""  # how the decode floor row decodes (the faster way, set up)
    holds: dict[str, list[float]] = field(default_factory=dict)  # state -> zarr's list time

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(s.stop - s.start for s in self.sel)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4

    @property
    def n_chunks(self) -> int:
        return chunks_touched(self.spec, self.sel)


@dataclass
class Ctx:
    cleanup: ExitStack = field(default_factory=ExitStack)


SetupFn = Callable[[Case, Ctx], Any]  # async (case, ctx) -> RunFn


@dataclass(frozen=True)
class ZarrContender:
    name: str
    alias: str
    setup: SetupFn
    pipeline_only: bool = False  # only (a) and (b), whole array
    checked: bool = True  # its result is the selection's values (the no-op pipeline's is not)

    def applies(self, case: Case) -> bool:
        if not self.pipeline_only:
            return True
        return case.spec.key in ("a", "b") and case.selection == "whole"


async def setup_fast(case: Case, ctx: Ctx) -> RunFn:
    import lsio.zarr

    path, sel = str(case.root), case.sel

    async def run() -> Any:
        return await lsio.zarr.read(path, sel)

    return run


# zarr-python picks an array's codec pipeline when the array is opened (and pickles it with the
# array): each contender opens its array inside the config it is meant to run with.
DEFAULT_PIPELINE = {"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}
LSIO_PIPELINE_CONFIG = {"codec_pipeline.path": "lsio.zarr.LsioCodecPipeline"}
ZARRS_CONFIG = {
    "codec_pipeline.path": "zarrs.ZarrsCodecPipeline",
    # raise instead of quietly falling back to zarr's own pipeline, so the row is zarrs
    "codec_pipeline.strict": True,
    # everything else at zarrs-python 0.2's own defaults, written out so a changed default
    # shows up here: one Rust thread per logical CPU (threading.max_workers None = rayon's
    # pool), 4 to #CPUs chunks in flight, buffered reads like every other contender
    # (direct_io False), checksums validated (no checksum codec in these arrays: no cost)
    "threading.max_workers": None,
    "codec_pipeline.chunk_concurrent_minimum": None,
    "codec_pipeline.chunk_concurrent_maximum": None,
    "codec_pipeline.direct_io": False,
    "codec_pipeline.validate_checksums": True,
}


def zarrs_config_text() -> str:
    return ", ".join(f"`{k}` {v}" for k, v in ZARRS_CONFIG.items()
                     if k != "codec_pipeline.path")


def pipeline_name(arr: Any) -> str:
    """The codec pipeline class a zarr array reads with, as zarr's config names it."""
    pipe = getattr(arr, "async_array", arr).codec_pipeline
    return f"{type(pipe).__module__}.{type(pipe).__qualname__}"


async def _zarr_async(store: Any, case: Case, config: dict[str, Any] = DEFAULT_PIPELINE
                      ) -> RunFn:
    import zarr

    with zarr.config.set(config):
        arr = await zarr.api.asynchronous.open_array(store=store, mode="r")
    if (got := pipeline_name(arr)) != config["codec_pipeline.path"]:
        raise RuntimeError(f"opened with {got}, not {config['codec_pipeline.path']}")
    sel = case.sel

    async def run() -> Any:
        return await arr.getitem(sel)

    return run


async def setup_lsiostore(case: Case, ctx: Ctx) -> RunFn:
    from lsio.zarr import LsioStore

    return await _zarr_async(LsioStore(case.root, read_only=True), case)


async def setup_localstore(case: Case, ctx: Ctx) -> RunFn:
    from zarr.storage import LocalStore

    return await _zarr_async(LocalStore(case.root, read_only=True), case)


async def setup_lsio_pipeline(case: Case, ctx: Ctx) -> RunFn:
    from zarr.storage import LocalStore

    import lsio.zarr  # noqa: F401 - registers the pipeline with zarr

    return await _zarr_async(LocalStore(case.root, read_only=True), case, LSIO_PIPELINE_CONFIG)


async def setup_zarrs(case: Case, ctx: Ctx) -> RunFn:
    from zarr.storage import LocalStore

    try:
        import zarrs  # noqa: F401 - registers the pipeline with zarr

        run = await _zarr_async(LocalStore(case.root, read_only=True), case, ZARRS_CONFIG)
        check_result(case, await run(), full=True)
    except Exception as e:  # zarrs-python 0.2 was written for zarr 3.1's pipeline protocol
        if zarr_version() < (3, 2):
            raise
        raise NotAvailable(f"n/a on zarr {'.'.join(map(str, zarr_version()))}: "
                           f"{_error(e)}") from e
    return run


class NotAvailable(Exception):
    """A contender the installed zarr cannot run: its rows say "n/a" and why."""


def zarr_version() -> tuple[int, int]:
    import zarr

    major, minor = (int(x) for x in zarr.__version__.split(".")[:2])
    return major, minor


async def setup_fused(case: Case, ctx: Ctx) -> RunFn:
    from zarr.core import codec_pipeline
    from zarr.storage import LocalStore

    if not hasattr(codec_pipeline, "FusedCodecPipeline"):
        raise NotAvailable("n/a (zarr < 3.3)")
    config = {"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"}
    return await _zarr_async(LocalStore(case.root, read_only=True), case, config)


async def setup_tensorstore(case: Case, ctx: Ctx) -> RunFn:
    import tensorstore as ts

    arr = await ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                                                       "path": str(case.root)}}, read=True)
    view = arr[case.sel]

    async def run() -> Any:
        return await view.read()

    return run


class _ChunkPlan:
    """The chunk files of an unsharded array and where each lands in the output."""

    def __init__(self, case: Case) -> None:
        import numcodecs
        import zarr
        from zarr.storage import LocalStore

        spec = case.spec
        if spec.shard is not None or case.selection != "whole":
            raise ValueError("the pipeline contenders read unsharded arrays whole")
        meta = zarr.open_array(store=LocalStore(case.root, read_only=True), mode="r").metadata
        per_side = spec.n // spec.chunk
        c = spec.chunk
        self.regions = []
        self.requests = []
        for i in range(per_side):
            for j in range(per_side):
                self.requests.append((str(case.root / meta.encode_chunk_key((i, j))),))
                self.regions.append((slice(i * c, (i + 1) * c), slice(j * c, (j + 1) * c)))
        self.chunk_shape = (c, c)
        self.shape = spec.shape
        self.codec = numcodecs.Blosc()  # decode reads cname/shuffle from the blosc header

    def steps(self, out: np.ndarray) -> list[list[Any]]:
        """Per chunk: blosc decode, then copy into its region of `out` (the same step objects
        in both pipeline modes)."""
        import lsio

        return [[self.codec, lsio.copy_to(out, r, shape=self.chunk_shape)]
                for r in self.regions]


def _run_batch(steps: list[list[Any]], bufs: Any, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        decode, copy = steps[i]
        copy(decode.decode(bufs[i]))


async def setup_read_all(case: Case, ctx: Ctx) -> RunFn:
    import lsio

    plan = _ChunkPlan(case)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    pool = ctx.cleanup.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="decode"))
    n = len(plan.requests)
    per_batch = max(1, math.ceil(n / (threads * 8)))  # 8 batches per thread: balanced, cheap
    bounds = [(lo, min(n, lo + per_batch)) for lo in range(0, n, per_batch)]

    async def run() -> Any:
        out = np.empty(plan.shape, np.float32)
        steps = plan.steps(out)
        bufs = await lsio.read_many(plan.requests)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _run_batch, steps, bufs, lo, hi)
                               for lo, hi in bounds))
        return out

    return run


async def setup_pipelined(case: Case, ctx: Ctx) -> RunFn:
    import lsio

    plan = _ChunkPlan(case)

    async def run() -> Any:
        out = np.empty(plan.shape, np.float32)
        steps = plan.steps(out)
        await lsio.read_many(plan.requests, pipeline=lambda i: steps[i])
        return out

    return run


# --------------------------------------------------------------------------- the limits


def inner_chunks(case: Case) -> list[tuple[bytes, tuple[slice, slice], tuple[slice, slice]]]:
    """Per (inner) chunk the selection touches: its stored bytes (read here, untimed; for a
    sharded array cut out of its shard by the shard's index), the selected part of the chunk
    and where that part lands in the output."""
    import zarr
    from zarr.storage import LocalStore

    spec, sel, c = case.spec, case.sel, case.spec.chunk
    meta = zarr.open_array(store=LocalStore(case.root, read_only=True), mode="r").metadata
    per_shard = (spec.shard or c) // c
    n_inner = per_shard * per_shard
    shards: dict[tuple[int, int], tuple[bytes, np.ndarray]] = {}
    items = []
    rows, cols = (range(s.start // c, (s.stop - 1) // c + 1) for s in sel)
    for i in rows:
        for j in cols:
            key = (i // per_shard, j // per_shard)
            if key not in shards:
                data = (case.root / meta.encode_chunk_key(key)).read_bytes()
                # zarr's default shard index: at the end, (offset, nbytes) uint64 pairs in C
                # order of the inner chunks, then a crc32c
                index = np.frombuffer(data, "<u8", count=2 * n_inner,
                                      offset=len(data) - 16 * n_inner - 4).reshape(n_inner, 2)
                shards[key] = (data, index if spec.shard else np.array([[0, len(data)]]))
            data, index = shards[key]
            off, nbytes = (int(v) for v in index[(i % per_shard) * per_shard + j % per_shard
                                                 if spec.shard else 0])
            y0, y1 = max(sel[0].start, i * c), min(sel[0].stop, (i + 1) * c)
            x0, x1 = max(sel[1].start, j * c), min(sel[1].stop, (j + 1) * c)
            items.append((data[off:off + nbytes],
                          (slice(y0 - i * c, y1 - i * c), slice(x0 - j * c, x1 - j * c)),
                          (slice(y0 - sel[0].start, y1 - sel[0].start),
                           slice(x0 - sel[1].start, x1 - sel[1].start))))
    return items


def _decode_batch(items: Sequence[tuple[bytes, Any, Any]], out: np.ndarray, c: int) -> None:
    """blosc straight from numcodecs into one scratch chunk (cache-hot), then its selected part
    into the output: the least any reader does per chunk."""
    from numcodecs import blosc

    scratch = np.empty((c, c), np.float32)
    for src, inner, region in items:
        blosc.decompress(src, scratch)
        out[region] = scratch[inner]


class _CBatch:
    """The same decode + placement in C, no Python per chunk: lsio's compiled decoder
    (`lsio._codecs`, the system's blosc) called on a thread's share of the chunks in one
    GIL-free call. None when it is not built."""

    FIELDS = (("src", "<u8"), ("srclen", "<u8"), ("dst", "<u8"), ("src_offset", "<i8"),
              ("shape", ("<i8", 8)), ("src_strides", ("<i8", 8)), ("dst_strides", ("<i8", 8)),
              ("out", "<u8"), ("outlen", "<u8"))

    def __init__(self, items: Sequence[tuple[bytes, Any, Any]], c: int,
                 shape: tuple[int, int]) -> None:
        from lsio import _codecs  # type: ignore[attr-defined]

        self.lib, self.ffi = _codecs.lib, _codecs.ffi
        ffi = self.ffi
        dtype = np.dtype({"names": [n for n, _ in self.FIELDS],
                          "formats": [f for _, f in self.FIELDS],
                          "offsets": [ffi.offsetof("lsio_chunk", n) for n, _ in self.FIELDS],
                          "itemsize": ffi.sizeof("lsio_chunk")})
        self.src = np.frombuffer(b"".join(src for src, _, _ in items), np.uint8)
        self.jobs = np.zeros(len(items), dtype)
        self.rel = np.zeros(len(items), np.uint64)  # output offsets, bytes
        base, at, width = self.src.ctypes.data, 0, shape[1]
        for k, (src, inner, region) in enumerate(items):
            job = self.jobs[k]
            job["src"], job["srclen"] = base + at, len(src)
            at += len(src)
            job["src_offset"] = (inner[0].start * c + inner[1].start) * 4
            job["shape"][:2] = (inner[0].stop - inner[0].start, inner[1].stop - inner[1].start)
            job["src_strides"][:2] = (c * 4, 4)
            job["dst_strides"][:2] = (width * 4, 4)
            self.rel[k] = (region[0].start * width + region[1].start) * 4
        self.chunk_bytes, self.shape = c * c * 4, shape

    def jobs_for(self, out: np.ndarray) -> np.ndarray:
        jobs = self.jobs.copy()
        addr = out.ctypes.data
        jobs["dst"] = self.rel + np.uint64(addr)
        jobs["out"], jobs["outlen"] = addr, out.nbytes
        return jobs

    def decode(self, jobs: np.ndarray) -> None:
        failed = self.ffi.new("int *")
        ret = self.lib.lsio_decode_scatter(
            self.lib.LSIO_CODEC_BLOSC, 0, self.ffi.cast("lsio_chunk *", jobs.ctypes.data),
            len(jobs), 2, self.chunk_bytes, 4, 0, self.ffi.NULL, 0, failed)
        if ret != self.lib.LSIO_DECODE_OK:
            raise RuntimeError(f"lsio_decode_scatter: {ret} at job {failed[0]}")


async def setup_floor(case: Case, ctx: Ctx) -> RunFn:
    """The decode floor: every chunk the selection touches decoded from memory on all cores,
    into a fresh output per call (as `lsio.zarr.read` allocates one). Two ways are timed in
    setup and the faster one is the row: a pool of one thread per core over chunks (numcodecs'
    blosc releases the GIL), and blosc's own threads (one per core) in one thread."""
    from numcodecs import blosc

    items = inner_chunks(case)
    c, shape = case.spec.chunk, case.shape
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    pool = ctx.cleanup.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="floor"))
    per_batch = max(1, math.ceil(len(items) / (threads * 4)))  # 4 batches per thread
    batches = [items[lo:lo + per_batch] for lo in range(0, len(items), per_batch)]

    async def on_pool() -> Any:
        out = np.empty(shape, np.float32)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _decode_batch, b, out, c)
                               for b in batches))
        return out

    def blosc_threads_all(out: np.ndarray) -> None:
        was_threads, was_n = blosc.use_threads, blosc.get_nthreads()
        blosc.use_threads = True
        blosc.set_nthreads(threads)
        try:
            _decode_batch(items, out, c)
        finally:
            blosc.use_threads = was_threads
            blosc.set_nthreads(was_n)

    async def blosc_threads() -> Any:
        out = np.empty(shape, np.float32)
        await asyncio.get_running_loop().run_in_executor(pool, blosc_threads_all, out)
        return out

    fns = {"pool": on_pool, "blosc threads": blosc_threads}
    try:
        batch = _CBatch(items, c, shape)
    except ImportError:
        pass  # not built here: the two numcodecs ways only
    else:
        async def c_batch() -> Any:
            out = np.empty(shape, np.float32)
            jobs = batch.jobs_for(out)
            per = max(1, math.ceil(len(jobs) / threads))
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(pool, batch.decode, jobs[lo:lo + per])
                                   for lo in range(0, len(jobs), per)))
            return out

        fns["C batch"] = c_batch
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(3):  # alternated, medians
        for name, fn in fns.items():
            t0 = time.perf_counter()
            await fn()
            times[name].append(time.perf_counter() - t0)
    best = min(times, key=lambda k: statistics.median(times[k]))
    how = {"pool": f"a pool of {threads} threads over chunks (numcodecs' blosc)",
           "blosc threads": f"{threads} blosc threads (numcodecs)",
           "C batch": f"{threads} threads, one GIL-free C call each over its chunks "
                      "(lsio._codecs, the system's blosc)"}[best]
    case.floor_note = f"{how} (setup medians: " + ", ".join(
        f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()) + ")"
    return fns[best]


@dataclass(frozen=True)
class NoopResult:
    """What the no-op pipeline row returns: zarr's (unfilled) output and how long zarr ran
    before calling the pipeline's `read` (its indexing and per-chunk list: a loop hold)."""

    array: Any
    hold_s: float


async def setup_noop(case: Case, ctx: Ctx) -> RunFn:
    from zarr.storage import LocalStore

    from . import zarr_noop

    run = await _zarr_async(LocalStore(case.root, read_only=True), case,
                            {"codec_pipeline.path": zarr_noop.PATH})

    async def timed() -> Any:
        t0 = time.perf_counter()
        got = await run()
        return NoopResult(got, zarr_noop.NoopCodecPipeline.entered - t0)

    return timed


CONTENDERS: tuple[ZarrContender, ...] = (
    ZarrContender(FAST, "fast", setup_fast),
    ZarrContender(LSIO_PIPELINE, "lsio-pipeline", setup_lsio_pipeline),
    ZarrContender(ZARRS, "zarrs", setup_zarrs),
    ZarrContender(FUSED, "fused", setup_fused),
    ZarrContender(LSIOSTORE, "lsiostore", setup_lsiostore),
    ZarrContender(LOCALSTORE, "localstore", setup_localstore),
    ZarrContender(TENSORSTORE, "tensorstore", setup_tensorstore),
    ZarrContender(READ_ALL, "read-all", setup_read_all, pipeline_only=True),
    ZarrContender(PIPELINED, "pipelined", setup_pipelined, pipeline_only=True),
    ZarrContender(FLOOR, "floor", setup_floor),
    ZarrContender(ZARR_OWN, "zarr-own", setup_noop, checked=False),
)
BY_NAME = {c.name: c for c in CONTENDERS} | {c.alias: c for c in CONTENDERS}


# --------------------------------------------------------------------------- checks


class WrongResult(RuntimeError):
    pass


def check_result(case: Case, got: Any, *, full: bool) -> None:
    """Shape and dtype always; content: sample blocks, or everything when `full`."""
    got = np.asarray(got)
    if got.shape != case.shape or got.dtype != np.float32:
        raise WrongResult(f"returned {got.dtype} {got.shape}, expected float32 {case.shape}")
    ref = case.reference
    if ref is None:
        return
    if full:
        if not np.array_equal(got, ref):
            bad = np.argwhere(got != ref)
            raise WrongResult(f"{len(bad):,} elements differ from zarr's read, first at "
                              f"{tuple(int(v) for v in bad[0])}")
        return
    h, w = case.shape
    for y, x in {(0, 0), (h // 2, w // 2), (max(0, h - 16), max(0, w - 16))}:
        block = (slice(y, y + 16), slice(x, x + 16))
        if not np.array_equal(got[block], ref[block]):
            raise WrongResult(f"block at ({y}, {x}) differs from zarr's read")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    specs: tuple[ArraySpec, ...]
    repeats: int
    data_dir: Path
    quick: bool
    contenders: tuple[str, ...]  # canonical names, in table order
    states: tuple[str, ...]
    cold_note: str  # why cold runs were skipped ("" when they were not)
    out: Path | None
    json_path: Path | None
    perf_events: str


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    ap = argparse.ArgumentParser(description="lsio Zarr benchmark")
    ap.add_argument("--quick", action="store_true", help="1024² arrays (smoke run)")
    ap.add_argument("--workload", default=DEFAULT_WORKLOADS,
                    help=f"comma list of arrays (default {DEFAULT_WORKLOADS})")
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin rounds, medians reported (default 5, --quick 2)")
    ap.add_argument("--contenders", default=None,
                    help="comma list of contender names or aliases (default: all): "
                    + ", ".join(f"{c.alias} ({c.name})" for c in CONTENDERS))
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--warm-only", action="store_true")
    only.add_argument("--cold-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    ap.add_argument("--perf-events", default=PERF_EVENTS,
                    help=f"events `perf stat` counts for the pipeline modes (default "
                    f"{PERF_EVENTS}); empty: no perf measurement")
    ap.add_argument("--perf-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    specs = array_specs(a.quick)
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    keys = [k.strip() for k in a.workload.split(",") if k.strip()]
    if not keys or any(k not in specs for k in keys):
        ap.error(f"unknown workload(s) in {a.workload!r}; known: {sorted(specs)}")
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    if a.contenders:
        asked = [n.strip() for n in a.contenders.split(",") if n.strip()]
        if bad := [n for n in asked if n not in BY_NAME]:
            ap.error(f"unknown contender(s) {bad}; known: {sorted(BY_NAME)}")
        chosen = {BY_NAME[n].name for n in asked}
        names = tuple(c.name for c in CONTENDERS if c.name in chosen)
    else:
        names = tuple(c.name for c in CONTENDERS)
    states, cold_note = chosen_states(ap, a.warm_only, a.cold_only, STATES)
    cfg = Config(specs=tuple(specs[k] for k in keys), repeats=repeats, data_dir=a.data_dir,
                 quick=a.quick, contenders=names, states=states, cold_note=cold_note,
                 out=a.out, json_path=a.json_path, perf_events=a.perf_events)
    return cfg, a


# --------------------------------------------------------------------------- running


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


async def zarr_reference(case: Case) -> np.ndarray:
    from zarr.storage import LocalStore

    run = await _zarr_async(LocalStore(case.root, read_only=True), case)
    return np.asarray(await run())


async def prepare(cfg: Config, case: Case, ctx: Ctx) -> tuple[dict[str, Series],
                                                               dict[str, RunFn]]:
    """Reference read, then each contender's setup and one untimed read compared with the
    reference in full; a failing setup or a wrong result is recorded in every state's series."""
    series: dict[str, Series] = {}
    fns: dict[str, RunFn] = {}
    names = [n for n in cfg.contenders if BY_NAME[n].applies(case)]
    for name in names:
        for state in cfg.states:
            series[f"{state}/{name}"] = Series(workload=case.spec.key, state=state,
                                               contender=name, mode=case.selection)
    try:
        case.reference = await zarr_reference(case)
    except Exception as e:  # nothing can be checked: every row fails, the run goes on
        for s in series.values():
            s.error = f"reference read (zarr + LocalStore) failed: {_error(e)}"
        log(f"  reference read FAILED: {_error(e)}")
        return series, fns
    for name in names:
        contender = BY_NAME[name]
        try:
            fn = await contender.setup(case, ctx)
            got = await fn()
            if contender.checked:
                check_result(case, got, full=True)
            fns[name] = fn
        except NotAvailable as e:
            for state in cfg.states:
                series[f"{state}/{name}"].error = str(e)
            log(f"  {name}: {e}")
        except Exception as e:  # a broken contender must not stop the run
            for state in cfg.states:
                series[f"{state}/{name}"].error = _error(e)
            log(f"  {name}: setup/check FAILED: {_error(e)}")
    return series, fns


def run_case(cfg: Config, case: Case, runner: asyncio.Runner) -> list[Series]:
    ctx = Ctx()
    with ctx.cleanup:
        series, fns = runner.run(prepare(cfg, case, ctx))
        for state in cfg.states:
            for rnd in range(cfg.repeats):
                for name in cfg.contenders:
                    s = series.get(f"{state}/{name}")
                    if s is None or s.error is not None:
                        continue
                    tag = (f"  [{case.spec.key} {case.selection} {state} "
                           f"{rnd + 1}/{cfg.repeats}] {name}:")
                    try:
                        if state == "cold":
                            drop_caches()
                        else:
                            warm_paths(case.files)
                        seconds, payload, stall = time_run(runner, fns[name])
                        if isinstance(payload, NoopResult):
                            case.holds.setdefault(state, []).append(payload.hold_s)
                        elif BY_NAME[name].checked:
                            check_result(case, payload, full=False)
                        del payload
                    except Exception as e:  # report it, keep going
                        s.error = _error(e)
                        log(f"{tag} FAILED: {s.error}")
                        continue
                    s.samples.append(Sample(round=rnd, seconds=seconds, nbytes=case.nbytes,
                                            n_ops=case.n_chunks, loop_stall_s=stall))
                    log(f"{tag} {seconds * 1e3:.1f} ms, {case.nbytes / seconds / 1e9:.2f} GB/s"
                        f"{stall_text(stall)}")
    case.reference = None
    return list(series.values())


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    contender: str
    reference: str
    ratio: float
    selections: tuple[str, ...] = SELECTIONS  # judged on these tables of every array and state


# Issue 13: zarr's own API with lsio's pipeline as fast as the peers' best and within 10% of
# the fast path; the fast path ahead of zarrs on sub-selections too; LsioStore no slower
# than LocalStore under zarr's default pipeline. Issue 25: the fast path >= 1.2x tensorstore
# in every cell and within 1.3x of the decode floor on whole reads (the pipeline's rule per
# cell is `cell_rule`).
FAST_FLOOR = round(1 / 1.3, 3)
TARGETS = (Target(LSIO_PIPELINE, TENSORSTORE, 1.0), Target(LSIO_PIPELINE, ZARRS, 1.0),
           Target(LSIO_PIPELINE, FAST, 0.9),
           Target(FAST, TENSORSTORE, 1.2), Target(FAST, ZARRS, 1.0, ("sub",)),
           Target(FAST, FLOOR, FAST_FLOOR, ("whole",)),
           Target(LSIOSTORE, LOCALSTORE, 1.0))


@dataclass(frozen=True)
class TargetResult:
    workload: str
    selection: str
    state: str
    contender: str
    reference: str
    ratio_wanted: float
    ratio: float | None  # median seconds of the reference / of the contender
    met: bool
    note: str = ""


def median_s(s: Series) -> float:
    return statistics.median(x.seconds for x in s.samples)


def _find(series: list[Series], name: str) -> Series | None:
    return next((s for s in series if s.contender == name), None)


def judge(key: str, selection: str, state: str, series: list[Series],
          t: Target) -> TargetResult:
    """`t` on one table (`series`: the rows of one array, selection and state)."""
    who, ref = _find(series, t.contender), _find(series, t.reference)
    for name, s in ((t.contender, who), (t.reference, ref)):
        if s is None or not s.ok:
            note = f"{name} {'not run' if s is None else 'FAILED'}"
            return TargetResult(key, selection, state, t.contender, t.reference, t.ratio, None,
                                False, note)
    assert who is not None and ref is not None
    ratio = median_s(ref) / median_s(who)
    return TargetResult(key, selection, state, t.contender, t.reference, t.ratio, ratio,
                        ratio >= t.ratio)


def judge_all(cfg: Config, results: list[Series]) -> list[TargetResult]:
    """Every target on every table it applies to, among the contenders that were run."""
    return [judge(spec.key, selection, state,
                  [s for s in results if s.workload == spec.key and s.mode == selection
                   and s.state == state], t)
            for t in TARGETS if {t.contender, t.reference} <= set(cfg.contenders)
            for spec in cfg.specs for selection in t.selections for state in cfg.states]


# Issue 25's rule for every cell (array x selection x state): zarr + lsio pipeline >= 1.0x
# tensorstore where zarr's own time (the no-op pipeline row) is at most half of tensorstore's;
# elsewhere within 1.1x of zarr's own time + the decode floor. A target holds when the median
# of >= 5 alternated rounds meets it and no round falls below 0.95x of it.
CHEAP_SHARE = 0.5
OWN_PLUS_FLOOR = 1.1


@dataclass(frozen=True)
class CellRule:
    workload: str
    selection: str
    state: str
    own_s: float | None  # zarr's own time, median (no-op pipeline)
    tensorstore_s: float | None
    floor_s: float | None  # the decode floor, median
    cheap: bool | None  # own_s <= CHEAP_SHARE * tensorstore_s
    target: str
    ratio: float | None  # median over rounds of (the target's seconds / the pipeline's)
    worst: float | None  # the worst round's ratio
    rounds: int
    verdict: str  # "met", "missed", "not judged" (fewer than ROUNDS_WANTED rounds) or "n/a"
    note: str = ""


def cell_rule(key: str, selection: str, state: str, series: list[Series]) -> CellRule:
    own, ts, floor, pipe = (_find(series, n) for n in (ZARR_OWN, TENSORSTORE, FLOOR,
                                                        LSIO_PIPELINE))
    med = {n: median_s(s) if s is not None and s.ok else None
           for n, s in ((ZARR_OWN, own), (TENSORSTORE, ts), (FLOOR, floor))}
    own_s, ts_s, floor_s = med[ZARR_OWN], med[TENSORSTORE], med[FLOOR]
    if own_s is None or ts_s is None:
        return CellRule(key, selection, state, own_s, ts_s, floor_s, None, "—", None, None, 0,
                        "n/a", "needs zarr's own time and tensorstore")
    cheap = own_s <= CHEAP_SHARE * ts_s
    p = by_round(pipe)
    if cheap:
        target, refs = f"{LSIO_PIPELINE} >= 1.0x {TENSORSTORE}", by_round(ts)
    else:
        target = f"{LSIO_PIPELINE} <= {OWN_PLUS_FLOOR:g}x ({ZARR_OWN} + {FLOOR})"
        o, f = by_round(own), by_round(floor)
        refs = {r: OWN_PLUS_FLOOR * (o[r] + f[r]) for r in o.keys() & f.keys()}
    ratios = round_ratios(refs, p)
    ratio, worst, verdict = round_verdict(ratios)
    note = "" if p else f"{LSIO_PIPELINE} did not run"
    return CellRule(key, selection, state, own_s, ts_s, floor_s, cheap, target, ratio, worst,
                    len(ratios), verdict, note)


def cell_rules(cfg: Config, results: list[Series]) -> list[CellRule]:
    if LSIO_PIPELINE not in cfg.contenders:
        return []
    return [cell_rule(spec.key, sel, state, [s for s in results if s.workload == spec.key
                                             and s.mode == sel and s.state == state])
            for spec in cfg.specs for sel in SELECTIONS for state in cfg.states]


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:,.1f}"


def format_cell_rule(r: CellRule) -> str:
    if r.cheap is None:
        return f"Cell rule: n/a ({r.note})."
    how = (f"{ZARR_OWN} {_ms(r.own_s)} ms {'<=' if r.cheap else '>'} half of "
           f"{TENSORSTORE}'s {_ms(r.tensorstore_s)} ms")
    got = ("no rounds" if r.ratio is None else
           f"median {r.ratio:.2f}x, worst round {r.worst:.2f}x of {r.rounds}")
    return f"Cell rule ({how}): target {r.target}: {got}: **{r.verdict}**" + (
        f" ({r.note})." if r.note else ".")


def format_cell_rules(rules: list[CellRule]) -> str:
    rows = [f"| cell | state | {ZARR_OWN} (ms) | {TENSORSTORE} (ms) | own <= half | "
            f"{FLOOR} (ms) | target | median | worst round | rounds | verdict |",
            "|---|---|---:|---:|---|---:|---|---:|---:|---:|---|"]
    for r in rules:
        cheap = "—" if r.cheap is None else "yes" if r.cheap else "no"
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}x"
        worst = "—" if r.worst is None else f"{r.worst:.2f}x"
        rows.append(f"| ({r.workload}) {r.selection} | {r.state} | {_ms(r.own_s)} | "
                    f"{_ms(r.tensorstore_s)} | {cheap} | {_ms(r.floor_s)} | {r.target} | "
                    f"{ratio} | {worst} | {r.rounds} | {r.verdict} |")
    return "\n".join(rows)


CELL_RULES_NOTE = (
    f"Per cell: where {ZARR_OWN} (zarr-python's indexing and per-chunk list, timed through "
    "a codec pipeline that reads and fills nothing, `benchmarks/zarr_noop.py`) is at most "
    f"half of {TENSORSTORE}'s median, the target is {LSIO_PIPELINE} >= 1.0x {TENSORSTORE}; "
    f"elsewhere {LSIO_PIPELINE} within {OWN_PLUS_FLOOR:g}x of {ZARR_OWN} + the {FLOOR}. "
    "*median* / *worst round*: the target's seconds over the pipeline's, per alternated "
    f"round; met when the median is >= 1.0 and no round below {ROUND_SLACK:g}, judged only "
    f"with >= {ROUNDS_WANTED} rounds. On sharded arrays zarr indexes shards, not inner "
    "chunks: its own time there is per shard.")


def format_stall_line(series: list[Series], holds: Sequence[float]) -> str:
    """The loop-stall target on one table (every row that awaits on the loop), and how long
    zarr's own list-building holds the loop before a pipeline is called."""
    text = format_stall_target(series)
    if holds:
        text += (f"; zarr's own list-building before the pipeline's `read` holds the loop "
                 f"{statistics.median(holds) * 1e3:,.1f} ms (median, worst "
                 f"{max(holds) * 1e3:,.1f} ms) in every `zarr + ...` row")
    return text + "."


def format_targets_table(cfg: Config, targets: list[TargetResult]) -> str:
    """One row per target, one column per array and selection, `warm / cold` ratios in each
    cell (missed ones in bold); — where the target does not apply."""
    columns = [(spec.key, sel) for spec in cfg.specs for sel in SELECTIONS]
    rows = ["| target | " + " | ".join(f"({k}) {sel}" for k, sel in columns) + " |",
            "|---|" + "---:|" * len(columns)]
    by_key = {(r.contender, r.reference, r.workload, r.selection, r.state): r for r in targets}
    for t in TARGETS:
        if not any((t.contender, t.reference) == (r.contender, r.reference) for r in targets):
            continue
        cells = []
        for key, sel in columns:
            got = [by_key.get((t.contender, t.reference, key, sel, st)) for st in cfg.states]
            if all(r is None for r in got):
                cells.append("—")
                continue
            cells.append(" / ".join(
                "—" if r is None else "n/a" if r.ratio is None
                else ratio_text(r.ratio, r.ratio_wanted) if r.met
                else f"**{ratio_text(r.ratio, r.ratio_wanted)}**" for r in got))
        rows.append(f"| {t.contender} >= {t.ratio:g}x {t.reference} | " + " | ".join(cells)
                    + " |")
    return "\n".join(rows)


def ratio_text(ratio: float, wanted: float) -> str:
    """A measured ratio with two decimals, or as many more as keep a miss below the line."""
    digits = 2
    while ratio < wanted <= round(ratio, digits) and digits < 6:
        digits += 1
    return f"{ratio:.{digits}f}"


def format_target(r: TargetResult) -> str:
    wanted = f"{r.contender} >= {r.ratio_wanted:g}x {r.reference}"
    if r.ratio is None:
        return f"Target: {wanted}: **missed** ({r.note})."
    return (f"Target: {wanted}: {ratio_text(r.ratio, r.ratio_wanted)}x, "
            f"**{'met' if r.met else 'missed'}**.")


# --------------------------------------------------------------------------- perf


@dataclass
class PerfResult:
    available: bool
    note: str
    events: tuple[str, ...] = ()
    counts: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> event -> n
    reads: int = 0  # reads of (a) per subprocess
    nbytes: int = 0  # decoded bytes per read


def _parse_perf(text: str) -> dict[str, float | str]:
    """`perf stat -x,` lines: value,unit,event,... -> {event: value or the text perf gave}."""
    counts: dict[str, float | str] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        value, event = parts[0], parts[2]
        try:
            counts[event] = float(value)
        except ValueError:
            counts[event] = value
    return counts


def _perf_stat(events: str, cmd: list[str]) -> tuple[dict[str, float | str], str]:
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as f:
        proc = subprocess.run(["perf", "stat", "-x,", "-e", events, "-o", f.name, "--", *cmd],
                              capture_output=True, text=True, timeout=600)
        text = f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr or text).strip()[-400:]}")
    return _parse_perf(text), text


def perf_check(events: str) -> tuple[bool, str]:
    if not events:
        return False, "perf measurement turned off (--perf-events '')"
    if shutil.which("perf") is None:
        return False, "perf is not installed (apt-get install linux-perf)"
    try:
        counts, text = _perf_stat(events, ["true"])
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        return False, f"`perf stat -e {events} true` failed: {e}"
    bad = {k: v for k, v in counts.items() if isinstance(v, str)}
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    missing = [e for e in wanted if not any(k.startswith(e) for k in counts)]
    if bad or missing:
        said = ", ".join(f"{k}: {v}" for k, v in bad.items()) or f"no counts for {missing}"
        return False, (f"`perf stat -e {events}` counts nothing here ({said}; no hardware "
                       "performance counters, e.g. in a VM without a virtual PMU)")
    return True, ""


def measure_perf(cfg: Config, data_dir: Path, runnable: bool) -> PerfResult:
    ok, note = perf_check(cfg.perf_events)
    if not ok:
        return PerfResult(False, note)
    if not runnable:
        return PerfResult(False, "perf works, but (a) was not run with both pipeline modes")
    events = tuple(e.strip() for e in cfg.perf_events.split(",") if e.strip())
    nbytes = array_specs(cfg.quick)["a"].n ** 2 * 4
    res = PerfResult(True, "", events, reads=perf_reads(nbytes), nbytes=nbytes)
    for mode in ("baseline", READ_ALL, PIPELINED):
        cmd = [sys.executable, "-m", "benchmarks.bench_zarr", "--perf-child", mode,
               "--data-dir", str(data_dir), *(["--quick"] if cfg.quick else [])]
        log(f"perf stat: {mode} ...")
        try:
            counts, _ = _perf_stat(cfg.perf_events, cmd)
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            return PerfResult(False, f"perf stat of {mode!r} failed: {e}")
        res.counts[mode] = {k: v for k, v in counts.items() if isinstance(v, float)}
    return res


def perf_reads(nbytes: int) -> int:
    return min(200, max(3, PERF_BYTES // nbytes))


def perf_child(mode: str, data_dir: Path, quick: bool) -> int:
    """Set up (a) whole for one pipeline mode, warm, and read it `perf_reads` times (the
    `baseline` mode does everything but the reads: its counts are subtracted)."""
    spec = array_specs(quick)["a"]
    root = data_dir / spec.dirname
    if not array_matches(spec, root):
        raise SystemExit(f"perf child: {root} is missing or stale")
    case = Case(spec, root, "whole", selection_of(spec, "whole"), array_files(root))
    setup = BY_NAME[READ_ALL if mode == "baseline" else mode].setup
    ctx = Ctx()
    with ctx.cleanup, asyncio.Runner() as runner:
        fn = runner.run(setup(case, ctx))
        warm_paths(case.files)
        for _ in range(perf_reads(case.nbytes) if mode != "baseline" else 0):
            check_result(case, runner.run(fn()), full=False)
    return 0


def format_perf(p: PerfResult) -> str:
    title = "### perf: the two pipeline modes, (a) whole array, warm"
    if not p.available:
        return f"{title}\n\nSkipped: {p.note}."
    rows = ["| mode | " + " | ".join(f"{e} (minus baseline)" for e in p.events)
            + " | " + " | ".join(f"{e} per decoded MB" for e in p.events) + " |",
            "|---|" + "---:|" * (2 * len(p.events))]
    base = p.counts.get("baseline", {})
    mb = p.reads * p.nbytes / 1e6
    for mode in (READ_ALL, PIPELINED):
        counts = p.counts.get(mode, {})
        deltas = [counts.get(e, math.nan) - base.get(e, 0.0) for e in p.events]
        rows.append(f"| {mode} | " + " | ".join(f"{d:,.0f}" for d in deltas) + " | "
                    + " | ".join(f"{d / mb:,.0f}" for d in deltas) + " |")
    note = (f"`perf stat -e {','.join(p.events)}` around a subprocess that sets up the mode and "
            f"reads (a) warm {p.reads} times; a baseline subprocess (same setup, no reads) is "
            "subtracted.")
    return f"{title}\n\n" + "\n".join(rows) + "\n\n" + note


# --------------------------------------------------------------------------- output


def _ratio(s: Series, ref: Series | None) -> str:
    return f"{median_s(ref) / median_s(s):.2f}x" if ref is not None and ref.ok else "—"


RATIO_COLUMNS = (TENSORSTORE, ZARRS, LOCALSTORE, FLOOR)  # each table's "vs X" columns


def format_table(series: list[Series]) -> str:
    refs = [_find(series, name) for name in RATIO_COLUMNS]
    rows = ["| contender | median s | GB/s | "
            + " | ".join(f"vs {name}" for name in RATIO_COLUMNS) + f" | {STALL_HEADER} | runs |",
            "|---|---:|---:|" + "---:|" * len(RATIO_COLUMNS) + "---:|---:|"]
    for s in series:
        if not s.ok:
            reason = (s.error or "no runs").replace("|", "/").replace("\n", " ")[:160]
            what = "n/a" if reason.startswith("n/a") else "FAILED"
            rows.append(f"| {s.contender} | {what} | — | " + "— | " * len(RATIO_COLUMNS)
                        + f"— | {reason} |")
            continue
        sec = median_s(s)
        gbps = s.samples[0].nbytes / sec / 1e9
        rows.append(f"| {s.contender} | {sec:.4f} | {gbps:.3g} | "
                    + " | ".join(_ratio(s, ref) for ref in refs)
                    + f" | {format_stall(s)} | {len(s.samples)} |")
    return "\n".join(rows)


def _pipeline_line(series: list[Series]) -> str | None:
    ra, pl = _find(series, READ_ALL), _find(series, PIPELINED)
    if ra is None or pl is None or not (ra.ok and pl.ok):
        return None
    return (f"Pipelined vs read-all-then-decode: {median_s(ra) / median_s(pl):.2f}x "
            f"(median {median_s(pl):.4f} s vs {median_s(ra):.4f} s).")


def zarr_machine_details(data_dir: Path, perf: PerfResult) -> dict[str, str]:
    details = machine_details_with(data_dir, ("zarr", "numcodecs", "tensorstore", "zarrs"))
    details["perf"] = "counts " + ",".join(perf.events) if perf.available else perf.note
    return details


def zarr_version_text() -> str:
    import zarr

    return str(zarr.__version__)


def render(cfg: Config, cases: list[Case], results: list[Series],
           targets: list[TargetResult], perf: PerfResult, details: dict[str, str],
           argv: Sequence[str], rules: Sequence[CellRule] = ()) -> str:
    parts = ["## Zarr: lsio against zarr-python and tensorstore (`benchmarks/bench_zarr.py`)",
             "", f"Command: `python -m benchmarks.bench_zarr {shlex.join(argv)}`  ",
             f"Python {platform.python_version()}, zarr {zarr_version_text()}.  ",
             f"Median of {cfg.repeats} round-robin round(s) per table, all contenders on one "
             "asyncio event loop; states: " + ", ".join(cfg.states)
             + (f" ({cfg.cold_note})" if cfg.cold_note else "") + ".", "",
             format_machine(details), ""]
    for spec in cfg.specs:
        stored = next((stored_bytes(c.root) for c in cases if c.spec.key == spec.key), 0)
        ratio = f", stored {stored / 1e6:,.1f} MB ({spec.n ** 2 * 4 / stored:.2f}x " \
            "compression)" if stored else ""
        for selection in SELECTIONS:
            case = next(c for c in cases if c.spec.key == spec.key
                        and c.selection == selection)
            for state in cfg.states:
                rows = [s for s in results if s.workload == spec.key
                        and s.mode == selection and s.state == state]
                parts += [f"### ({spec.key}) {selection}, {state}: {spec.title}", "",
                          f"Selection {describe(case.sel)}: {case.shape[0]}x{case.shape[1]}, "
                          f"{case.nbytes / 1e6:,.1f} MB decoded, {case.n_chunks:,} chunks"
                          f"{ratio}.", "", format_table(rows), ""]
                lines = [format_target(t) for t in targets if t.workload == spec.key
                         and t.state == state and t.selection == selection]
                if (pl := _pipeline_line(rows)) is not None:
                    lines.append(pl)
                if case.floor_note and _find(rows, FLOOR) is not None:
                    lines.append(f"Decode floor: {case.floor_note}.")
                lines += [format_cell_rule(r) for r in rules if (r.workload, r.selection,
                                                                 r.state) == (spec.key,
                                                                              selection, state)]
                if rows:
                    lines.append(format_stall_line(rows, case.holds.get(state, [])))
                if lines:
                    parts += ["  \n".join(lines), ""]
    met = sum(t.met for t in targets)
    parts += ["### Targets", "", "Ratio of median seconds (reference / contender) per table, "
              + " / ".join(cfg.states) + "; missed in **bold**.", "",
              format_targets_table(cfg, targets), "",
              f"Targets met: {met} of {len(targets)}.", ""]
    if rules:
        parts += ["### Cell rules", "", CELL_RULES_NOTE, "", format_cell_rules(list(rules)),
                  "", f"Cell rules met: {sum(r.verdict == 'met' for r in rules)} of "
                  f"{len(rules)} ({sum(r.verdict == 'not judged' for r in rules)} not judged: "
                  f"fewer than {ROUNDS_WANTED} rounds).", ""]
    parts += [format_perf(perf), ""]
    parts += ["Notes: timed by wall clock around one call on the shared loop; one-off setup "
              "(opening the array, building request lists, thread pools) is done before "
              "timing, and every contender's first read (untimed, in setup) is compared with "
              "zarr-python's own read in full. Warm: every file of the array is read just "
              "before each run; cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before each "
              "run (the array metadata is already parsed, except for `lsio fast path`, which "
              "takes a path and reads `zarr.json` in every call). *GB/s*: decoded output bytes "
              "per second. *vs X*: median seconds of X over the contender's. The `zarr + ...` "
              "rows use zarr-python's async API (`await arr.getitem(sel)`), each array opened "
              "inside the codec-pipeline config of its row (zarr picks the pipeline at open; "
              "checked after opening): zarr's default `BatchedCodecPipeline` for LocalStore "
              "and LsioStore, with zarr's defaults (async.concurrency 10, codecs on asyncio's "
              "default thread pool); `lsio.zarr.LsioCodecPipeline` and zarrs-python's "
              f"`ZarrsCodecPipeline` on zarr's LocalStore (zarrs config: {zarrs_config_text()})"
              "; tensorstore with its default context (no chunk cache). The pipeline "
              "rows read the chunk files of (a)/(b) whole with the default lsio reader; both "
              "use the same per-chunk steps (`numcodecs.Blosc().decode`, then "
              "`lsio.copy_to(out, region)`): read-all-then-decode runs them after the whole "
              "`read_many` on a thread pool of one thread per core (8 batches per thread), "
              "pipelined hands them to `read_many(..., pipeline=...)`. Raw per-round numbers: "
              "`--json`.", "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, cases: list[Case], results: list[Series],
              targets: list[TargetResult], perf: PerfResult, details: dict[str, str],
              rules: Sequence[CellRule] = ()) -> None:
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "data_dir": str(cfg.data_dir),
                   "states": list(cfg.states), "cold_note": cfg.cold_note,
                   "contenders": list(cfg.contenders)},
        "arrays": {s.key: dataclasses.asdict(s) | {"path": str(cfg.data_dir / s.dirname)}
                   for s in cfg.specs},
        "cases": [{"workload": c.spec.key, "selection": c.selection,
                   "slices": [[s.start, s.stop] for s in c.sel], "nbytes": c.nbytes,
                   "n_chunks": c.n_chunks, "decode_floor": c.floor_note,
                   "zarr_list_hold_s": c.holds} for c in cases],
        "series_note": "`mode` is the selection (whole / sub); nbytes are decoded bytes, "
                       "n_ops the (inner) chunks the selection touches",
        "series": series_json(results),
        "targets": [dataclasses.asdict(t) for t in targets],
        "cell_rules": [dataclasses.asdict(r) for r in rules],
        "perf": dataclasses.asdict(perf),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, args = parse_args(argv)
    if args.perf_child is not None:
        return perf_child(args.perf_child, cfg.data_dir.resolve(), cfg.quick)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = cfg.data_dir.resolve()
    roots = {spec.key: ensure_array(spec, data_dir) for spec in cfg.specs}
    cases = [Case(spec, roots[spec.key], sel, selection_of(spec, sel),
                  array_files(roots[spec.key]))
             for spec in cfg.specs for sel in SELECTIONS]

    log(f"Python {platform.python_version()}, zarr {zarr_version_text()}")
    results: list[Series] = []
    with asyncio.Runner() as runner:
        for case in cases:
            log(f"({case.spec.key}) {case.selection} {describe(case.sel)}: {case.spec.title}")
            results += run_case(cfg, case, runner)

    targets = judge_all(cfg, results)
    rules = cell_rules(cfg, results)
    both = {READ_ALL, PIPELINED} <= set(cfg.contenders) and "a" in roots
    perf = measure_perf(cfg, data_dir, both)
    details = zarr_machine_details(data_dir, perf)
    text = render(cfg, cases, results, targets, perf, details, argv, rules)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, cases, results, targets, perf, details, rules)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
