"""The zarr door's small costs, on the installed Python and zarr: one cached chunk through
``LsioStore.get``, and a small array through ``zarr.open_array(store)[...]`` on lsio's codec
pipeline (opened once, and opened in the call).

    python -m benchmarks.zarr_door            # one run: a JSON line of medians (us)
    python -m benchmarks.zarr_door --compare PY PY ...   # alternate runs of each interpreter

``--compare`` runs each interpreter (with this source tree first on its path) ``--rounds``
times, alternating, and prints the medians of the runs' medians per interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any


def one_run(calls: int) -> dict[str, Any]:
    import numpy as np
    import zarr
    from zarr.buffer import default_buffer_prototype

    import lsio.zarr as lz

    root = tempfile.mkdtemp(prefix="lsio-door-")
    arr = zarr.create_array(root, shape=(64, 64), chunks=(16, 16), dtype="f4",
                            compressors=zarr.codecs.ZstdCodec(level=1))
    arr[...] = np.arange(64 * 64, dtype="f4").reshape(64, 64)
    store = lz.LsioStore(root, read_only=True)
    proto = default_buffer_prototype()

    async def gets() -> list[float]:
        out = []
        for _ in range(calls):
            t = time.perf_counter()
            await store.get("c/1/2", proto)
            out.append(time.perf_counter() - t)
        return out

    def timed(fn: Any, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    get_s = asyncio.run(gets())
    with lz.enable():
        opened = zarr.open_array(store, mode="r")
        read_s = timed(lambda: opened[...], calls // 4)
        open_read_s = timed(lambda: zarr.open_array(store, mode="r")[...], calls // 4)
    return {"python": platform.python_version(), "zarr": zarr.__version__,
            "get_us": statistics.median(get_s) * 1e6,
            "read_us": statistics.median(read_s) * 1e6,
            "open_read_us": statistics.median(open_read_s) * 1e6}


def compare(pythons: list[str], rounds: int, calls: int) -> None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [here, os.environ.get("PYTHONPATH")])))
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in pythons}
    for _ in range(rounds):
        for py in pythons:
            out = subprocess.run([py, "-m", "benchmarks.zarr_door", "--calls", str(calls)],
                                 cwd=here, env=env, capture_output=True, text=True,
                                 check=True, timeout=600).stdout
            runs[py].append(json.loads(out.strip().splitlines()[-1]))
    for got in runs.values():
        print(f"Python {got[0]['python']}, zarr {got[0]['zarr']} ({rounds} runs): " + ", ".join(
            f"{k} {statistics.median(r[k] for r in got):.1f}"
            for k in ("get_us", "read_us", "open_read_us")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compare", nargs="+", default=None, metavar="PYTHON")
    a = ap.parse_args()
    if a.compare:
        compare(a.compare, a.rounds, a.calls)
    else:
        print(json.dumps(one_run(a.calls)))


if __name__ == "__main__":
    sys.exit(main())
