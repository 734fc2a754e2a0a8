"""HTTP transports side by side: lsio's C transport, lsio on aiohttp, aiohttp, obstore and wrk.

    python -m benchmarks.bench_transport [--quick] [--workload A,B,C,D] [--repeats N]
        [--contenders NAME,...] [--data-dir DIR] [--wrk-seconds S]
        [--out docs/benchmarks.md] [--json docs/bench_transport.json]

One nginx (``tests.servers.Nginx``, one worker) serves the data directory over HTTP and one
over HTTPS (a self-signed certificate for 127.0.0.1, made here with openssl). On a machine
with two CPUs or more, nginx's processes are pinned to the first allowed CPU and this process
to the second, so every client it starts (a fresh process per read, and wrk) runs there.

Workloads (files made once under ``--data-dir``, reused): (A) 5000 objects of 4 KiB read whole,
over HTTP and over HTTPS; (B) 2000 objects of 64 KiB; (C) 20 000 random 4 KiB ranges of one
2 GiB object, one range per GET; (D) one 512 MiB object. ``--quick`` makes every size about
50x smaller and runs one round. Contenders (``transport_contenders``): ``lsio``
(``transport="auto"``: the C transport), ``lsio-aiohttp`` (``transport="aiohttp"``), plain
``aiohttp``, ``obstore``, and ``wrk`` on (A). Each round runs every contender once, alternated,
each in a fresh process; tables quote medians of ``--repeats`` rounds (default 5).

Targets (issue: the C transport), judged by ``rules``: the median meets it and no round is
below 0.95x of it. (A) HTTP and HTTPS: lsio's client CPU per request <= 30 us, lsio >= 3x
aiohttp and >= 3x obstore in requests/s, lsio >= 0.5x wrk; (B), (C): lsio >= 2x lsio-aiohttp;
(D): lsio >= 1.0x lsio-aiohttp. ``--out FILE`` writes the section between
``<!-- bench_transport:start -->`` and ``<!-- bench_transport:end -->``; ``--json`` the samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import Nginx

from .bench_http import nginx_version
from .harness import log, pick_names, stall_text
from .http_contenders import HttpWorkload
from .report import Sample, machine_details_with, replace_section
from .transport_contenders import CONCURRENCY, CONTENDERS, WRK, Measured, run_wrk, runs_on, specs
from .transport_report import Case, TransportSeries, dump_json, judge_all, render
from .workloads import Workload, WorkloadSpec, materialize, warm_cache

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-transport")
START_MARK = "<!-- bench_transport:start -->"
END_MARK = "<!-- bench_transport:end -->"


@dataclass(frozen=True)
class Config:
    specs: tuple[WorkloadSpec, ...]
    repeats: int
    contenders: tuple[str, ...]
    data_dir: Path
    quick: bool
    wrk_seconds: int
    probe_timeout: float
    out: Path | None
    json_path: Path | None

    @property
    def cases(self) -> list[Case]:
        """(A) over HTTP and HTTPS, the others over HTTP."""
        return [(spec, scheme) for spec in self.specs
                for scheme in (("http", "https") if spec.key == "A" else ("http",))]


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> Config:
    ap = argparse.ArgumentParser(description="lsio's HTTP transports vs aiohttp, obstore, wrk")
    ap.add_argument("--quick", action="store_true", help="sizes ~50x smaller, one round")
    ap.add_argument("--workload", default="A,B,C,D")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 5, --quick 1)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--wrk-seconds", type=int, default=None, help="default 3, --quick 1")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)
    all_specs = specs(a.quick)
    keys = pick_names(a.workload, list(all_specs), "workload", ap)
    names = pick_names(a.contenders, CONTENDERS, "contender", ap)
    repeats = a.repeats if a.repeats is not None else (1 if a.quick else 5)
    wrk_seconds = a.wrk_seconds if a.wrk_seconds is not None else (1 if a.quick else 3)
    if repeats < 1 or wrk_seconds < 1:
        ap.error("--repeats and --wrk-seconds must be >= 1")
    return Config(specs=tuple(all_specs[k] for k in all_specs if k in keys), repeats=repeats,
                  contenders=tuple(c for c in CONTENDERS if c in names), data_dir=a.data_dir,
                  quick=a.quick, wrk_seconds=wrk_seconds,
                  probe_timeout=120.0 if a.quick else 1800.0, out=a.out,
                  json_path=a.json_path)


# --------------------------------------------------------------------------- servers, cores


def make_certs(directory: Path) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key): a private CA and a certificate it
    signs for 127.0.0.1, valid two days (rustls, obstore's TLS, refuses a self-signed
    certificate that is its own CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr, ext = (str(directory / n) for n in (
        "ca.pem", "ca.key", "cert.pem", "key.pem", "cert.csr", "cert.ext"))
    Path(ext).write_text("basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                         "keyUsage=critical,digitalSignature,keyEncipherment\n"
                         "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
                         "authorityKeyIdentifier=keyid\n")
    for cmd in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
                 "-days", "2", "-subj", "/CN=lsio bench CA", "-addext",
                 "keyUsage=critical,keyCertSign,cRLSign"],
                ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
                 "/CN=127.0.0.1"],
                ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", cert, "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    return ca, cert, key


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name), from /proc/<pid>/stat."""
    out: dict[int, tuple[int, str]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone since the listing
            continue
        head, _, tail = stat.rpartition(")")
        out[int(entry)] = (int(tail.split()[1]), head.partition("(")[2])
    return out


def nginx_pids(masters: int, timeout: float = 10.0) -> tuple[list[int], list[int]]:
    """(masters, workers): the nginx processes this process started and their workers, once
    each master has its one worker (a master listens before it forks them)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = _processes()
        mine = [p for p, (ppid, name) in procs.items() if ppid == os.getpid() and name == "nginx"]
        workers = [p for p, (ppid, _) in procs.items() if ppid in mine]
        if (len(mine) == masters and len(workers) >= masters) or time.monotonic() > deadline:
            return mine, workers
        time.sleep(0.02)


def pin(masters: int) -> str:
    """Pin nginx to the first allowed CPU and this process (and so every client it starts)
    to the second; return the layout, as the notes say it."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return f"not pinned: this machine allows one CPU ({allowed[0]}) only"
    server, client = allowed[0], allowed[1]
    mine, workers = nginx_pids(masters)
    if len(workers) < masters:
        raise RuntimeError(f"found {len(workers)} nginx workers for {masters} masters")
    for pid in mine + workers:
        os.sched_setaffinity(pid, {server})
    os.sched_setaffinity(0, {client})
    return (f"nginx (masters {mine}, workers {workers}) pinned to CPU {server}; every client "
            f"process (and wrk) to CPU {client}")


@contextmanager
def servers(data_dir: Path, scratch: Path) -> Iterator[dict[str, Nginx]]:
    """nginx over HTTP and HTTPS, one worker each, serving `data_dir` (the certificates in
    `scratch`, outside what is served)."""
    _, cert, key = make_certs(scratch)
    with ExitStack() as stack:
        yield {"http": stack.enter_context(Nginx(data_dir, workers=1)),
               "https": stack.enter_context(Nginx(data_dir, workers=1, tls=(cert, key)))}


# --------------------------------------------------------------------------- running


def probe(cfg: Config, hw: HttpWorkload, contender: str, *, check_all: bool,
          scratch: Path) -> Measured:
    """One measured read in a fresh process (wrk: one run); a crash or timeout fails it."""
    if contender == WRK:
        return run_wrk(hw, cfg.wrk_seconds, scratch / "wrk.lua", cfg.probe_timeout)
    cmd = [sys.executable, "-m", "benchmarks.transport_contenders", "--contender", contender,
           "--workload", hw.wl.key, "--base-url", hw.base_url, "--data-dir",
           str(cfg.data_dir), *(["--quick"] if cfg.quick else []),
           *(["--check-all"] if check_all else [])]
    env = dict(os.environ, SSL_CERT_FILE=str(scratch / "ca.pem"))
    failed = Measured(contender, hw.wl.key)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=cfg.probe_timeout)
    except subprocess.TimeoutExpired:
        return dataclasses.replace(failed, error=f"timed out after {cfg.probe_timeout:.0f} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return dataclasses.replace(failed, error=f"probe failed: {tail[0]}")
    got = json.loads(lines[-1])
    return Measured(**(got | {"affinity": tuple(got["affinity"])}))


def _record(s: TransportSeries, m: Measured, rnd: int) -> None:
    s.samples.append(Sample(round=rnd, seconds=m.seconds, nbytes=m.nbytes, n_ops=m.n_ops,
                            loop_stall_s=m.loop_stall_s))
    s.cpu_s.append(m.cpu_s)
    s.gets.append(m.gets)
    s.transport = m.transport
    s.cpus = list(m.affinity)


def run_case(cfg: Config, wl: Workload, scheme: str, server: Nginx, scratch: Path
             ) -> list[TransportSeries]:
    hw = HttpWorkload.build(wl, cfg.data_dir, server.url)
    rows = [TransportSeries(workload=wl.key, state=scheme, contender=c, mode="http")
            for c in cfg.contenders if runs_on(c, wl.key)]
    warm_cache(wl)
    for rnd in range(cfg.repeats):
        for s in rows:  # alternated: lsio, lsio-aiohttp, aiohttp, obstore, wrk, lsio, ...
            if s.error is not None:
                continue
            m = probe(cfg, hw, s.contender, check_all=rnd == 0, scratch=scratch)
            tag = f"  [{wl.key} {scheme} {rnd + 1}/{cfg.repeats}] {s.contender}:"
            if m.error is not None:
                s.error = m.error
                log(f"{tag} FAILED: {m.error}")
                continue
            _record(s, m, rnd)
            log(f"{tag} {m.seconds:.3f} s, {m.n_ops / m.seconds:,.0f} requests/s, "
                f"{m.cpu_s / m.n_ops * 1e6:,.1f} us CPU/request, CPUs {list(m.affinity)}"
                f"{stall_text(m.loop_stall_s)}")
    return rows


# --------------------------------------------------------------------------- main


def _tool_version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["unknown"])[0]


def run_all(cfg: Config) -> tuple[list[TransportSeries], str]:
    """Every case's rounds, nginx and the clients on their cores; (rows, core layout)."""
    workloads = {}
    for spec in cfg.specs:
        log(f"preparing data for ({spec.key}) {spec.title} ...")
        workloads[spec.key] = materialize(spec, cfg.data_dir)
    affinity = os.sched_getaffinity(0)
    results: list[TransportSeries] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lsio-bench-transport-") as tmp, \
                servers(cfg.data_dir, Path(tmp)) as by_scheme:
            layout = pin(len(by_scheme))
            log(f"cores: {layout}")
            for spec, scheme in cfg.cases:
                log(f"({spec.key}) {spec.title}, {scheme.upper()}:")
                results += run_case(cfg, workloads[spec.key], scheme, by_scheme[scheme],
                                    Path(tmp))
    finally:
        os.sched_setaffinity(0, affinity)
    return results, layout


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, data_dir=cfg.data_dir.resolve())
    load = os.getloadavg()[0]
    results, layout = run_all(cfg)
    verdicts = judge_all(results, cfg.cases)
    details = machine_details_with(cfg.data_dir, ("aiohttp",))
    details["load average (1 min)"] = (f"{load:.2f} before the run, {os.getloadavg()[0]:.2f} "
                                       "after (the machine is shared)")
    details["nginx"] = f"{nginx_version()} (1 worker process, loopback)"
    details["wrk"] = _tool_version(["wrk", "--version"])
    details["libcurl"] = _tool_version(["curl", "--version"])
    text = render(results, cfg.cases, verdicts, repeats=cfg.repeats,
                  wrk_seconds=cfg.wrk_seconds, details=details, layout=layout, argv=argv)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        config = {"quick": cfg.quick, "repeats": cfg.repeats, "data_dir": str(cfg.data_dir),
                  "contenders": list(cfg.contenders), "concurrency": CONCURRENCY,
                  "wrk_seconds": cfg.wrk_seconds, "cores": layout}
        dump_json(cfg.json_path, config, cfg.specs, results, verdicts, details)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
