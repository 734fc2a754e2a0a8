"""Smoke test of the HTTP ceiling study (benchmarks/http_ceiling/run.py): both C clients
compile warning-free, read every byte from nginx over HTTP and over HTTPS (io_uring with
OpenSSL over a BIO pair, libcurl with its own), and the report's figures are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import nginx_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_http_ceiling_quick(tmp_path: Path) -> None:
    assert nginx_binary(), "nginx is not installed: run scripts/system-deps.sh --bench"
    assert shutil.which("wrk") and shutil.which("gcc"), "wrk and gcc are needed"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.http_ceiling.run", "--n", "300", "--alternations",
         "1", "--rounds", "1", "--root", str(tmp_path / "data")],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): float(m.group(2).replace(",", "")) for m in re.finditer(
        r"^\| (io_uring sockets, HTTP \(|io_uring sockets, HTTPS|libcurl multi, HTTP \(|wrk"
        r"|libcurl multi, HTTPS)[^|]*\| \d+ \| ([\d,]+) \|", proc.stdout, re.M)}
    assert len(rows) == 5 and all(v > 0 for v in rows.values()), proc.stdout
    for scheme in ("HTTP", "HTTPS"):
        ratio = re.search(rf"io_uring / curl \({scheme}\): ([\d.]+)", proc.stdout)
        assert ratio is not None and float(ratio.group(1)) > 0, proc.stdout
    assert re.search(r"io_uring negotiated TLSv1\.[23]", proc.stdout), proc.stdout
