"""The small-call path for URLs (``lsio/backends/http/_small.py``): a call of a few requests,
each of its own object, costs the requests a bare client would send (one GET for a range or
a whole object) and nothing else; and it ends as the bulk path does: same bytes, same
requests to the server, same error (type, errno, message, request index), same missing
results."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import random_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import expected_bytes
from servers import FaultServer, Nginx, serving_faults

import lsio

F = random_bytes(200_000, seed=5)
BIG = random_bytes(4_000_000, seed=6)


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": F, "big.bin": BIG, "empty.bin": b""})


@pytest.fixture
def fs(faults: FaultServer) -> FaultServer:
    faults.reset()
    return faults


def reader(small: bool, **knobs: Any) -> lsio.Reader:
    """Quick retries; ``small=False``: the bulk path only."""
    max_read = knobs.pop("max_read", None)
    opts = {"backoff": 0.001, "backoff_max": 0.01, **knobs}
    return lsio.Reader(max_read=max_read, http=lsio.HttpOptions(**opts),
                       route="auto" if small else "bulk")


def small_route(done: Any) -> bool:
    """Whether the small path served the call that returned (or raised) ``done``."""
    return bool(done.stats.route == "small")


# -- what a call costs ----------------------------------------------------------------------

@pytest.mark.parametrize("request_", [(0, 4096), (0, None), (-100, None), (-100, 10),
                                      (199_990, 100), (5, 1)])
async def test_one_request_per_object(fs: FaultServer, request_: tuple[int, int | None]
                                      ) -> None:
    """A range, a whole object, a suffix: exactly one GET, through the small path."""
    offset, length = request_
    results = await lsio.read_many([(fs.url("ok", "f.bin"), offset, length)])
    (got,) = results
    assert bytes(got) == expected_bytes_of(F, offset, length)
    assert small_route(results)
    assert len(fs.log) == 1, fs.log


async def test_one_range_asks_only_that_range(fs: FaultServer) -> None:
    await lsio.read_many([(fs.url("ok", "f.bin"), 1000, 4096)])
    assert [e["range"] for e in fs.log] == ["bytes=1000-5095"]


async def test_whole_object_is_one_get_sized_by_the_answer(fs: FaultServer) -> None:
    (got,) = await lsio.read_many([(fs.url("ok", "f.bin"),)])
    assert bytes(got) == F
    assert [e["range"] for e in fs.log] == [f"bytes=0-{(8 << 20) - 1}"]  # no HEAD, no probe


async def test_one_request_per_object_over_nginx(served_small: tuple[Nginx, Path, Path]
                                                 ) -> None:
    """The same over a real server, counted in its access log."""
    server, root, log = served_small
    data = (root / "s.bin").read_bytes()
    start = len(log.read_text().splitlines())
    got = await lsio.read_many([(server.url("s.bin"), 0, 4096)])
    assert bytes(got[0]) == data[:4096]
    got = await lsio.read_many([(server.url("s.bin"),)])
    assert bytes(got[0]) == data
    lines = log.read_text().splitlines()[start:]
    assert [re.search(r'"GET (\S+)', line).group(1) for line in lines] == [  # type: ignore[union-attr]
        "/s.bin", "/s.bin"], lines


@pytest.mark.parametrize("reqs", [
    [("503x2", "f.bin", 0, 100)],  # one range: retried twice
    [("503x1", "f.bin", 0, 100), ("429x1", "big.bin", -10, None), ("ok", "f.bin", 5, 10)],
    [("503x1", "big.bin", 0, None)],  # a size probe retried, then the parts after it
])
async def test_stats_count_the_gets_and_retries_the_server_saw(fs: FaultServer,
                                                               reqs: list[Req]) -> None:
    results = await reader(True, max_read=1 << 20).read_many(
        [(fs.url(fault, name), o, ln) for fault, name, o, ln in reqs])
    for (_, name, o, ln), got in zip(reqs, results, strict=True):
        assert bytes(got) == expected_bytes_of(F if name == "f.bin" else BIG, o, ln)
    assert small_route(results)
    assert results.stats.retries == sum(int(f[4:]) for f, *_ in reqs if f != "ok") >= 1
    assert results.stats.operations == len(fs.log) > len(reqs), fs.log  # GETs logged


async def test_stats_of_a_failed_call_count_its_retries(fs: FaultServer) -> None:
    with pytest.raises(OSError) as caught:
        await reader(True, retries=2).read_many([(fs.url("status500", "f.bin"), 0, 10)])
    stats = caught.value.stats  # type: ignore[attr-defined]
    assert stats.route == "small"
    assert (stats.operations, stats.retries) == (len(fs.log), 2) == (3, 2)


async def test_retries_are_logged_at_info_without_secrets(
        fs: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    url = fs.url("status500", "f.bin") + "?sig=SECRET123"
    with caplog.at_level(logging.INFO, logger="lsio"), pytest.raises(OSError):
        await reader(True, retries=2).read_many([(url, 0, 10)])
    retries = [r for r in caplog.records if r.levelno == logging.INFO and "retry" in
               r.getMessage()]
    assert len(retries) == 2, [r.getMessage() for r in caplog.records]
    assert not any("SECRET123" in r.getMessage() for r in caplog.records)


async def test_empty_range_sends_nothing(fs: FaultServer) -> None:
    for small in (True, False):
        got = await reader(small).read_many([(fs.url("ok", "missing.bin"), 5, 0)])
        assert bytes(got[0]) == b""
    assert fs.log == []


async def test_several_objects_go_out_together(fs: FaultServer) -> None:
    """Distinct objects are asked for at once, not one after the other (each answer waits
    20 ms: the server sees several in flight)."""
    fs.files.update({f"h{i}.bin": F[i:i + 1000] for i in range(6)})
    peak = 0
    try:
        task = asyncio.ensure_future(reader(True).read_many(
            [(fs.url("hold", f"h{i}.bin"), 0, None) for i in range(6)]))
        while not task.done():
            peak = max(peak, sum(fs.in_flight.values()))
            await asyncio.sleep(0.002)
        got = task.result()
    finally:
        for i in range(6):
            del fs.files[f"h{i}.bin"]
    assert [bytes(g) for g in got] == [F[i:i + 1000] for i in range(6)]
    assert peak >= 2


async def test_parts_of_a_big_object_keep_the_concurrency_cap(fs: FaultServer) -> None:
    r = reader(True, max_read=256 << 10, concurrency=2)
    results = await r.read_many([(fs.url("hold", "big.bin"), 0, None)])
    (got,) = results
    assert bytes(got) == BIG and small_route(results)
    assert fs.max_in_flight["big.bin"] == 2


async def test_calls_the_small_path_leaves_to_the_bulk_path(fs: FaultServer) -> None:
    url = fs.url("ok", "f.bin")
    calls = [
        await lsio.read_many([(url, 0, 10), (url, 100, 10)]),  # one object twice: merged
        await lsio.read_many([(url, 0, 9 << 20)]),  # longer than max_read: parts
        await lsio.read_many([(url, 0, 10), ("/no/such/local/file", 0, 1)], missing_ok=True),
        await lsio.read_many([(url, 0, None)], out=[bytearray(len(F))]),  # size unknown yet
        await lsio.read_many([(fs.url("ok", f"x{i}.bin"), 0, 1) for i in range(33)],
                             missing_ok=True)]
    assert not any(map(small_route, calls))


@pytest.mark.parametrize("bad", [("\0x", 0, 1), ("", True, 1), ("", 0, -1), ("", 0, 1.5),
                                 ("\ud800", 0, 1)])
async def test_bad_requests_are_named_as_the_bulk_path_names_them(
        fs: FaultServer, bad: tuple[str, Any, Any]) -> None:
    suffix, offset, length = bad
    errors = []
    for small in (True, False):
        with pytest.raises((TypeError, ValueError)) as info:
            await reader(small).read_many([(fs.url("ok", "f.bin"), 0, 10),
                                           (fs.url("ok", "f.bin") + suffix, offset, length)])
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert fs.log == []


async def test_every_plain_shape(fs: FaultServer) -> None:
    """A URL alone, a 1-tuple, a Chunk and a 3-tuple, as the bulk path reads them."""
    reqs: list[Any] = [fs.url("ok", "f.bin"), (fs.url("ok", "big.bin"),),
                       lsio.Chunk(fs.url("ok", "empty.bin"), 0, None),
                       lsio.Chunk(fs.url("short", "f.bin"), -10, 5),
                       (fs.url("norange", "f.bin"), 7, 3)]
    results = await reader(True).read_many(reqs)
    small = [bytes(g) for g in results]
    assert small_route(results)
    bulk = [bytes(g) for g in await reader(False).read_many(reqs)]
    assert small == bulk == [F, BIG, b"", F[-10:-5], F[7:10]]


async def test_out_buffers(fs: FaultServer) -> None:
    out = [bytearray(100), bytearray(50)]
    got = await lsio.read_many([(fs.url("ok", "f.bin"), 7, 100),
                                (fs.url("ok", "big.bin"), 3_999_990, 50)], out=out)
    assert small_route(got)
    assert bytes(out[0]) == F[7:107] and bytes(out[1][:10]) == BIG[-10:]
    assert bytes(got[0]) == F[7:107] and bytes(got[1]) == BIG[-10:]
    with pytest.raises(ValueError, match=r"out\[0\] holds 10 bytes"):
        await lsio.read_many([(fs.url("ok", "f.bin"), 0, 100)], out=[bytearray(10)])


# -- the same outcome as the bulk path ----------------------------------------------------

Req = tuple[str, str, int, int | None]
"""(fault, file name, offset, length)."""

CASES: list[tuple[list[Req], dict[str, Any]]] = [
    ([("ok", "f.bin", 0, 4096)], {}),
    ([("ok", "f.bin", 0, None)], {}),
    ([("ok", "empty.bin", 0, None)], {}),
    ([("ok", "f.bin", -100, None)], {}),
    ([("ok", "f.bin", -100, 10)], {}),
    ([("ok", "f.bin", -300_000, None)], {}),
    ([("ok", "f.bin", 199_990, 100)], {}),
    ([("ok", "f.bin", 300_000, 10)], {}),
    ([("ok", "f.bin", 150_000, None)], {}),
    ([("ok", "missing.bin", 0, 10)], {}),
    ([("ok", "missing.bin", 0, None)], {}),
    ([("ok", "missing.bin", -10, None)], {}),
    ([("ok", "missing.bin", 0, 10)], {"missing_ok": True}),
    ([("503x3", "f.bin", 0, 100)], {}),
    ([("429x2", "f.bin", 0, None)], {}),
    ([("resetx1", "f.bin", 0, 100_000)], {}),
    ([("badlenx2", "f.bin", 10, 1000)], {}),
    ([("norange", "f.bin", 10, 100)], {}),
    ([("norange", "f.bin", 0, None)], {}),
    ([("norange", "f.bin", -50, None)], {}),
    ([("short", "f.bin", 10, 5000)], {}),
    ([("short", "f.bin", 0, None)], {}),
    ([("short", "f.bin", -3000, None)], {}),
    ([("wrongrange", "f.bin", 10, 100)], {}),
    ([("redirect", "f.bin", 5, 10)], {"headers": {"Authorization": "Bearer t"}}),
    ([("loop", "f.bin", 0, 10)], {}),
    ([("status403", "f.bin", 0, 10)], {}),
    ([("status500", "f.bin", 0, 10)], {"retries": 1}),
    ([("status500", "f.bin", 0, None)], {"retries": 1}),
    ([("ok", "f.bin", 0, 10), ("ok", "big.bin", -5, None), ("status404", "f.bin", 0, 10)],
     {}),
    ([("ok", "f.bin", 0, 10), ("status404", "big.bin", -5, None), ("ok", "empty.bin", 0, 1)],
     {"missing_ok": True}),
    ([("status404", "f.bin", 0, 10), ("status403", "big.bin", 0, 10)], {"missing_ok": True}),
    ([("ok", "big.bin", 0, None)], {"max_read": 1 << 20}),
    ([("ok", "big.bin", -3_000_000, None)], {"max_read": 1 << 20}),
    ([("ok", "big.bin", 123, None)], {"max_read": 1 << 20}),
    ([("ok", "big.bin", -2_000_000, 1000)], {"max_read": 1 << 20}),
    ([("slowx9", "f.bin", 0, 10), ("ok", "big.bin", 0, 10)], {"timeout": 0.3}),
]


async def outcome(fs: FaultServer, reqs: list[Req], knobs: dict[str, Any], small: bool
                  ) -> tuple[object, list[tuple[str | None, str | None]]]:
    """What a call ends with (bytes and missing results, or the error's every visible
    part) and the requests the server saw."""
    fs.reset()
    knobs = dict(knobs)
    missing_ok = knobs.pop("missing_ok", False)
    done: Any
    try:
        got = done = await reader(small, **knobs).read_many(
            [(fs.url(fault, name), o, ln) for fault, name, o, ln in reqs],
            missing_ok=missing_ok)
        end: object = [None if g is None else bytes(g) for g in got]
    except OSError as exc:
        done = exc
        end = (type(exc), exc.errno, str(exc), exc.filename,
               getattr(exc, "request_index", None), getattr(exc, "__notes__", None))
    assert small_route(done) == bool(small), "the small path did not serve this call"
    return end, sorted((e["range"], e["host"]) for e in fs.log)


@pytest.mark.parametrize("reqs,knobs", CASES)
async def test_same_outcome_as_the_bulk_path(fs: FaultServer, reqs: list[Req],
                                             knobs: dict[str, Any]) -> None:
    small_end, small_log = await outcome(fs, reqs, knobs, small=True)
    bulk_end, bulk_log = await outcome(fs, reqs, knobs, small=False)
    assert small_end == bulk_end
    if isinstance(small_end, list):  # and right
        for (_, name, o, ln), got in zip(reqs, small_end, strict=True):
            if got is not None:
                assert got == expected_bytes_of(fs.files[name], o, ln)
    if "timeout" not in knobs:  # a deadline cuts the retries anywhere
        assert small_log == bulk_log


async def test_deadline_names_the_request_not_read(fs: FaultServer) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="HttpOptions.timeout=0.3") as info:
        await reader(True, timeout=0.3).read_many([(fs.url("ok", "f.bin"), 0, 10),
                                                   (fs.url("slowx9", "f.bin"), 0, 10)])
    assert time.monotonic() - t0 < 1.5
    assert info.value.request_index == 1  # type: ignore[attr-defined]
    assert info.value.errno == errno.ETIMEDOUT


async def test_cancelled_call_leaves_nothing_running(fs: FaultServer) -> None:
    task = asyncio.ensure_future(reader(True).read_many(
        [(fs.url("slowx9", "f.bin"), 0, 10), (fs.url("slowx9", "big.bin"), 0, 10)]))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if "workers" in repr(t) and not t.done()]
    (got,) = await reader(True).read_many([(fs.url("ok", "f.bin"), 0, 10)])
    assert bytes(got) == F[:10]


# -- against nginx, drawn -------------------------------------------------------------------

NAMES = ["s0.bin", "s1.bin", "s2.bin", "s3.bin", "empty.bin", "one.bin", "mid.bin"]
SIZES = {"s0.bin": 1000, "s1.bin": 9000, "s2.bin": 70_000, "s3.bin": 300_000,
         "empty.bin": 0, "one.bin": 1, "mid.bin": 1_200_000, "s.bin": 20_000}


@pytest.fixture(scope="module")
def served_small(nginx: Nginx) -> Any:
    """Files under the session's nginx root, and a second nginx over the same directory
    that logs every request (the session's one logs none)."""
    root = nginx.root / "small"
    root.mkdir(exist_ok=True)
    root.chmod(0o755)
    for k, (name, size) in enumerate(SIZES.items()):
        (root / name).write_bytes(random_bytes(size, seed=40 + k))
    server = LoggingNginx(root).start()
    try:
        yield server, root, server.log
    finally:
        server.stop()


class LoggingNginx(Nginx):
    """nginx with an access log (one line per request)."""

    def start(self) -> LoggingNginx:
        import servers

        original = servers._CONF
        self.log = Path(self.root) / ".." / f"access-{id(self)}.log"
        self.log = self.log.resolve()
        servers._CONF = original.replace("access_log off;", f"access_log {self.log};")
        try:
            super().start()
        finally:
            servers._CONF = original
        return self


@st.composite
def distinct_requests(draw: st.DrawFn) -> list[tuple[str, int, int | None]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES),
                          unique=True))
    out = []
    for name in names:
        size = SIZES[name]
        offset = draw(st.one_of(st.integers(0, size + 10), st.integers(-size - 10, -1)))
        length = draw(st.one_of(st.none(), st.integers(0, 2_000_000),
                                st.just(sys.maxsize)))
        out.append((name, offset, length))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reqs=distinct_requests(), part=st.sampled_from([8192, 100_000, 8 << 20]))
def test_nginx_matches_source(served_small: tuple[Nginx, Path, Path],
                              reqs: list[tuple[str, int, int | None]], part: int) -> None:
    server, root, _ = served_small
    results = reader(True, max_read=part).read_many_sync(
        [(server.url(n), o, ln) for n, o, ln in reqs])
    for (n, o, ln), got in zip(reqs, results, strict=True):
        assert bytes(got) == expected_bytes(root / n, o, ln)


# -- pure parts ------------------------------------------------------------------------------

def expected_bytes_of(data: bytes, offset: int, length: int | None) -> bytes:
    start = max(len(data) + offset, 0) if offset < 0 else min(offset, len(data))
    return data[start:] if length is None else data[start:start + length]
