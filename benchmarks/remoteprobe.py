"""One measured read of ``bench_remote`` in a fresh process: time, loop stall, peak RSS, bytes
on the wire, every byte checked.

    python -m benchmarks.remoteprobe --server moto --endpoint URL --bucket B \\
        --data-dir DIR --workload sparse [--quick] --contender lsio

Credentials come from the environment the parent sets (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` for moto; ``AZURE_STORAGE_CONNECTION_STRING``,
``AZURE_STORAGE_ACCOUNT_NAME`` / ``AZURE_STORAGE_ACCOUNT_KEY`` for azurite; for the GCS
emulator none: an empty ``$CLOUDSDK_CONFIG`` and ``NO_GCE_CHECK=true``, so lsio finds no Google
credentials and sends anonymous requests, as the tests' ``no_credentials`` fixture), as a user's
would. Prints one JSON object (a :class:`RemoteSample`), also when the contender fails
(``error``).

Steps: build the contender (reader / store, request list), reset the RSS high-water mark
(``memprobe``), read the loopback interface's receive counter (``/proc/net/dev``), run the one
read on an asyncio loop with a 1 ms heartbeat (``harness.time_run``), ``time.process_time()``
around the call (every thread of the process, the heartbeat included), read the counter and the
peak RSS again (results still alive), then check every returned chunk byte for byte against the
local file the object was uploaded from. For lsio, the result's ``stats.operations`` (GETs sent)
and ``stats.transport`` (what sent them: ``curl``, ``aiohttp`` or ``mixed``) are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tests.reference import expected_bytes

from .contenders import Payload, RunFn
from .harness import as_view, cpu_timed, sent, time_run
from .memprobe import _peak, _reset_peak
from .workloads import GiB, KiB, MiB, Workload, WorkloadSpec, materialize

if TYPE_CHECKING:
    from obstore.store import AzureStore, ClientConfig, GCSStore, S3Store

Server = Literal["moto", "azurite", "gcs"]
SERVERS: tuple[Server, ...] = ("moto", "azurite", "gcs")
CONTENDERS = ("lsio", "lsio-aiohttp", "obstore", "lsio-unbounded")
"""``lsio-aiohttp``: lsio with ``HttpOptions(transport="aiohttp")``, the road before the C
transport. ``lsio-unbounded``: lsio with ``HttpOptions(max_transfer_ratio=None)``, merging
through gaps as the host's cost says with no bound on the bytes fetched (as obstore does);
sparse only."""


def runs_on(contender: str, workload: str) -> bool:
    """Whether ``contender`` runs ``workload`` (the unbounded lsio differs on sparse only)."""
    return contender != "lsio-unbounded" or workload == "sparse"
OBSTORE_CONCURRENCY = 32  # get_async calls in flight for many objects (lsio's cloud depth)

FULL_SPECS: dict[str, WorkloadSpec] = {
    "objects": WorkloadSpec("objects", "2000 objects x 64 KiB, read whole", "files",
                            n_files=2000, file_size=64 * KiB, n_requests=2000,
                            request_size=64 * KiB),
    "sparse": WorkloadSpec("sparse", "20 000 random 4 KiB ranges of one 2 GiB object", "ranges",
                           n_files=1, file_size=2 * GiB, n_requests=20_000,
                           request_size=4 * KiB),
    "big": WorkloadSpec("big", "one 512 MiB object, read whole", "files",
                        n_files=1, file_size=512 * MiB, n_requests=1, request_size=512 * MiB),
}
QUICK_SPECS: dict[str, WorkloadSpec] = {
    "objects": WorkloadSpec("objects", "50 objects x 64 KiB, read whole (quick)", "files",
                            n_files=50, file_size=64 * KiB, n_requests=50,
                            request_size=64 * KiB),
    "sparse": WorkloadSpec("sparse", "500 random 4 KiB ranges of one 64 MiB object (quick)",
                           "ranges", n_files=1, file_size=64 * MiB, n_requests=500,
                           request_size=4 * KiB),
    "big": WorkloadSpec("big", "one 32 MiB object, read whole (quick)", "files",
                        n_files=1, file_size=32 * MiB, n_requests=1, request_size=32 * MiB),
}


def specs(quick: bool) -> dict[str, WorkloadSpec]:
    return QUICK_SPECS if quick else FULL_SPECS


def object_key(path: str, data_dir: Path) -> str:
    """The key a data file is uploaded under: its path below the data directory."""
    return Path(os.path.relpath(path, data_dir)).as_posix()


@dataclass(frozen=True)
class RemoteSample:
    """One read of one workload by one contender from one server, in a fresh process."""

    server: str
    workload: str
    contender: str
    seconds: float = 0.0
    nbytes: int = 0  # bytes returned (checked: == bytes requested)
    n_ops: int = 0
    loop_stall_s: float | None = None
    rss_before: int = 0
    rss_peak: int = 0
    net_bytes: int = 0  # loopback bytes received during the read (both directions, headers)
    cpu_s: float = 0.0  # process CPU time of the read (every thread)
    gets: int | None = None  # GETs lsio sent (its stats.operations); None: not counted
    transport: str = ""  # what sent lsio's GETs (its stats.transport)
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where the probe reads from."""

    server: Server
    endpoint: str
    bucket: str  # S3 bucket, Azure container or GCS bucket


# --------------------------------------------------------------------------- contenders

SCHEMES: dict[Server, str] = {"moto": "s3", "azurite": "az", "gcs": "gs"}


def _lsio_url(t: Target, key: str) -> str:
    return f"{SCHEMES[t.server]}://{t.bucket}/{key}"


async def lsio_setup(wl: Workload, keys: Sequence[str], t: Target, *,
                     bounded: bool = True, transport: str = "auto") -> RunFn:
    """One ``lsio.Reader``, one ``read_many`` of ``(url, offset, length)`` (``(url, 0, None)``
    for whole objects)."""
    import lsio
    import lsio.backends.http  # noqa: F401 - imported in setup, as obstore's module is

    ratio = lsio.HttpOptions().max_transfer_ratio if bounded else None
    knobs: dict[str, Any] = {"max_transfer_ratio": ratio, "transport": transport}
    if t.server == "moto":
        options = lsio.HttpOptions(endpoint_url=t.endpoint, region="us-east-1", **knobs)
    elif t.server == "azurite":  # account and key from the environment
        options = lsio.HttpOptions(azure_endpoint=t.endpoint, **knobs)
    else:  # no credentials found: anonymous requests, as to a public bucket
        options = lsio.HttpOptions(gcs_endpoint=t.endpoint, **knobs)
    reader = lsio.Reader(http=options)
    requests: list[tuple[str, int, int | None]] = [
        (_lsio_url(t, k), r.offset, r.length if wl.spec.kind == "ranges" else None)
        for k, r in zip(keys, wl.requests, strict=True)]

    async def run() -> Payload:
        return await reader.read_many(requests)

    return run


def obstore_store(t: Target, env: Mapping[str, str]) -> S3Store | AzureStore | GCSStore:
    """The obstore store of `t`, credentials from `env` (the keys the probe's environment
    holds). GCS: ``base_url`` the emulator, ``skip_signature`` (no credentials, as lsio's
    anonymous requests); obstore GETs ``{base_url}/{bucket}/{key}``, which fake-gcs-server
    serves when started with ``-public-host`` its own address (``bench_remote`` does)."""
    from obstore.store import AzureStore, GCSStore, S3Store

    http: ClientConfig = {"allow_http": True}
    if t.server == "moto":
        return S3Store(t.bucket, endpoint=t.endpoint, region="us-east-1",
                       access_key_id=env["AWS_ACCESS_KEY_ID"],
                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                       client_options=http)
    if t.server == "gcs":
        return GCSStore(t.bucket, base_url=t.endpoint, skip_signature=True,
                        client_options=http)
    return AzureStore(t.bucket, endpoint=t.endpoint,
                      account_name=env["AZURE_STORAGE_ACCOUNT_NAME"],
                      account_key=env["AZURE_STORAGE_ACCOUNT_KEY"], client_options=http)


async def obstore_setup(wl: Workload, keys: Sequence[str], t: Target) -> RunFn:
    """``S3Store`` / ``AzureStore`` / ``GCSStore``: one ``get_ranges_async`` for ranges
    (obstore merges ranges up to 1 MiB apart, its default), else ``get_async`` +
    ``bytes_async`` per object, `OBSTORE_CONCURRENCY` at a time."""
    import obstore

    store = obstore_store(t, os.environ)
    if wl.spec.kind == "ranges":
        key = keys[0]
        starts = [r.offset for r in wl.requests]
        lengths = [r.length for r in wl.requests]

        async def ranges() -> Payload:
            return await obstore.get_ranges_async(store, key, starts=starts,
                                                  lengths=lengths)

        return ranges

    gate = asyncio.Semaphore(OBSTORE_CONCURRENCY)

    async def get(k: str) -> Payload:
        async with gate:
            return await (await obstore.get_async(store, k)).bytes_async()

    async def objects() -> Payload:
        return await asyncio.gather(*(get(k) for k in keys))

    return objects


async def lsio_unbounded_setup(wl: Workload, keys: Sequence[str], t: Target) -> RunFn:
    return await lsio_setup(wl, keys, t, bounded=False)


async def lsio_aiohttp_setup(wl: Workload, keys: Sequence[str], t: Target) -> RunFn:
    return await lsio_setup(wl, keys, t, transport="aiohttp")


SETUPS = {"lsio": lsio_setup, "lsio-aiohttp": lsio_aiohttp_setup, "obstore": obstore_setup,
          "lsio-unbounded": lsio_unbounded_setup}


# --------------------------------------------------------------------------- measuring


def loopback_rx_bytes() -> int:
    """Bytes received on ``lo`` so far (``/proc/net/dev``; every loopback packet, in either
    direction, is received once, headers included)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    raise RuntimeError("no loopback interface in /proc/net/dev")


def check_all(wl: Workload, payload: Payload) -> int:
    """Every chunk, byte for byte, against the uploaded file; return the bytes returned."""
    if len(payload) != wl.n_ops:
        raise RuntimeError(f"returned {len(payload)} chunks, expected {wl.n_ops}")
    nbytes = 0
    for i, r in enumerate(wl.requests):
        got = as_view(payload[i])
        if got.nbytes != r.length:
            raise RuntimeError(f"chunk {i}: {got.nbytes} bytes, expected {r.length}")
        if got != expected_bytes(r.path, r.offset, r.length):
            raise RuntimeError(f"chunk {i} ({r.path} @ {r.offset}) differs from the source")
        nbytes += got.nbytes
    return nbytes


def probe(t: Target, data_dir: Path, workload: str, quick: bool, contender: str) -> RemoteSample:
    wl = materialize(specs(quick)[workload], data_dir, create=False)
    keys = [object_key(r.path, data_dir) for r in wl.requests]
    base = RemoteSample(t.server, workload, contender)
    cpu: list[float] = []
    with asyncio.Runner() as runner:
        try:
            fn = runner.run(SETUPS[contender](wl, keys, t))
            before = _reset_peak()
            rx0 = loopback_rx_bytes()
            timed = time_run(runner, cpu_timed(fn, cpu))
            rx1 = loopback_rx_bytes()
            peak = _peak()
            nbytes = check_all(wl, timed.payload)
        except Exception as e:  # reported as a failed row by the parent
            return dataclasses.replace(base, error=f"{type(e).__name__}: {e}")
    gets, transport = sent(timed.payload)
    return dataclasses.replace(base, seconds=timed.seconds, nbytes=nbytes, n_ops=wl.n_ops,
                               loop_stall_s=timed.loop_stall, rss_before=before,
                               rss_peak=peak, net_bytes=rx1 - rx0, cpu_s=cpu[0], gets=gets,
                               transport=transport)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--server", choices=SERVERS, required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--workload", choices=sorted(FULL_SPECS), required=True)
    ap.add_argument("--contender", choices=CONTENDERS, required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    result = probe(Target(a.server, a.endpoint, a.bucket), a.data_dir.resolve(), a.workload,
                   a.quick, a.contender)
    print(json.dumps(dataclasses.asdict(result)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
