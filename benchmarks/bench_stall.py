"""How long the first big read of a process holds the event loop.

    python -m benchmarks.bench_stall [--size-mib 1024] [--samples 5] [--state cold]
                                     [--data-dir DIR] [--compare OLD_TREE] [--json FILE]
                                     [--preload]

Each sample is a fresh process: ``import lsio``, start a heartbeat task that sleeps 1 ms in a
loop, then ``await lsio.read_many([(path,)])`` of one file of ``--size-mib`` (the process's
first lsio call: the engine's import, the ring, a fresh result arena and its page faults),
keeping the result. It reports the heartbeat's worst gap beyond its 1 ms sleep (the longest
the loop was held) and the read's wall time, then the worst gap while the result is dropped.
``cold`` evicts the file from the page cache before each read (``posix_fadvise(DONTNEED)``,
this file only); ``warm`` reads it cached. Modules load from cached bytecode, as from an
installed package (the first process of each tree writes the cache and is not counted).

``--compare OLD_TREE`` runs another lsio source tree (its root, on ``PYTHONPATH``) in
alternation with this one (A B A B ...: the disk's host cache and the other processes on the
machine drift), and prints both. Figures are medians over ``--samples``; the machine is
shared, so read them as ranges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEAT = 0.001


def _evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _watch_callbacks() -> list[float]:
    """Record the CPU time of every event-loop callback from now on (this process only): a
    figure the machine's other load barely moves, unlike the heartbeat's wall-clock gaps."""
    import asyncio.events

    cpu: list[float] = []
    run = asyncio.events.Handle._run

    def timed(self: asyncio.events.Handle) -> None:
        start = time.thread_time()
        run(self)
        cpu.append(time.thread_time() - start)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    return cpu


async def _sample(path: str, cold: bool, idle: bool = False, preload: bool = False
                  ) -> dict[str, Any]:
    import lsio

    if preload:  # the engine's import done before the heartbeat starts: the read alone
        import lsio._reader  # noqa: F401

    worst = 0.0
    stop = False
    cpu = _watch_callbacks()

    async def beat() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(BEAT)
            now = time.perf_counter()
            worst = max(worst, now - last - BEAT)
            last = now

    if cold:
        _evict(path)
    task = asyncio.ensure_future(beat())
    await asyncio.sleep(0.05)  # the heartbeat settles (its own first steps are not the read's)
    worst = 0.0
    cpu.clear()
    t0 = time.perf_counter()
    loop_cpu = time.thread_time()
    if idle:  # the noise floor: the heartbeat alone, as long as a read takes
        await asyncio.sleep(0.5)
    else:
        result = await lsio.read_many([(path,)])
    loop_cpu = time.thread_time() - loop_cpu
    wall = time.perf_counter() - t0
    longest = max(cpu, default=0.0)  # the read's callbacks only
    await asyncio.sleep(0.005)
    read_worst, worst = worst, 0.0
    if not idle:
        assert len(result[0]) == os.path.getsize(path)
        del result  # the arena goes back: pooled, or unmapped off the loop
    await asyncio.sleep(0.3)
    stop = True
    await task
    return {"wall_ms": wall * 1e3, "stall_ms": read_worst * 1e3, "loop_cpu_ms": loop_cpu * 1e3,
            "callback_cpu_ms": longest * 1e3, "drop_stall_ms": worst * 1e3,
            "lsio": lsio.__file__}


def _data(data_dir: Path, size: int) -> Path:
    path = data_dir / f"stall-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        data_dir.mkdir(parents=True, exist_ok=True)
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
            f.write(block[: size & ((1 << 20) - 1)])
    return path


def _run_child(tree: Path, path: Path, state: str, idle: bool = False,
               preload: bool = False) -> dict[str, Any]:
    # Imports as an installed package has them: from cached bytecode (pip compiles at
    # install), kept under the data directory, never written into the source trees.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(path.parent / "pycache")
    code = ("import asyncio, json, sys; from benchmarks.bench_stall import _sample; "
            "print(json.dumps(asyncio.run(_sample(sys.argv[1], sys.argv[2] == 'cold', "
            "sys.argv[3] == 'idle', sys.argv[4] == 'preload'))))")
    # benchmarks/ comes from this tree, lsio from `tree` (first on the path)
    env["PYTHONPATH"] = f"{tree}{os.pathsep}{ROOT}"
    proc = subprocess.run([sys.executable, "-c", code, str(path), state,
                           "idle" if idle else "read", "preload" if preload else "-"],
                          env=env,
                          capture_output=True, text=True, timeout=600, cwd="/")
    if proc.returncode:
        raise RuntimeError(f"sample failed ({tree}): {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["lsio"].startswith(str(tree)):
        raise RuntimeError(f"sample imported {out['lsio']}, not lsio from {tree}")
    return out


NOISE = "no read (noise floor)"
FIGURES = ("stall_ms", "wall_ms", "loop_cpu_ms", "callback_cpu_ms", "drop_stall_ms")


def _spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
            if values else "—")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--state", choices=("cold", "warm"), default="cold")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/lsio-bench-stall"))
    parser.add_argument("--compare", type=Path, help="another lsio tree to alternate with")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--preload", action="store_true",
                        help="import lsio's engine before the heartbeat starts (the read alone)")
    args = parser.parse_args(argv)
    path = _data(args.data_dir, args.size_mib << 20)
    trees = {"this tree": ROOT}
    if args.compare is not None:
        trees = {"old": args.compare.resolve(), "new": ROOT}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in [*trees, NOISE]}
    for tree in trees.values():  # not counted: writes the bytecode caches, warms the disk
        _run_child(tree, path, "warm", preload=args.preload)
    for _ in range(args.samples):
        for name, tree in trees.items():
            samples[name].append(_run_child(tree, path, args.state, preload=args.preload))
        samples[NOISE].append(_run_child(ROOT, path, args.state, idle=True))
    print(f"First read of a process, {args.size_mib} MiB, {args.state}, "
          f"{'engine imported before, ' if args.preload else ''}"
          f"{args.samples} fresh processes each (1 ms heartbeat; medians, min-max)\n")
    print("| lsio | worst stall (ms) | wall (ms) | loop CPU (ms) | longest callback CPU (ms) "
          "| worst stall dropping the result (ms) |")
    print("|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    for name, got in samples.items():
        figures = {k: [float(s[k]) for s in got] for k in FIGURES}
        rows.append({"tree": name, **figures})
        print(f"| {name} | " + " | ".join(_spread(figures[k]) for k in FIGURES) + " |")
    print(f"\n'{NOISE}': the heartbeat alone for 0.5 s, no read: the machine's own stalls. "
          "CPU columns count the loop thread only, so other load barely moves them. The last "
          "column: the 0.3 s after `del result` (a big arena is unmapped on another thread).")
    if args.json is not None:
        args.json.write_text(json.dumps({"size_mib": args.size_mib, "state": args.state,
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
