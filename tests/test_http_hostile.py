"""Hostile and broken HTTP servers (``tests/servers.py``'s ``FaultServer``): a read from a
server that lies (a malicious multipart answer, a ``Content-Length`` it never sends, a total
of 2^62, a redirect off HTTP) ends soon with the exact bytes or an ``OSError`` naming the
URL, and holds no more memory than the bytes asked for; an empty object (``206 bytes
0--1/0`` or ``416 bytes */0``) reads as ``b""`` on the small and the bulk path.

Reads that could hang or use a lot of memory run in a subprocess (a hard timeout, and its
own peak RSS from ``resource.getrusage``)."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import check_ok, random_bytes, run_python
from servers import FaultServer, serving_faults

import lsio

F = random_bytes(200_000, seed=7)


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": F, "empty.bin": b""})


@pytest.fixture
def fs(faults: FaultServer) -> FaultServer:
    faults.reset()
    return faults


def reader(*, small: bool = True, **knobs: Any) -> lsio.Reader:
    """Quick retries; ``small=False``: the bulk path only."""
    return lsio.Reader(route="small" if small else "bulk", http=lsio.HttpOptions(
        **{"backoff": 0.001, "backoff_max": 0.01, "retries": 2, **knobs}))


PEAK = """
import json, sys
import lsio

def peak_mib():
    # VmHWM, not getrusage's ru_maxrss: a child inherits its parent's ru_maxrss (pytest's,
    # gigabytes by the end of the suite), which would hide any growth here
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

reader = lsio.Reader(route=sys.argv[3],
                     http=lsio.HttpOptions(backoff=0.001, backoff_max=0.01, retries=1))
reader.read_many_sync([(sys.argv[1], 0, 10)])  # warm: session, loop, arenas
before = peak_mib()
try:
    (got,) = reader.read_many_sync([(sys.argv[2], -16 if sys.argv[4] == "tail" else 0, None)])
    outcome = ["ok", bytes(got).hex()]
except OSError as exc:
    outcome = [type(exc).__name__, exc.errno, str(exc), exc.filename]
print(json.dumps({"outcome": outcome, "grew_mib": peak_mib() - before}))
"""
"""Read ``argv[2]`` whole (``argv[4] == "tail"``: its last 16 bytes) on the ``argv[3]``
path; prints the outcome and how much the peak RSS grew."""


def peak_read(fs: FaultServer, url: str, route: str, what: str) -> dict[str, Any]:
    out = check_ok(run_python(PEAK, fs.url("ok", "f.bin"), url, route, what, timeout=120))
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- item 7: Content-Length is not trusted for allocation ----------------------------------

@pytest.mark.parametrize("route", ["small", "bulk"])
def test_content_length_claiming_3_gib_allocates_nothing(fs: FaultServer, route: str) -> None:
    """A 200 claiming 3 GiB that sends 1 KiB: the read fails (truncated) naming the URL, and
    memory grows by the bytes that came, not by the claim (it was 6 GiB of RSS)."""
    url = fs.url(f"claim{3 << 30}", "f.bin")
    result = peak_read(fs, url, route, "whole")
    kind, code, message, filename = result["outcome"]
    assert (kind, code, filename) == ("OSError", errno.EIO, url)
    assert "truncated at 1024" in message
    assert result["grew_mib"] < 64, result


@pytest.mark.parametrize("small", [True, False])
async def test_content_length_of_10_13_is_an_oserror_naming_the_url(
        fs: FaultServer, small: bool) -> None:
    """A claim no machine can allocate (it was a bare ``MemoryError``)."""
    url = fs.url("claim10000000000000", "f.bin")
    with pytest.raises(OSError) as info:
        await reader(small=small).read_many([(url, 0, None)])
    assert info.value.errno == errno.EIO and info.value.filename == url
    assert "truncated at 1024" in str(info.value)


# -- item 8: a suffix from a server ignoring Range keeps only the suffix -------------------

@pytest.mark.parametrize("route", ["small", "bulk"])
def test_suffix_of_a_big_object_from_a_server_ignoring_range(fs: FaultServer,
                                                             route: str) -> None:
    """The last 16 bytes of a 256 MiB object sent whole: exact, and the peak RSS grows by
    far less than the object (it held the whole body)."""
    size = 256 << 20
    result = peak_read(fs, fs.url("zeros", str(size)), route, "tail")
    assert result["outcome"] == ["ok", bytes(i % 251 for i in range(size - 16, size)).hex()]
    assert result["grew_mib"] < 64, result


@pytest.mark.parametrize("small", [True, False])
async def test_suffix_from_a_server_ignoring_range_is_exact(fs: FaultServer,
                                                            small: bool) -> None:
    reqs = [(fs.url("norange", "f.bin"), -n, None) for n in (1, 100, 300_000)]
    for req in reqs:
        (got,) = await reader(small=small).read_many([req])
        assert bytes(got) == F[req[1]:]


# -- item 11: an empty object reads as b"" whatever the server says --------------------------

EMPTY_READS = [(0, 1), (0, None), (0, 10), (5, 10), (-16, None), (-16, 4), (0, 1 << 20)]


@pytest.mark.parametrize("fault", ["azempty", "ok"])  # 206 bytes 0--1/0; 416 bytes */0
@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("req", EMPTY_READS, ids=str)
async def test_any_range_of_an_empty_object_is_empty(fs: FaultServer, fault: str,
                                                     small: bool,
                                                     req: tuple[int, int | None]) -> None:
    results = await reader(small=small).read_many([(fs.url(fault, "empty.bin"), *req)])
    (got,) = results
    assert bytes(got) == b""
    assert results.stats.route == ("small" if small else "bulk")  # the route asked for


@pytest.mark.parametrize("small", [True, False])
async def test_empty_objects_among_others(fs: FaultServer, small: bool) -> None:
    reqs = [(fs.url("azempty", "empty.bin"), 0, 100), (fs.url("ok", "f.bin"), 10, 20),
            (fs.url("azempty", "empty.bin"), -5, None), (fs.url("ok", "empty.bin"), 3, 4)]
    got = await reader(small=small).read_many(reqs)
    assert [bytes(g) for g in got] == [b"", F[10:30], b"", b""]


# -- item 13: redirects off HTTP, a total colliding with "unknown size" ----------------------

@pytest.mark.parametrize("scheme", ["file", "ftp", "s3"])
@pytest.mark.parametrize("small", [True, False])
async def test_redirect_off_http_is_refused_at_once(fs: FaultServer, scheme: str,
                                                    small: bool) -> None:
    url = fs.url(f"to{scheme}", "f.bin")
    with pytest.raises(OSError, match=f"redirected to {scheme}://") as info:
        await reader(small=small, retries=5).read_many([(url, 0, 10)])
    assert info.value.filename == url
    assert len(fs.requests_for("f.bin")) == 1  # not retried


HUGE_TOTAL = """
import json, sys
import lsio
url = sys.argv[1]
outcomes = []
for route in ("small", "bulk"):
    for req in [(0, None), (-4, None), (0, 10)]:
        reader = lsio.Reader(route=route, http=lsio.HttpOptions(backoff=0.001,
                                                                backoff_max=0.01, retries=1))
        try:
            (got,) = reader.read_many_sync([(url, *req)])
            outcomes.append([route, req, "ok", len(got)])
        except OSError as exc:
            outcomes.append([route, req, type(exc).__name__, str(exc), exc.filename])
print(json.dumps(outcomes))
"""


def test_total_of_2_62_is_refused(fs: FaultServer) -> None:
    """2^62 is the size the planner sees for objects of unknown size: an answer claiming it
    is refused (a whole read returned the probe's 10 bytes as the object, or planned 2^62
    bytes of reads and never ended: hence the subprocess)."""
    url = fs.url("hugetotal", "f.bin")
    out = check_ok(run_python(HUGE_TOTAL, url, timeout=60))
    outcomes = json.loads(out.strip().splitlines()[-1])
    assert len(outcomes) == 6
    for route, req, kind, message, filename in outcomes:
        assert (kind, filename) == ("OSError", url), (route, req, message)
        assert "Content-Range" in message, (route, req, message)


# -- item 2: a malicious multipart answer ends --------------------------------------------

MULTI = """
import sys
import lsio
url, size = sys.argv[1], int(sys.argv[2])
reader = lsio.Reader(max_gap=0, http=lsio.HttpOptions(backoff=0.001, backoff_max=0.01,
                                                      retries=1))
reqs = [(url, o, 10) for o in range(0, 100_000, 5_000)]
got = reader.read_many_sync(reqs)
print(repr([bytes(g) for g in got]))
"""


def test_malicious_multipart_answer_ends(fs: FaultServer) -> None:
    """A part whose Content-Range ends before it starts (``bytes 150-99/N``) after a
    preamble looped forever on the event loop; now the multipart answer is refused and the
    ranges are read one by one."""
    proc = run_python(MULTI, fs.url("badmulti", "f.bin"), str(len(F)), timeout=60)
    out = check_ok(proc)
    assert out.strip() == repr([F[o:o + 10] for o in range(0, 100_000, 5_000)])
