"""Fuzzing the HTTP parsers of untrusted input: ``Content-Range`` values, ``multipart/
byteranges`` bodies, and listing pages (S3 XML, GCS JSON, Azure XML). Random and mutated
inputs; each parse ends within a time bound, allocates no more than a few times its input,
and gives the exact answer (for well-formed input) or a clear error (``ValueError`` from
the protocol module, ``HttpError`` naming the URL from a listing parser).

``make test`` runs a small derandomized budget (plus every ``@example``); ``make fuzz``
explores 50x longer (``tests/fuzzing.py``). A parse that might loop forever is stopped by an
alarm here; the item-2 reproducer runs in a subprocess with a hard timeout."""

from __future__ import annotations

import contextlib
import signal
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from conftest import check_ok, run_python
from fuzzing import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lsio.backends.cloud.aws import parse_page as parse_s3_page
from lsio.backends.cloud.azure import parse_page as parse_azure_page
from lsio.backends.cloud.gcp import parse_page as parse_gcs_page
from lsio.backends.http._protocol import UNKNOWN_SIZE, HttpError, content_range, parse_multipart

pytestmark = pytest.mark.fuzz

T = TypeVar("T")

BOUND_S = 2.0
"""Seconds any one parse may take (they take microseconds to milliseconds)."""


class ParseHang(BaseException):
    """A parse ran past its time bound. A ``BaseException``: hypothesis lets it through at
    once instead of shrinking (each shrink step would hang for the bound again), so a
    regression fails in seconds; the message carries the input."""


@contextlib.contextmanager
def time_bound(what: object, seconds: float = BOUND_S) -> Iterator[None]:
    """Raise ParseHang in the parse of ``what`` if it runs longer than ``seconds`` (pure
    Python: the signal handler runs between bytecodes, so a loop cannot hold it off)."""
    def expired(signum: int, frame: Any) -> None:
        raise ParseHang(f"parse did not end within {seconds} s: {what!r:.2000}")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def bounded(fn: Callable[[], T], what: str | bytes) -> T:
    """``fn()`` (the parse of ``what``) within the time bound, allocating at most
    ``8 * len(what) + 256 KiB`` at peak (tracemalloc counts Python's allocations: the
    parsers' copies and lists)."""
    tracemalloc.start()
    try:
        with time_bound(what):
            result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(what)
    assert peak <= 8 * size + (256 << 10), f"parse of {size} bytes allocated {peak} bytes"
    return result


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each (kind, position, bytes) edit: 0 overwrite, 1 insert, 2 delete."""
    out = bytearray(data)
    for kind, at, piece in edits:
        at = at % (len(out) + 1)
        if kind == 0:
            out[at:at + len(piece)] = piece
        elif kind == 1:
            out[at:at] = piece
        else:
            del out[at:at + len(piece)]
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16),
                           st.binary(min_size=1, max_size=8)), max_size=6)
"""Random overwrites, insertions and deletions (``mutate``)."""


# -- Content-Range ----------------------------------------------------------------------

def check_content_range(value: str) -> None:
    got = bounded(lambda: content_range(value), value)
    if got is None:
        return
    a, b, total = got
    if a == -1:  # bytes */total
        assert b == -1 and total is not None and 0 <= total < UNKNOWN_SIZE
        return
    assert 0 <= a <= b < UNKNOWN_SIZE  # a > b looped parse_multipart (item 2)
    assert a < b or a == b == total  # an empty range: only at an object's end (Azurite)
    assert total is None or b <= total < UNKNOWN_SIZE


NUMBERS = st.one_of(st.integers(0, 2**64), st.sampled_from([UNKNOWN_SIZE - 1, UNKNOWN_SIZE,
                                                            UNKNOWN_SIZE + 1, -1]))


@settings(max_examples=examples(300))
@given(st.one_of(
    st.text(max_size=40),
    st.text(alphabet="bytes */-0123456789\t\u0663", max_size=40),
    st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", NUMBERS, NUMBERS,
              st.one_of(NUMBERS, st.just("*"))),
    st.builds(lambda n: f"bytes 0-1/{'9' * n}", st.integers(0, 10_000))))
@example("bytes 150-99/1000")  # item 2: ends before it starts
@example("bytes 0--1/0")  # item 11: Azurite's empty blob
@example("bytes 7-6/7")  # Azurite: a range from the end of a 7-byte blob
@example(f"bytes 0-9/{1 << 62}")  # item 13: the unknown-size sentinel
@example("bytes 0-1/" + "9" * 5000)  # int() refuses over 4 300 digits
def test_content_range_fuzz(value: str) -> None:
    check_content_range(value)


@settings(max_examples=examples(300))
@given(st.integers(0, UNKNOWN_SIZE - 2), st.integers(0, UNKNOWN_SIZE - 2),
       st.one_of(st.none(), st.integers(0, UNKNOWN_SIZE - 1)))
def test_content_range_exact(a: int, b: int, total: int | None) -> None:
    value = f"bytes {a}-{b}/{'*' if total is None else total}"
    valid = a <= b and (total is None or b < total)
    at_end = b == a - 1 and total == a  # Azurite's "bytes N-(N-1)/N"
    assert content_range(value) == ((a, b + 1, total) if valid else (a, a, a) if at_end
                                    else None)


# -- multipart/byteranges ------------------------------------------------------------------

def multipart_body(parts: list[tuple[int, bytes]], total: int, boundary: bytes,
                   preamble: bytes, epilogue: bytes) -> bytes:
    out = [preamble]
    for start, data in parts:
        out.append(b"\r\n--" + boundary + b"\r\nContent-Type: application/octet-stream\r\n"
                   + f"Content-Range: bytes {start}-{start + len(data) - 1}/{total}".encode()
                   + b"\r\n\r\n" + data)
    out.append(b"\r\n--" + boundary + b"--\r\n" + epilogue)
    return b"".join(out)


BOUNDARY = st.binary(min_size=1, max_size=20).filter(lambda b: b"\r\n" not in b)
PARTS = st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=300)),
                 min_size=1, max_size=8)
QUIET = st.binary(max_size=30).filter(lambda b: b"--" not in b)
"""Preambles and epilogues (no delimiter can start in them)."""


def check_multipart(body: bytes, boundary: bytes) -> list[tuple[int, int, bytes]] | None:
    """The parse of ``body``: its parts (checked to be views of it), or None if refused."""
    view = memoryview(body)
    try:
        parts, total = bounded(lambda: parse_multipart(view, boundary), body)
    except ValueError:
        return None
    out = []
    for start, end, data in parts:
        assert 0 <= start <= end and len(data) == end - start
        assert total is None or end <= total
        assert data.obj is body  # a view: no copy
        out.append((start, end, bytes(data)))
    return out


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.filter_too_much])
@given(PARTS, BOUNDARY, QUIET, QUIET)
def test_multipart_well_formed_is_exact(parts: list[tuple[int, bytes]], boundary: bytes,
                                        preamble: bytes, epilogue: bytes) -> None:
    total = 20_000
    body = multipart_body(parts, total, boundary, preamble, epilogue)
    if any(boundary in data or (b"--" + boundary) in body[:len(preamble) + 2]
           for _, data in parts):
        return  # a part's bytes holding the delimiter is ambiguous by design
    got = check_multipart(body, boundary)
    assert got == [(s, s + len(d), d) for s, d in parts]


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.filter_too_much])
@given(PARTS, BOUNDARY, QUIET, EDITS)
@example([(150, b"x" * 10)], b"B", b"preamble", [(0, 30, b"150-99")])
def test_multipart_mutated_ends_exact_or_refused(parts: list[tuple[int, bytes]],
                                                boundary: bytes, preamble: bytes,
                                                edits: list[tuple[int, int, bytes]]) -> None:
    body = mutate(multipart_body(parts, 20_000, boundary, preamble, b""), edits)
    check_multipart(body, boundary)


@settings(max_examples=examples(200))
@given(st.binary(max_size=2000), BOUNDARY)
@example(b"preamble\r\n--B\r\nContent-Range: bytes 150-99/1000\r\n\r\n--B--", b"B")
@example(b"--B\r\nContent-Range: bytes 0--1/0\r\n\r\n--B--", b"B")
@example(b"--B\r\nContent-Range: bytes 0-0/5\r\n\r\nx--B\r\nContent-Range: bytes 1-1/6"
         b"\r\n\r\ny--B--", b"B")
def test_multipart_random_bytes(body: bytes, boundary: bytes) -> None:
    check_multipart(body, boundary)


def test_multipart_reproducer_ends_in_a_subprocess() -> None:
    """Item 2's body: ``parse_multipart`` found the same delimiter forever (RSS +35 MiB/s).
    In a subprocess with a hard timeout, so a regression fails in seconds."""
    code = """
    from lsio.backends.http._protocol import parse_multipart
    body = (b"preamble\\r\\n--B\\r\\nContent-Range: bytes 150-99/1000\\r\\n\\r\\n"
            b"--B\\r\\nContent-Range: bytes 0-0/1000\\r\\n\\r\\nx\\r\\n--B--\\r\\n")
    try:
        parse_multipart(memoryview(body), b"B")
    except ValueError as exc:
        print("refused:", exc)
    """
    out = check_ok(run_python(code, timeout=20))
    assert "refused: part with an invalid Content-Range" in out


# -- listing pages -------------------------------------------------------------------------

URL = "https://bucket.example/?list"

S3_PAGE = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws'
           b'.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>'
           b'<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>'
           b'<NextContinuationToken>tok</NextContinuationToken><Contents><Key>p/a%20b</Key>'
           b'<Size>3</Size></Contents><Contents><Key>p/c</Key></Contents><CommonPrefixes>'
           b'<Prefix>p/d/</Prefix></CommonPrefixes></ListBucketResult>')
GCS_PAGE = (b'{"kind": "storage#objects", "items": [{"name": "p/a b"}, {"name": "p/c"}], '
            b'"prefixes": ["p/d/"], "nextPageToken": "tok"}')
AZURE_PAGE = (b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c">'
              b'<Prefix>p/</Prefix><Blobs><Blob><Name>p/a b</Name></Blob><Blob><Name '
              b'Encoded="true">p%2Fc</Name></Blob><BlobPrefix><Name>p/d/</Name></BlobPrefix>'
              b'</Blobs><NextMarker>tok</NextMarker></EnumerationResults>')

LISTINGS: list[tuple[str, Callable[[bytes, str], tuple[list[str], list[str], str | None]],
                     bytes]] = [("s3", parse_s3_page, S3_PAGE), ("gcs", parse_gcs_page, GCS_PAGE),
                                ("azure", parse_azure_page, AZURE_PAGE)]


def check_listing(parse: Callable[[bytes, str], tuple[list[str], list[str], str | None]],
                  body: bytes) -> tuple[list[str], list[str], str | None] | None:
    try:
        keys, prefixes, token = bounded(lambda: parse(body, URL), body)
    except HttpError as exc:
        assert URL in exc.detail  # names the page
        return None
    assert all(isinstance(k, str) for k in keys) and all(isinstance(p, str) for p in prefixes)
    assert token is None or isinstance(token, str)
    return keys, prefixes, token


@pytest.mark.parametrize(("name", "parse", "page"), LISTINGS, ids=[x[0] for x in LISTINGS])
def test_listing_pages_exact(name: str, parse: Any, page: bytes) -> None:
    names = ["p/a b", "p/c"]
    assert check_listing(parse, page) == (names, ["p/d/"], "tok")


DEEP = [b"[" * 100_000, b'{"items": ' + b"[" * 100_000, b"<a>" * 50_000,
        b'<?xml version="1.0" encoding="nope"?><a/>', b"\xff\xfe<\x00a\x00/\x00>\x00",
        b'<!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;&x;&x;">'
        b'<!ENTITY z "&y;&y;&y;&y;&y;&y;&y;&y;&y;&y;">]><a>&z;&z;&z;&z;&z;</a>',
        b'{"items": [{"name": 1}]}', b'{"prefixes": "abc"}', b"1e99999", b"9" * 5000]
"""Hostile pages: deep nesting (a RecursionError is not a clear error), odd encodings,
entity expansion, wrong JSON types, numbers ``int`` refuses."""


@pytest.mark.parametrize(("name", "parse", "page"), LISTINGS, ids=[x[0] for x in LISTINGS])
@pytest.mark.parametrize("body", DEEP, ids=range(len(DEEP)))
def test_listing_hostile_pages(name: str, parse: Any, page: bytes, body: bytes) -> None:
    check_listing(parse, body)


@settings(max_examples=examples(150))
@given(st.sampled_from(LISTINGS), st.one_of(st.binary(max_size=600), st.text(
    alphabet='<>/="{}[]:, abcdNameBlobKeyitems', max_size=300).map(str.encode)))
def test_listing_random_bytes(listing: Any, body: bytes) -> None:
    check_listing(listing[1], body)


@settings(max_examples=examples(300))
@given(st.sampled_from(LISTINGS), EDITS)
def test_listing_mutated_pages(listing: Any, edits: list[tuple[int, int, bytes]]) -> None:
    check_listing(listing[1], mutate(listing[2], edits))
