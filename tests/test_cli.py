"""The command line: ``python -m lsio cat`` writes bytes to stdout; errors give exit codes
and messages a shell user expects; ``lsio demo --quick`` runs every workload and fails on a
wrong result."""

from __future__ import annotations

import json
import re
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
    monkeypatch.setattr(_demo, "demo_data_root", lambda sizes: str(data_dir))
    monkeypatch.setattr(_demo, "demo_cache_state", lambda: (False, "warm: a test"))

    def run() -> tuple[int, list[str], str]:
        code = main(["demo", "--quick"])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err
    return run


def test_demo_quick(quick_demo: Demo, data_dir: Path) -> None:
    """Every workload prints its line; the Zarr array is written once, then reused while it
    matches."""
    code, lines, err = quick_demo()
    assert code == 0, err
    assert lines[0].startswith("lsio demo: backend=")
    zarr_root = data_dir / "lsio-demo-zarr" / "512x512_c128.zarr"
    assert lines[1] == ("Zarr v3 array: 512x512 float32 in 128x128 chunks, blosc-zstd: 16 chunk "
                        f"files, 0.3 MB, written to {zarr_root}")
    assert "warm: a test; medians of 3 alternated rounds, every result kept" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("workload (warm) "))
    assert lines[header + 1].startswith("40 files x 64 KiB, whole ")
    assert lines[header + 2].startswith("200 random 4 KiB ranges of 16 MiB ")
    assert lines[header + 4].split() == ["Zarr", "workload", "(warm),", "ms", "zarr", "lsio",
                                         "pipeline", "ratio", "lsio.zarr.read", "ratio",
                                         "lsio", "GB/s"]
    assert lines[header + 5].startswith("whole array (16 chunks) ")
    assert lines[header + 6].startswith("[125:375, 62:450] (12 chunks) ")
    for row in (1, 2):  # lsio/s, plain loop/s, ratio, GB/s
        assert lines[header + row].split()[-2].endswith("x")
    for row in (5, 6):  # zarr, lsio pipeline, ratio, lsio.zarr.read, ratio, GB/s
        cols = lines[header + row].split()
        assert cols[-4].endswith("x") and cols[-2].endswith("x")

    code, lines, err = quick_demo()  # the array is kept, and read again while it matches
    assert code == 0, err
    assert lines[1].endswith(f"reused from {zarr_root}")
    doc = json.loads((zarr_root / "zarr.json").read_text())
    assert _demo.demo_zarr_matches(str(zarr_root), _demo.QUICK)
    doc["attributes"]["lsio_demo"]["complete"] = False  # as if the writer was killed
    (zarr_root / "zarr.json").write_text(json.dumps(doc))
    assert not _demo.demo_zarr_matches(str(zarr_root), _demo.QUICK)


def test_demo_fails_on_a_short_result(quick_demo: Demo, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """A contender that returns a file less fails the demo (the files hold random bytes:
    their sizes are what the demo checks)."""
    plain = _demo.demo_plain_files

    def one_file_short(paths: list[str]) -> Any:
        return plain(paths)[1:]
    monkeypatch.setattr(_demo, "demo_plain_files", one_file_short)
    code, _, err = quick_demo()
    assert code == 1
    assert "lsio demo: 40 files x 64 KiB, whole: byte counts differ" in err


@pytest.mark.parametrize("contender", ["lsio pipeline", "lsio.zarr.read"])
def test_demo_fails_on_a_wrong_zarr_value(quick_demo: Demo, monkeypatch: pytest.MonkeyPatch,
                                          contender: str) -> None:
    """One value off, in either lsio reader of the Zarr workload, fails the demo."""
    import lsio.zarr  # here: the other tests of the command line need no zarr

    if contender == "lsio pipeline":
        read = lsio.zarr.LsioCodecPipeline.read

        async def one_off_read(self: Any, batch_info: Any, out: Any,
                               drop_axes: tuple[int, ...] = ()) -> None:
            await read(self, batch_info, out, drop_axes)
            out.as_ndarray_like()[0, 0] += 1
        monkeypatch.setattr(lsio.zarr.LsioCodecPipeline, "read", one_off_read)
    else:
        fast = lsio.zarr.read_sync

        def one_off(*args: Any, **kwargs: Any) -> Any:
            got = fast(*args, **kwargs)
            got[0, 0] += 1
            return got
        monkeypatch.setattr(lsio.zarr, "read_sync", one_off)
    code, _, err = quick_demo()
    assert code == 1
    assert re.search(rf"lsio demo: {re.escape(contender)}: 1 of [0-9,]+ values differ from "
                     r"those written to .*512x512_c128.zarr, the first at \(0, 0\)", err), err


def test_demo_without_zarr(quick_demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without zarr-python the demo says so and runs the rest."""
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    code, lines, err = quick_demo()
    assert code == 0, err
    assert lines[1].startswith("Zarr: skipped (") and "pip install 'lsio[zarr]'" in lines[1]
    assert any(line.startswith("40 files x 64 KiB, whole ") for line in lines)
    assert not any(line.startswith("Zarr workload") for line in lines)
