"""One contender on one workload in a fresh process, with every result kept alive, as users
keep what they read: each call then gets fresh memory (first-touch page faults), never an
arena a dropped result gave back. Then the same calls with each result dropped at once
(recycled memory), for the ratio.

    python -m benchmarks.keptprobe --data-dir DIR --workload b [--quick] --contender lsio

Prints one JSON object (a `report.KeptResult`): the seconds of each kept call after the
first (the first also pays the process's warm-up: imports, rings, thread pools) and of each
recycled call. The data must exist (`bench_local` creates it) and be warm.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .contenders import RunContext, by_name
from .harness import verify
from .report import KeptResult
from .workloads import FULL_SPECS, QUICK_SPECS, materialize


def probe(data_dir: Path, workload: str, quick: bool, contender: str, calls: int
          ) -> KeptResult:
    spec = (QUICK_SPECS if quick else FULL_SPECS)[workload]
    wl = materialize(spec, data_dir, create=False)
    kept_s: list[float] = []
    recycled_s: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        ctx = RunContext(state="warm", queue_depth=64, scratch_dir=Path(scratch))
        with ctx.cleanup, asyncio.Runner() as runner:
            fn = by_name(contender).make(wl, ctx)

            def timed() -> tuple[float, Any]:
                box: list[tuple[float, Any]] = []

                async def call() -> None:
                    t0 = time.perf_counter()
                    payload = await fn()
                    box.append((time.perf_counter() - t0, payload))

                runner.run(call())
                return box.pop()

            kept: list[Any] = []
            for i in range(calls + 1):
                seconds, payload = timed()
                verify(wl, payload)
                kept.append(payload)
                if i:
                    kept_s.append(seconds)
            del kept, payload
            gc.collect()
            for _ in range(calls):
                seconds, payload = timed()
                verify(wl, payload)
                del payload
                recycled_s.append(seconds)
    return KeptResult(workload, contender, kept_s=kept_s, recycled_s=recycled_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--contender", default="lsio")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()
    result = probe(args.data_dir, args.workload, args.quick, args.contender, args.calls)
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main()
