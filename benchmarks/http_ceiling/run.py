"""The HTTP transport ceiling: io_uring sockets vs libcurl's multi interface, C against C.

    .venv/bin/python -m benchmarks.http_ceiling.run [--n 5000] [--alternations 5] [--rounds 3]
        [--size 4096] [--bio-copy] [--perf]

Creates N files of 4 KiB under /var/tmp/lsio-bench-ceiling (reused when present), starts nginx
(tests/servers.py's Nginx, one worker, pinned to CPU 0), compiles ``uring_http.c``,
``uring_https.c`` and ``curl_multi.c`` with gcc -O2, and runs them pinned to CPU 1, alternating
(each invocation: one warm-up round, then ``--rounds`` measured rounds of N GETs over 64
keep-alive connections). Then wrk (-t1 -c64, 3 s, a Lua script cycling over the paths) for
reference, with wrk's CPU per request from its rusage. Then nginx again with a self-signed
certificate, and io_uring over OpenSSL memory BIOs (``uring_https.c``) alternating with curl over
HTTPS, both verifying the certificate; with ``--bio-copy`` also ``uring_https.c --copy``.
With ``--perf``, one more run of each under ``perf record`` gives the share of CPU per library.

Prints a markdown table (medians and ranges), the CPU-per-request ratios over HTTP and HTTPS,
and the same ratios over the rounds where both clients ran at equal throughput; writes the raw
rounds to /var/tmp/lsio-bench-ceiling/results-N-SIZE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.servers import Nginx  # the tests' nginx: one implementation for both

HERE = Path(__file__).resolve().parent
ROOT = Path("/var/tmp/lsio-bench-ceiling")
SIZE = 4096  # bytes per file; --size changes it
SERVER_CPU, CLIENT_CPU = 0, 1



def make_files(n: int) -> Path:
    data = ROOT / ("data" if SIZE == 4096 else f"data-{SIZE}")
    data.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = data / f"{i:05d}.bin"
        if not p.exists() or p.stat().st_size != SIZE:
            p.write_bytes(os.urandom(SIZE))
    paths = ROOT / f"paths-{n}-{SIZE}.txt"
    paths.write_text("".join(f"/{data.name}/{i:05d}.bin\n" for i in range(n)))
    return paths


def compile_all(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    progs = {"io_uring": ("uring_http.c", ["-luring"]), "curl": ("curl_multi.c", ["-lcurl"]),
             "io_uring_https": ("uring_https.c", ["-luring", "-lssl", "-lcrypto"])}
    built = {}
    for name, (src, libs) in progs.items():
        exe = out / src[:-2]
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                        str(HERE / src), *libs], check=True)
        built[name] = exe
    return built


def make_cert(d: Path) -> tuple[str, str]:
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def workers_of(ng: Nginx) -> list[int]:
    assert ng._proc is not None
    master = ng._proc.pid
    for _ in range(100):
        try:
            kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            return [int(k) for k in kids]
        time.sleep(0.05)
    raise RuntimeError("no nginx worker")


def pin_server(ng: Nginx) -> list[int]:
    assert ng._proc is not None
    pids = workers_of(ng)
    for pid in [ng._proc.pid, *pids]:
        os.sched_setaffinity(pid, {SERVER_CPU})
    return pids


def cpu_ticks(pids: list[int]) -> float:
    """utime + stime of the processes, seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_prog(exe: Path, port: int, paths: Path, rounds: int, workers: list[int],
             extra: Sequence[str] = (), perf: Path | None = None) -> list[dict[str, Any]]:
    cmd = ["taskset", "-c", str(CLIENT_CPU), str(exe), "127.0.0.1", str(port), str(paths),
           "64", str(rounds), "--verify", str(ROOT), "--slot", str(SIZE), *extra]
    if perf is not None:
        cmd = ["perf", "record", "-q", "-o", str(perf), "--", *cmd]
    s0, t0 = cpu_ticks(workers), time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    s1, t1 = cpu_ticks(workers), time.monotonic()
    if r.returncode != 0:
        raise RuntimeError(f"{exe.name} failed ({r.returncode}): {r.stderr[-2000:]}")
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    n = rows[0]["n"]
    for row in rows:
        if row["bytes"] != n * SIZE or row["verify_bad"]:
            raise RuntimeError(f"{exe.name}: wrong bytes: {row}")
        # nginx's CPU over the whole invocation (warm-up included), per request, and busy share
        row["nginx_cpu_us_per_req"] = (s1 - s0) * 1e6 / (n * (rounds + 1))
        row["nginx_busy"] = (s1 - s0) / (t1 - t0)
    return rows


WRK_LUA = """\
wrk.headers["Range"] = "bytes=0-1048575"
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
    i = i %% #paths + 1
    return wrk.format("GET", paths[i])
end
"""


def run_wrk(port: int, paths: Path, workers: list[int], secs: int = 3) -> dict[str, Any]:
    script = ROOT / "cycle.lua"
    script.write_text(WRK_LUA % paths)
    cmd = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", "-c64", f"-d{secs}s", "-s",
           str(script), f"http://127.0.0.1:{port}/"]
    s0 = cpu_ticks(workers)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()  # reaped: its rusage lands in os.times()'s children_*
    s1 = cpu_ticks(workers)
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if m is None or proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}{err}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors: {out}")
    reqs, dur = int(m.group(1)), float(m.group(2))
    return {"impl": "wrk", "requests": reqs, "wall_s": dur, "rps": reqs / dur,
            "nginx_cpu_us_per_req": (s1 - s0) * 1e6 / reqs}


def run_wrk_rusage(port: int, paths: Path, workers: list[int]) -> dict[str, Any]:
    before = os.times()
    row = run_wrk(port, paths, workers)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system -
                                                           before.children_system)
    row["cpu_s"] = cpu
    row["cpu_us_per_req"] = cpu * 1e6 / row["requests"]
    return row


def perf_dso(data: Path) -> list[tuple[float, str]]:
    r = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio"],
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out[:8]


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def spread(rows: list[dict[str, Any]], key: str, fmt: str) -> str:
    vals = [r[key] for r in rows]
    return f"{min(vals):{fmt}}-{max(vals):{fmt}}"


def equal_throughput(a: list[dict[str, Any]], b: list[dict[str, Any]]
                     ) -> tuple[float, float, list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The rounds of a and of b whose req/s lies where both clients' ranges overlap."""
    lo = max(min(r["rps"] for r in a), min(r["rps"] for r in b))
    hi = min(max(r["rps"] for r in a), max(r["rps"] for r in b))
    ina = [r for r in a if lo <= r["rps"] <= hi]
    inb = [r for r in b if lo <= r["rps"] <= hi]
    return (lo, hi, ina, inb) if ina and inb else None


def main() -> None:
    global SIZE, ROOT
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--alternations", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per invocation")
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--perf", action="store_true", help="also profile one run of each")
    ap.add_argument("--bio-copy", action="store_true",
                    help="also run uring_https.c --copy (RECV into a buffer, then BIO_write)")
    ap.add_argument("--root", type=Path, default=ROOT, help="where the files are made")
    args = ap.parse_args()
    SIZE = args.size
    ROOT = args.root

    load0 = Path("/proc/loadavg").read_text().strip()
    paths = make_files(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="lsio-ceiling-"))
    try:
        exes = compile_all(tmp / "bin")
        rows: dict[str, list[dict[str, Any]]] = {"io_uring": [], "curl": [], "wrk": [],
                                                 "io_uring_https": [], "curl_https": []}
        https = [("io_uring_https", "io_uring_https", ()), ("curl_https", "curl", ())]
        if args.bio_copy:
            rows["io_uring_https_copy"] = []
            https.insert(1, ("io_uring_https_copy", "io_uring_https", ("--copy",)))
        profiles: dict[str, list[tuple[float, str]]] = {}
        with Nginx(ROOT, workers=1) as ng:
            workers = pin_server(ng)
            for _ in range(args.alternations):
                for name in ("io_uring", "curl"):
                    rows[name] += run_prog(exes[name], ng.port, paths, args.rounds, workers)
            rows["wrk"].append(run_wrk_rusage(ng.port, paths, workers))
            if args.perf:
                for name in ("io_uring", "curl"):
                    run_prog(exes[name], ng.port, paths, 10, workers, perf=tmp / f"{name}.perf")
                    profiles[name] = perf_dso(tmp / f"{name}.perf")
        cert, key = make_cert(tmp)
        with Nginx(ROOT, workers=1, tls=(cert, key)) as ng:
            workers = pin_server(ng)
            for _ in range(args.alternations):
                for name, exe, extra in https:
                    rows[name] += run_prog(exes[exe], ng.port, paths, args.rounds, workers,
                                           extra=["--https", cert, *extra])
            if args.perf:
                for name, exe, extra in https:
                    run_prog(exes[exe], ng.port, paths, 10, workers,
                             extra=["--https", cert, *extra], perf=tmp / f"{name}.perf")
                    profiles[name] = perf_dso(tmp / f"{name}.perf")
        load1 = Path("/proc/loadavg").read_text().strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    (ROOT / f"results-{args.n}-{SIZE}.json").write_text(json.dumps(
        {"loadavg_before": load0, "loadavg_after": load1, "rows": rows,
         "profiles": profiles}, indent=1))
    print(f"loadavg before: {load0}; after: {load1}; N={args.n} x {SIZE} B, 64 connections, "
          f"nginx 1 worker on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}\n")
    print("| client | rounds | req/s (median) | client CPU us/req (median) | req/s range "
          "| CPU us/req range | nginx CPU us/req | nginx busy |")
    print("|---|---|---|---|---|---|---|---|")
    labels = (("io_uring", "io_uring sockets, HTTP (uring_http.c)"),
              ("curl", "libcurl multi, HTTP (curl_multi.c)"),
              ("wrk", "wrk -t1 -c64, HTTP (reference)"),
              ("io_uring_https", "io_uring sockets, HTTPS (uring_https.c)"),
              ("io_uring_https_copy", "io_uring sockets, HTTPS (uring_https.c --copy)"),
              ("curl_https", "libcurl multi, HTTPS (curl_multi.c --https)"))
    for name, label in labels:
        if name not in rows:
            continue
        rs = rows[name]
        busy = f"{med(rs, 'nginx_busy'):.0%}" if "nginx_busy" in rs[0] else "-"
        print(f"| {label} | {len(rs)} | {med(rs, 'rps'):,.0f} | {med(rs, 'cpu_us_per_req'):.2f} "
              f"| {spread(rs, 'rps', ',.0f')} | {spread(rs, 'cpu_us_per_req', '.2f')} "
              f"| {med(rs, 'nginx_cpu_us_per_req'):.2f} | {busy} |")
    u, c, us, h = (med(rows[k], "cpu_us_per_req")
                   for k in ("io_uring", "curl", "io_uring_https", "curl_https"))
    tls = sorted({r.get("tls", "") for r in rows["io_uring_https"]})
    print(f"\nCPU per request, io_uring / curl (HTTP): {u / c:.2f} (curl / io_uring: {c / u:.2f})")
    print(f"CPU per request, io_uring / curl (HTTPS): {us / h:.2f} "
          f"(curl / io_uring: {h / us:.2f}); io_uring negotiated {', '.join(tls)}")
    print(f"HTTPS / HTTP CPU per request: curl {h / c:.2f} (+{h - c:.2f} us), "
          f"io_uring {us / u:.2f} (+{us - u:.2f} us); the TLS share of the HTTPS cost: "
          f"curl {(h - c) / h:.0%}, io_uring {(us - u) / us:.0%}")
    print(f"the old additive estimate (io_uring HTTP + curl's TLS increment): {u + h - c:.2f} "
          f"us/req, curl HTTPS / that: {h / (u + h - c):.2f}")
    for pair in (("io_uring", "curl"), ("io_uring_https", "curl_https")):
        band = equal_throughput(rows[pair[0]], rows[pair[1]])
        if band is None:
            print(f"{pair[0]} vs {pair[1]}: no rounds at equal throughput")
            continue
        lo, hi, a, b = band
        print(f"{pair[0]} vs {pair[1]} at equal throughput ({lo:,.0f}-{hi:,.0f} req/s): "
              f"{med(a, 'cpu_us_per_req'):.2f} us/req ({len(a)} rounds) vs "
              f"{med(b, 'cpu_us_per_req'):.2f} ({len(b)} rounds), ratio "
              f"{med(b, 'cpu_us_per_req') / med(a, 'cpu_us_per_req'):.2f}")
    for name, prof in profiles.items():
        print(f"\nperf, {name} (share of samples by object):")
        for pct, dso in prof:
            print(f"  {pct:5.1f}%  {dso}")


if __name__ == "__main__":
    main()
