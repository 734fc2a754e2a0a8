"""A compiled module the build left out is explained once, at first use, in the build's words
(``lsio/_build.json``): io_uring through the backend's one ``BackendWarning``, the C chunk
decoder when a zarr read would have used it. Each case runs a copy of the package without its
compiled modules, with the build information the case needs, in a fresh interpreter; the
modules are also hidden through ``sys.modules`` (``None`` there makes an import fail), since
this run's lsio may be an editable install whose finder would supply them. About 5 s.
(``test_sdist.py`` checks the same messages after a real build without the headers.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import check_ok, run_python

import lsio

URING_WHY = "liburing.h not found at build time; install liburing-dev, liburing >= 2.2"
CODECS_WHY = "blosc.h and zstd.h not found at build time; install libblosc-dev"

SCRIPT = r"""
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
sys.modules["lsio._uring"] = sys.modules["lsio._codecs"] = None  # not built
import numpy as np
import lsio
assert lsio.__file__.startswith(sys.argv[1]), lsio.__file__
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        out["backend"] = [lsio.backend_name(), lsio.Reader().backend]
    except OSError as exc:
        out["error"] = str(exc)
    if sys.argv[2] == "zarr":
        import zarr, lsio.zarr
        for name, codec in (("gzip", zarr.codecs.GzipCodec()),  # not the C decoder's
                            ("blosc", zarr.codecs.BloscCodec(cname="zstd"))):
            path = f"{sys.argv[1]}/{name}.zarr"
            a = zarr.create_array(path, shape=(64,), chunks=(16,), dtype="i4",
                                  compressors=codec)
            a[:] = np.arange(64, dtype="i4")
            for _ in range(2):
                assert (lsio.zarr.read_sync(path, (slice(None),)) == np.arange(64)).all()
            out[name] = [str(w.message) for w in caught if "numcodecs" in str(w.message)]
out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
print(json.dumps(out))
"""


def _run(tmp_path: Path, info: dict[str, str | None] | None, mode: str = "",
         **env: str) -> dict:
    """SCRIPT on a copy of the package holding ``info`` as its build information."""
    src = Path(lsio.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "lsio",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "_build.json"))
    if info is not None:
        (tmp_path / "lsio" / "_build.json").write_text(json.dumps(info))
    proc = run_python(SCRIPT, str(tmp_path), mode, env=env, cwd=str(tmp_path), timeout=120)
    return json.loads(check_ok(proc).strip().splitlines()[-1])


def test_build_left_out_io_uring(tmp_path: Path) -> None:
    out = _run(tmp_path, {"lsio._uring": URING_WHY, "lsio._codecs": None})
    assert out["backend"] == ["threads", "threads"]
    (category, message), = out["warnings"]  # one, for two choices
    assert category == "BackendWarning"
    assert f"lsio was built without io_uring: {URING_WHY}; then rebuild lsio: pip " in message
    assert "--force-reinstall" in message and "LSIO_BACKEND=threads" in message
    assert "seccomp" not in message  # the kernel is not why


def test_require_uring_names_the_build(tmp_path: Path) -> None:
    out = _run(tmp_path, {"lsio._uring": URING_WHY}, LSIO_REQUIRE_URING="1")
    assert "backend" not in out and out["warnings"] == []
    assert "io_uring is required but unusable: lsio was built without io_uring" in out["error"]
    assert URING_WHY in out["error"]


@pytest.mark.parametrize("info", [None, {"lsio._uring": None}], ids=["no-info", "built"])
def test_module_that_does_not_load(tmp_path: Path, info: dict[str, str | None] | None
                                   ) -> None:
    """Without the build's word (a bare source tree), or where the build made the module
    and it does not load (a shared library gone since): the import's own error."""
    out = _run(tmp_path, info)
    (_, message), = out["warnings"]
    assert "the lsio._uring extension is not built or does not load (" in message
    assert "built without" not in message and "seccomp" not in message


def test_build_left_out_the_c_decoder(tmp_path: Path) -> None:
    out = _run(tmp_path, {"lsio._uring": URING_WHY, "lsio._codecs": CODECS_WHY}, "zarr")
    assert out["gzip"] == []  # numcodecs decodes gzip anyway: nothing to say
    (message,) = out["blosc"]  # once, though read twice
    assert message.startswith("lsio: zarr chunks are decoded through numcodecs (slower) "
                              "because lsio was built without its C chunk decoder: "
                              f"{CODECS_WHY}; then rebuild lsio: pip ")
