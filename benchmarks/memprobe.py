"""Peak RSS of one read, measured in a fresh process.

    python -m benchmarks.memprobe --data-dir DIR --workload a [--quick] --contender lsio

Prints one JSON object (a `report.MemoryResult`). After imports and request building the
process's RSS high-water mark is reset (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0); the peak
is read back after the read (`VmHWM`, cross-checked against `getrusage().ru_maxrss`). Note that a
child process inherits the parent's `ru_maxrss` on Linux, so `ru_maxrss` alone is only usable when
the parent is small. The data must already exist (`bench_local` creates it).
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


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the RSS high-water mark if the kernel allows; return the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM still includes the import peak: an over-estimate
    return _status_bytes("VmRSS")


def _peak() -> int:
    hwm = _status_bytes("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return min(hwm, maxrss)


def probe(data_dir: Path, workload: str, quick: bool, contender: str, queue_depth: int) -> (
        MemoryResult):
    spec = (QUICK_SPECS if quick else FULL_SPECS)[workload]
    wl = materialize(spec, data_dir, create=False)
    with tempfile.TemporaryDirectory() as scratch:
        ctx = RunContext(state="warm", queue_depth=queue_depth, scratch_dir=Path(scratch))
        with ctx.cleanup, asyncio.Runner() as runner:
            fn = by_name(contender).make(wl, ctx)
            before = _reset_peak()
            payload = runner.run(fn())
            peak = _peak()
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
