"""Shared fixtures: data directories on a real disk and on tmpfs, the backend kit, the one
nginx of the session, and the session guard that makes CI fail (never skip) when io_uring is
unusable on Linux."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzing import load_profile
from servers import MotoServer, Nginx

import lsio

load_profile()

BACKENDS = ["uring", "threads"]

REAL_DISK_ROOT = "/var/tmp"
"""/tmp may be tmpfs, which refuses (or fakes) O_DIRECT; /var/tmp is on a real disk."""


def _fs_type(path: str) -> str | None:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    path = os.path.realpath(path)
    best, fstype = "", None
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


@pytest.fixture(scope="session", autouse=True)
def _require_uring_on_linux() -> None:
    """On Linux the ring must work: a broken ring FAILS the session instead of silently
    testing only the fallback."""
    if not sys.platform.startswith("linux"):
        return
    try:
        lsio.Reader(backend="uring")
    except Exception as exc:  # noqa: BLE001 - any failure is fatal here
        pytest.fail(f"io_uring is unusable on this Linux machine, refusing to test only the "
                    f"thread fallback: {exc!r}", pytrace=False)


def _make_tempdir(root: str, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh directory on a real disk (O_DIRECT works there), removed afterwards."""
    d = _make_tempdir(REAL_DISK_ROOT, "lsio-test-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def module_data_dir() -> Iterator[Path]:
    """Like ``data_dir`` but shared by a module (hypothesis tests need non-function scope)."""
    d = _make_tempdir(REAL_DISK_ROOT, "lsio-test-mod-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    """A fresh directory on tmpfs (/dev/shm), to check O_DIRECT falls back to buffered."""
    if not os.path.isdir("/dev/shm") or _fs_type("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    d = _make_tempdir("/dev/shm", "lsio-test-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx() -> Iterator[Nginx]:
    """The session's one nginx on loopback, serving ``nginx.root``: a fresh directory on a
    real disk. Modules write their files there under names of their own (test_http.py: its
    ``*.bin`` files; test_zarr.py: one directory per store or array)."""
    root = _make_tempdir(REAL_DISK_ROOT, "lsio-test-www-")
    root.chmod(0o755)  # nginx's workers may run as another user
    try:
        with Nginx(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> lsio.Reader:
    """The conformance kit: every test using this runs once per backend.

    Session scope: a Reader holds no per-call state (rings are per event loop, the thread
    pool is shared), and hypothesis refuses function-scoped fixtures.
    """
    reader = lsio.Reader(backend=request.param)
    assert reader.backend == request.param
    return reader


@pytest.fixture(params=["as-shipped", "c-first"])
def road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator suites (moto, Azurite, the GCS emulator) run twice: as shipped (a
    call's lone GET goes through aiohttp) and with the C transport taking every range GET
    it can, lone ones included (``_batch.MIN_BATCH`` 1): then only what it never serves
    (a suffix, an object sent whole, a redirect, a proxied URL) goes through aiohttp."""
    from lsio.backends.http import _batch

    if request.param == "c-first":
        monkeypatch.setattr(_batch, "MIN_BATCH", 1)
    return str(request.param)


def use_moto_credentials(monkeypatch: pytest.MonkeyPatch, moto: MotoServer) -> None:
    """Sign with ``moto``'s keys and nothing else: no profile, config file, endpoint or
    metadata server of the machine's own."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def random_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic bytes with no zero byte, so an unwritten (zeroed) byte never passes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, n, dtype=np.uint8).tobytes()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def open_fds() -> dict[int, str]:
    """What each open descriptor points to (for leak messages)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory's own descriptor, gone by now
            pass
    return out


def drop_cache(path: str | os.PathLike[str]) -> None:
    """Evict ``path`` from the page cache (POSIX_FADV_DONTNEED after an fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_pages(path: str | os.PathLike[str]) -> int:
    """How many of ``path``'s pages are in the page cache (``mincore`` on a mapping that is
    never touched: unlike a probing read, it starts no readahead that would warm it)."""
    import ctypes
    import mmap

    size = os.stat(path).st_size
    if not size:
        return 0
    page = mmap.PAGESIZE
    n = (size + page - 1) // page
    vec = (ctypes.c_ubyte * n)()
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        base = ctypes.c_char.from_buffer(m)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(base)), ctypes.c_size_t(size),
                            vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path}")
        finally:
            del base  # the mapping cannot close while exported
    return sum(v & 1 for v in vec)


def make_cold(path: str | os.PathLike[str]) -> None:
    """Evict ``path``'s pages, checked with ``mincore``."""
    for attempt in range(120):  # up to ~6 s: a page still on a per-CPU LRU list is skipped
        drop_cache(path)
        if not resident_pages(path):
            return
        if attempt % 30 == 29 and os.geteuid() == 0:  # again while a page stays (seen twice)
            # a page held on another CPU's LRU batch stays until that CPU drains it (seen
            # under CI load); the global drop drains every CPU's batches (clean pages only)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        time.sleep(0.05)
    raise AssertionError(f"{path} stays in the page cache")


def version(size: int) -> bytes:
    """A file version that proves its own integrity: fill bytes that depend on the size,
    then the size itself in its last 8 bytes."""
    return bytes([size % 251 + 1]) * (size - 8) + struct.pack("<Q", size)


def check_version(got: bytes, *, whole: bool, sizes: set[int]) -> str | None:
    """Why ``got`` is not one whole version (``whole``) or one version's tail, or None."""
    if len(got) < 8:
        return f"{len(got)} bytes"
    size = struct.unpack("<Q", got[-8:])[0]
    if size not in sizes:
        return f"trailer {size} is no version's size (torn: not the file's end)"
    if whole and len(got) != size:
        return f"{len(got)} bytes of a {size}-byte version"
    if got[:-8].count(size % 251 + 1) != len(got) - 8:
        return f"fill bytes of several versions in a {size}-byte version"
    return None


def new_fds(baseline: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (to the same thing) at ``baseline``: leaks.
    Descriptors closed since are not leaks (an earlier test's keep-alive connections may
    close meanwhile, when the server times them out)."""
    return {fd: what for fd, what in open_fds().items() if baseline.get(fd) != what}


def run_python(code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 120, cwd: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (same venv); returns the finished process.

    Used where a test needs a pristine ``lsio`` (backend selection, warnings), other
    credentials (``setuid``), rlimits, or must survive a crash of the code under test.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LSIO_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def check_ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"subprocess exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}")
    return proc.stdout


@pytest.fixture
def default_pipeline() -> Iterator[None]:
    """The test starts and ends with zarr's codec pipeline setting as it found it (modules
    that switch pipelines use it for every test: ``pytestmark``)."""
    import zarr

    before = zarr.config.get("codec_pipeline.path")
    yield
    zarr.config.set({"codec_pipeline.path": before})
