"""The conformance kit: every backend must return exactly what ``os.pread`` returns, raise
the same errors, and honour ``out=``, ``iter_many`` and the ``Results`` contract."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import pathlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from conftest import check_ok, drop_cache, fd_count, random_bytes, run_python, write_file
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import expected_bytes

import lsio

# -- helpers ------------------------------------------------------------------------------


def as_tuple(req: Any) -> tuple[Any, int, int | None]:
    if isinstance(req, lsio.Chunk):
        return req.path, req.offset, req.length
    if isinstance(req, tuple):
        return (req[0], 0, None) if len(req) == 1 else req
    return req, 0, None


def check_results(results: lsio.Results, requests: list[Any]) -> None:
    assert isinstance(results, lsio.Results)
    assert len(results) == len(requests)
    want = [expected_bytes(*as_tuple(r)) for r in requests]
    got = [bytes(v) for v in results]
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert g == w, f"request #{i} {requests[i]!r}: got {len(g)} bytes, want {len(w)}"
    assert results.lengths.tolist() == [len(w) for w in want]
    assert results.nbytes == sum(map(len, want))


SIZES = [0, 1, 4095, 4096, 4097, (1 << 20) + 3]


@pytest.fixture(scope="module")
def files(module_data_dir: Path) -> dict[int, str]:
    """Files of awkward sizes on a real disk, keyed by size."""
    return {n: str(write_file(module_data_dir / f"f{n}", random_bytes(n, seed=n)))
            for n in SIZES + [100, 10_000, 70_000]}


# -- byte-for-byte against os.pread: the property -----------------------------------------

PROPERTY_SIZES = [0, 1, 100, 4095, 4096, 4097, 10_000, 70_000]


@st.composite
def request_lists(draw: st.DrawFn) -> tuple[str, list[tuple[int, int, int | None]]]:
    """(style, [(file index, offset, length)]): EOF crossings, zero lengths, duplicates,
    suffixes, many files."""
    n = len(PROPERTY_SIZES)
    offset = st.one_of(st.integers(-80_000, 80_000), st.sampled_from(
        [0, 1, -1, 4095, 4096, 4097, -4096, 69_999, 70_000, 70_001]))
    length = st.one_of(st.none(), st.integers(0, 80_000), st.sampled_from([0, 1, 4096]),
                       st.sampled_from([sys.maxsize, 2**62, 2**32 + 1]))  # "to the end"
    one = st.tuples(st.integers(0, n - 1), offset, length)
    reqs = draw(st.lists(one, max_size=40))
    if reqs and draw(st.booleans()):  # duplicates
        reqs += draw(st.lists(st.sampled_from(reqs), max_size=5))
    # Mixing lsio.Chunk or PathLike objects into a list of tuples has its own table test
    # (test_mixed_request_forms), so that one failure there does not hide others here.
    style = draw(st.sampled_from(["tuple", "chunk", "mixed", "file-url"]))
    return style, reqs


def build_requests(paths: list[str], style: str, reqs: list[tuple[int, int, int | None]],
                   pick: Callable[[int], int]) -> list[Any]:
    out: list[Any] = []
    for i, (f, off, n) in enumerate(reqs):
        path = paths[f]
        if style == "file-url":  # file:// URLs, percent-encoded, read as local paths
            out.append((f"file://{quote(path)}", off, n))
        elif style == "chunk":
            out.append(lsio.Chunk(path, off, n))
        elif style == "tuple" or (off, n) != (0, None):
            out.append((path, off, n))
        else:  # whole file, written two more ways
            out.append([(path,), path][pick(i) % 2])
    return out


@settings(max_examples=60, deadline=None)
@given(data=request_lists())
def test_property_matches_pread(backend: lsio.Reader, files: dict[int, str],
                                data: tuple[str, list[tuple[int, int, int | None]]]) -> None:
    style, reqs = data
    paths = [files[n] for n in PROPERTY_SIZES]
    requests = build_requests(paths, style, reqs, pick=lambda i: i)

    async def main() -> lsio.Results:
        return await backend.read_many(requests)

    results = asyncio.run(main())
    check_results(results, requests)


@settings(max_examples=25, deadline=None)
@given(data=request_lists(), direct=st.sampled_from([True, None]))
def test_property_direct_matches_pread(files: dict[int, str], direct: bool | None,
                                       data: tuple[str, list[Any]]) -> None:
    """The same property through O_DIRECT (widened, aligned reads) on a real disk."""
    style, reqs = data
    paths = [files[n] for n in PROPERTY_SIZES]
    requests = build_requests(paths, style, reqs, pick=lambda i: i + 1)
    reader = lsio.Reader(backend="uring", direct=direct)
    check_results(reader.read_many_sync(requests), requests)


# -- whole files, all request forms -------------------------------------------------------

@pytest.mark.parametrize("direct", [None, True, False], ids=["auto", "direct", "buffered"])
@pytest.mark.parametrize("size", SIZES)
async def test_whole_file(backend: lsio.Reader, files: dict[int, str], size: int,
                          direct: bool | None) -> None:
    reader = lsio.Reader(backend=backend.backend, direct=direct)
    path = files[size]
    requests: list[Any] = [path, (path,), lsio.Chunk(path), (path, 0, None),
                           lsio.Chunk(pathlib.Path(path)), pathlib.Path(path)]
    results = await reader.read_many(requests)
    data = Path(path).read_bytes()
    assert len(data) == size
    for i, view in enumerate(results):
        assert bytes(view) == data, f"form #{i}"


async def test_many_files_in_one_call(backend: lsio.Reader, data_dir: Path) -> None:
    blobs = [random_bytes(i * 37 % 5000, seed=i) for i in range(500)]
    paths = [str(write_file(data_dir / f"m{i}", b)) for i, b in enumerate(blobs)]
    requests = [(p, 0, None) for p in paths] + [(p, -7, 3) for p in paths[::-1]]
    results = await backend.read_many(requests)
    check_results(results, requests)


@pytest.mark.parametrize("direct", [None, True, False], ids=["auto", "direct", "buffered"])
def test_large_request_list_matches_pread(backend: lsio.Reader, files: dict[int, str],
                                          direct: bool | None) -> None:
    """Thousands of reads in one call (the engine may split such calls over several
    threads and rings): random ranges, suffixes, EOF crossings, zero lengths, duplicates."""
    rng = np.random.default_rng(2024)
    paths = [files[n] for n in (100, 4097, 10_000, 70_000, (1 << 20) + 3)]
    sizes = [os.path.getsize(p) for p in paths]
    requests: list[Any] = []
    for _ in range(6000):
        f = int(rng.integers(len(paths)))
        off = int(rng.integers(-sizes[f] - 10, sizes[f] + 10))
        length = None if rng.random() < 0.05 and sizes[f] < 100_000 else int(
            rng.integers(0, 9000))
        requests.append((paths[f], off, length))
    requests += requests[:100]
    reader = lsio.Reader(backend=backend.backend, direct=direct)
    check_results(reader.read_many_sync(requests), requests)


@pytest.mark.parametrize(("queue_depth", "max_open"), [(1, None), (1, 1), (2, 3), (7, None),
                                                       (512, 2)])
async def test_queue_depth_and_max_open(backend: lsio.Reader, files: dict[int, str],
                                        data_dir: Path, queue_depth: int,
                                        max_open: int | None) -> None:
    paths = [str(write_file(data_dir / f"q{i}", random_bytes(i * 53, seed=i)))
             for i in range(100)]
    big = files[(1 << 20) + 3]
    requests = [(p, 0, None) for p in paths] + [(big, i * 9973, 5000) for i in range(100)]
    requests += [(p, -20, 10) for p in paths[::-3]]
    for direct in (None, True):
        reader = lsio.Reader(backend=backend.backend, queue_depth=queue_depth,
                             max_open_files=max_open, direct=direct)
        check_results(await reader.read_many(requests), requests)


@dataclass(frozen=True)
class OptionCase:
    id: str
    kwargs: dict[str, Any]
    exc: type[Exception]
    match: str


OPTION_CASES = [
    OptionCase("queue-depth-zero", {"queue_depth": 0}, ValueError, "queue_depth"),
    OptionCase("queue-depth-above-ring", {"queue_depth": 100_000}, ValueError, "queue_depth"),
    OptionCase("queue-depth-float", {"queue_depth": 8.0}, ValueError, "queue_depth"),
    OptionCase("direct-string", {"direct": "yes"}, TypeError, "direct"),
    OptionCase("max-open-zero", {"max_open_files": 0}, ValueError, "max_open_files"),
    OptionCase("max-open-negative", {"max_open_files": -3}, ValueError, "max_open_files"),
    OptionCase("threads-zero", {"threads": 0}, ValueError, "threads"),
    OptionCase("backend-unknown", {"backend": "http"}, ValueError, "backend"),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c.id for c in OPTION_CASES])
def test_reader_rejects_bad_options(case: OptionCase) -> None:
    with pytest.raises(case.exc, match=case.match):
        lsio.Reader(**case.kwargs)


async def test_empty_request_list(backend: lsio.Reader) -> None:
    results = await backend.read_many([])
    assert len(results) == 0 and results.nbytes == 0 and list(results) == []


@dataclass(frozen=True)
class FormCase:
    id: str
    make: Callable[[str], list[Any]]


FORM_CASES = [
    FormCase("tuples", lambda p: [(p, 0, 5), (p, 5, None)]),
    FormCase("chunks", lambda p: [lsio.Chunk(p, 0, 5), lsio.Chunk(p, -5)]),
    FormCase("bare-paths", lambda p: [p, p]),
    FormCase("one-tuples", lambda p: [(p,), (p,)]),
    FormCase("pathlike", lambda p: [pathlib.Path(p), (pathlib.Path(p), 1, 2)]),
    FormCase("numpy-ints", lambda p: [(p, np.int64(3), np.int32(4)), (p, np.int64(-3), None)]),
    FormCase("generator", lambda p: ((p, i, 1) for i in range(5))),
    FormCase("tuple-of-requests", lambda p: ((p, 0, 1), (p, 1, 1))),
    FormCase("chunk-then-tuple", lambda p: [lsio.Chunk(p, 0, 5), (p, 5, 5)]),
    FormCase("tuple-then-chunk", lambda p: [(p, 0, 5), lsio.Chunk(p, 5, 5)]),
    FormCase("tuple-then-bare-path", lambda p: [(p, 0, 5), p, (p,)]),
    FormCase("tuple-then-pathlike", lambda p: [(p, 0, 5), pathlib.Path(p)]),
    FormCase("bare-path-then-chunk", lambda p: [p, lsio.Chunk(p, 5, 5)]),
]


@pytest.mark.parametrize("case", FORM_CASES, ids=[c.id for c in FORM_CASES])
async def test_mixed_request_forms(backend: lsio.Reader, files: dict[int, str],
                                   case: FormCase) -> None:
    """Every documented request form is accepted, alone or mixed in one list."""
    requests = case.make(files[100])
    results = await backend.read_many(requests)
    check_results(results, list(case.make(files[100])))


# -- errors -------------------------------------------------------------------------------

def check_request_error(exc: OSError, path: str, index: int) -> None:
    assert exc.filename == path
    assert exc.request_index == index  # type: ignore[attr-defined]
    notes = getattr(exc, "__notes__", [])
    assert any(f"request #{index}" in n for n in notes), notes


@dataclass(frozen=True)
class ErrCase:
    id: str
    exc: type[OSError]
    errno: int
    make: Callable[[Path], str]
    """Builds the failing path inside the data directory."""
    offset: int = 0
    length: int | None = None


def _symlink_loop(d: Path) -> str:
    (d / "loop-a").symlink_to(d / "loop-b")
    (d / "loop-b").symlink_to(d / "loop-a")
    return str(d / "loop-a")


def _dangling(d: Path) -> str:
    (d / "dangling").symlink_to(d / "nowhere")
    return str(d / "dangling")


def _under_file(d: Path) -> str:
    (d / "plain").write_bytes(b"x")
    return str(d / "plain" / "child")


ERR_CASES = [
    ErrCase("missing-file", FileNotFoundError, errno.ENOENT, lambda d: str(d / "missing")),
    ErrCase("missing-dir", FileNotFoundError, errno.ENOENT, lambda d: str(d / "no" / "f")),
    ErrCase("directory", IsADirectoryError, errno.EISDIR, lambda d: str(d)),
    ErrCase("missing-zero-length", FileNotFoundError, errno.ENOENT,
            lambda d: str(d / "missing"), 0, 0),
    ErrCase("missing-suffix", FileNotFoundError, errno.ENOENT, lambda d: str(d / "missing"),
            -10),
    ErrCase("directory-zero-length", IsADirectoryError, errno.EISDIR, lambda d: str(d), 5, 0),
    ErrCase("not-a-directory", NotADirectoryError, errno.ENOTDIR, _under_file),
    ErrCase("symlink-loop", OSError, errno.ELOOP, _symlink_loop),
    ErrCase("dangling-symlink", FileNotFoundError, errno.ENOENT, _dangling),
    ErrCase("name-too-long", OSError, errno.ENAMETOOLONG, lambda d: str(d / ("x" * 300))),
]


@pytest.mark.parametrize("case", ERR_CASES, ids=[c.id for c in ERR_CASES])
async def test_error(backend: lsio.Reader, data_dir: Path, case: ErrCase) -> None:
    path = case.make(data_dir)
    with pytest.raises(case.exc) as info:
        await backend.read_many([(path, case.offset, case.length)])
    assert info.value.errno == case.errno
    check_request_error(info.value, path, 0)


@pytest.mark.parametrize("case", ERR_CASES[:3], ids=[c.id for c in ERR_CASES[:3]])
def test_error_sync(backend: lsio.Reader, data_dir: Path, case: ErrCase) -> None:
    path = case.make(data_dir)
    with pytest.raises(case.exc) as info:
        backend.read_many_sync([(path, case.offset, case.length)])
    check_request_error(info.value, path, 0)


SPECIAL_FILE_SCRIPT = r"""
import os, sys
import lsio
reader = lsio.Reader(backend=sys.argv[1])
try:
    r = reader.read_many_sync([(sys.argv[2], 0, None)])
    print("returned", r.nbytes)
except OSError as exc:
    print("raised", type(exc).__name__, exc.request_index, exc.errno, exc)
"""


@pytest.mark.parametrize("kind", ["fifo", "char-device", "block-device"])
def test_special_files_are_refused(backend: lsio.Reader, data_dir: Path, kind: str) -> None:
    """FIFOs and devices have no size to plan with (``/dev/vda`` and a FIFO used to return
    ``b""``; a FIFO could block forever): refused at once with an OSError naming the path,
    the request and the kind of file. Runs in a child so a hang cannot take the suite."""
    import stat
    import subprocess

    if kind == "fifo":
        path = str(data_dir / "fifo")
        os.mkfifo(path)
    elif kind == "char-device":
        path = "/dev/null"
    else:
        path = next((os.path.join("/dev", n) for n in sorted(os.listdir("/dev"))
                     if stat.S_ISBLK(os.stat(os.path.join("/dev", n)).st_mode)), "")
        if not path:
            pytest.skip("no block device in /dev")
    try:
        proc = run_python(SPECIAL_FILE_SCRIPT, backend.backend, path, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"read_many([{path}]) blocked for 20 s")
    out = check_ok(proc)
    assert out.startswith("raised OSError 0 22 "), out
    assert "lsio reads regular files only" in out and path in out, out


async def test_error_in_the_middle_reports_its_index(backend: lsio.Reader,
                                                     files: dict[int, str],
                                                     data_dir: Path) -> None:
    good = [(files[SIZES[i % len(SIZES)]], i, 100) for i in range(2000)]
    missing = str(data_dir / "missing")
    requests = good[:1234] + [(missing, 0, 10)] + good[1234:]
    await backend.read_many(good)  # warm up: this loop's ring, worker threads
    before = fd_count()
    with pytest.raises(FileNotFoundError) as info:
        await backend.read_many(requests)
    check_request_error(info.value, missing, 1234)
    assert fd_count() == before
    # the reader is still usable after a failure
    check_results(await backend.read_many(good[:50]), good[:50])


async def test_lowest_failing_index_wins(backend: lsio.Reader, files: dict[int, str],
                                         data_dir: Path) -> None:
    a, b = str(data_dir / "missing-a"), str(data_dir / "missing-b")
    requests: list[Any] = [(files[100], 0, 10)] * 300
    requests[250] = (b, 0, None)
    requests[120] = (a, 0, None)  # a is also the first distinct failing path
    requests[40] = (str(data_dir), 0, None)  # directory: lowest index
    requests[270] = (b, 0, None)
    with pytest.raises(IsADirectoryError) as info:
        await backend.read_many(requests)
    check_request_error(info.value, str(data_dir), 40)


async def test_iter_many_raises(backend: lsio.Reader, files: dict[int, str],
                                data_dir: Path) -> None:
    missing = str(data_dir / "missing")
    with pytest.raises(FileNotFoundError) as info:
        async for _ in backend.iter_many([(files[100], 0, 1), (missing, 0, 1)]):
            pass
    check_request_error(info.value, missing, 1)


PERMISSION_SCRIPT = r"""
import asyncio, json, os, sys
import lsio
backend, root = sys.argv[1], sys.argv[2]
reader = lsio.Reader(backend=backend)
reader.read_many_sync([])  # warm up: imports, ring, pool, as root
os.setgid(65534)
os.setuid(65534)  # nobody: mode 000 files and closed directories are now refused
os.chdir(root)
def fds():
    return len(os.listdir("/proc/self/fd"))
def expect(requests, what):
    before = fds()
    try:
        reader.read_many_sync(requests)
    except PermissionError as exc:
        assert exc.errno == 13, exc
        index = exc.request_index
        assert exc.filename == requests[index][0], (exc.filename, requests[index])
        assert any(f"request #{index}" in n for n in exc.__notes__), exc.__notes__
        # fail-fast waits for the reads in flight: nothing is left open
        assert fds() == before, (what, before, fds())
        return index
    raise AssertionError(f"{what}: no PermissionError")
good = [(f"g{i}", 0, None) for i in range(1500)]
print("open", expect([("secret", 0, None)], "open"))
# an empty file is opened too: lsio never claims bytes of a file it could not open
print("empty", expect([("empty-secret", 0, None)], "empty"))
print("empty-suffix", expect(good[:3] + [("empty-secret", -10, None)], "empty-suffix"))
print("stat", expect([("closed/x", 0, 10)], "stat"))
print("middle", expect(good[:1000] + [("secret", 5, 10)] + good[1000:], "middle"))
print("middle-stat", expect(good[:700] + [("closed/x", 0, 1)] + good[700:], "middle-stat"))
# iter_many: every chunk yielded before the error has the right bytes
def read_range(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
async def it(requests):
    wrong, seen = [], 0
    try:
        async for i, buf in reader.iter_many(requests):
            seen += 1
            if bytes(buf) != read_range(*requests[i]):
                wrong.append(i)
    except PermissionError as exc:
        return seen, wrong, exc.request_index
    return seen, wrong, None
# the failing file first, then many whole files
seen, wrong, index = asyncio.run(it([("secret", 0, None)] + [(p, 0, 3000) for p, _, _ in good]))
print("iter-first", seen, len(wrong), index)
assert index == 0, index
assert not wrong, f"iter_many yielded {len(wrong)} of {seen} wrong chunks, e.g. {wrong[:5]}"
# many (> 2048) reads of page-cached files, the failing file in the middle
ranges = [(p, k * 1500, 1500) for p, _, _ in good for k in range(2)]
seen, wrong, index = asyncio.run(it(ranges[:2000] + [("secret", 0, None)] + ranges[2000:]))
print("iter-middle", seen, len(wrong), index)
assert index == 2000, index
assert not wrong, f"iter_many yielded {len(wrong)} of {seen} wrong chunks, e.g. {wrong[:5]}"
print("ok")
"""


@pytest.fixture(scope="module")
def permission_tree(module_data_dir: Path) -> Path:
    root = module_data_dir / "perm"
    root.mkdir()
    for i in range(1500):
        # owned by the child's user, so it may ask the kernel what is cached (cachestat)
        os.chown(write_file(root / f"g{i}", random_bytes(3000, seed=i)), 65534, 65534)
    write_file(root / "secret", b"top secret" * 100).chmod(0)
    write_file(root / "empty-secret", b"").chmod(0)
    (root / "closed").mkdir()
    write_file(root / "closed" / "x", b"hidden")
    (root / "closed").chmod(0)
    for d in (module_data_dir, root):
        d.chmod(0o755)
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to 'nobody'")
def test_permission_errors(backend: lsio.Reader, permission_tree: Path) -> None:
    """Root ignores file modes, so the reads run in a child that became ``nobody``: a
    refused open (mode 000) and a refused stat (closed directory), alone and in the
    middle of a long list, and through iter_many."""
    proc = run_python(PERMISSION_SCRIPT, backend.backend, str(permission_tree))
    out = check_ok(proc)
    assert "open 0\nempty 0\nempty-suffix 3\nstat 0\nmiddle 1000\nmiddle-stat 700\n" in out, out
    assert out.strip().endswith("ok"), out


# -- bad input: TypeError/ValueError naming the request, before any I/O --------------------

@dataclass(frozen=True)
class BadCase:
    id: str
    exc: type[Exception]
    match: str
    bad: Callable[[str], Any]
    """The bad request (given a good path); it is placed at index 3."""


BAD_CASES = [
    BadCase("empty-tuple", TypeError, r"request #3", lambda p: ()),
    BadCase("two-tuple", TypeError, r"request #3", lambda p: (p, 0)),
    BadCase("four-tuple", TypeError, r"request #3", lambda p: (p, 0, 1, 2)),
    BadCase("list-not-tuple", TypeError, r"request #3", lambda p: [p, 0, 1]),
    BadCase("int-request", TypeError, r"request #3", lambda p: 42),
    BadCase("none-request", TypeError, r"request #3", lambda p: None),
    BadCase("dict-request", TypeError, r"request #3", lambda p: {"path": p}),
    BadCase("none-path", TypeError, r"request #3.*path", lambda p: (None, 0, 1)),
    BadCase("bytes-path", TypeError, r"request #3.*path", lambda p: (p.encode(), 0, 1)),
    BadCase("int-path", TypeError, r"request #3.*path", lambda p: (7, 0, 1)),
    BadCase("empty-path", ValueError, r"request #3.*path", lambda p: ("", 0, 1)),
    BadCase("nul-in-path", ValueError, r"request #3.*NUL", lambda p: (p + "\0x", 0, 1)),
    BadCase("negative-length", ValueError, r"request #3.*length", lambda p: (p, 0, -1)),
    BadCase("negative-length-chunk", ValueError, r"request #3.*length",
            lambda p: lsio.Chunk(p, 0, -5)),
    BadCase("float-offset", TypeError, r"request #3.*offset", lambda p: (p, 1.0, 2)),
    BadCase("float-length", TypeError, r"request #3.*length", lambda p: (p, 0, 2.0)),
    BadCase("str-offset", TypeError, r"request #3.*offset", lambda p: (p, "0", 2)),
    BadCase("bool-offset", TypeError, r"request #3.*offset", lambda p: (p, True, 2)),
    BadCase("bool-length", TypeError, r"request #3.*length", lambda p: (p, 0, False)),
    BadCase("offset-over-64-bits", ValueError, r"request #3", lambda p: (p, 2**63, 1)),
    BadCase("length-over-64-bits", ValueError, r"request #3", lambda p: (p, 0, 2**64)),
    BadCase("chunk-bytes-path", TypeError, r"request #3.*path",
            lambda p: lsio.Chunk(p.encode())),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("context", ["after-paths", "after-tuples"])
@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
async def test_bad_request(backend: lsio.Reader, files: dict[int, str], data_dir: Path,
                           case: BadCase, context: str) -> None:
    # Index 0 names a missing file: had any I/O started, FileNotFoundError would win. The
    # good requests around the bad one are bare paths or (path, offset, length) tuples.
    good = files[100]
    missing = str(data_dir / "missing")
    if context == "after-paths":
        requests = [missing, good, good, case.bad(good), good]
    else:
        requests = [(missing, 0, 1), (good, 0, 1), (good, 0, None), case.bad(good),
                    (good, 1, 1)]
    with pytest.raises(case.exc, match=case.match):
        await backend.read_many(requests)
    with pytest.raises(case.exc, match=case.match):
        backend.read_many_sync(requests)
    with pytest.raises(case.exc, match=case.match):
        async for _ in backend.iter_many(requests):
            pass


@pytest.mark.parametrize("single", ["path", b"path", pathlib.Path("path")],
                         ids=["str", "bytes", "pathlike"])
async def test_single_path_instead_of_list(backend: lsio.Reader, single: Any) -> None:
    with pytest.raises(TypeError, match="list of requests"):
        await backend.read_many(single)


@dataclass(frozen=True)
class OutCase:
    id: str
    exc: type[Exception]
    match: str
    out: Callable[[], list[Any]]
    before_io: bool = True


OUT_CASES = [
    OutCase("too-few-buffers", ValueError, r"2 buffers for 3", lambda: [bytearray(10)] * 2),
    OutCase("too-many-buffers", ValueError, r"4 buffers for 3", lambda: [bytearray(10)] * 4),
    OutCase("read-only-bytes", TypeError, r"out\[1\].*read-only",
            lambda: [bytearray(10), b"x" * 10, bytearray(10)]),
    OutCase("read-only-numpy", TypeError, r"out\[2\].*read-only",
            lambda: [bytearray(10), bytearray(10), _readonly(np.zeros(10, np.uint8))]),
    OutCase("not-a-buffer", TypeError, r"out\[0\]", lambda: [[0] * 10, bytearray(10),
                                                             bytearray(10)]),
    OutCase("not-contiguous", ValueError, r"out\[1\].*contiguous",
            lambda: [bytearray(10), np.zeros(20, np.uint8)[::2], bytearray(10)]),
    OutCase("too-small", ValueError, r"out\[1\].*request #1",
            lambda: [bytearray(10), bytearray(9), bytearray(10)], before_io=False),
]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("case", OUT_CASES, ids=[c.id for c in OUT_CASES])
async def test_bad_out(backend: lsio.Reader, files: dict[int, str], data_dir: Path,
                       case: OutCase) -> None:
    good = files[100]
    first = str(data_dir / "missing") if case.before_io else good
    requests = [(first, 0, 10), (good, 0, 10), (good, 50, 10)]
    with pytest.raises(case.exc, match=case.match):
        await backend.read_many(requests, out=case.out())


# -- out= ---------------------------------------------------------------------------------

async def test_out_numpy_slices(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[70_000]
    requests = [(path, 0, 1000), (path, 69_500, 1000), (path, -300, None), (path, 5, 0),
                (path, 4096, 4096)]
    want = [expected_bytes(*r) for r in requests]
    arena = np.full(sum(map(len, want)) + 5 * 16, 0xEE, np.uint8)
    out, pos = [], 0
    for w in want:
        out.append(arena[pos : pos + len(w) + 16])  # 16 spare bytes each
        pos += len(w) + 16
    results = await backend.read_many(requests, out=out)
    for i, (w, o) in enumerate(zip(want, out, strict=False)):
        assert bytes(results[i]) == w
        assert bytes(o[: len(w)]) == w, f"out[{i}] did not receive the bytes"
        assert (o[len(w) :] == 0xEE).all(), f"out[{i}] written past the chunk"
        assert np.shares_memory(np.frombuffer(results[i], np.uint8), o) or len(w) == 0
    assert results.lengths.tolist() == [len(w) for w in want]


async def test_out_many_slices_of_one_array(backend: lsio.Reader, files: dict[int, str]
                                            ) -> None:
    """Thousands of destinations (the engine may spread such calls over threads)."""
    path = files[(1 << 20) + 3]
    arena = np.zeros(3000 * 300, np.uint8)
    out = [arena[i * 300 : (i + 1) * 300] for i in range(3000)]
    requests = [(path, i * 331, 300) for i in range(3000)]
    results = await backend.read_many(requests, out=out)
    data = Path(path).read_bytes()
    assert arena.tobytes() == b"".join(data[i * 331 : i * 331 + 300] for i in range(3000))
    assert bytes(results[2999]) == data[2999 * 331 : 2999 * 331 + 300]


async def test_out_typed_and_2d_buffers(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[10_000]
    rows = np.zeros((4, 1024), np.uint8)
    floats = np.zeros(128, np.float64)
    big_endian = np.zeros(16, ">u4")
    requests = [(path, i * 1024, 1024) for i in range(4)] + [(path, 0, 1024), (path, 8, 64)]
    out = list(rows) + [floats, big_endian]
    results = await backend.read_many(requests, out=out)
    check_results(results, requests)
    assert rows.tobytes() == expected_bytes(path, 0, 4096)
    assert floats.tobytes() == expected_bytes(path, 0, 1024)
    assert big_endian.tobytes() == expected_bytes(path, 8, 64)


async def test_out_to_eof_exact_size(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[4097]
    buf = bytearray(4097)
    results = await backend.read_many([(path, 0, None)], out=[buf])
    assert bytes(buf) == Path(path).read_bytes() == bytes(results[0])


async def test_out_with_direct_reader(files: dict[int, str]) -> None:
    """A direct reader still writes unaligned user buffers correctly."""
    reader = lsio.Reader(backend="uring", direct=True)
    path = files[(1 << 20) + 3]
    raw = bytearray(10_000)
    out = [memoryview(raw)[1:5001], memoryview(raw)[5003:]]
    requests = [(path, 7, 5000), (path, -4997, None)]
    results = await reader.read_many(requests, out=out)
    check_results(results, requests)
    assert bytes(raw[1:5001]) == expected_bytes(path, 7, 5000)


# -- direct I/O ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def disk_file(module_data_dir: Path) -> str:
    return str(write_file(module_data_dir / "disk.bin", random_bytes(3 * (1 << 20) + 1234, 9)))


UNALIGNED = [(0, 1), (1, 4095), (4095, 2), (4096, 4096), (12_345, 67_890), (-1, None),
             (-5000, 3000), (3 * (1 << 20), None), (3 * (1 << 20) + 1000, 10_000),
             (511, 513), (0, None), (10 ** 9, 5)]


async def test_direct_modes_give_identical_bytes(backend: lsio.Reader, disk_file: str) -> None:
    requests = [(disk_file, o, n) for o, n in UNALIGNED]
    got = {}
    for direct in (None, True, False):
        reader = lsio.Reader(backend=backend.backend, direct=direct)
        results = await reader.read_many(requests)
        check_results(results, requests)
        got[direct] = [bytes(v) for v in results]
    assert got[None] == got[True] == got[False]


async def test_tmpfs_with_direct(backend: lsio.Reader, tmpfs_dir: Path) -> None:
    """tmpfs may refuse O_DIRECT: direct=True must fall back to buffered, not fail."""
    path = str(write_file(tmpfs_dir / "t.bin", random_bytes(100_003, 4)))
    reader = lsio.Reader(backend=backend.backend, direct=True)
    requests = [(path, o, n) for o, n in UNALIGNED]
    check_results(await reader.read_many(requests), requests)


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


class _CacheRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def cached_pages(path: str) -> int:
    """Pages of ``path`` in the page cache (cachestat(2), Linux 6.5+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        cs, rng = _CacheStat(), _CacheRange(0, 0)
        if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
            err = ctypes.get_errno()
            pytest.skip(f"cachestat unavailable: {os.strerror(err)}")
        return int(cs.cache)
    finally:
        os.close(fd)


def evict(path: str) -> None:
    drop_cache(path)
    if cached_pages(path) > 16:
        pytest.skip("cannot evict the file from the page cache here")


@pytest.mark.skipif(sys.platform != "linux", reason="page cache introspection is Linux-only")
@pytest.mark.parametrize(("direct", "expect_cached"), [(True, False), (False, True),
                                                       (None, False)],
                         ids=["direct", "buffered", "auto-cold-file"])
async def test_direct_mode_and_page_cache(data_dir: Path, direct: bool | None,
                                          expect_cached: bool) -> None:
    """O_DIRECT reads bypass the page cache, buffered ones fill it. ``direct=None`` is
    documented to read a file with O_DIRECT when most of it is not cached: a cold file."""
    path = str(write_file(data_dir / "cold.bin", random_bytes(8 << 20, 5)))
    evict(path)
    reader = lsio.Reader(backend="uring", direct=direct)
    results = await reader.read_many([(path, 0, None)])
    pages = cached_pages(path)  # before anything else reads the file
    assert bytes(results[0]) == Path(path).read_bytes()
    total = (8 << 20) // 4096
    if expect_cached:
        assert pages >= total // 2, f"buffered read left only {pages}/{total} pages cached"
    else:
        assert pages < total // 10, (
            f"direct={direct} read of a cold file filled the page cache "
            f"({pages}/{total} pages): it was not read with O_DIRECT")


# -- iter_many ----------------------------------------------------------------------------

async def test_iter_many_yields_each_index_once(backend: lsio.Reader,
                                                files: dict[int, str]) -> None:
    paths = [files[n] for n in PROPERTY_SIZES]
    requests: list[Any] = [(p, o, n) for p in paths for o, n in
                           [(0, None), (-10, None), (5, 0), (100, 5000), (10 ** 6, 1)]]
    requests += requests[:7]  # duplicates
    seen: dict[int, bytes] = {}
    async for i, buf in backend.iter_many(requests):
        assert isinstance(i, int) and i not in seen
        assert isinstance(buf, memoryview) and buf.readonly
        seen[i] = bytes(buf)
    assert sorted(seen) == list(range(len(requests)))
    for i, r in enumerate(requests):
        assert seen[i] == expected_bytes(*r), f"request #{i}"


async def test_iter_many_with_out(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[10_000]
    requests = [(path, i * 100, 100) for i in range(50)]
    out = [bytearray(100) for _ in requests]
    seen = {}
    async for i, buf in backend.iter_many(requests, out=out):
        seen[i] = bytes(buf)
    assert sorted(seen) == list(range(50))
    for i, r in enumerate(requests):
        assert seen[i] == bytes(out[i]) == expected_bytes(*r)


async def test_iter_many_empty_and_zero_length(backend: lsio.Reader,
                                               files: dict[int, str]) -> None:
    assert [x async for x in backend.iter_many([])] == []
    got = [(i, bytes(b)) async for i, b in backend.iter_many([(files[100], 3, 0)] * 3)]
    assert sorted(got) == [(0, b""), (1, b""), (2, b"")]


async def test_iter_many_early_break(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[(1 << 20) + 3]
    requests = [(path, i * 4096, 4096) for i in range(256)]
    async for _ in backend.iter_many(requests):  # warm up: this loop's ring, worker threads
        pass  # (iter_many takes the bulk road; a warm read_many may not make the ring)
    before = fd_count()
    agen = backend.iter_many(requests)
    async for _ in agen:
        break
    await agen.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    assert fd_count() == before
    check_results(await backend.read_many(requests[:10]), requests[:10])


async def test_module_level_functions(files: dict[int, str]) -> None:
    path = files[4097]
    requests = [lsio.Chunk(path, 1, 10), lsio.Chunk(path, -10)]
    check_results(await lsio.read_many(requests), requests)
    requests = [(path, 1, 10), (path, -10, None)]
    check_results(lsio.read_many_sync(requests), requests)
    seen = {i: bytes(b) async for i, b in lsio.iter_many(requests)}
    assert seen == {i: expected_bytes(*as_tuple(r)) for i, r in enumerate(requests)}
    assert lsio.backend_name() in ("uring", "threads")


# -- Results ------------------------------------------------------------------------------

async def test_results_sequence_behaviour(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[10_000]
    requests = [(path, i * 10, i) for i in range(6)]
    want = [expected_bytes(*r) for r in requests]
    r = await backend.read_many(requests)
    assert len(r) == 6
    assert bytes(r[-1]) == want[5] and bytes(r[-6]) == want[0]
    assert [bytes(v) for v in r[1:4]] == want[1:4]
    assert [bytes(v) for v in r[::-2]] == want[::-2]
    assert r[10:] == []
    assert [bytes(v) for v in r] == want
    assert bytes(r[np.int64(2)]) == want[2]
    for bad in (6, -7, 100):
        with pytest.raises(IndexError):
            r[bad]
    assert r.lengths.tolist() == [0, 1, 2, 3, 4, 5] and r.nbytes == 15
    assert "6 chunks" in repr(r) and "15 bytes" in repr(r)
    view = r[3]
    assert isinstance(view, memoryview)
    assert view.readonly and view.format == "B" and view.ndim == 1 and len(view) == 3
    with pytest.raises(TypeError):
        view[0] = 1  # type: ignore[index]


async def test_results_are_zero_copy(backend: lsio.Reader, files: dict[int, str]) -> None:
    path = files[70_000]
    r = await backend.read_many([(path, 0, 50_000), (path, 1, 10)])
    a = np.frombuffer(r[0], np.uint8)
    b = np.frombuffer(r[0], np.uint8)
    assert np.shares_memory(a, b), "each item access copied the bytes"
    assert not a.flags.writeable
    words = np.frombuffer(r[0][:4096], np.uint32)
    assert words.tobytes() == expected_bytes(path, 0, 4096)
    # the views keep the buffer alive after the Results is gone
    del r
    import gc
    gc.collect()
    assert a.tobytes() == expected_bytes(path, 0, 50_000)


async def test_results_survive_later_calls(backend: lsio.Reader, files: dict[int, str]) -> None:
    """Result memory may be recycled, but never while anything still refers to it."""
    import gc

    a_path, b_path = files[70_000], files[10_000]
    first = await backend.read_many([(a_path, 0, None), (b_path, 5, 5000)])
    kept_view = first[0][100:200]
    kept_array = np.frombuffer(first[1], np.uint8)
    kept_items = list(first)
    del first
    gc.collect()
    for _k in range(5):
        other = await backend.read_many([(b_path, 0, None), (a_path, 7, 5000)])
        assert bytes(other[0]) == expected_bytes(b_path)
        del other
        gc.collect()
    assert bytes(kept_view) == expected_bytes(a_path, 100, 100)
    assert kept_array.tobytes() == expected_bytes(b_path, 5, 5000)
    assert bytes(kept_items[0]) == expected_bytes(a_path)


# -- files that change between the stat and the reads ---------------------------------------

def _shrink_after_stat(reader: lsio.Reader, victims: dict[str, int]) -> None:
    """Truncate files right after lsio stat'ed them: the reads then meet an earlier EOF.
    (Hooks the reader's private backend: there is no other way to act between phases.)"""
    backend = reader._backend
    orig = backend.stat

    async def stat_then_shrink(paths: list[str], **kw: Any) -> Any:
        res = await orig(paths, **kw)
        for path, size in victims.items():
            os.truncate(path, size)
        return res

    backend.stat = stat_then_shrink  # type: ignore[method-assign]
    assert reader.route == "bulk"  # the small-call path has no stat to hook


@pytest.mark.parametrize("direct", [None, True, False], ids=["auto", "direct", "buffered"])
@pytest.mark.parametrize("new_size", [0, 1, 4095, 5000, 70_000])
async def test_file_shrinks_between_stat_and_read(backend: lsio.Reader, data_dir: Path,
                                                  direct: bool | None, new_size: int) -> None:
    data = random_bytes(100_000, seed=new_size)
    whole = str(write_file(data_dir / "whole.bin", data))  # one read: a linked chain
    ranged = str(write_file(data_dir / "ranged.bin", data))  # many reads of one file
    steady = str(write_file(data_dir / "steady.bin", data))
    reader = lsio.Reader(backend=backend.backend, direct=direct, route="bulk")
    _shrink_after_stat(reader, {whole: new_size, ranged: new_size})
    requests: list[Any] = [(whole, 0, None), (steady, 3, 1000)]
    requests += [(ranged, o, 9000) for o in range(0, 100_000, 7000)]
    requests += [(ranged, -10, None), (steady, -10, None)]
    results = await reader.read_many(requests)
    # Each request returns the bytes of the file as it is now: lsio saw that the reads
    # came back short of the size it planned with, and planned again.
    for i, req in enumerate(requests):
        assert bytes(results[i]) == expected_bytes(*req), f"request #{i} {req}"
        assert results.lengths[i] == len(expected_bytes(*req))


async def test_file_grows_between_stat_and_read(backend: lsio.Reader, data_dir: Path) -> None:
    """A file that grows after the stat: the read ran one byte past the planned end, saw
    the growth, and the size-dependent requests (whole file, suffix, ranges clamped at the
    end) are planned again against the new size; ranges inside the file are unaffected."""
    data = random_bytes(10_000, seed=3)
    path = str(write_file(data_dir / "grows.bin", data))
    reader = lsio.Reader(backend=backend.backend, route="bulk")
    _shrink_after_stat(reader, {path: 50_000})  # "shrink" to a larger size: grow
    requests = [(path, 0, None), (path, -100, None), (path, 9000, 5000), (path, 20_000, 10),
                (path, 100, 200)]
    results = await reader.read_many(requests)
    now = data + bytes(40_000)
    assert [bytes(r) for r in results] == [now, now[-100:], now[9000:14_000],
                                           now[20_000:20_010], data[100:300]]


def _unlink_after_stat(reader: lsio.Reader, victim: str) -> None:
    """Remove ``victim`` right after lsio stat'ed it: its open fails in the read phase."""
    backend = reader._backend
    orig = backend.stat

    async def stat_then_unlink(paths: list[str], **kw: Any) -> Any:
        res = await orig(paths, **kw)
        os.unlink(victim)
        return res

    backend.stat = stat_then_unlink  # type: ignore[method-assign]
    assert reader.route == "bulk"  # the small-call path has no stat to hook


@pytest.mark.parametrize("nfiles", [40, 1500], ids=["few-reads", "thousands-of-reads"])
async def test_file_removed_between_stat_and_read(backend: lsio.Reader, data_dir: Path,
                                                  nfiles: int) -> None:
    """A failure in the read phase (the open): fail-fast names the lowest failing request,
    and iter_many yields only chunks that were really read."""
    paths = [str(write_file(data_dir / f"g{i}", random_bytes(3000, seed=i)))
             for i in range(nfiles)]
    requests = [(p, k * 1500, 1500) for p in paths for k in range(2)]
    victim_index = 2 * (2 * nfiles // 3)
    victim = requests[victim_index][0]
    content = {p: Path(p).read_bytes() for p in paths}

    reader = lsio.Reader(backend=backend.backend, route="bulk")
    _unlink_after_stat(reader, victim)
    with pytest.raises(FileNotFoundError) as info:
        await reader.read_many(requests)
    check_request_error(info.value, victim, victim_index)

    write_file(Path(victim), content[victim])
    reader = lsio.Reader(backend=backend.backend, route="bulk")
    _unlink_after_stat(reader, victim)
    wrong, seen = [], set()
    with pytest.raises(FileNotFoundError) as info:
        async for i, buf in reader.iter_many(requests):
            assert i not in seen
            seen.add(i)
            p, o, n = requests[i]
            if bytes(buf) != content[p][o : o + n]:
                wrong.append(i)
    check_request_error(info.value, victim, victim_index)
    assert victim_index not in seen and victim_index + 1 not in seen
    assert not wrong, (f"iter_many yielded {len(wrong)} of {len(seen)} chunks that were "
                       f"never read (wrong bytes), e.g. #{wrong[:5]}")
