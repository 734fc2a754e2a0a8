"""Workload definitions, on-disk data sets and page-cache control for the local benchmarks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

BLOCK = 4 * KiB
_WRITE_CHUNK = 16 * MiB
_WARM_CHUNK = 1 * MiB
_SEED = 20_240_601

Kind = Literal["ranges", "files", "gaps"]
State = Literal["cold", "warm"]
Pattern = Literal["random", "strided", "sorted"]


@dataclass(frozen=True)
class WorkloadSpec:
    """Shape of one workload; `materialize` turns it into files on disk plus a request list.

    Kinds: ``ranges`` (random ranges of one file), ``files`` (whole files), ``gaps`` (the
    planner workloads: ranges separated by gaps, in file order, over one or many files).
    Patterns of ``gaps`` workloads: ``strided`` (in every file, a request every
    ``request_size + gap`` bytes), ``sorted`` (each request starts a random multiple of
    `BLOCK` in 0..``gap`` bytes after the previous one ends).
    """

    key: str
    title: str
    kind: Kind
    n_files: int
    file_size: int
    n_requests: int
    request_size: int  # bytes per request (== file_size for whole-file workloads)
    pattern: Pattern = "random"
    gap: int = 0  # strided: the gap; sorted: the largest gap

    @property
    def dirname(self) -> str:
        """Data directory; one-file workloads of one size share theirs (the same file)."""
        if self.n_files == 1 and self.kind != "files":
            return f"ranges_{_human(self.file_size)}"
        return f"files_{self.n_files}x{_human(self.file_size)}"


@dataclass(frozen=True)
class Request:
    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class Workload:
    """A materialized workload: the data files and the requests every contender must serve."""

    spec: WorkloadSpec
    root: str  # directory holding this workload's files
    paths: tuple[str, ...]  # data files, in request order for whole-file workloads
    requests: tuple[Request, ...]

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def whole_files(self) -> bool:
        return self.spec.kind == "files"

    @property
    def n_ops(self) -> int:
        return len(self.requests)

    @property
    def nbytes(self) -> int:
        return sum(r.length for r in self.requests)

    @property
    def max_request(self) -> int:
        return max(r.length for r in self.requests)

    def relpath(self, path: str) -> str:
        return os.path.relpath(path, self.root)


def _strided(key: str, title: str, n_files: int, file_size: int) -> WorkloadSpec:
    """4 KiB reads with 32 KiB gaps: one request per whole 36 KiB period of each file."""
    per_file = file_size // (4 * KiB + 32 * KiB)
    return WorkloadSpec(key, title, "gaps", n_files=n_files, file_size=file_size,
                        n_requests=n_files * per_file, request_size=4 * KiB,
                        pattern="strided", gap=32 * KiB)


def _sorted(key: str, title: str, file_size: int, n_requests: int) -> WorkloadSpec:
    """Sorted 4 KiB ranges, each 0, 4, 8, 12 or 16 KiB after the previous (a sharded-Zarr
    pattern)."""
    return WorkloadSpec(key, title, "gaps", n_files=1, file_size=file_size,
                        n_requests=n_requests, request_size=4 * KiB, pattern="sorted",
                        gap=16 * KiB)


# (d), (e), (f) are the planner ("coalescing") workloads; (f) reads the same file as (a)
# (one-file workloads of one size share their file).
FULL_SPECS: dict[str, WorkloadSpec] = {
    "a": WorkloadSpec("a", "50 000 random 4 KiB ranges of one 2 GiB file", "ranges",
                      n_files=1, file_size=2 * GiB, n_requests=50_000, request_size=4 * KiB),
    "b": WorkloadSpec("b", "10 000 files x 64 KiB, read whole", "files",
                      n_files=10_000, file_size=64 * KiB, n_requests=10_000,
                      request_size=64 * KiB),
    "c": WorkloadSpec("c", "1000 files x 256 KiB, read whole", "files",
                      n_files=1000, file_size=256 * KiB, n_requests=1000,
                      request_size=256 * KiB),
    "d": _strided("d", "4 KiB reads with 32 KiB gaps over 1000 files x 1 MiB (28 000 "
                  "requests, file order)", n_files=1000, file_size=1 * MiB),
    "e": _strided("e", "4 KiB reads with 32 KiB gaps over one 1 GiB file (29 127 requests, "
                  "file order)", n_files=1, file_size=1 * GiB),
    "f": _sorted("f", "100 000 sorted 4 KiB ranges 0-16 KiB apart of one 2 GiB file",
                 file_size=2 * GiB, n_requests=100_000),
    # issue 25's engine rows: warm small ranges against a plain os.pread loop (same file as
    # (a)), cold small files against fio's best queue depth
    "g": WorkloadSpec("g", "20 000 random 4 KiB ranges of one 2 GiB file", "ranges",
                      n_files=1, file_size=2 * GiB, n_requests=20_000, request_size=4 * KiB),
    "h": WorkloadSpec("h", "5 000 files x 64 KiB, read whole", "files",
                      n_files=5000, file_size=64 * KiB, n_requests=5000, request_size=64 * KiB),
}

QUICK_SPECS: dict[str, WorkloadSpec] = {
    "a": WorkloadSpec("a", "2000 random 4 KiB ranges of one 64 MiB file (quick)", "ranges",
                      n_files=1, file_size=64 * MiB, n_requests=2000, request_size=4 * KiB),
    "b": WorkloadSpec("b", "300 files x 64 KiB, read whole (quick)", "files",
                      n_files=300, file_size=64 * KiB, n_requests=300, request_size=64 * KiB),
    "c": WorkloadSpec("c", "300 files x 256 KiB, read whole (quick)", "files",
                      n_files=300, file_size=256 * KiB, n_requests=300,
                      request_size=256 * KiB),
    "d": _strided("d", "4 KiB reads with 32 KiB gaps over 100 files x 1 MiB (2800 requests, "
                  "quick)", n_files=100, file_size=1 * MiB),
    "e": _strided("e", "4 KiB reads with 32 KiB gaps over one 64 MiB file (1820 requests, "
                  "quick)", n_files=1, file_size=64 * MiB),
    "f": _sorted("f", "5000 sorted 4 KiB ranges 0-16 KiB apart of one 64 MiB file (quick)",
                 file_size=64 * MiB, n_requests=5000),
    "g": WorkloadSpec("g", "1000 random 4 KiB ranges of one 64 MiB file (quick)", "ranges",
                      n_files=1, file_size=64 * MiB, n_requests=1000, request_size=4 * KiB),
    "h": WorkloadSpec("h", "200 files x 64 KiB, read whole (quick)", "files",
                      n_files=200, file_size=64 * KiB, n_requests=200, request_size=64 * KiB),
}


def _human(n: int) -> str:
    for unit, size in (("g", GiB), ("m", MiB), ("k", KiB)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


# --------------------------------------------------------------------------- data on disk


def _write_random_file(path: Path, size: int, rng: np.random.Generator) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, _WRITE_CHUNK)
            f.write(rng.bytes(n))
            remaining -= n
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _ensure_files(paths: list[Path], size: int, seed: int) -> int:
    """Create any missing/wrong-sized file; return how many were (re)written."""
    rng = np.random.default_rng(seed)
    written = 0
    for p in paths:
        try:
            if p.stat().st_size == size:
                continue
        except FileNotFoundError:
            pass
        _write_random_file(p, size, rng)
        written += 1
    return written


def _file_paths(spec: WorkloadSpec, root: Path) -> list[Path]:
    if spec.n_files == 1 and spec.kind != "files":
        return [root / "data.bin"]
    return [root / f"f{i:05d}.bin" for i in range(spec.n_files)]


def _range_requests(spec: WorkloadSpec, path: str) -> tuple[Request, ...]:
    """Distinct, block-aligned random offsets in random order (same seed -> same list)."""
    rng = np.random.default_rng(_SEED)
    n_blocks = spec.file_size // BLOCK
    blocks = rng.choice(n_blocks, size=spec.n_requests, replace=False)
    return tuple(Request(path, int(b) * BLOCK, spec.request_size) for b in blocks)


def _gap_requests(spec: WorkloadSpec, paths: tuple[str, ...]) -> tuple[Request, ...]:
    """Requests of a ``gaps`` workload, sorted by (file, offset)."""
    size = spec.request_size
    if spec.pattern == "strided":
        offsets = np.arange(spec.file_size // (size + spec.gap), dtype=np.int64) * (
            size + spec.gap)
        reqs = tuple(Request(p, int(o), size) for p in paths for o in offsets)
    elif spec.pattern == "sorted":
        rng = np.random.default_rng(_SEED)
        gaps = rng.integers(0, spec.gap // BLOCK + 1, spec.n_requests - 1) * BLOCK
        offsets = np.concatenate(([0], np.cumsum(gaps + size)))
        if offsets[-1] + size > spec.file_size:
            raise ValueError(f"({spec.key}) {spec.n_requests} ranges do not fit in "
                             f"{spec.file_size} bytes")
        reqs = tuple(Request(paths[0], int(o), size) for o in offsets)
    else:
        raise ValueError(f"({spec.key}) unknown pattern {spec.pattern!r}")
    if len(reqs) != spec.n_requests:
        raise ValueError(f"({spec.key}) built {len(reqs)} requests, spec says "
                         f"{spec.n_requests}")
    return reqs


def materialize(spec: WorkloadSpec, data_dir: Path, *, create: bool = True) -> Workload:
    """Make sure the data for `spec` exists under `data_dir` and build its request list."""
    root = data_dir / spec.dirname
    files = _file_paths(spec, root)
    if create:
        root.mkdir(parents=True, exist_ok=True)
        written = _ensure_files(files, spec.file_size, _SEED + len(files))
        if written:
            os.sync()
    paths = tuple(str(p) for p in files)
    if spec.kind == "ranges":
        requests = _range_requests(spec, paths[0])
    elif spec.kind == "gaps":
        requests = _gap_requests(spec, paths)
    else:
        requests = tuple(Request(p, 0, spec.file_size) for p in paths)
    return Workload(spec=spec, root=str(root), paths=paths, requests=requests)


# --------------------------------------------------------------------------- page cache


def can_drop_caches() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not running as root (writing /proc/sys/vm/drop_caches needs root)"
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        return False, "/proc/sys/vm/drop_caches is not writable (read-only /proc in a container?)"
    return True, ""


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm_cache(wl: Workload) -> None:
    """Read every data file once through the page cache."""
    warm_paths(wl.paths)


def warm_paths(paths: Sequence[str]) -> None:
    """Read every file once through the page cache."""
    view = memoryview(bytearray(_WARM_CHUNK))
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while os.readv(fd, [view]) == len(view):
                pass
        finally:
            os.close(fd)


def set_state(wl: Workload, state: State) -> None:
    if state == "cold":
        drop_caches()
    else:
        warm_cache(wl)


def chosen_states(ap: Any, warm_only: bool, cold_only: bool, states: tuple[str, ...]
                  ) -> tuple[tuple[str, ...], str]:
    """The states a benchmark runs (``--warm-only`` / ``--cold-only``), without cold when
    the page cache cannot be dropped, and the note saying why; ``ap.error`` when nothing
    is left to run."""
    chosen = ("warm",) if warm_only else ("cold",) if cold_only else states
    cold_note = ""
    if "cold" in chosen:
        ok, why = can_drop_caches()
        if not ok:
            cold_note = f"cold runs skipped: {why}"
            chosen = tuple(s for s in chosen if s != "cold")
    if not chosen:
        ap.error(f"nothing to run: {cold_note}")
    return chosen, cold_note
