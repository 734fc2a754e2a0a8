"""Remote benchmark at scale: lsio (C transport and aiohttp) against obstore on three
object-store emulators on loopback.

    python -m benchmarks.bench_remote [--quick] [--servers moto,azurite,gcs]
        [--workload objects,sparse,big] [--repeats N] [--data-dir DIR] [--keep-data]
        [--shared-net] [--out docs/benchmarks.md] [--json docs/bench_remote.json]

Servers (``remote_servers``), started here on 127.0.0.1: moto's S3 server
(``tests.servers.MotoServer``, signed requests), Azurite's blob service
(``tests.servers.Azurite``, ``azurite-blob`` from npm, shared-key signed requests) and the GCS
emulator (fake-gcs-server, ``tests.servers.GcsEmulator``'s, in memory; anonymous requests).
Workloads (``remoteprobe``):
*objects* (2000 objects of 64 KiB read whole), *sparse* (20 000 random 4 KiB ranges of one
2 GiB object), *big* (one 512 MiB object read whole); ``--quick`` shrinks them to seconds.
Contenders: ``lsio`` (default options: the C transport where it can), ``lsio-aiohttp``
(``HttpOptions(transport="aiohttp")``), ``obstore``, and ``lsio-unbounded`` on *sparse*.

Every measured read runs in a fresh process (``remoteprobe``), contenders alternated
(lsio lsio-aiohttp obstore lsio lsio-aiohttp obstore ...) for ``--repeats`` rounds (default 3,
1 with ``--quick``). A probe reports the read's time, its CPU time (``time.process_time()``
around the call), the worst event-loop stall (1 ms heartbeat), its peak RSS growth (high-water
mark reset after setup), the bytes received on the loopback interface during the read, for lsio
the GETs it sent and what sent them (``stats.operations``, ``stats.transport``), and checks
every chunk byte for byte. The benchmark re-runs itself in a private network
namespace (``unshare --net``, when allowed) so that the loopback counters see only its own
traffic; ``--shared-net`` keeps the host's (other loopback traffic is then counted too).

A contender that fails (setup or a run) is a FAILED row with its error; the run goes on.
`--out FILE` writes the section between `<!-- bench_remote:start -->` and
`<!-- bench_remote:end -->`; `--json` the raw samples (``benchmarks.plots`` draws them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import log, pick_names, stall_text
from .remote_servers import BUCKET, GOOGLE_VARS, PART, Running, serving, settle
from .remoteprobe import (
    CONTENDERS,
    OBSTORE_CONCURRENCY,
    SERVERS,
    RemoteSample,
    Server,
    runs_on,
    specs,
)
from .report import (
    STALL_HEADER,
    STALL_NOTE,
    Sample,
    Series,
    format_machine,
    format_stall,
    machine_details_with,
    replace_section,
    series_json,
)
from .workloads import MiB, WorkloadSpec, materialize

DEFAULT_DATA_DIR = Path("/var/tmp/lsio-bench-remote")
START_MARK = "<!-- bench_remote:start -->"
END_MARK = "<!-- bench_remote:end -->"
RSS_SLACK = 100 * MiB  # the bound for lsio: growth <= 1.2 x bytes returned + 100 MiB
RSS_FACTOR = 1.2
SPARSE_TRANSFER_TARGET = 2.0  # lsio on sparse: bytes transferred <= 2 x requested
NETNS_ENV = "LSIO_BENCH_REMOTE_NETNS"


@dataclass(frozen=True)
class Config:
    specs: tuple[WorkloadSpec, ...]
    servers: tuple[Server, ...]
    repeats: int
    data_dir: Path
    quick: bool
    keep_data: bool
    shared_net: bool
    out: Path | None
    json_path: Path | None
    probe_timeout: float
    skip: frozenset[tuple[str, str]] = frozenset()  # (server, workload) cells not run


@dataclass
class RemoteSeries(Series):
    """All rounds of one contender on one workload from one server (``state`` = the server).
    Per round, besides the timing: loopback bytes received and peak RSS growth."""

    net_bytes: list[int] = field(default_factory=list)
    rss_growth: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # process CPU time of each read
    gets: list[int] = field(default_factory=list)  # lsio: GETs sent (stats.operations)
    transports: list[str] = field(default_factory=list)  # lsio: stats.transport

    @property
    def cpu_per_chunk_us(self) -> float:
        """Median CPU microseconds per requested chunk."""
        return statistics.median(c / s.n_ops for c, s in zip(self.cpu_s, self.samples,
                                                              strict=True)) * 1e6

    @property
    def sent_by(self) -> str:
        """What sent lsio's GETs, over the rounds (``curl/mixed`` if they differ)."""
        return "/".join(dict.fromkeys(t or "none" for t in self.transports)) or "—"

    @property
    def nbytes(self) -> int:
        return self.samples[0].nbytes

    @property
    def transfer_ratio(self) -> float:
        return statistics.median(self.net_bytes) / self.nbytes

    @property
    def worst_rss_growth(self) -> int:
        return max(self.rss_growth)

    @property
    def rss_bound(self) -> int:
        return int(RSS_FACTOR * self.nbytes + RSS_SLACK)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> Config:
    ap = argparse.ArgumentParser(
        description="lsio vs obstore on moto (S3), azurite (Azure) and fake-gcs-server (GCS)")
    ap.add_argument("--quick", action="store_true", help="small data sets (smoke run)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--workload", default="objects,sparse,big")
    ap.add_argument("--repeats", type=int, default=None,
                    help="rounds (fresh process per read), medians reported (default 3, "
                    "--quick 1)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--keep-data", action="store_true",
                    help="keep the local copy of the data (default: removed at the end)")
    ap.add_argument("--shared-net", action="store_true",
                    help="stay in the host's network namespace (no unshare)")
    ap.add_argument("--probe-timeout", type=float, default=None,
                    help="seconds one measured read may take (default 3600, --quick 120)")
    ap.add_argument("--skip", default="", metavar="SERVER:WORKLOAD,...",
                    help="cells not to run (the report names them), e.g. moto:sparse")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to update")
    ap.add_argument("--json", type=Path, default=None, dest="json_path")
    a = ap.parse_args(argv)
    all_specs = specs(a.quick)
    keys = pick_names(a.workload, list(all_specs), "workload", ap)
    servers = pick_names(a.servers, SERVERS, "server", ap)
    repeats = a.repeats if a.repeats is not None else (1 if a.quick else 3)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    timeout = a.probe_timeout or (120.0 if a.quick else 3600.0)
    skip = set()
    for cell in filter(None, a.skip.split(",")):
        server, _, key = cell.partition(":")
        if server not in SERVERS or key not in all_specs:
            ap.error(f"--skip: {cell!r} is not SERVER:WORKLOAD")
        skip.add((server, key))
    return Config(specs=tuple(all_specs[k] for k in keys),
                  servers=tuple(s for s in SERVERS if s in servers), repeats=repeats,
                  data_dir=a.data_dir, quick=a.quick, keep_data=a.keep_data,
                  shared_net=a.shared_net, out=a.out, json_path=a.json_path,
                  probe_timeout=timeout, skip=frozenset(skip))


# --------------------------------------------------------------------------- network namespace


def enter_private_net(argv: Sequence[str]) -> None:
    """Re-run this benchmark in a new network namespace with only ``lo`` (up), when the
    system allows it (root or user namespaces); else return and stay where we are."""
    if os.environ.get(NETNS_ENV) or shutil.which("unshare") is None or shutil.which("ip") is None:
        return
    try:
        ok = subprocess.run(["unshare", "--net", "true"], capture_output=True,
                            timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, "-m",
                           "benchmarks.bench_remote", *argv], {**os.environ, NETNS_ENV: "1"})


def net_note() -> str:
    if os.environ.get(NETNS_ENV):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return ("a private network namespace (`unshare --net`): the loopback counters see "
                "only this benchmark's traffic")
    return ("the host's network namespace (no `unshare`): any other loopback traffic during a "
            "read is counted too")


# --------------------------------------------------------------------------- running


_SCRUB = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
          "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
          *GOOGLE_VARS)


def run_probe(cfg: Config, srv: Running, spec: WorkloadSpec, contender: str) -> RemoteSample:
    """One measured read in a fresh process; a crash or a timeout is a failed sample."""
    cmd = [sys.executable, "-m", "benchmarks.remoteprobe", "--server", srv.server,
           "--endpoint", srv.endpoint, "--bucket", BUCKET, "--data-dir",
           str(cfg.data_dir.resolve()), "--workload", spec.key, "--contender", contender]
    if cfg.quick:
        cmd.append("--quick")
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB} | srv.env
    failed = RemoteSample(srv.server, spec.key, contender)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=cfg.probe_timeout, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return dataclasses.replace(failed, error=f"timed out after {cfg.probe_timeout:.0f} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return dataclasses.replace(failed, error=f"probe failed: {tail[0]}")
    return RemoteSample(**json.loads(lines[-1]))


def record(s: RemoteSeries, rnd: int, r: RemoteSample) -> None:
    """Add a good read of round `rnd` to its series."""
    s.samples.append(Sample(round=rnd, seconds=r.seconds, nbytes=r.nbytes, n_ops=r.n_ops,
                            loop_stall_s=r.loop_stall_s))
    s.net_bytes.append(r.net_bytes)
    s.rss_growth.append(r.rss_peak - r.rss_before)
    s.cpu_s.append(r.cpu_s)
    if r.gets is not None:
        s.gets.append(r.gets)
        s.transports.append(r.transport)


def run_round(cfg: Config, srv: Running, spec: WorkloadSpec, s: RemoteSeries, rnd: int) -> None:
    """One read of `s`'s contender, recorded in `s` (a failure: its error)."""
    r = run_probe(cfg, srv, spec, s.contender)
    tag = f"  [{srv.server} {spec.key} {rnd + 1}/{cfg.repeats}] {s.contender}:"
    if r.error is not None:
        s.error = r.error
        log(f"{tag} FAILED: {r.error}")
        waited = settle(srv.pid, limit=cfg.probe_timeout)
        log(f"  (waited {waited:.0f} s for {srv.server} to finish the failed read's requests)")
        return
    record(s, rnd, r)
    sent = f", {r.gets} GETs by {r.transport or 'none'}" if r.gets is not None else ""
    log(f"{tag} {r.seconds:.3f} s, {r.nbytes / r.seconds / 1e6:,.1f} MB/s, "
        f"CPU {r.cpu_s / r.n_ops * 1e6:,.1f} us/chunk{sent}, "
        f"transferred {r.net_bytes / r.nbytes:.2f}x, RSS +"
        f"{(r.rss_peak - r.rss_before) / MiB:,.1f} MiB{stall_text(r.loop_stall_s)}")


def run_server(cfg: Config, srv: Running) -> list[RemoteSeries]:
    results: list[RemoteSeries] = []
    for spec in cfg.specs:
        if (srv.server, spec.key) in cfg.skip:
            log(f"[{srv.server}] ({spec.key}) skipped (--skip)")
            continue
        log(f"[{srv.server}] ({spec.key}) {spec.title}:")
        rows = [RemoteSeries(workload=spec.key, state=srv.server, contender=c, mode="remote")
                for c in CONTENDERS if runs_on(c, spec.key)]
        for rnd in range(cfg.repeats):
            for s in rows:  # alternated: lsio lsio-aiohttp obstore lsio ...
                if s.error is None:
                    run_round(cfg, srv, spec, s, rnd)
        results += rows
    return results


# --------------------------------------------------------------------------- output


def _find(rows: Sequence[RemoteSeries], name: str) -> RemoteSeries | None:
    return next((s for s in rows if s.contender == name and s.ok), None)


def _mib(n: float) -> str:
    return f"{n / MiB:,.1f}"


HEADER = ("workload", "contender", "MB/s", "vs obstore", "vs lsio-aiohttp",
          "CPU / chunk (us)", "CPU vs lsio-aiohttp", "GETs", "sent by",
          "transferred / requested", "peak RSS growth (MiB)", "RSS bound (MiB)", STALL_HEADER,
          "verified", "runs")
ALIGN = ("---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---:", "---:",
         "---:", "---:", "---", "---:")


def _ratio(a: float, b: float | None) -> str:
    return "—" if b is None else f"{a / b:.2f}x"


def row_cells(s: RemoteSeries, rows: Sequence[RemoteSeries]) -> list[str]:
    """The cells of `s`'s row, among the `rows` of its workload (the ratios' references)."""
    if not s.ok:
        reason = (s.error or "no runs").splitlines()[0].replace("|", "/")[:160]
        return [s.workload, s.contender, "FAILED", *["—"] * 10, reason, "0"]
    ref, old = _find(rows, "obstore"), _find(rows, "lsio-aiohttp")
    if s.contender != "lsio":  # lsio over lsio-aiohttp: the C transport's gain
        old = None
    bound = "—"
    if s.contender.startswith("lsio"):
        verdict = "pass" if s.worst_rss_growth <= s.rss_bound else "**fail**"
        bound = f"{_mib(s.rss_bound)} {verdict}"
    gets = f"{statistics.median(s.gets):,.0f}" if s.gets else "—"
    return [s.workload, s.contender, f"{s.mb_per_s:,.1f}",
            _ratio(s.mb_per_s, ref.mb_per_s if ref else None),
            _ratio(s.mb_per_s, old.mb_per_s if old else None),
            f"{s.cpu_per_chunk_us:,.1f}",
            _ratio(s.cpu_per_chunk_us, old.cpu_per_chunk_us if old else None),
            gets, s.sent_by if s.transports else "—", f"{s.transfer_ratio:.2f}x",
            _mib(s.worst_rss_growth), bound, format_stall(s), "yes", str(len(s.samples))]


def format_server_table(cfg: Config, server: str, results: Sequence[RemoteSeries]) -> str:
    """One row per workload x contender."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(ALIGN) + "|"]
    for spec in cfg.specs:
        rows = [s for s in results if s.state == server and s.workload == spec.key]
        out += ["| " + " | ".join(row_cells(s, rows)) + " |" for s in rows]
    return "\n".join(out)


def judge(cfg: Config, server: str, results: Sequence[RemoteSeries]) -> list[dict[str, Any]]:
    """The issue's targets on one server: lsio >= 1.0x obstore (every workload), lsio's
    transfer <= 2x requested (sparse), lsio's RSS within its bound (every workload)."""
    verdicts: list[dict[str, Any]] = []
    for spec in cfg.specs:
        rows = [s for s in results if s.state == server and s.workload == spec.key]
        lsio, ref = _find(rows, "lsio"), _find(rows, "obstore")
        speed = lsio.mb_per_s / ref.mb_per_s if lsio and ref else None
        verdicts.append({"server": server, "workload": spec.key, "target": "lsio >= 1.0x obstore",
                         "value": speed, "met": speed is not None and speed >= 1.0})
        if spec.kind == "ranges":
            t = lsio.transfer_ratio if lsio else None
            verdicts.append({"server": server, "workload": spec.key,
                             "target": f"lsio transfer <= {SPARSE_TRANSFER_TARGET:g}x requested",
                             "value": t, "met": t is not None and t <= SPARSE_TRANSFER_TARGET})
        growth = lsio.worst_rss_growth / lsio.rss_bound if lsio else None
        verdicts.append({"server": server, "workload": spec.key,
                         "target": "lsio peak RSS growth <= 1.2 x bytes returned + 100 MiB",
                         "value": growth, "met": growth is not None and growth <= 1.0})
    return verdicts


def format_targets(verdicts: Sequence[dict[str, Any]]) -> str:
    lines = []
    for v in verdicts:
        if v["value"] is None:
            value = "lsio FAILED or not run"
        elif "RSS" in v["target"]:
            value = f"{v['value']:.2f} of the bound"
        elif "obstore" in v["target"]:  # three decimals: a 0.996x miss must not read 1.00x
            value = f"{v['value']:.3f}x"
        else:
            value = f"{v['value']:.2f}x"
        lines.append(f"- ({v['workload']}) {v['target']}: {value}, "
                     f"**{'met' if v['met'] else 'missed'}**")
    return "\n".join(lines)


NOTES = (
    "Method. Each cell is one contender reading one workload in a **fresh process** "
    "(`benchmarks/remoteprobe.py`), one process per round, the contenders alternated "
    "(lsio lsio-aiohttp obstore lsio lsio-aiohttp obstore ...); medians over rounds, worst "
    "values for RSS and loop stall. "
    "Times are wall clock around the one call, which opens its own connections (a fresh "
    "process has none); setup (reader, store, request list) is not timed. "
    "*MB/s*: bytes requested (= returned) / median seconds. *vs lsio-aiohttp* (lsio's row "
    "only): lsio over the same read through aiohttp, the C transport's gain. "
    "*CPU / chunk*: the client process's CPU time during the call (`time.process_time()` "
    "around it: every thread, user and system, the probe's 1 ms loop heartbeat included) over "
    "the chunks requested, median over rounds; *CPU vs lsio-aiohttp*: lsio's over "
    "lsio-aiohttp's (below 1: less CPU). *GETs*: the requests lsio sent "
    "(`result.stats.operations`: range and size-probe GETs, retries included; obstore's are "
    "not counted); *sent by*: `result.stats.transport` (`curl`: lsio's C transport, libcurl's "
    "multi interface; `aiohttp`; `mixed`: some of each, e.g. the one size probe or lone request "
    "a call sends the coroutine way). "
    "*transferred / requested*: bytes received on the loopback interface during the call "
    "(`/proc/net/dev`, `lo` rx, read by the probe just before and after the call; median over "
    "rounds) over the bytes requested. On loopback every packet is received once whatever its "
    "direction, so this counts the responses, the requests and the TCP/IP headers: measured, "
    "not modelled (`/proc/self/io` would not do: its `rchar` counts `read(2)`, not the "
    "`recv(2)` every client uses on sockets). The benchmark runs in {net}. "
    "*peak RSS growth*: `VmHWM` after the call (results still alive) minus `VmRSS` after "
    "imports and setup, the high-water mark reset there (`echo 5 > /proc/self/clear_refs`, as "
    "`memprobe`); *RSS bound*: lsio's bound, 1.2 x bytes returned + 100 MiB. "
    "*verified*: every returned chunk was compared byte for byte with the file it was uploaded "
    "from (a failed check makes the row FAILED). "
    "`lsio`: one `lsio.Reader(http=HttpOptions(endpoint_url=...))` (moto; "
    "`azure_endpoint=...` on azurite, `gcs_endpoint=...` on the GCS emulator), default "
    "options otherwise (`transport=\"auto\"`: the C transport where it can), credentials from "
    "the environment (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; "
    "`AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_ACCOUNT_NAME`/`_KEY`; none for GCS: an "
    "empty `CLOUDSDK_CONFIG` and `NO_GCE_CHECK=true`, so no Google credentials are found and "
    "the requests go anonymous, as to a public bucket), one `read_many` of `s3://` / `az://` / "
    "`gs://` URLs (`(url, 0, None)` for whole objects); its HTTP module is imported in setup, "
    "as obstore's module is; its first-call costs (credential lookup, one timing read per "
    "host) are timed. `lsio-aiohttp`: the same with `transport=\"aiohttp\"`, the road before "
    "the C transport. `lsio-unbounded` (sparse only): the same as `lsio` with "
    "`max_transfer_ratio=None`. `obstore`: `S3Store` / `AzureStore` with the endpoint, key and "
    "`allow_http`; `GCSStore(bucket, base_url=<emulator>, skip_signature=True)` with "
    "`allow_http` (obstore's documented settings; it GETs `<base_url>/<bucket>/<key>`, which "
    "fake-gcs-server serves only for its public host: the emulator is started with "
    "`-public-host 127.0.0.1:<port>`, which changes nothing for lsio's JSON-API downloads). "
    "Many objects: `get_async(...)` + `bytes_async()` per "
    f"object, {OBSTORE_CONCURRENCY} in flight (an `asyncio.Semaphore` around a `gather`); "
    "sparse: one `get_ranges_async(store, key, starts=, lengths=)` (obstore merges ranges at "
    "most 1 MiB apart, its default); big: `get_async(...)` + `bytes_async()`. "
    "Data: random bytes (numpy, fixed seed) written to {data}, uploaded before the runs: moto "
    f"by `put_object` (multipart with {PART // MiB} MiB parts above that size), azurite by Put "
    f"Blob (obstore's multipart `put`, {PART // MiB} MiB blocks, above it), the GCS emulator "
    "by one simple media upload per object, its body streamed from the file (fake-gcs-server "
    "has no multipart upload and holds every object in memory: the 2 GiB object takes about "
    "20 s and 4.5 GiB of the emulator's RSS). Servers: moto's S3 "
    "server in one process (threaded werkzeug; SigV4 checked), `azurite-blob` (`--loose`, "
    "blobs on disk; shared key checked) and fake-gcs-server (Go, `-backend memory`, HTTP; no "
    "credentials checked), all on 127.0.0.1. moto keeps each object in one spooled temporary "
    "file and, for every GET, ranged or not, copies the whole object out of it (one GET at a "
    "time per object: a lock) before it slices the range: a ranged GET of the 2 GiB object "
    "costs a 2 GiB copy, so on moto the sparse and big rows measure how many GETs a client "
    "sends more than the client, and GETs queued behind others can pass the 30 s per-request "
    "deadline both clients have by default (the row is then FAILED, with the client's error). "
    "`make bench` skips moto's *sparse* cell (`--skip moto:sparse`): one lsio read of it ran "
    "for over 14 minutes, and its rows measured moto's copies, not the clients. "
    "After a failed read the benchmark waits until the server's process is idle again (the "
    "server goes on serving the abandoned requests) before the next one.")


def c_transport() -> str:
    """Whether this lsio has its C transport (``lsio._curl`` built, libcurl initialised)."""
    try:
        from lsio.backends.http._curl import AVAILABLE
    except Exception as e:  # a broken build: the probes' lsio rows say what sent their GETs
        return f"not importable ({type(e).__name__}: {e})"
    return "built" if AVAILABLE else "not built (lsio sends every GET through aiohttp)"


def render(cfg: Config, results: list[RemoteSeries], verdicts: list[dict[str, Any]],
           details: dict[str, str], versions: dict[str, str], net: str,
           argv: Sequence[str]) -> str:
    parts = ["## Remote at scale (moto, azurite, GCS emulator): lsio vs obstore "
             "(`benchmarks/bench_remote.py`)",
             "", f"Command: `python -m benchmarks.bench_remote {shlex.join(argv)}`  ",
             f"{cfg.repeats} round(s), each read in a fresh process; workloads: "
             + "; ".join(f"*{s.key}*: {s.title}" for s in cfg.specs) + ".  ",
             f"lsio's C transport: {c_transport()}.", "", format_machine(details), ""]
    for server in cfg.servers:
        skipped = [k for k in (sp.key for sp in cfg.specs) if (server, k) in cfg.skip]
        parts += [f"### {server} ({versions.get(server, 'not started')})", "",
                  format_server_table(cfg, server, results), ""]
        if skipped:
            parts += [f"Not run here: {', '.join(f'*{k}*' for k in skipped)} (`--skip`).", ""]
        parts += ["Targets:", "",
                  format_targets([v for v in verdicts if v["server"] == server]), ""]
    parts += [NOTES.format(net=net, data=f"`{cfg.data_dir}`"), "", STALL_NOTE]
    return "\n".join(parts) + "\n"


def dump_json(path: Path, cfg: Config, results: list[RemoteSeries],
              verdicts: list[dict[str, Any]], details: dict[str, str],
              versions: dict[str, str], net: str) -> None:
    doc = {
        "machine": details,
        "config": {"quick": cfg.quick, "repeats": cfg.repeats, "data_dir": str(cfg.data_dir),
                   "servers": list(cfg.servers), "contenders": list(CONTENDERS),
                   "reference": "obstore", "obstore_concurrency": OBSTORE_CONCURRENCY,
                   "part": PART, "network": net, "servers_versions": versions,
                   "c_transport": c_transport()},
        "workloads": {s.key: dataclasses.asdict(s) for s in cfg.specs},
        "series": series_json(list(results)),
        "targets": verdicts,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    if not cfg.shared_net:
        enter_private_net(argv)  # returns only when it cannot
    # SIGTERM unwinds like Ctrl-C: the servers are stopped and the data removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    net = net_note()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = cfg.data_dir.resolve()
    try:
        workloads = []
        for spec in cfg.specs:
            log(f"preparing data for ({spec.key}) {spec.title} ...")
            workloads.append(materialize(spec, data_dir))
        results: list[RemoteSeries] = []
        versions: dict[str, str] = {}
        for server in cfg.servers:
            try:
                with serving(server, workloads, data_dir) as srv:
                    versions[server] = srv.version
                    results += run_server(cfg, srv)
            except Exception as e:  # a server that does not start: its rows fail
                error = f"{server} did not serve: {type(e).__name__}: {e}"
                log(error)
                results += [RemoteSeries(workload=spec.key, state=server, contender=c,
                                         mode="remote", error=error)
                            for spec in cfg.specs for c in CONTENDERS if runs_on(c, spec.key)]
    finally:
        if not cfg.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)

    verdicts = [v for server in cfg.servers for v in judge(cfg, server, results)]
    details = machine_details_with(cfg.data_dir, ("aiohttp", "moto"))
    text = render(cfg, results, verdicts, details, versions, net, argv)
    print(text)
    if cfg.out is not None:
        replace_section(cfg.out, text, start_mark=START_MARK, end_mark=END_MARK)
        log(f"updated {cfg.out}")
    if cfg.json_path is not None:
        dump_json(cfg.json_path, cfg, results, verdicts, details, versions, net)
        log(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
