"""The wheel ``make wheel`` builds (``dist/lsio-*-manylinux_2_28_x86_64.whl``): pip alone installs
it into a fresh venv on every supported Python, and it reads through io_uring and decodes with
its own C libraries, needing nothing but glibc at run time.

``make test`` builds the wheel first; run alone, this file fails (never skips) without one.
About 40 s: three venvs and pip installs (dependencies from pip's cache or PyPI, binaries only).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PLAT = "manylinux_2_28_x86_64"
AUDITWHEEL = ROOT / "build" / "wheel-venv" / "bin" / "auditwheel"
BUNDLED = ("liburing", "blosc", "zstd", "lz4", "libz.")
"""What no installed module may load from the system."""

# Run inside the fresh venv (cwd: a scratch directory, so the worktree's lsio is not found).
CHECK = r"""
import glob, os, sys
import lsio, lsio._codecs

data = sys.argv[1]
assert lsio.__file__.startswith(sys.prefix), lsio.__file__
assert lsio.backend_name() == "uring", lsio.backend_name()

# The README's first example: a whole file and a byte range, blocking twin.
a, b = os.path.join(data, "a.bin"), os.path.join(data, "b.bin")
res = lsio.read_many_sync([(a,), (b, 4096, 65536)])
assert bytes(res[0]) == open(a, "rb").read()
assert bytes(res[1]) == open(b, "rb").read()[4096:4096 + 65536]

# The io_uring smoke: one read of a 1 MiB file through an explicit uring Reader.
with lsio.Reader(backend="uring") as reader:
    (chunk,) = reader.read_many_sync([(b,)])
assert bytes(chunk) == open(b, "rb").read()

# The zarr fast path's C decoder, on chunks numcodecs compressed (blosc's lz4, zlib, zstd and
# blosclz with byte and bit shuffle; plain zstd; zlib under a byte shuffle, as HDF5 writes):
# the vendored codecs decode them.
ffi, lib = lsio._codecs.ffi, lsio._codecs.lib
raw = open(os.path.join(data, "raw.bin"), "rb").read()
for path in sorted(glob.glob(os.path.join(data, "*.chunk"))):
    kind = path.rsplit(".", 2)[-2]  # HDF5's zlib under a 4-byte shuffle: the vendored zlib
    codec = {"zstd": lib.LSIO_CODEC_ZSTD, "blosc": lib.LSIO_CODEC_BLOSC,
             "hdf5": lib.LSIO_CODEC_ZLIB}[kind]
    src = open(path, "rb").read()
    out = ffi.new("char[]", len(raw))
    job = ffi.new("lsio_chunk *")
    job.src, job.srclen, job.dst, job.src_offset = ffi.from_buffer(src), len(src), out, 0
    job.shape[0], job.src_strides[0], job.dst_strides[0] = len(raw), 1, 1
    job.out, job.outlen = out, len(raw)
    failed = ffi.new("int *")
    shuffle = 4 if kind == "hdf5" else 0
    rc = lib.lsio_decode_scatter(codec, shuffle, job, 1, 1, len(raw), 1, 0, ffi.NULL, 0, failed)
    assert rc == lib.LSIO_DECODE_OK and ffi.buffer(out)[:] == raw, (path, rc)
print("\n".join(glob.glob(os.path.join(os.path.dirname(lsio.__file__), "*.so"))))
"""


def _wheel() -> Path:
    found = sorted(ROOT.glob(f"dist/lsio-*-cp311-abi3-{PLAT}.whl"), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.fail(f"no dist/lsio-*-cp311-abi3-{PLAT}.whl: run `make wheel` first")
    return found[-1]


def _python(version: str) -> str:
    proc = subprocess.run([str(ROOT / "scripts" / "python.sh"), version],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.fail(f"Python {version} is needed to test the wheel: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _run(cmd: list[str], *, cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LSIO_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}")
    return proc.stdout


def _write_data(data: Path) -> None:
    rng = np.random.default_rng(22)
    (data / "a.bin").write_bytes(rng.bytes(10_000))
    (data / "b.bin").write_bytes(rng.bytes(1 << 20))
    # compressible: small integers, as a zarr chunk of int32 might hold
    raw = rng.integers(0, 1000, 64 * 1024, dtype="<i4").tobytes()
    (data / "raw.bin").write_bytes(raw)
    for cname in ("lz4", "zlib", "zstd", "blosclz"):
        for shuffle in (numcodecs.Blosc.SHUFFLE, numcodecs.Blosc.BITSHUFFLE):
            codec = numcodecs.Blosc(cname=cname, clevel=5, shuffle=shuffle, typesize=4)
            (data / f"{cname}-{shuffle}.blosc.chunk").write_bytes(codec.encode(raw))
    (data / "plain.zstd.chunk").write_bytes(numcodecs.Zstd(level=3).encode(raw))
    shuffled = numcodecs.Shuffle(elementsize=4).encode(raw)
    (data / "shuffle-zlib.hdf5.chunk").write_bytes(numcodecs.Zlib(level=4).encode(shuffled))


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_wheel_installs_and_reads_through_uring(version: str, tmp_path: Path) -> None:
    wheel, python = _wheel(), _python(version)
    venv, data = tmp_path / "venv", tmp_path / "data"
    data.mkdir()
    _write_data(data)
    _run([python, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=120)
    vpy = str(venv / "bin" / "python")
    # pip alone (this interpreter's, aimed at the venv); dependencies as binary wheels
    _run([sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--only-binary",
          ":all:", str(wheel)], cwd=tmp_path, timeout=600)
    modules = _run([vpy, "-c", CHECK, str(data)], cwd=tmp_path, timeout=120).split()
    assert sorted(Path(m).name for m in modules) == ["_codecs.abi3.so", "_uring.abi3.so"]
    for module in modules:
        deps = _run(["ldd", module], cwd=tmp_path, timeout=30)
        assert "not found" not in deps, deps
        linked = [line for line in deps.splitlines() if any(b in line for b in BUNDLED)]
        assert not linked, f"{module} loads system copies of bundled libraries: {linked}"


def test_wheel_is_manylinux_2_28_and_carries_the_licences() -> None:
    wheel = _wheel()
    if not AUDITWHEEL.exists():
        pytest.fail(f"no {AUDITWHEEL}: run `make wheel` (it installs auditwheel there)")
    shown = _run([str(AUDITWHEEL), "show", str(wheel)], cwd=ROOT, timeout=120)
    tag = re.search(r'platform tag:\s*"manylinux_(\d+)_(\d+)_x86_64"', " ".join(shown.split()))
    assert tag, shown
    assert (int(tag[1]), int(tag[2])) <= (2, 28), f"needs a newer glibc than 2.28:\n{shown}"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    wanted = ["LICENSE", *(f"licenses/{p.name}" for p in sorted((ROOT / "licenses").iterdir()))]
    missing = [w for w in wanted if not any(n.endswith(f".dist-info/licenses/{w}") for n in names)]
    assert not missing, f"{wheel.name} lacks licence texts {missing}"
