"""The command line: ``python -m lsio cat`` writes bytes to stdout; errors give exit codes
and messages a shell user expects; ``lsio demo --quick`` runs every workload and fails on a
wrong result."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import random_bytes

from lsio import _demo
from lsio.__main__ import main


def lsio_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "lsio", *args], capture_output=True,
                          timeout=60)


def test_cat_whole_file_and_ranges(data_dir: Path) -> None:
    data = random_bytes(100_000, seed=3)
    path = data_dir / "f.bin"
    path.write_bytes(data)
    whole = lsio_cli("cat", str(path), "--no-progress")
    assert whole.returncode == 0 and whole.stdout == data
    parts = lsio_cli("cat", str(path), "--range", "10:20", "--range=-5:", "--range", "99990:")
    assert parts.returncode == 0 and parts.stdout == data[10:20] + data[-5:] + data[99990:]


def test_cat_errors(data_dir: Path) -> None:
    missing = lsio_cli("cat", str(data_dir / "nope"))
    assert missing.returncode == 1 and missing.stdout == b""
    assert b"No such file or directory" in missing.stderr and b"nope" in missing.stderr
    bad = lsio_cli("cat", str(data_dir / "nope"), "--range", "5")
    assert bad.returncode == 2 and b"is not START:END" in bad.stderr
    backwards = lsio_cli("cat", str(data_dir / "nope"), "--range", "9:3")
    assert backwards.returncode == 2 and b"END must be >= START" in backwards.stderr


def test_bench_a_directory(data_dir: Path) -> None:
    for i in range(20):
        (data_dir / f"f{i}.bin").write_bytes(random_bytes(5000, seed=i))
    out = lsio_cli("bench", str(data_dir), "--repeats", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert "20 files or objects" in lines[0]
    assert any(line.startswith("lsio ") for line in lines)
    assert any(line.startswith("plain loop") and "1.00x" in line for line in lines)
    missing = lsio_cli("bench", str(data_dir / "nope"))
    assert missing.returncode == 1 and b"lsio bench:" in missing.stderr


def test_help_everywhere() -> None:
    for args in ([], ["cat"], ["calibrate"], ["demo"], ["bench"]):
        out = lsio_cli(*args, "--help")
        assert out.returncode == 0 and b"usage: lsio" in out.stdout



Demo = Callable[[], tuple[int, list[str], str]]


@pytest.fixture
def quick_demo(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Demo:
    """``lsio demo --quick`` in this process (so a test can break a contender), writing under
    ``data_dir`` and warm: a test leaves the machine's page cache alone, even as root.
    Returns (exit code, stdout lines, stderr)."""
    monkeypatch.setattr(_demo, "_data_root", lambda sizes: str(data_dir))
    monkeypatch.setattr(_demo, "_cache_state", lambda: (False, "warm: a test"))

    def run() -> tuple[int, list[str], str]:
        code = main(["demo", "--quick"])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err
    return run


def test_demo_quick(quick_demo: Demo) -> None:
    code, lines, err = quick_demo()
    assert code == 0, err
    assert lines[0].startswith("lsio demo: backend=")
    assert "warm: a test; medians of 3 alternated rounds, every result kept" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("workload (warm)"))
    assert lines[header + 1].startswith("40 files x 64 KiB, whole ")
    assert lines[header + 2].startswith("200 random 4 KiB ranges of 16 MiB ")
    assert all(line.split()[-2].endswith("x") for line in lines[header + 1:header + 3])


def test_demo_fails_on_a_short_result(quick_demo: Demo, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    plain = _demo._plain_files

    def one_file_short(paths: list[str]) -> Any:
        return plain(paths)[1:]
    monkeypatch.setattr(_demo, "_plain_files", one_file_short)
    code, _, err = quick_demo()
    assert code == 1
    assert "lsio demo: 40 files x 64 KiB, whole: byte counts differ" in err
