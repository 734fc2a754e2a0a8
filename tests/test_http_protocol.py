"""The sans-IO HTTP protocol module, table-tested without a server (in the spirit of h11):
what each status, header and request list means."""

from __future__ import annotations

import errno
import re
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsio._plan import plan
from lsio._request import normalize
from lsio.backends.http import _protocol as proto


@dataclass(frozen=True)
class StatusCase:
    id: str
    status: int
    errno: int
    retried: bool


STATUS_CASES = [
    StatusCase("not-found", 404, errno.ENOENT, False),
    StatusCase("gone", 410, errno.ENOENT, False),
    StatusCase("unauthorized", 401, errno.EACCES, False),
    StatusCase("forbidden", 403, errno.EACCES, False),
    StatusCase("request-timeout", 408, errno.EIO, True),
    StatusCase("throttled", 429, errno.EIO, True),
    StatusCase("server-error", 500, errno.EIO, True),
    StatusCase("bad-gateway", 502, errno.EIO, True),
    StatusCase("unavailable", 503, errno.EIO, True),
    StatusCase("gateway-timeout", 504, errno.EIO, True),
    StatusCase("not-implemented", 501, errno.EIO, False),
    StatusCase("teapot", 418, errno.EIO, False),
]


@pytest.mark.parametrize("case", STATUS_CASES, ids=lambda c: c.id)
def test_status_errors(case: StatusCase) -> None:
    err = proto.status_error(case.status, "Reason", "http://h/x")
    assert isinstance(err, proto.Retry) == case.retried
    final = err.final if isinstance(err, proto.Retry) else err
    assert final.errno == case.errno
    assert f"HTTP {case.status} Reason from http://h/x" == final.detail


@pytest.mark.parametrize(("status", "headers", "after"), [
    (503, {"Retry-After": "7"}, 7.0), (429, {"Retry-After": "0.25"}, 0.25),
    (500, {}, None), (504, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    (404, {"Retry-After": "7"}, "final"), (403, {"Retry-After": "7"}, "final"),
    (501, {"Retry-After": "7"}, "final")])
def test_status_errors_carry_retry_after(status: int, headers: dict[str, str],
                                         after: float | str | None) -> None:
    """The one status decision: a retried status waits at least the server's
    ``Retry-After`` (seconds; an HTTP date is our own backoff); a final one ignores it."""
    err = proto.status_error(status, None, "http://h/x", headers)
    if after == "final":
        assert isinstance(err, proto.HttpError)
    else:
        assert isinstance(err, proto.Retry) and err.after == after


@pytest.mark.parametrize(("start", "length", "header"), [
    (0, 1, "bytes=0-0"), (100, 4096, "bytes=100-4195"), (-1, 64, "bytes=-64"),
    (2**40, 2, f"bytes={2**40}-{2**40 + 1}")])
def test_range_header(start: int, length: int, header: str) -> None:
    assert proto.range_header(start, length) == header


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), ("3", 3.0), ("0.5", 0.5), ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ("", None)])
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert proto.retry_after(value) == seconds


@pytest.mark.parametrize(("content_type", "boundary"), [
    ("multipart/byteranges; boundary=XYZ", b"XYZ"),
    ('multipart/byteranges; boundary="a b"', b"a b"),
    ("Multipart/ByteRanges;boundary=q", b"q"),
    ("application/octet-stream", None), ("multipart/byteranges", None)])
def test_multipart_boundary(content_type: str, boundary: bytes | None) -> None:
    assert proto.multipart_boundary(content_type) == boundary


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    top = [proto.backoff_delay(a, 0.1, 10.0, None, lambda lo, hi: hi) for a in range(8)]
    assert top == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]
    assert proto.backoff_delay(3, 0.1, 10.0, None, lambda lo, hi: lo) == 0
    assert proto.backoff_delay(0, 0.1, 10.0, 5.0, lambda lo, hi: lo) == 5.0  # Retry-After
    assert proto.backoff_delay(0, 0.1, 10.0, 60.0, lambda lo, hi: lo) == 10.0  # capped
    # a huge retry count must not overflow (2 ** 10_000 as a float does)
    assert proto.backoff_delay(10_000, 0.1, 10.0, None, lambda lo, hi: hi) == 10.0


@pytest.mark.parametrize(("reqs", "need", "tail"), [
    ([("u0", 0, 10)], [False], [0]),                            # a range: no probe
    ([("u0",)], [True], [0]),                                   # whole: head probe
    ([("u0", -100, None)], [True], [100]),                      # suffix only: tail probe
    ([("u0", -100, None), ("u0",)], [True], [0]),               # whole wins: head probe
    ([("u0", 0, sys.maxsize)], [True], [1]),                    # "to the end": 1-byte tail
    ([("u0", 5, 8 << 20)], [False], [0]),                       # up to max_read: no probe
    ([("u0", 5, (8 << 20) + 1)], [True], [1]),                  # longer: size needed
    ([("u0", -(9 << 20), None)], [True], [0]),                  # suffix > max_read: head
], ids=["range", "whole", "suffix", "whole-and-suffix", "maxsize", "max-read", "long",
        "big-suffix"])
def test_size_probes(reqs: list[tuple[object, ...]], need: list[bool], tail: list[int]
                     ) -> None:
    got_need, got_tail = proto.size_probes(normalize(reqs), 8 << 20)
    assert got_need.tolist() == need and got_tail.tolist() == tail


def test_plan_jobs_batch_small_reads_per_file() -> None:
    file = np.array([0, 0, 0, 1, 1, 0], np.int64)
    offset = np.array([0, 10_000, 20_000, 0, 5_000_000, 1 << 30], np.int64)
    length = np.array([100, 100, 100, 100, 4 << 20, 100], np.int64)
    p = plan(file, offset, length, file_size=np.full(2, 2**40, np.int64),
             file_align=np.ones(2, np.int64), max_gap=0, max_read=8 << 20,
             split_size=1 << 30, arena_align=64, own_destinations=False)
    jobs = proto.plan_jobs(p, np.array([True, True]))
    # file 0's four small reads share a request; file 1: one small read alone, one big
    assert sorted(len(j) if isinstance(j, list) else 1 for j in jobs) == [1, 1, 4]
    assert proto.plan_jobs(p, np.array([False, False])) == list(range(p.nops))


_REFERENCE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|(0--1)|\*)/(\d+|\*)", re.I)


def reference_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """The parser written plainly: the regex, then RFC 9110's rules (first <= last <
    total), sizes below ``UNKNOWN_SIZE``, an empty object's ``bytes 0--1/0`` and the empty
    range at an object's end ``bytes N-(N-1)/N``."""
    if not value:
        return None
    m = _REFERENCE.fullmatch(value.strip())
    if m is None:
        return None
    a, b, empty, size = m.groups()
    nums = [x for x in (a, b, size) if x not in (None, "*")]
    if any(len(x) > 19 or int(x) >= proto.UNKNOWN_SIZE for x in nums):
        return None
    total = None if size == "*" else int(size)
    if empty is not None:
        return (0, 0, 0) if total == 0 else None
    if a is None:
        return None if total is None else (-1, -1, total)
    first, last = int(a), int(b)
    if last == first - 1 and total == first:  # Azurite's "bytes N-(N-1)/N": none at the end
        return (first, first, first)
    if first > last or (total is not None and last >= total):
        return None
    return (first, last + 1, total)


DIGITS = st.text(alphabet="0123456789\u0663\u00b2*x ", max_size=4)
"""Number-ish fields: ASCII digits, an Arabic-Indic digit (``\\d`` and ``int`` take it),
a superscript two (``isdigit`` takes it, ``\\d`` does not), and junk."""


@settings(max_examples=1000)
@given(st.one_of(
    st.text(alphabet="bytes BYTES*/-0123456789 \t\u0663\u00b2x", max_size=24),
    st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", st.integers(0, 10**20),
              st.integers(0, 10**20), st.one_of(st.integers(0, 10**20), st.just("*"))),
    st.builds(lambda p, a, b, t: f"{p}{a}-{b}/{t}", st.sampled_from(
        ["bytes ", "bytes  ", "Bytes ", "bytes\t", " bytes ", "bytes="]), DIGITS, DIGITS,
        DIGITS)))
def test_content_range_matches_the_regex(value: str) -> None:
    """The parse of the usual form without the regex gives what the plain parser gives."""
    assert proto.content_range(value) == reference_content_range(value)
