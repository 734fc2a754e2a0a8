"""The contenders of ``bench_transport``: one measured read per fresh process, and ``wrk``.

    python -m benchmarks.transport_contenders --contender lsio --workload A \\
        --base-url http://127.0.0.1:PORT/ --data-dir DIR [--quick] [--check-all]

Prints one JSON object (a :class:`Measured`), also when the contender fails (``error``).
The process inherits its CPU affinity from the benchmark (the client's core) and, for
``https://``, trusts the CA file named by ``$SSL_CERT_FILE``, as lsio's C transport and
Python's default SSL context (aiohttp's) do; obstore is given the same file as its
``root_certificate``.

Steps: build the contender (reader / session / store, request list); one untimed warm-up
read (opens the 64 connections, TLS handshakes included, and loads what loads lazily), checked
byte for byte with ``--check-all`` (else its count, total and a few chunks); then the timed read,
the warm-up's result still alive (so the timed read gets fresh memory, as a user who keeps what
they read): wall time (``harness.time_run``, with its 1 ms heartbeat for the worst loop stall)
and ``time.process_time()`` around the call, which counts every thread of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .contenders import Payload, RunFn
from .harness import cpu_timed, sent, time_run, verify
from .http_contenders import HttpWorkload
from .remoteprobe import check_all
from .workloads import GiB, KiB, MiB, WorkloadSpec, materialize

CONCURRENCY = 64  # requests in flight, and connections, for every contender
BIG_BODY = 1 * MiB  # aiohttp: larger bodies are read into one preallocated buffer

FULL_SPECS: dict[str, WorkloadSpec] = {
    "A": WorkloadSpec("A", "5000 objects x 4 KiB, read whole", "files",
                      n_files=5000, file_size=4 * KiB, n_requests=5000, request_size=4 * KiB),
    "B": WorkloadSpec("B", "2000 objects x 64 KiB, read whole", "files",
                      n_files=2000, file_size=64 * KiB, n_requests=2000,
                      request_size=64 * KiB),
    "C": WorkloadSpec("C", "20 000 random 4 KiB ranges of one 2 GiB object, one range per GET",
                      "ranges", n_files=1, file_size=2 * GiB, n_requests=20_000,
                      request_size=4 * KiB),
    "D": WorkloadSpec("D", "one 512 MiB object, read whole", "files",
                      n_files=1, file_size=512 * MiB, n_requests=1, request_size=512 * MiB),
}
QUICK_SPECS: dict[str, WorkloadSpec] = {  # every size about 50x smaller
    "A": WorkloadSpec("A", "100 objects x 4 KiB, read whole (quick)", "files",
                      n_files=100, file_size=4 * KiB, n_requests=100, request_size=4 * KiB),
    "B": WorkloadSpec("B", "40 objects x 64 KiB, read whole (quick)", "files",
                      n_files=40, file_size=64 * KiB, n_requests=40, request_size=64 * KiB),
    "C": WorkloadSpec("C", "400 random 4 KiB ranges of one 40 MiB object, one range per GET "
                      "(quick)", "ranges", n_files=1, file_size=40 * MiB, n_requests=400,
                      request_size=4 * KiB),
    "D": WorkloadSpec("D", "one 10 MiB object, read whole (quick)", "files",
                      n_files=1, file_size=10 * MiB, n_requests=1, request_size=10 * MiB),
}


def specs(quick: bool) -> dict[str, WorkloadSpec]:
    return QUICK_SPECS if quick else FULL_SPECS


@dataclass(frozen=True)
class Measured:
    """One timed read of one workload by one contender (``wrk``: one fixed-length run)."""

    contender: str
    workload: str
    seconds: float = 0.0  # wall time of the call (wrk: its run's duration)
    cpu_s: float = 0.0  # client CPU (every thread; wrk: its child rusage)
    n_ops: int = 0  # requests of the workload served (wrk: requests completed)
    nbytes: int = 0  # payload bytes returned
    loop_stall_s: float | None = None  # worst event-loop stall; None: no loop (wrk)
    gets: int | None = None  # GETs lsio sent (its stats.operations); None: not counted
    transport: str = ""  # what sent lsio's GETs (its stats.transport)
    affinity: tuple[int, ...] = ()  # the CPUs the client ran on
    error: str | None = None


# --------------------------------------------------------------------------- contenders


Setup = Callable[[HttpWorkload, AsyncExitStack], Coroutine[Any, Any, RunFn]]


def _lsio(transport: str) -> Setup:
    async def setup(hw: HttpWorkload, stack: AsyncExitStack) -> RunFn:
        """One ``lsio.Reader``, 64 in flight on 64 connections, one range per GET; one
        ``read_many`` of ``(url, offset, length)`` (``(url, 0, None)`` for whole objects)."""
        import lsio

        options = lsio.HttpOptions(transport=transport, concurrency=CONCURRENCY,
                                   connections_per_host=CONCURRENCY, multi_range=False)
        reader = lsio.Reader(http=options)
        requests: list[tuple[str, int, int | None]] = [
            (u, r.offset, r.length if hw.ranges else None)
            for u, r in zip(hw.urls, hw.wl.requests, strict=True)]

        async def run() -> Payload:
            return await reader.read_many(requests)

        return run

    return setup


async def _body(resp: Any) -> bytes | bytearray:
    """``await resp.read()``, or for a big body, its chunks copied into one preallocated
    buffer (``read()`` joins a list of chunks: slow for hundreds of MiB)."""
    size = resp.content_length
    if size is None or size <= BIG_BODY:
        return bytes(await resp.read())
    buf, pos = bytearray(size), 0
    async for chunk in resp.content.iter_any():
        buf[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    if pos != size:
        raise RuntimeError(f"body of {pos} bytes, Content-Length {size}")
    return buf


async def aiohttp_setup(hw: HttpWorkload, stack: AsyncExitStack) -> RunFn:
    """One ``aiohttp.ClientSession`` (default connector and SSL context); ``gather`` of one
    GET per request (``Range`` for ranges), at most 64 in flight (a semaphore)."""
    import aiohttp

    session = aiohttp.ClientSession()
    stack.push_async_callback(session.close)
    gate = asyncio.Semaphore(CONCURRENCY)
    gets = [(u, {"Range": f"bytes={s}-{e - 1}"} if hw.ranges else None)
            for u, s, e in zip(hw.urls, hw.starts, hw.ends, strict=True)]

    async def get(url: str, headers: dict[str, str] | None) -> bytes | bytearray:
        async with gate, session.get(url, headers=headers) as resp:
            resp.raise_for_status()
            return await _body(resp)

    async def run() -> Payload:
        return await asyncio.gather(*(get(u, h) for u, h in gets))

    return run


async def obstore_setup(hw: HttpWorkload, stack: AsyncExitStack) -> RunFn:
    """``HTTPStore.from_url(base)`` (HTTPS: ``$SSL_CERT_FILE`` as its ``root_certificate``);
    ``get_async`` + ``bytes_async`` per object or ``get_range_async`` per range, at most 64 in
    flight (a semaphore around a ``gather``)."""
    import obstore
    from obstore.store import HTTPStore

    if hw.base_url.startswith("https:"):
        options: dict[str, Any] = {"root_certificate": Path(os.environ["SSL_CERT_FILE"])
                                   .read_text()}
    else:
        options = {"allow_http": True}
    store = HTTPStore.from_url(hw.base_url, client_options=options)  # type: ignore[arg-type]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def whole(key: str) -> Payload:
        async with gate:
            return await (await obstore.get_async(store, key)).bytes_async()

    async def part(key: str, start: int, end: int) -> Payload:
        async with gate:
            return await obstore.get_range_async(store, key, start=start, end=end)

    async def run() -> Payload:
        if hw.ranges:
            return await asyncio.gather(*(part(k, s, e) for k, s, e in
                                          zip(hw.keys, hw.starts, hw.ends, strict=True)))
        return await asyncio.gather(*(whole(k) for k in hw.keys))

    return run


SETUPS: dict[str, Setup] = {"lsio": _lsio("auto"), "lsio-aiohttp": _lsio("aiohttp"),
                            "aiohttp": aiohttp_setup, "obstore": obstore_setup}
WRK = "wrk"
CONTENDERS = (*SETUPS, WRK)


def runs_on(contender: str, workload: str) -> bool:
    """wrk runs on (A) only (its script cycles over the object paths)."""
    return contender != WRK or workload == "A"


# --------------------------------------------------------------------------- one read


def measure(contender: str, hw: HttpWorkload, check_everything: bool) -> Measured:
    base = Measured(contender, hw.wl.key, affinity=tuple(sorted(os.sched_getaffinity(0))))
    cpu: list[float] = []
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        try:
            fn = runner.run(SETUPS[contender](hw, stack))
            warm = time_run(runner, fn, watch_loop=False).payload  # kept alive to the end
            if check_everything:
                check_all(hw.wl, warm)
            else:
                verify(hw.wl, warm)
            timed = time_run(runner, cpu_timed(fn, cpu))
            nbytes, n_ops = verify(hw.wl, timed.payload)
        except Exception as e:  # reported as a FAILED row by the benchmark
            return dataclasses.replace(base, error=f"{type(e).__name__}: {e}")
        finally:
            runner.run(stack.aclose())
    gets, transport = sent(timed.payload)
    return dataclasses.replace(base, seconds=timed.seconds, cpu_s=cpu[0], n_ops=n_ops,
                               nbytes=nbytes, loop_stall_s=timed.loop_stall, gets=gets,
                               transport=transport)


# --------------------------------------------------------------------------- wrk

_WRK_SCRIPT = """\
local paths = {%s}
local n, i = #paths, 0
request = function()
  i = i %% n + 1
  return wrk.format(nil, paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LSIO_WRK %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.bytes, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(hw: HttpWorkload, seconds: int, script: Path, timeout: float) -> Measured:
    """``wrk -t1 -c64 -d<seconds>s`` with a Lua script cycling over the workload's object
    paths, in a child that inherits this process's CPU affinity. Its CPU is its rusage (the
    children's rusage of this single-threaded process, before and after). wrk cannot return
    bodies: the check is no error (connect, read, write, timeout, non-2xx status) and at
    least the object size received per request."""
    base = Measured(WRK, hw.wl.key, affinity=tuple(sorted(os.sched_getaffinity(0))))
    paths = ", ".join(json.dumps("/" + quote(k)) for k in hw.keys)
    script.write_text(_WRK_SCRIPT % paths)
    cmd = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "--timeout", "10s", "-s",
           str(script), hw.base_url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        return dataclasses.replace(base, error=f"{type(e).__name__}: {e}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("LSIO_WRK ")), None)
    if proc.returncode != 0 or line is None:
        why = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}")
        return dataclasses.replace(base, error=f"wrk failed: {why[-300:]}")
    requests, micros, received, errors = (int(x) for x in line.split()[1:])
    size = hw.wl.requests[0].length
    if errors or requests == 0 or received < requests * size:
        return dataclasses.replace(base, error=f"wrk: {errors} errors, {requests} requests, "
                                   f"{received} bytes received")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dataclasses.replace(base, seconds=micros / 1e6, cpu_s=cpu, n_ops=requests,
                               nbytes=requests * size)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--contender", choices=sorted(SETUPS), required=True)
    ap.add_argument("--workload", choices=sorted(FULL_SPECS), required=True)
    ap.add_argument("--base-url", required=True, help="the served directory's URL, ending /")
    ap.add_argument("--data-dir", type=Path, required=True, help="the served directory")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--check-all", action="store_true",
                    help="check every chunk of the warm-up read byte for byte")
    a = ap.parse_args(argv)
    data_dir = a.data_dir.resolve()
    wl = materialize(specs(a.quick)[a.workload], data_dir, create=False)
    hw = HttpWorkload.build(wl, data_dir, lambda key: a.base_url + quote(key))
    result = measure(a.contender, hw, a.check_all)
    print(json.dumps(dataclasses.asdict(result)))
    sys.stdout.flush()
    # The figures are out: skip the interpreter's teardown. obstore's runtime threads abort
    # the process there now and then (SIGABRT, no message) when pinned to one CPU.
    os._exit(0)


if __name__ == "__main__":
    main()
