"""Build-time only: which of lsio's cffi modules this machine can build, found by trying.

``setup.py`` gives setuptools :class:`ProbingBuildExt` as its ``build_ext``. Before compiling,
it compiles and links one tiny C program per module with the very compiler, include dirs and
libraries the module's own build would use (so ``CC``, ``LDSHARED`` and the builders'
``$LSIO_VENDOR_PREFIX`` options count). A module whose program fails is left out, with one line
in the build output saying why; lsio then runs without it (the thread-pool backend instead of
io_uring; numcodecs instead of the C decoder) and says so once at first use, reading the reason
from ``lsio/_build.json``, which this writes beside the modules. ``LSIO_REQUIRE_URING=1`` turns
a missing io_uring into a build failure, and ``$LSIO_VENDOR_PREFIX`` (``make wheel``) any missing
module. Nothing imports this module at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

BUILD_INFO = "_build.json"
"""Written next to the compiled modules: ``{module: None (built) or why it was not}``."""


@dataclass(frozen=True)
class Needs:
    """What one cffi module needs from the machine that builds it."""

    headers: tuple[str, ...]
    packages: str
    """Where those headers come from, as a user installs them."""
    program: str
    """C that compiles and links only where the module would: it uses the newest library
    functions the module uses."""


NEEDS = {
    "lsio._uring": Needs(
        headers=("liburing.h",),
        # liburing 2.2 added io_uring_register_files_sparse and io_uring_prep_cancel_fd
        packages="liburing-dev (Debian, Ubuntu) or liburing-devel (Fedora, RHEL), "
                 "liburing >= 2.2",
        program="#include <liburing.h>\n"
                "int main(void) {\n"
                "    struct io_uring ring;\n"
                "    void (*cancel)(struct io_uring_sqe *, int, unsigned) = "
                "io_uring_prep_cancel_fd;\n"
                "    (void)cancel;\n"
                "    if (io_uring_queue_init(2, &ring, 0) == 0) {\n"
                "        io_uring_register_files_sparse(&ring, 1);\n"
                "        io_uring_queue_exit(&ring);\n"
                "    }\n"
                "    return 0;\n"
                "}\n"),
    "lsio._codecs": Needs(
        headers=("blosc.h", "zstd.h", "zlib.h"),
        packages="libblosc-dev, libzstd-dev and zlib1g-dev (Debian, Ubuntu) or "
                 "blosc-devel, libzstd-devel and zlib-devel (Fedora, RHEL)",
        program="#include <blosc.h>\n#include <zstd.h>\n#include <zlib.h>\n"
                "int main(void) {\n"
                "    char out[1] = {0};\n"
                "    z_stream zs = {0};\n"
                "    return blosc_decompress_ctx(out, out, 1, 1) + "
                "(int)ZSTD_decompress(out, 1, out, 1) + inflateInit(&zs);\n"
                "}\n"),
    "lsio._curl": Needs(
        headers=("curl/curl.h", "openssl/hmac.h"),
        # libcurl 7.85 added CURLOPT_PROTOCOLS_STR
        packages="libcurl4-openssl-dev and libssl-dev (Debian, Ubuntu) or libcurl-devel and "
                 "openssl-devel (Fedora, RHEL), libcurl >= 7.85",
        program="#include <curl/curl.h>\n#include <openssl/evp.h>\n#include <openssl/hmac.h>\n"
                "int main(void) {\n"
                "    unsigned char md[64];\n"
                "    unsigned int n = 0;\n"
                "    HMAC(EVP_sha256(), md, 32, md, 1, md, &n);\n"
                "    CURL *e = curl_easy_init();\n"
                "    CURLM *m = curl_multi_init();\n"
                "    if (e) curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, \"http,https\");\n"
                "    curl_multi_cleanup(m);\n"
                "    curl_easy_cleanup(e);\n"
                "    return 0;\n"
                "}\n"),
}
"""Every optional cffi module, by its full name (``set_source``'s)."""

OPTIONAL_IN_WHEEL = frozenset({"lsio._curl"})
"""Modules a vendored wheel (``make wheel``) may leave out: the C HTTP transport links the
system's libcurl, which a portable wheel cannot assume."""


@contextlib.contextmanager
def _captured(path: str) -> Iterator[None]:
    """Everything written to this process's stdout and stderr (the compiler's output, the
    commands setuptools logs) goes to ``path`` instead of the build output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, target in zip(saved, (1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)


def _first_error(output: str) -> str:
    """The compiler's or linker's first line that says what went wrong (not the driver's
    closing "ld returned 1 exit status")."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    telling = [ln for ln in lines if "ld returned" not in ln and any(
        word in ln.lower() for word in ("error", "undefined", "cannot find", "not found"))]
    return (telling or lines or ["no output"])[0][:300]


def _attempt(compiler: Any, ext: Any, tmp: str, name: str, program: str, link: bool
             ) -> tuple[str, str] | None:
    """``None`` if ``program`` compiles (and links, if ``link``), else the step that failed
    (``"compile"`` or ``"link"``) and the compiler's output."""
    src, log = os.path.join(tmp, f"{name}.c"), os.path.join(tmp, f"{name}.log")
    with open(src, "w") as f:
        f.write(program)
    step = "compile"
    try:
        with _captured(log):
            objects = compiler.compile([src], output_dir=tmp,
                                       include_dirs=list(ext.include_dirs or []))
            step = "link"
            if link:
                compiler.link_executable(
                    objects + list(ext.extra_objects or []), os.path.join(tmp, name),
                    libraries=list(ext.libraries or []),
                    library_dirs=list(ext.library_dirs or []),
                    extra_postargs=list(ext.extra_link_args or []))
    except (CompileError, LinkError):
        with open(log) as f:
            return step, f.read()
    return None


def probe(compiler: Any, ext: Any, needs: Needs) -> str | None:
    """``None`` if ``needs.program`` compiles and links with ``compiler`` (a customized
    distutils compiler) under ``ext``'s include dirs and libraries, else why not: the
    headers not found (each tried alone, whatever the compiler's language), else the first
    error of the compile or the link."""
    with tempfile.TemporaryDirectory(prefix="lsio-probe-") as tmp:
        missing = [h for i, h in enumerate(needs.headers) if _attempt(
            compiler, ext, tmp, f"header{i}", f"#include <{h}>\nint main(void) {{ return 0; }}\n",
            link=False) is not None]
        if missing:
            return f"{' and '.join(missing)} not found"
        failed = _attempt(compiler, ext, tmp, "probe", needs.program, link=True)
    if failed is None:
        return None
    step, output = failed
    if step == "compile":
        return f"a test program using {' and '.join(needs.headers)} did not compile " \
               f"({_first_error(output)})"
    libs = [os.path.basename(a) for a in ext.extra_objects or []]
    libs += [f"-l{name}" for name in ext.libraries or []]
    return f"a test program did not link with {' '.join(libs)} ({_first_error(output)})"


class ProbingBuildExt(build_ext):  # type: ignore[misc,unused-ignore]  # untyped setuptools
    """setuptools' ``build_ext``, building only the modules this machine can build."""

    def build_extensions(self) -> None:
        info: dict[str, str | None] = {}
        for ext in list(self.extensions):
            needs = NEEDS.get(ext.name)
            if ext.name in OPTIONAL_IN_WHEEL and os.environ.get("LSIO_VENDOR_PREFIX"):
                problem: str | None = "not carried by the portable wheel"
            else:
                problem = None if needs is None else probe(self.compiler, ext, needs)
            if needs is not None:
                info[ext.name] = None if problem is None else \
                    f"{problem} at build time; install {needs.packages}"
            if ext.name in OPTIONAL_IN_WHEEL and os.environ.get("LSIO_VENDOR_PREFIX"):
                info[ext.name] = "not carried by the portable wheel (it links the system's " \
                                 "libcurl): HTTP goes through aiohttp"
            if problem is None:
                continue
            if ext.name == "lsio._uring" and os.environ.get("LSIO_REQUIRE_URING") == "1":
                sys.exit(f"lsio: LSIO_REQUIRE_URING=1 but lsio._uring (io_uring) cannot be "
                         f"built: {info[ext.name]}")
            if ext.name not in OPTIONAL_IN_WHEEL and os.environ.get("LSIO_VENDOR_PREFIX"):
                # make wheel: a wheel carries every module but the optional ones
                sys.exit(f"lsio: {ext.name} cannot be built with LSIO_VENDOR_PREFIX="
                         f"{os.environ['LSIO_VENDOR_PREFIX']}: {problem}")
            print(f"lsio: not building {ext.name}: {info[ext.name]}", file=sys.stderr)
            self.extensions.remove(ext)
        self._info = os.path.join(os.path.dirname(self.get_ext_fullpath("lsio._uring")),
                                  BUILD_INFO)
        os.makedirs(os.path.dirname(self._info), exist_ok=True)
        with open(self._info, "w") as f:
            json.dump(info, f, indent=1)
        super().build_extensions()

    def copy_extensions_to_source(self) -> None:
        """In place (``pip install -e``): the modules go to the source tree, and so must
        what the build says about them."""
        super().copy_extensions_to_source()
        package_dir = self.get_finalized_command("build_py").get_package_dir("lsio")
        self.copy_file(self._info, os.path.join(package_dir, BUILD_INFO), level=self.verbose)
