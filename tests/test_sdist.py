"""The sdist, built and installed for real: where liburing's (and blosc's, zstd's) headers are
missing, it still installs (the thread-pool backend, numcodecs for zarr chunks) and says why
once at first use; ``LSIO_REQUIRE_URING=1`` makes that build fail instead; with the headers it
builds both modules, ships every file of the package and logs no setuptools warning about it.

The headers are hidden the honest way: the build runs in a private mount namespace
(``unshare --mount``, root) in which ``/usr/include`` is a directory of links to every entry of
the real one but those headers. The build tools are the lowest ``[build-system] requires``
allows, in their own venv under ``build/`` (made once), and nothing is fetched during a build
(``--no-build-isolation --no-index``). About 15 s (the build venv's first creation adds ~10 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import check_ok

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD_TOOLS = ("setuptools==77.0.3", "cffi==1.17.1")
"""The lowest versions pyproject.toml's ``[build-system] requires`` accepts: the build must
work with them (77: PEP 639 licence fields; cffi 1.17: Python 3.13)."""
RUN_NEEDS = ("numpy", "aiohttp", "tqdm", "zarr", "numcodecs")
"""Installed beside them at this run's versions, to run the installed lsio (and a zarr read)."""
HIDDEN = ("liburing", "liburing.h", "blosc.h", "blosc-export.h", "zstd.h", "zstd_errors.h",
          "zdict.h", "openssl")
"""What ``/usr/include`` lacks in the namespace: liburing-dev's, libblosc-dev's,
libzstd-dev's and libssl-dev's headers (the C HTTP transport needs OpenSSL's besides
libcurl's, which live under the multiarch directory)."""

# Runs as root in a fresh mount namespace: /usr/include without HIDDEN, then the command.
HIDE = r"""
set -eu
scratch=$1; shift
mkdir -p "$scratch/real" "$scratch/seen"
mount --bind /usr/include "$scratch/real"
for entry in /usr/include/*; do
  name=${entry##*/}
  case " $HIDDEN " in *" $name "*) continue ;; esac
  ln -s "$scratch/real/$name" "$scratch/seen/$name"
done
mount --bind "$scratch/seen" /usr/include
exec "$@"
"""

# Run from the install directory (PYTHONPATH): the backend, its warnings, a zarr read's.
CHECK = r"""
import json, os, sys, warnings
import numpy as np
import lsio
assert os.path.dirname(lsio.__file__) == os.path.join(sys.argv[1], "lsio"), lsio.__file__
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["backend"] = lsio.backend_name()
    out["reader"] = lsio.Reader().backend
    import zarr, lsio.zarr
    path = os.path.join(sys.argv[2], "a.zarr")
    a = zarr.create_array(path, shape=(64,), chunks=(16,), dtype="i4",
                          compressors=zarr.codecs.BloscCodec(cname="zstd"))
    a[:] = np.arange(64, dtype="i4")
    for _ in range(2):
        got = lsio.zarr.read_sync(path, (slice(None),))
        assert (got == np.arange(64)).all()
out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
print(json.dumps(out))
"""


def _venv_python() -> Path:
    """A venv of this interpreter's version holding BUILD_TOOLS and lsio's run-time needs at
    this run's versions, but no lsio (this run's may be an editable install, whose finder
    would supply a module the install under test lacks); made once under build/."""
    venv = ROOT / "build" / f"sdist-venv-{sys.version_info.major}.{sys.version_info.minor}"
    stamp = venv / ".tools"
    want = [*BUILD_TOOLS, *(f"{name}=={version(name)}" for name in RUN_NEEDS)]
    if not stamp.exists() or stamp.read_text() != " ".join(want):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                               *want], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        stamp.write_text(" ".join(want))
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the build venv's python, the sdist built from this tree with it)."""
    python = _venv_python()
    out = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run([str(python), "-c", "import sys; from setuptools import build_meta; "
                           "print(build_meta.build_sdist(sys.argv[1]))", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return python, out / proc.stdout.split()[-1]


def _install(sdist: tuple[Path, Path], target: Path, *, hide: bool, **env: str
             ) -> subprocess.CompletedProcess[str]:
    """``pip install -v --target`` of the sdist (no build isolation, no index), in a mount
    namespace without HIDDEN when ``hide``."""
    python, archive = sdist
    cmd = [str(python), "-m", "pip", "install", "-v", "--no-build-isolation", "--no-index",
           "--no-deps", "--no-compile", "--target", str(target), str(archive)]
    if hide:
        cmd = ["unshare", "--mount", "sh", "-c", HIDE, "hide", str(target.parent / "inc"), *cmd]
    full = {k: v for k, v in os.environ.items() if not k.startswith("LSIO_")}
    full.update(HIDDEN=" ".join(HIDDEN), TMPDIR=str(target.parent), **env)
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300,
                          cwd=target.parent)


def _clean_log(log: str) -> None:
    """No setuptools complaint about the package's layout (``lsio._c`` outside ``packages``
    once printed ~45 lines of these), nor a glob of the licence files that matched nothing."""
    for complaint in ("would be ignored", "absent from the `packages`", "Package would be"):
        assert complaint not in log, complaint
    if (ROOT / "licenses").is_dir():  # bundled libraries' texts, from `make wheel`'s branch
        assert "SetuptoolsDeprecationWarning" not in log


def _check(python: Path, target: Path, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSIO_")}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run([str(python), "-c", CHECK, str(target), str(tmp_path)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return json.loads(check_ok(proc).strip().splitlines()[-1])


def test_without_headers_builds_threads_and_says_why(sdist: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = _install(sdist, target, hide=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "lsio: not building lsio._uring: liburing.h not found" in log
    assert "lsio: not building lsio._codecs: blosc.h and zstd.h not found" in log
    assert "fatal error" not in log  # the probes' compiler output stays out of the build's
    _clean_log(log)
    assert not list((target / "lsio").glob("*.so"))
    built = json.loads((target / "lsio" / "_build.json").read_text())
    assert set(built) == {"lsio._uring", "lsio._codecs", "lsio._curl"} and all(built.values())
    assert "lsio: not building lsio._curl: openssl/hmac.h not found" in log

    out = _check(sdist[0], target, tmp_path)
    assert out["backend"] == out["reader"] == "threads"
    messages = [m for category, m in out["warnings"] if category == "BackendWarning"]
    assert len(messages) == 2, out["warnings"]  # once each, though asked twice
    ring, codecs = sorted(messages, key=lambda m: "zarr" in m)
    for text in ("thread-pool backend", "lsio was built without io_uring",
                 "liburing.h not found at build time", "liburing-dev", "liburing >= 2.2",
                 "pip install --force-reinstall", "LSIO_BACKEND=threads"):
        assert text in ring, (text, ring)
    assert "seccomp" not in ring  # the kernel is not the reason here
    for text in ("numcodecs", "without its C chunk decoder", "blosc.h and zstd.h not found",
                 "libblosc-dev", "pip install --force-reinstall"):
        assert text in codecs, (text, codecs)


def test_require_uring_fails_the_build_without_headers(sdist: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = _install(sdist, target, hide=True, LSIO_REQUIRE_URING="1")
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert ("LSIO_REQUIRE_URING=1 but lsio._uring (io_uring) cannot be built: liburing.h not "
            "found at build time; install liburing-dev") in log, log[-3000:]
    assert not (target / "lsio").exists()


def test_with_headers_builds_both_and_ships_every_file(sdist: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = _install(sdist, target, hide=False, LSIO_REQUIRE_URING="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "lsio: not building" not in log
    _clean_log(log)
    built = json.loads((target / "lsio" / "_build.json").read_text())
    assert built == {"lsio._uring": None, "lsio._codecs": None, "lsio._curl": None}
    tracked = subprocess.run(["git", "ls-files", "lsio"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked and [f for f in tracked if not (target / f).is_file()] == []
    out = _check(sdist[0], target, tmp_path)
    assert out["backend"] == out["reader"] == "uring" and out["warnings"] == []
