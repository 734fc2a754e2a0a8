"""GRIB2 benchmark: ``lsio.grib`` against a Herbie-style subset download.

    python -m benchmarks.bench_grib [--quick] [--repeats N] [--files N] [--data-dir DIR]
        [--delay SECONDS] [--json results.json] [--out bench.md]

48 forecast files (HRRR-size grid 1799 x 1059, complex packing with spatial differencing,
10 messages each, wgrib2 ``.idx`` sidecars) served by a loopback nginx, 2 fields wanted from
each (``:(TMP|RH):2 m above ground:anl:``). Contenders, alternated for ``--repeats`` rounds
(medians reported), each from URLs to one ``(96, ny, nx)`` float32 array:

- ``lsio.grib``: ``inventory`` (every ``.idx`` in one call) then ``read`` (one planned call,
  eccodes decoding on the pinned workers).
- ``herbie-style``: what Herbie does per file: GET the ``.idx``, group the wanted messages
  into runs of consecutive messages, one sequential ``requests`` range GET per run, then
  eccodes decodes each message.
- ``kerchunk + zarr + fsspec`` (``benchmarks/grib_kerchunk.py``): kerchunk references to
  the wanted messages (made ahead, untimed) read through zarr 3 and fsspec's
  ``ReferenceFileSystem``, decoded by kerchunk's ``GRIBCodec``. ``--no-kerchunk`` leaves it
  out.

Rows: loopback (no latency) and ``latency`` (``benchmarks/latency_proxy.py``: 30 ms before
each answer, what a bucket looks like). Every run is checked against eccodes decoding the
whole files. Below the tables: the peak RSS of one ``lsio.grib`` run in a fresh process
(issue 24's target: at most 1.2x the bytes returned + 100 MiB). ``--quick``: 4 small files,
for the smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.grib_data import FIELDS, HRRR, decode_all, write_grib
from tests.servers import Nginx

from .latency_proxy import LatencyProxy
from .report import replace_section

START_MARK, END_MARK = "<!-- bench_grib:start -->", "<!-- bench_grib:end -->"

MATCH = ":(TMP|RH):2 m above ground:anl:"
DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-grib")
FULL = dict(files=48, ni=HRRR[0], nj=HRRR[1], steps=(0, 1))
QUICK = dict(files=4, ni=64, nj=48, steps=(0, 1))


def make_data(root: Path, files: int, ni: int, nj: int, steps: tuple[int, ...]) -> list[Path]:
    """The files (written once per size; a marker file says they are complete)."""
    d = root / f"{files}x{ni}x{nj}"
    done = d / "complete"
    paths = [d / f"hrrr.t00z.wrfsfcf{k:02d}.grib2" for k in range(files)]
    if not done.exists():
        d.mkdir(parents=True, exist_ok=True)
        for k, p in enumerate(paths):
            write_grib(p, packing="grid_complex_spatial_differencing", ni=ni, nj=nj, seed=k,
                       steps=steps, fields=FIELDS[:5])
        done.write_text("ok\n")
    return paths


def expected(paths: list[Path]) -> np.ndarray:
    """The wanted fields as eccodes decodes whole files."""
    pat = re.compile(MATCH)
    out = []
    for p in paths:
        lines = Path(f"{p}.idx").read_text().splitlines()
        values = decode_all(p)
        out += [values[i] for i, line in enumerate(lines) if pat.search(line)]
    return np.stack(out)


def run_lsio(urls: list[str]) -> np.ndarray:
    import lsio.grib

    msgs = lsio.grib.inventory_sync(urls, match=MATCH)
    return lsio.grib.read_sync(msgs)  # type: ignore[no-any-return]


def _runs(lines: list[str], pat: re.Pattern[str]) -> list[tuple[int, int | None]]:
    """Herbie's grouping: consecutive wanted messages become one inclusive byte range."""
    offsets = [int(line.split(":")[1]) for line in lines]
    ends = [*[o - 1 for o in offsets[1:]], None]
    runs: list[tuple[int, int | None]] = []
    last = -2
    for i, line in enumerate(lines):
        if pat.search(line):
            if i == last + 1:
                runs[-1] = (runs[-1][0], ends[i])
            else:
                runs.append((offsets[i], ends[i]))
            last = i
    return runs


def run_herbie_style(urls: list[str]) -> np.ndarray:
    import eccodes
    import requests

    pat = re.compile(MATCH)
    fields = []
    with requests.Session() as s:
        for url in urls:
            lines = s.get(url + ".idx", timeout=60).text.splitlines()
            data = b""
            for start, end in _runs(lines, pat):
                rng = f"bytes={start}-{'' if end is None else end}"
                r = s.get(url, headers={"Range": rng}, timeout=60)
                r.raise_for_status()
                data += r.content
            pos = 0
            while pos < len(data):
                h = eccodes.codes_new_from_message(data[pos:])
                try:
                    shape = (eccodes.codes_get(h, "Nj"), eccodes.codes_get(h, "Ni"))
                    fields.append(eccodes.codes_get_values(h).astype(np.float32).reshape(shape))
                    pos += eccodes.codes_get(h, "totalLength")
                finally:
                    eccodes.codes_release(h)
    return np.stack(fields)


KERCHUNK = "kerchunk + zarr + fsspec"


def contenders(paths: list[Path], urls: list[str], kerchunk: bool
               ) -> dict[str, Callable[[], np.ndarray]]:
    """Each contender as a thunk; the kerchunk references are made here, untimed."""
    out: dict[str, Callable[[], np.ndarray]] = {
        "lsio.grib": lambda: run_lsio(urls), "herbie-style": lambda: run_herbie_style(urls)}
    if kerchunk:
        from .grib_kerchunk import references, run_kerchunk

        refs, names = references(paths, urls, MATCH)
        out[KERCHUNK] = lambda: run_kerchunk(refs, names)
    return out


def measure(runs: dict[str, Callable[[], np.ndarray]], want: np.ndarray, repeats: int
            ) -> dict[str, list[float] | str]:
    """Alternated rounds after an untimed one; a contender that fails (or returns other
    values) keeps its error text instead of times, and the others go on."""
    times: dict[str, list[float] | str] = {name: [] for name in runs}
    for round_ in range(repeats + 1):  # round 0 warms up (imports, pools, sessions)
        for name, fn in runs.items():
            samples = times[name]
            if isinstance(samples, str):
                continue
            t = time.perf_counter()
            try:
                got = fn()
            except Exception as exc:  # noqa: BLE001 - reported in its row
                times[name] = f"FAILED: {type(exc).__name__}: {exc}"[:200]
                continue
            if round_:
                samples.append(time.perf_counter() - t)
            if not np.array_equal(got, want, equal_nan=True):
                times[name] = "FAILED: values differ from eccodes"
    return times


_PROBE = """
import json, resource, sys
from benchmarks.bench_grib import run_lsio
got = run_lsio(json.loads(sys.stdin.read()))
with open("/proc/self/status") as f:
    hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak": min(hwm, maxrss) * 1024, "nbytes": got.nbytes}))
"""


def peak_rss(urls: list[str]) -> dict[str, int] | str:
    """Peak RSS of one ``lsio.grib`` run (inventory + read) in a fresh process (``VmHWM``,
    which unlike ``ru_maxrss`` does not inherit this big parent's mark across exec, capped
    by ``ru_maxrss``), and the bytes it returned."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(urls), env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return f"FAILED: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def rss_line(rss: dict[str, int] | str) -> str:
    if isinstance(rss, str):
        return f"lsio.grib peak RSS: {rss}\n"
    mib = 1 << 20
    limit = 1.2 * rss["nbytes"] + 100 * mib
    verdict = "within" if rss["peak"] <= limit else "OVER"
    return (f"lsio.grib peak RSS (fresh process, inventory + read): {rss['peak'] / mib:.0f} "
            f"MiB for {rss['nbytes'] / mib:.0f} MiB returned; target 1.2x + 100 MiB = "
            f"{limit / mib:.0f} MiB ({verdict})\n")


def table(title: str, times: dict[str, list[float] | str]) -> str:
    herbie = times["herbie-style"]
    base = statistics.median(herbie) if not isinstance(herbie, str) else float("nan")
    worst = max(herbie) if not isinstance(herbie, str) else float("nan")
    rows = [f"### {title}", "", "| contender | median ms | worst ms | herbie-style / "
            "contender (medians) | (worst rounds) |", "|---|---|---|---|---|"]
    for name, ts in times.items():
        if isinstance(ts, str):
            rows.append(f"| {name} | {ts} | | | |")
            continue
        med = statistics.median(ts)
        rows.append(f"| {name} | {med * 1e3:.1f} | {max(ts) * 1e3:.1f} | {base / med:.2f}x "
                    f"| {worst / max(ts):.2f}x |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="lsio.grib benchmark (loopback nginx)")
    ap.add_argument("--quick", action="store_true", help="4 small files (smoke run)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--files", type=int, default=None, help="number of files (48)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--delay", type=float, default=0.030, help="latency row's delay, s")
    ap.add_argument("--no-kerchunk", action="store_true", help="leave kerchunk out")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown page whose bench_grib section to replace")
    ap.add_argument("--render", type=Path, default=None,
                    help="only render this --json file's section (to --out or stdout)")
    args = ap.parse_args(argv)
    if args.render:
        text = render(json.loads(args.render.read_text()))
        if args.out:
            replace_section(args.out, text, start_mark=START_MARK, end_mark=END_MARK)
        else:
            print(text)
        return 0
    size: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.files:
        size["files"] = args.files
    repeats = args.repeats or (2 if args.quick else 5)
    paths = make_data(args.data_dir, **size)
    want = expected(paths)
    results: dict[str, dict[str, list[float] | str]] = {}
    kerchunk = not args.no_kerchunk
    with Nginx(paths[0].parent) as nginx:
        urls = [nginx.url(p.name) for p in paths]
        rss = peak_rss(urls)
        results["loopback"] = measure(contenders(paths, urls, kerchunk), want, repeats)
        with LatencyProxy("127.0.0.1", nginx.port, delay=args.delay) as proxy:
            late = [f"http://127.0.0.1:{proxy.port}/{p.name}" for p in paths]
            results["latency"] = measure(contenders(paths, late, kerchunk), want, repeats)
    n, ny, nx = want.shape
    doc = {"shape": [n, ny, nx], "files": len(paths), "repeats": repeats,
           "delay": args.delay, "seconds": results, "rss": rss}
    text = render(doc)
    print(text)
    if args.out:  # only this benchmark's section of the page
        replace_section(args.out, text, start_mark=START_MARK, end_mark=END_MARK)
    if args.json_path:
        args.json_path.write_text(json.dumps(doc, indent=1))
    return 0


def render(doc: dict[str, Any]) -> str:
    """The docs section for one run's JSON document (what ``--json`` writes)."""
    n, ny, nx = doc["shape"]
    delay = doc.get("delay", 0.030)
    seconds = doc["seconds"]
    rounds = max((len(v) for v in seconds["loopback"].values() if not isinstance(v, str)),
                 default=0)
    return (f"## GRIB2: selected fields of many forecast files (`benchmarks/bench_grib.py`)\n\n"
            f"{doc['files']} files, {n} fields of {ny} x {nx} (complex packing with spatial "
            f"differencing), read and decoded to float32; {doc.get('repeats', rounds)} "
            "alternated rounds after a warm-up round.\n\n"
            + table("loopback nginx", seconds["loopback"]) + "\n"
            + table(f"nginx behind a {delay * 1e3:.0f} ms proxy", seconds["latency"])
            + "\n" + rss_line(doc["rss"]))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
