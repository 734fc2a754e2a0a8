"""Peak RSS of one read, measured in a fresh process.

    python -m benchmarks.memprobe --data-dir DIR --workload a [--quick] --contender lsio

Prints one JSON object (a `report.MemoryResult`). `ru_maxrss` is the process's high-water mark,
so the value before the read (after imports and request building) is subtracted from the value
after it; the data must already exist (`bench_local` creates it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import tempfile
from pathlib import Path

from .contenders import RunContext, by_name
from .harness import verify
from .report import MemoryResult
from .workloads import FULL_SPECS, QUICK_SPECS, materialize


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def probe(data_dir: Path, workload: str, quick: bool, contender: str, queue_depth: int) -> (
        MemoryResult):
    spec = (QUICK_SPECS if quick else FULL_SPECS)[workload]
    wl = materialize(spec, data_dir, create=False)
    with tempfile.TemporaryDirectory() as scratch:
        ctx = RunContext(state="warm", queue_depth=queue_depth, scratch_dir=Path(scratch))
        with ctx.cleanup, asyncio.Runner() as runner:
            fn = by_name(contender).make(wl, ctx)
            before = _maxrss_bytes()
            payload = runner.run(fn())
            peak = _maxrss_bytes()
            nbytes, _ = verify(wl, payload)
    return MemoryResult(workload, contender, nbytes=nbytes, rss_before=before, rss_peak=peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--contender", default="lsio")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--queue-depth", type=int, default=64)
    args = ap.parse_args()
    result = probe(args.data_dir, args.workload, args.quick, args.contender, args.queue_depth)
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main()
