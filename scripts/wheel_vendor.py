"""Build the static C libraries the wheel carries, into a prefix ``make wheel`` hands to the
cffi builders as ``LSIO_VENDOR_PREFIX`` (see ``lsio/_cbuild.py``'s ``link_options``).

The repository holds only code written here: the sources are downloaded at build time from
package registries, pinned by version and sha256 below, and cached under ``build/`` so a
second run neither downloads nor compiles. Every object is compiled with the compiler given
(``zig cc -target x86_64-linux-gnu.2.28``: glibc 2.28 is the oldest the wheel runs on),
``-fPIC`` (it ends up in a shared object) and ``-fvisibility=hidden`` (the copies inside lsio
never interpose on, nor are interposed by, another copy in the same process).

What is bundled, and under which licence (texts in ``licenses/``, checked here against the
sources they came from):

- liburing, under the MIT option of its MIT / LGPL-2.1 dual licence (its GPL-licensed tests
  and man pages are not built);
- c-blosc 1.21 (BSD-3-Clause) with its internal lz4 (BSD-2-Clause) and zlib (zlib licence)
  codecs, taken from python-blosc's sdist, which carries c-blosc with ``internal-complibs``
  (Debian's c-blosc source is repacked without them, ``+ds``); no snappy, no C++. That zlib
  is archived apart (``libz.a``, with its headers): lsio's decoder inflates HDF5's chunks
  with it too, and blosc links against the same copy;
- zstd (BSD-3-Clause option of its BSD / GPL-2.0 dual licence), which c-blosc uses too.

Usage: ``python scripts/wheel_vendor.py --cc CC --ar AR --prefix DIR --cache DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """One pinned upstream source archive."""

    name: str
    """What it provides (``liburing``, ``blosc``, ``zstd``)."""
    version: str
    url: str
    sha256: str
    top: str
    """The directory the archive unpacks into."""


# liburing: the newest Debian has (sid); trixie's 2.9 stays in Debian's pool for the life of
# Debian 13, so it is the fallback once sid moves on and 2.15 leaves the pool. lsio's C
# compiles against both (checked when these pins were set).
LIBURING = (
    Source("liburing", "2.15",
           "https://deb.debian.org/debian/pool/main/libu/liburing/liburing_2.15.orig.tar.gz",
           "efd299ff27cde40a45efc7dbb97ebe40a0c461921cb462f1d62611642bb4ee86", "liburing-2.15"),
    Source("liburing", "2.9",
           "https://deb.debian.org/debian/pool/main/libu/liburing/liburing_2.9.orig.tar.gz",
           "57e9b36e4ac1e46b8e0351dfb1694dc59638fc25e384b4ba36d87b800b16db1a", "liburing-2.9"),
)
# python-blosc 1.11.4's sdist: c-blosc 1.21.7.dev with lz4 1.10.0 and zlib 1.3.1 inside.
BLOSC = (
    Source("blosc", "1.11.4",
           "https://files.pythonhosted.org/packages/9e/66/"
           "3c0e1801d4674582c38f9b009e71c09eb501fc3db591e35436dac15fa7a7/blosc-1.11.4.tar.gz",
           "e0b312d9554d3aea93c75af4ad70dfa8b815ef4fe2b658c313b2f27ed0f41d37", "blosc-1.11.4"),
)
# Debian's zstd source (trixie and sid): "+dfsg" drops only files outside lib/.
ZSTD = (
    Source("zstd", "1.5.7",
           "https://deb.debian.org/debian/pool/main/libz/libzstd/libzstd_1.5.7+dfsg.orig.tar.xz",
           "0c092ef267edce57ba7f3f2645c861f72eaf5e76273c6c3632869423464b90a5", "zstd-1.5.7"),
)

CFLAGS = ["-O2", "-fPIC", "-fvisibility=hidden", "-fno-sanitize=all", "-w"]
"""For every vendored object: upstream's own warnings are not ours to fix (``-w``)."""

# licenses/<file>: the upstream texts it must contain (paths inside the unpacked source).
_CB = "blosc/c-blosc/"
LICENCE_TEXTS = {
    "liburing.txt": ("liburing", ("LICENSE",)),
    "zstd.txt": ("zstd", ("LICENSE",)),
    "c-blosc.txt": ("blosc", (f"{_CB}LICENSE.txt", f"{_CB}LICENSES/BITSHUFFLE.txt",
                              f"{_CB}LICENSES/FASTLZ.txt")),
    "lz4.txt": ("blosc", (f"{_CB}LICENSES/LZ4.txt",)),
    "zlib.txt": ("blosc", (f"{_CB}LICENSES/ZLIB.txt",)),
}


def log(msg: str) -> None:
    print(f"wheel_vendor: {msg}", flush=True)


def fetch(candidates: tuple[Source, ...], cache: Path) -> tuple[Source, Path]:
    """The first candidate that is cached or downloads, its checksum verified; unpacked."""
    errors = []
    for src in candidates:
        archive = cache / src.url.rsplit("/", 1)[1]
        if not archive.exists():
            log(f"downloading {src.url}")
            try:
                with urllib.request.urlopen(src.url, timeout=60) as resp:
                    data = resp.read()
            except OSError as exc:
                errors.append(f"{src.url}: {exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != src.sha256:
                sys.exit(f"wheel_vendor: {src.url}: sha256 {digest}, pinned {src.sha256}")
            archive.write_bytes(data)
        elif hashlib.sha256(archive.read_bytes()).hexdigest() != src.sha256:
            sys.exit(f"wheel_vendor: cached {archive} does not match its pinned sha256; delete it")
        tree = cache / src.top
        if not tree.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(cache, filter="data")
        return src, tree
    sys.exit("wheel_vendor: no source reachable:\n  " + "\n  ".join(errors))


def compile_all(cc: list[str], jobs: list[tuple[Path, Path, list[str]]]) -> None:
    """Compile each (source, object, extra flags) with ``cc``, two at a time."""
    def one(job: tuple[Path, Path, list[str]]) -> None:
        src, obj, flags = job
        obj.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*cc, *CFLAGS, *flags, "-c", str(src), "-o", str(obj)], check=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, jobs))


def archive(ar: list[str], lib: Path, objects: list[Path]) -> None:
    lib.unlink(missing_ok=True)
    subprocess.run([*ar, "rcs", str(lib), *map(str, objects)], check=True)


ARCHIVES = ("liburing.a", "libblosc.a", "libzstd.a", "libz.a")
"""What the prefix's ``lib`` holds (in the stamp: a prefix built before libz.a stood apart
is rebuilt)."""


def build_zstd(cc: list[str], ar: list[str], tree: Path, prefix: Path, work: Path) -> None:
    lib = tree / "lib"
    sources = [p for d in ("common", "compress", "decompress") for p in sorted((lib / d).iterdir())
               if p.suffix in (".c", ".S")]
    jobs = [(s, work / "zstd" / f"{s.parent.name}-{s.name}.o", ["-I", str(lib)]) for s in sources]
    compile_all(cc, jobs)
    archive(ar, prefix / "lib" / "libzstd.a", [j[1] for j in jobs])
    for header in ("zstd.h", "zstd_errors.h", "zdict.h"):
        shutil.copy2(lib / header, prefix / "include" / header)


def build_blosc(cc: list[str], ar: list[str], tree: Path, prefix: Path, work: Path) -> None:
    root = tree / "blosc" / "c-blosc"
    libs = root / "internal-complibs"
    (lz4,) = libs.glob("lz4-*")
    (zlib,) = libs.glob("zlib-*")
    inc = ["-I", str(root / "blosc"), "-I", str(lz4), "-I", str(zlib),
           "-I", str(prefix / "include")]  # zstd's header: the zstd built above
    defs = ["-DHAVE_LZ4", "-DHAVE_ZLIB", "-DHAVE_ZSTD",
            "-DSHUFFLE_SSE2_ENABLED", "-DSHUFFLE_AVX2_ENABLED"]
    jobs = []
    for src in sorted((root / "blosc").glob("*.c")):
        extra = ["-mavx2"] if "avx2" in src.name else []  # chosen at run time by cpuid
        jobs.append((src, work / "blosc" / f"{src.stem}.o", [*inc, *defs, *extra]))
    zjobs = []
    for src in [*sorted(lz4.glob("*.c")), *sorted(zlib.glob("*.c"))]:
        # zlib's gz* file functions are not used by blosc; building them costs nothing.
        flags = [*inc, "-DHAVE_UNISTD_H", "-D_LARGEFILE64_SOURCE=1"]
        job = (src, work / "blosc" / f"{src.parent.name}-{src.stem}.o", flags)
        (zjobs if src.parent == zlib else jobs).append(job)
    compile_all(cc, jobs + zjobs)
    archive(ar, prefix / "lib" / "libblosc.a", [j[1] for j in jobs])
    # zlib apart: lsio's decoder links it too (``-lz``), after libblosc.a
    archive(ar, prefix / "lib" / "libz.a", [j[1] for j in zjobs])
    shutil.copy2(root / "blosc" / "blosc.h", prefix / "include" / "blosc.h")
    shutil.copy2(root / "blosc" / "blosc-export.h", prefix / "include" / "blosc-export.h")
    for header in ("zlib.h", "zconf.h"):
        shutil.copy2(zlib / header, prefix / "include" / header)


def build_liburing(cc: list[str], ar: list[str], tree: Path, prefix: Path, work: Path) -> None:
    build = work / "liburing"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(tree, build)
    wrapper = work / "cc.sh"  # configure takes the compiler as one word
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(cc) + ' "$@"\n')
    wrapper.chmod(0o755)
    # --use-libc: liburing's own syscall layer (nolibc) would define memset and friends.
    subprocess.run(["./configure", f"--cc={wrapper}", "--use-libc"], cwd=build, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["make", "-C", "src", "-j2", "liburing.a", "ENABLE_SHARED=0",
                    f"CC={wrapper}", f"AR={' '.join(ar)}", "RANLIB=true",
                    "CFLAGS=" + " ".join(CFLAGS)], cwd=build, check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copy2(build / "src" / "liburing.a", prefix / "lib" / "liburing.a")
    shutil.copy2(build / "src" / "include" / "liburing.h", prefix / "include" / "liburing.h")
    shutil.copytree(build / "src" / "include" / "liburing", prefix / "include" / "liburing",
                    dirs_exist_ok=True)


def check_licences(trees: dict[str, Path]) -> None:
    """Each committed licence text in ``licenses/`` still holds its upstream text."""
    def words(text: str) -> str:
        return " ".join(re.sub(r"[*#/]", " ", text).split())

    for name, (lib, paths) in LICENCE_TEXTS.items():
        ours = words((ROOT / "licenses" / name).read_text())
        for rel in paths:
            if words((trees[lib] / rel).read_text()) not in ours:
                sys.exit(f"wheel_vendor: licenses/{name} lacks {lib}'s {rel}; update it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", required=True, help="C compiler command (split on spaces)")
    parser.add_argument("--ar", required=True, help="archiver command (split on spaces)")
    parser.add_argument("--prefix", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    args = parser.parse_args()
    cc, ar = args.cc.split(), args.ar.split()
    args.cache.mkdir(parents=True, exist_ok=True)
    picked = {c[0].name: fetch(c, args.cache) for c in (LIBURING, BLOSC, ZSTD)}
    check_licences({name: tree for name, (_, tree) in picked.items()})
    stamp = json.dumps({"sources": [asdict(s) for s, _ in picked.values()],
                        "cc": cc, "cflags": CFLAGS, "archives": ARCHIVES}, sort_keys=True)
    stamp_file = args.prefix / ".stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        log(f"{args.prefix} is up to date")
        return
    shutil.rmtree(args.prefix, ignore_errors=True)
    for sub in ("include", "lib"):
        (args.prefix / sub).mkdir(parents=True)
    work = args.cache / "objects"
    shutil.rmtree(work, ignore_errors=True)
    build_zstd(cc, ar, picked["zstd"][1], args.prefix, work)
    build_blosc(cc, ar, picked["blosc"][1], args.prefix, work)
    build_liburing(cc, ar, picked["liburing"][1], args.prefix, work)
    stamp_file.write_text(stamp)
    versions = ", ".join(f"{s.name} {s.version}" for s, _ in picked.values())
    log(f"built {versions} into {args.prefix}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
