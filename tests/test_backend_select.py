"""Backend choice: ``LSIO_BACKEND``, ``LSIO_REQUIRE_URING``, and the fallback when the ring is
unusable (one ``BackendWarning`` naming the reason). Each case runs in a fresh interpreter:
the choice is made once per process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import check_ok, run_python

import lsio

REASON = "io_uring_setup failed: Operation not permitted (errno 1)"

# Prints a JSON summary: backend names, warnings seen, and whether a read worked.
SCRIPT = r"""
import json, os, sys, warnings
warnings.simplefilter("always")
import lsio, lsio._ring
if os.environ.get("BREAK_RING") == "1":
    # what a seccomp-blocked or sysctl-disabled io_uring looks like to lsio
    lsio._ring.probe = lambda: "io_uring_setup failed: Operation not permitted (errno 1)"
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        out["default"] = lsio.backend_name()
        r = lsio.read_many_sync([(sys.argv[1], 2, 5)])
        out["read"] = bytes(r[0]).decode()
        out["reader"] = lsio.Reader().backend
        out["threads"] = lsio.Reader(backend="threads").backend
        out["read_again"] = bytes(lsio.Reader().read_many_sync([sys.argv[1]])[0]).decode()
    except Exception as exc:
        out["error"] = [type(exc).__name__, str(exc), isinstance(exc, OSError)]
    try:
        out["explicit_uring"] = lsio.Reader(backend="uring").backend
    except Exception as exc:
        out["explicit_uring_error"] = [type(exc).__name__, str(exc), isinstance(exc, OSError)]
out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)  # a clean interpreter exit is test_loops.py's business, not this module's
"""


@pytest.fixture
def text_file(data_dir: Path) -> str:
    p = data_dir / "hello.txt"
    p.write_text("0123456789")
    return str(p)


def run(text_file: str, **env: str) -> dict:
    proc = run_python(SCRIPT, text_file, env=env, timeout=60)
    out = check_ok(proc)
    return json.loads(out.strip().splitlines()[-1])


def test_default_is_uring_without_warning(text_file: str) -> None:
    out = run(text_file)
    assert out["default"] == out["reader"] == out["explicit_uring"] == "uring"
    assert out["threads"] == "threads"
    assert out["read"] == "23456" and out["read_again"] == "0123456789"
    assert out["warnings"] == []


def test_env_forces_threads_without_warning(text_file: str) -> None:
    out = run(text_file, LSIO_BACKEND="threads")
    assert out["default"] == out["reader"] == "threads"
    assert out["explicit_uring"] == "uring"  # an explicit argument beats the environment
    assert out["read"] == "23456" and out["read_again"] == "0123456789"
    assert out["warnings"] == []


def test_env_threads_with_broken_ring_does_not_warn(text_file: str) -> None:
    out = run(text_file, LSIO_BACKEND="threads", BREAK_RING="1")
    assert out["default"] == "threads" and out["read"] == "23456"
    assert out["warnings"] == []


def test_env_uring(text_file: str) -> None:
    out = run(text_file, LSIO_BACKEND="uring")
    assert out["default"] == "uring" and out["read"] == "23456"
    assert out["warnings"] == []


def test_env_invalid_backend(text_file: str) -> None:
    out = run(text_file, LSIO_BACKEND="io_uring")
    name, message, _ = out["error"]
    assert name == "ValueError"
    assert "'io_uring'" in message


@pytest.mark.parametrize("name", ["io_uring", "URING", "thread", "local"])
def test_invalid_backend_argument(name: str) -> None:
    with pytest.raises(ValueError, match="backend"):
        lsio.Reader(backend=name)  # type: ignore[arg-type]


def test_require_uring_with_working_ring(text_file: str) -> None:
    out = run(text_file, LSIO_REQUIRE_URING="1")
    assert out["default"] == out["reader"] == "uring"
    assert out["read"] == "23456" and out["warnings"] == []


def test_unusable_ring_falls_back_with_one_warning(text_file: str) -> None:
    out = run(text_file, BREAK_RING="1")
    assert out["default"] == out["reader"] == out["threads"] == "threads"
    assert out["read"] == "23456" and out["read_again"] == "0123456789"
    # several readers, one warning, naming the reason and the fix
    assert len(out["warnings"]) == 1, out["warnings"]
    category, message = out["warnings"][0]
    assert category == "BackendWarning"
    assert REASON in message
    assert "LSIO_BACKEND=threads" in message
    # asking for the ring explicitly is an error naming the reason, not a fallback
    name, message, is_oserror = out["explicit_uring_error"]
    assert is_oserror and REASON in message


def test_unusable_ring_with_require_uring_raises(text_file: str) -> None:
    out = run(text_file, BREAK_RING="1", LSIO_REQUIRE_URING="1")
    name, message, is_oserror = out["error"]
    assert is_oserror, out
    assert REASON in message
    assert "default" not in out  # nothing fell back
    assert out["warnings"] == []


WARNING_SITE_SCRIPT = r"""
import sys, warnings
import lsio, lsio._ring
lsio._ring.probe = lambda: "io_uring_setup failed: Operation not permitted (errno 1)"
def user_code():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if sys.argv[1] == "reader":
            lsio.Reader()  # line 8
        else:
            lsio.read_many_sync([])  # line 10
    (w,) = caught
    print(w.filename, w.lineno)
user_code()
"""


@pytest.mark.parametrize(("entry", "line"), [("reader", 8), ("module-function", 10)])
def test_warning_points_at_the_callers_line(data_dir: Path, entry: str, line: int) -> None:
    """``warnings.filterwarnings(..., module=...)`` and the printed location only work if
    the warning is attributed to the user's call, not to lsio or the caller's caller."""
    script = data_dir / "user_script.py"
    script.write_text(WARNING_SITE_SCRIPT.lstrip("\n"))
    proc = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')",
                      entry, timeout=60)
    filename, lineno = check_ok(proc).split()
    assert (filename, int(lineno)) == (str(script), line)


def test_backend_is_the_one_this_run_asks_for() -> None:
    """The default backend, in a fresh process with this run's ``LSIO_BACKEND`` and
    ``LSIO_REQUIRE_URING`` and in this process: ``LSIO_BACKEND`` if set, else io_uring on
    Linux (``make test`` sets ``LSIO_REQUIRE_URING=1`` there; the session guard has checked
    that the ring works), the thread pool elsewhere."""
    env = {k: os.environ[k] for k in ("LSIO_BACKEND", "LSIO_REQUIRE_URING") if k in os.environ}
    want = env.get("LSIO_BACKEND") or ("uring" if sys.platform.startswith("linux") else "threads")
    proc = run_python("import lsio; print(lsio.backend_name(), lsio.Reader().backend)",
                      env=env, timeout=60)
    assert check_ok(proc).split() == [want, want]
    assert lsio.backend_name() == want
    assert lsio.Reader(backend="uring").backend == "uring"
    assert lsio.Reader(backend="threads").backend == "threads"
