"""The command line: ``python -m lsio cat`` writes bytes to stdout; errors give exit codes
and messages a shell user expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import random_bytes


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

