"""Fixed costs: what the small calls real clients make cost (issue 12).

zarr-python asks its store for one chunk at a time, a Dask task reads the few chunks of its
block, a notebook cell reads a handful of files. Each row is one such call, timed on its own
(`time.perf_counter_ns` around the `await`), warm page cache, 16 KiB files:

* rows run in alternation (round r starts at row r) and the figure is the median over every
  call of every round;
* "kept": every result stays referenced until the round ends (fresh memory for each call, as
  a user who keeps what they read); "dropped": each result is dropped at once (recycled
  memory);
* "worst stall": the worst gap of a 1 ms heartbeat task while one round of the row ran;
* the Zarr floor: an empty and a one-chunk selection of a 4096^2 float32 blosc-zstd array in
  128^2 chunks (`--zarr-size`), each call opening the array as users do: `lsio.zarr.read` of
  its path, zarr-python with lsio's pipeline (`LsioStore`), zarr-python's default pipeline
  (`LocalStore`), through zarr's async API on the benchmark's loop;
* `import lsio` is timed in fresh interpreters (the median of several): `-X importtime`'s
  cumulative figure for `lsio`, i.e. everything `import lsio` loads that the interpreter had
  not loaded at startup (numpy and asyncio included).

`--out FILE` writes the section between `<!-- bench_fixed:start -->` and
`<!-- bench_fixed:end -->`; `--json` the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lsio

from .harness import LoopStall
from .report import replace_section

START_MARK = "<!-- bench_fixed:start -->"
END_MARK = "<!-- bench_fixed:end -->"

FILE_SIZE = 16 << 10
NFILES = 64

Call = Callable[[], Awaitable[Any]]


@dataclass
class Row:
    name: str
    call: Call
    times_ns: dict[str, list[int]] = field(default_factory=lambda: {"kept": [], "dropped": []})
    stall_s: float = 0.0

    def median_us(self, mode: str) -> float:
        return statistics.median(self.times_ns[mode]) / 1e3 if self.times_ns[mode] else 0.0


@dataclass(frozen=True)
class Target:
    what: str
    row: str
    peer: str | None
    ratio: float | None = None  # peer median / row median must be >= this
    most_us: float | None = None  # row median must be <= this
    at_most_ratio: float | None = None  # row median / peer median must be <= this


TARGETS = [
    Target("one cached chunk <= 25 us", "read_many, one whole file", None, most_us=25),
    Target("one cached chunk >= 4x to_thread(os.pread)", "read_many, one whole file",
           "asyncio.to_thread(os.pread)", ratio=4),
    Target("LsioStore.get >= 2x LocalStore.get", "LsioStore.get", "zarr LocalStore.get",
           ratio=2),
    Target("16 cached files >= 2x an open().read() loop", "read_many, 16 files",
           "open().read() loop, 16 files", ratio=2),
    Target("one URL range <= 1.2x a bare aiohttp GET", "read_many, one URL range (4 KiB)",
           "aiohttp GET (kept-alive session)", at_most_ratio=1.2),
]


def make_files(root: Path) -> list[str]:
    paths = []
    for i in range(NFILES):
        p = root / f"c/{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(FILE_SIZE))
        paths.append(str(p))
    return paths


async def local_rows(root: Path, paths: list[str]) -> tuple[list[Row], list[Any]]:
    """The local rows, and what must be closed at the end."""
    import zarr.storage
    from zarr.core.buffer import default_buffer_prototype

    from lsio.zarr import LsioStore

    proto = default_buffer_prototype()
    fd = os.open(paths[0], os.O_RDONLY)
    local, ours = zarr.storage.LocalStore(str(root)), LsioStore(str(root))
    sixteen = [(p,) for p in paths[:16]]

    async def pread() -> bytes:
        return os.pread(fd, FILE_SIZE, 0)

    async def loop16() -> list[bytes]:
        out = []
        for p in paths[:16]:
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    async def gather(get: Any, n: int) -> list[Any]:
        return await asyncio.gather(*(get(f"c/{i}", proto) for i in range(n)))

    rows = [
        Row("os.pread in a coroutine", pread),
        Row("asyncio.to_thread(os.pread)", lambda: asyncio.to_thread(os.pread, fd, FILE_SIZE, 0)),
        Row("zarr LocalStore.get", lambda: local.get("c/0", proto)),
        Row("read_many, one whole file", lambda: lsio.read_many([(paths[0],)])),
        Row("read_many, one 4 KiB range", lambda: lsio.read_many([(paths[0], 0, 4096)])),
        Row("LsioStore.get", lambda: ours.get("c/0", proto)),
        Row("open().read() loop, 16 files", loop16),
        Row("read_many, 16 files", lambda: lsio.read_many(sixteen)),
        Row("10 concurrent LocalStore.get", lambda: gather(local.get, 10)),
        Row("10 concurrent LsioStore.get", lambda: gather(ours.get, 10)),
        Row("read_many, 10 files", lambda: lsio.read_many(sixteen[:10])),
    ]
    return rows, [lambda: os.close(fd)]


ZARR_CHUNK = 128
EMPTY = (slice(0, 0), slice(0, 0))
ONE_CHUNK = (slice(0, ZARR_CHUNK), slice(0, ZARR_CHUNK))


def make_zarr(root: Path, side: int) -> Path:
    """The floor's array: side^2 float32, blosc-zstd, 128^2 chunks (bench_zarr's (a) in
    small)."""
    import numpy as np
    import zarr
    from zarr.codecs import BloscCodec

    path = root / "floor.zarr"
    arr = zarr.create_array(zarr.storage.LocalStore(path), shape=(side, side),
                            chunks=(ZARR_CHUNK, ZARR_CHUNK), dtype="float32",
                            compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
                            overwrite=True)
    arr[:] = np.random.default_rng(0).random((side, side), dtype=np.float32)
    for p in path.rglob("*"):  # warm
        if p.is_file():
            p.read_bytes()
    return path


def zarr_rows(path: Path) -> list[Row]:
    """The Zarr floor: an empty and a one-chunk selection, each call opening the array."""
    import zarr
    import zarr.api.asynchronous as za

    import lsio.zarr as lz

    def through_zarr(pipeline: str, store: Any, sel: Any) -> Call:
        async def call() -> Any:
            with zarr.config.set({"codec_pipeline.path": pipeline}):
                arr = await za.open_array(store=store, mode="r")
            return await arr.getitem(sel)
        return call

    ours = lz.LsioStore(path, read_only=True)
    local = zarr.storage.LocalStore(path, read_only=True)
    default = "zarr.core.codec_pipeline.BatchedCodecPipeline"
    rows = []
    for what, sel in (("empty selection", EMPTY), ("one chunk", ONE_CHUNK)):
        rows += [
            Row(f"lsio.zarr.read, {what}", lambda sel=sel: lz.read(path, sel)),
            Row(f"zarr + lsio pipeline, {what}", through_zarr(lz.PATH, ours, sel)),
            Row(f"zarr default pipeline, {what}", through_zarr(default, local, sel)),
        ]
    return rows


async def url_rows(root: Path) -> tuple[list[Row], list[Any]]:
    """One URL range through lsio and through a bare aiohttp session (loopback nginx)."""
    import aiohttp

    from tests.servers import Nginx

    server = Nginx(root).start()
    url = server.url("c/0")
    session = aiohttp.ClientSession()

    async def bare() -> bytes:
        async with session.get(url, headers={"Range": "bytes=0-4095"}) as resp:
            return await resp.read()

    rows = [Row("aiohttp GET (kept-alive session)", bare),
            Row("read_many, one URL range (4 KiB)", lambda: lsio.read_many([(url, 0, 4096)]))]
    return rows, [session.close, server.stop]


async def time_rows(rows: list[Row], rounds: int, calls: int) -> None:
    for mode in ("dropped", "kept"):
        for r in range(rounds):
            for k in range(len(rows)):
                row = rows[(r + k) % len(rows)]
                kept: list[Any] = []
                times = row.times_ns[mode]
                clock = time.perf_counter_ns
                for _ in range(calls):
                    t0 = clock()
                    result = await row.call()
                    times.append(clock() - t0)
                    if mode == "kept":
                        kept.append(result)
                del kept
    for row in rows:
        async with LoopStall() as stall:
            for _ in range(calls):
                await row.call()
                # a call that completes without waiting does not yield to the loop: yield
                # here, so the stall is that of one call, not of a run of back-to-back calls
                await asyncio.sleep(0)
        row.stall_s = stall.worst


def import_ms(runs: int) -> list[float]:
    """`import lsio` in fresh interpreters: `-X importtime`'s cumulative us for lsio."""
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lsio"],
                              capture_output=True, text=True, check=True)
        m = re.search(r"\|\s*(\d+) \| lsio$", proc.stderr, re.M)
        assert m, proc.stderr[-500:]
        out.append(int(m.group(1)) / 1e3)
    return out


def loaded_by_import() -> list[str]:
    code = ("import sys; before = set(sys.modules); import lsio; "
            "print(' '.join(sorted(m for m in set(sys.modules) - before if '.' not in m)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return proc.stdout.split()


def judge(t: Target, rows: dict[str, Row]) -> tuple[str, bool | None]:
    row = rows.get(t.row)
    peer = rows.get(t.peer) if t.peer else None
    if row is None or (t.peer and peer is None):
        return "not measured", None
    got = row.median_us("dropped")
    if t.most_us is not None:
        return f"{got:.1f} us", got <= t.most_us
    assert peer is not None
    ratio = peer.median_us("dropped") / got
    if t.ratio is not None:
        return f"{ratio:.2f}x", ratio >= t.ratio
    assert t.at_most_ratio is not None
    return f"{1 / ratio:.2f}x", 1 / ratio <= t.at_most_ratio


def render(rows: list[Row], imports: list[float], loaded: list[str], calls: int,
           rounds: int) -> str:
    by_name = {r.name: r for r in rows}
    lines = [
        "## Fixed costs (`python -m benchmarks.bench_fixed`)",
        "",
        f"One call per row, warm page cache, {FILE_SIZE >> 10} KiB files; median of "
        f"{rounds} alternated rounds x {calls} calls each. *dropped*: each result dropped at "
        "once; *kept*: every result of a round kept (fresh memory per call). Worst stall: "
        "largest gap of a 1 ms heartbeat while the row's calls ran.",
        "",
        "| call | dropped (us) | kept (us) | worst stall (ms) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {r.median_us('dropped'):.1f} | {r.median_us('kept'):.1f} "
                     f"| {r.stall_s * 1e3:.2f} |")
    med = statistics.median(imports)
    lines += [
        f"| `import lsio` (fresh interpreter, cumulative `-X importtime`; ms) | {med:.0f} "
        f"(runs: {', '.join(f'{x:.0f}' for x in imports)}) | | |",
        "",
        f"`import lsio` loads these top-level modules: {', '.join(loaded)}.",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for t in TARGETS:
        text, ok = judge(t, by_name)
        lines.append(f"| {t.what} | {text} | {'yes' if ok else 'no' if ok is False else '-'} |")
    ok = med <= 120
    lines.append(f"| `import lsio` <= 120 ms | {med:.0f} ms | {'yes' if ok else 'no'} |")
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> list[Row]:
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="lsio-fixed-"))
    paths = make_files(root)
    for p in paths:  # warm: read every file once
        Path(p).read_bytes()
    rows, closers = await local_rows(root, paths)
    if args.zarr_size:
        rows += zarr_rows(make_zarr(root, args.zarr_size))
    if not args.no_http:
        more, close_more = await url_rows(root)
        rows += more
        closers += close_more
    try:
        for row in rows:  # warm-up: imports, rings, pools, connections
            await row.call()
        if (await lsio.read_many([(paths[0],)])).stats.route != "small":
            raise RuntimeError("the small-call path did not serve a cached one-file call")
        await time_rows(rows, args.rounds, args.calls)
    finally:
        for close in closers:
            done = close()
            if asyncio.iscoroutine(done):
                await done
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--imports", type=int, default=7)
    parser.add_argument("--zarr-size", type=int, default=4096,
                        help="side of the Zarr floor's array (0: no Zarr rows)")
    parser.add_argument("--no-http", action="store_true", help="skip the URL rows (no nginx)")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    imports = import_ms(args.imports)
    loaded = loaded_by_import()
    text = render(rows, imports, loaded, args.calls, args.rounds)
    print(text)
    if args.out:
        replace_section(args.out, text, start_mark=START_MARK, end_mark=END_MARK)
    if args.json:
        args.json.write_text(json.dumps({
            "rows": [{"name": r.name, "dropped_us": r.median_us("dropped"),
                      "kept_us": r.median_us("kept"), "stall_ms": r.stall_s * 1e3}
                     for r in rows],
            "import_ms": imports, "loaded": loaded,
            "targets": [{**asdict(t), "measured": judge(t, {r.name: r for r in rows})[0]}
                        for t in TARGETS]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
