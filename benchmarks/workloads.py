"""Workload definitions, on-disk data sets and page-cache control for the local benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

BLOCK = 4 * KiB
_WRITE_CHUNK = 16 * MiB
_WARM_CHUNK = 1 * MiB
_SEED = 20_240_601

Kind = Literal["ranges", "files"]
State = Literal["cold", "warm"]


@dataclass(frozen=True)
class WorkloadSpec:
    """Shape of one workload; `materialize` turns it into files on disk plus a request list."""

    key: str
    title: str
    kind: Kind
    n_files: int
    file_size: int
    n_requests: int
    request_size: int  # bytes per request (== file_size for whole-file workloads)

    @property
    def dirname(self) -> str:
        if self.kind == "ranges":
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


FULL_SPECS: dict[str, WorkloadSpec] = {
    "a": WorkloadSpec("a", "50 000 random 4 KiB ranges of one 2 GiB file", "ranges",
                      n_files=1, file_size=2 * GiB, n_requests=50_000, request_size=4 * KiB),
    "b": WorkloadSpec("b", "10 000 files x 64 KiB, read whole", "files",
                      n_files=10_000, file_size=64 * KiB, n_requests=10_000,
                      request_size=64 * KiB),
    "c": WorkloadSpec("c", "1000 files x 256 KiB, read whole", "files",
                      n_files=1000, file_size=256 * KiB, n_requests=1000,
                      request_size=256 * KiB),
}

QUICK_SPECS: dict[str, WorkloadSpec] = {
    "a": WorkloadSpec("a", "2000 random 4 KiB ranges of one 64 MiB file (quick)", "ranges",
                      n_files=1, file_size=64 * MiB, n_requests=2000, request_size=4 * KiB),
    "b": WorkloadSpec("b", "300 files x 64 KiB, read whole (quick)", "files",
                      n_files=300, file_size=64 * KiB, n_requests=300, request_size=64 * KiB),
    "c": WorkloadSpec("c", "300 files x 256 KiB, read whole (quick)", "files",
                      n_files=300, file_size=256 * KiB, n_requests=300,
                      request_size=256 * KiB),
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
    if spec.kind == "ranges":
        return [root / "data.bin"]
    return [root / f"f{i:05d}.bin" for i in range(spec.n_files)]


def _range_requests(spec: WorkloadSpec, path: str) -> tuple[Request, ...]:
    """Distinct, block-aligned random offsets in random order (same seed -> same list)."""
    rng = np.random.default_rng(_SEED)
    n_blocks = spec.file_size // BLOCK
    blocks = rng.choice(n_blocks, size=spec.n_requests, replace=False)
    return tuple(Request(path, int(b) * BLOCK, spec.request_size) for b in blocks)


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
    buf = bytearray(_WARM_CHUNK)
    view = memoryview(buf)
    for p in wl.paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while os.readv(fd, [view]) == len(buf):
                pass
        finally:
            os.close(fd)


def set_state(wl: Workload, state: State) -> None:
    if state == "cold":
        drop_caches()
    else:
        warm_cache(wl)
