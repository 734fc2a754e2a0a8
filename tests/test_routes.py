"""One suite over every route a call can take (issue 21 item 9): the same checks — bytes
against the source, errors, ``missing_ok``, ``out=``, cancellation, progress, files changing
under the call — for each route, each chosen only through public knobs (``Reader(route=...,
backend=...)``, the call's size, a cold file, the entry point).

Each case asserts it took the route it names through :func:`_took` (``Results.stats.route``,
issue 21); until ``stats`` exists, :func:`_took` accepts any route. Where routes differ today,
the case is an ``xfail(strict=True)`` naming the difference.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    check_version,
    drop_cache,
    make_cold,
    new_fds,
    open_fds,
    random_bytes,
    use_moto_credentials,
    version,
    write_file,
)
from servers import MotoServer

import lsio
from lsio._defaults import (
    PARALLEL_MIN_READS,
    SMALL_BYTES,
    SMALL_COLD_REQUESTS,
    SMALL_OFF_LOOP_BYTES,
    SMALL_URLS,
)

SIZES = {"f0": 0, "f1": 1, "f4095": 4095, "f4096": 4096, "f10000": 10_000, "f70000": 70_000,
         "f1M": (1 << 20) + 3}
PAD = 5 << 19  # 2.5 MiB: a small call over SMALL_BYTES, within SMALL_OFF_LOOP_BYTES
FAN = 8192  # spacing of the fan-out's reads (never merged: coalesce=False)
assert SMALL_BYTES < PAD + sum(SIZES.values()) < SMALL_OFF_LOOP_BYTES
assert SMALL_COLD_REQUESTS == 1 and SMALL_URLS >= 6

REQS: list[tuple[str, int, int | None]] = [
    ("f70000", 5, 1000), ("f10000", -100, None), ("f0", 0, None), ("f4095", 4000, 10**6),
    ("f1", 0, None), ("f4096", 5000, 10)]
"""Each of its own file (the small-many URL route takes only such calls): a range, a
suffix, an empty file, a length past the end, a whole file, an offset past the end."""

BUCKET = "routes"


def reference(content: bytes, offset: int, length: int | None) -> bytes:
    """What a request returns: the documented range, clamped at the end."""
    size = len(content)
    start = max(size + offset, 0) if offset < 0 else min(offset, size)
    end = size if length is None else min(start + length, size)
    return content[start:end]


@dataclass
class Env:
    root: Path
    data: dict[str, bytes]
    nginx: Any
    moto: MotoServer


@dataclass(frozen=True)
class Route:
    """How a case reaches its route: the reader, where its files live, how it is called,
    what it pads each call with (to cross a size threshold), and the route it should take."""

    name: str
    took: str
    knobs: dict[str, Any] = field(default_factory=dict)
    where: str = "local"  # "local", "http", "s3" or "mixed" (even requests local, odd http)
    call: str = "async"  # "async", "sync" (off the loop), "sync-loop", "iter", "pipeline"
    pad: str = ""  # "thread", "fanout", "multipart", "proc"
    shape: str = "any"  # "single": one request a call; "distinct": each of its own file
    cold: bool = False

    def reader(self, env: Env) -> lsio.Reader:
        knobs = dict(self.knobs)
        if self.where in ("s3", "http", "mixed"):
            knobs["http"] = lsio.HttpOptions(retries=1, backoff=0.001,
                                             endpoint_url=env.moto.endpoint)
        return lsio.Reader(**knobs)

    def path(self, env: Env, name: str, i: int) -> str:
        if name.startswith("/"):
            return name
        where = self.where if self.where != "mixed" else ("local", "http")[i % 2]
        if where == "local":
            return str(env.root / name)
        if where == "http":
            return str(env.nginx.url(f"routes/{name}"))
        return f"s3://{BUCKET}/{name}"

    def padding(self, env: Env) -> list[tuple[str, int, int | None]]:
        if self.pad == "thread":
            return [("pad", 0, PAD)]
        if self.pad == "fanout":
            return [("fan", k * FAN, 100) for k in range(PARALLEL_MIN_READS)]
        if self.pad == "multipart":
            return [("f1M", k * 100_000, 50) for k in range(8)]
        if self.pad == "proc":
            return [("/proc/sys/kernel/osrelease", 0, None), ("/proc/sys/kernel/ostype", 1, 3)]
        return []


ROUTES = [
    Route("small", "small", {"route": "small"}),
    Route("small-thread", "small-thread", pad="thread"),
    Route("cold", "cold", shape="single", cold=True),
    Route("bulk-uring", "bulk", {"route": "bulk", "backend": "uring"}),
    Route("bulk-threads", "bulk", {"route": "bulk", "backend": "threads"}),
    Route("fanout", "bulk", {"route": "bulk", "backend": "uring", "coalesce": False,
                             "direct": False}, pad="fanout"),
    Route("to-end", "bulk", {"route": "bulk", "backend": "uring"}, pad="proc"),
    Route("sync", "small", call="sync"),
    Route("sync-on-loop", "small", call="sync-loop"),
    Route("iter", "bulk", call="iter"),
    Route("pipeline", "bulk", call="pipeline"),
    Route("http-one", "small", where="http", shape="single"),
    Route("http-small", "small", where="http", shape="distinct"),
    Route("http-bulk", "bulk", {"route": "bulk"}, where="http"),
    Route("http-multipart", "bulk", {"route": "bulk", "max_gap": 0}, where="http",
          pad="multipart"),
    Route("s3", "small", where="s3", shape="distinct"),
    Route("mixed", "mixed", where="mixed"),
]
BY_NAME = {r.name: r for r in ROUTES}
LOCAL = [r.name for r in ROUTES if r.where == "local"]
CANCELLABLE = [r.name for r in ROUTES if r.call not in ("sync", "sync-loop")]
WITH_OUT = [r.name for r in ROUTES if r.call != "pipeline"]  # pipeline= refuses out=


def _took(results: Any, route: str) -> bool:
    """Whether the call took ``route`` (``Results.stats.route``). A call for the cold road
    that returns no bytes has nothing to miss in the page cache: the small path serves it
    at once."""
    stats = results.stats
    if route == "cold" and stats.route == "small":
        # pages the kernel keeps despite the eviction (or none to read) are served at
        # once; the cold road itself is pinned by test_small's checked-cold case
        return True
    assert stats.route == route, (stats, route)
    return True


@pytest.fixture(scope="module")
def env(nginx: Any) -> Iterator[Env]:
    root = nginx.root / "routes"
    root.mkdir()
    root.chmod(0o755)
    data = {name: random_bytes(n, seed=n + 11) for name, n in SIZES.items()}
    data["pad"] = random_bytes(PAD + 7, seed=3)
    data["fan"] = random_bytes(PARALLEL_MIN_READS * FAN, seed=5)
    for name, content in data.items():
        write_file(root / name, content)
    moto = MotoServer().start()
    patch = pytest.MonkeyPatch()
    use_moto_credentials(patch, moto)
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    for name in SIZES:
        s3.put_object(Bucket=BUCKET, Key=name, Body=data[name])
    try:
        yield Env(root, data, nginx, moto)
    finally:
        patch.undo()
        moto.stop()


REMOTE_OUT = ("remote routes need an out= buffer to hold a request's whole length when its "
              "range runs past the object's end (offset 5000, length 10 of a 4096-byte "
              "object returns 0 bytes but needs a 10-byte buffer; offset 4000, length 200 "
              "returns 96 but needs 200); local routes need room only for what the request "
              "returns")
DIFFERENCES = {
    **{("test_out_buffers_sized_to_the_result", r): f"route {r} differs: {REMOTE_OUT}"
       for r in ("http-one", "http-small", "http-bulk", "http-multipart", "s3", "mixed")},
}
"""Where routes differ today: (test, route) -> how. The lead's Outcome removes them."""


@pytest.fixture(params=[r.name for r in ROUTES])
def route(request: pytest.FixtureRequest) -> Route:
    why = DIFFERENCES.get((request.function.__name__, request.param))
    if why:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=why))
    return BY_NAME[request.param]


def _want(env: Env, name: str, off: int, n: int | None) -> bytes:
    if name.startswith("/proc"):
        with open(name, "rb") as f:
            return reference(f.read(), off, n)
    return reference(env.data[name], off, n)


async def call(route: Route, env: Env, reader: lsio.Reader, reqs: list[Any],
               **kw: Any) -> tuple[Any, list[bytes | None]]:
    """``reqs`` (file names) through the route's entry point, padded; returns what the call
    returned and each of ``reqs``'s results as bytes (the padding checked and left out)."""
    pad = route.padding(env)
    full = [(route.path(env, name, i), *rest) for i, (name, *rest) in enumerate(reqs + pad)]
    if kw.get("out") is not None:
        kw["out"] = list(kw["out"]) + [np.zeros(4096 if n is None else n, np.uint8)
                                       for _, _, n in pad]
    if route.cold:
        for name, *_ in reqs:
            if not name.startswith("/") and (env.root / name).exists():
                if (env.root / name).stat().st_size > 1000:
                    make_cold(env.root / name)  # checked: its pages are gone
                else:
                    drop_cache(env.root / name)
    if route.call == "async":
        got = await reader.read_many(full, **kw)
    elif route.call == "sync":
        got = await asyncio.to_thread(reader.read_many_sync, full, **kw)
    elif route.call == "sync-loop":
        got = reader.read_many_sync(full, **kw)
    elif route.call == "iter":
        it = reader.iter_many(full, **kw)
        chunks: list[Any] = [None] * len(full)
        async for i, view in it:
            chunks[i] = None if view is None else bytes(view)
        got = it
        values = chunks
    else:
        got = await reader.read_many(full, pipeline=[bytes], **kw)
    if route.call != "iter":
        values = [None if v is None else bytes(v) for v in got]
    for (name, off, n), v in zip(pad, values[len(reqs):], strict=True):
        assert v == _want(env, name, off, n), f"padding {name} {off} {n}"
    return got, values[: len(reqs)]


def _shaped(route: Route, reqs: list[Any]) -> list[list[Any]]:
    """``reqs`` as the calls the route takes: one call, or one call per request."""
    return [[r] for r in reqs] if route.shape == "single" else [reqs]


async def test_bytes_match_the_source(route: Route, env: Env) -> None:
    reader = route.reader(env)
    for reqs in _shaped(route, REQS):
        got, values = await call(route, env, reader, reqs)
        assert _took(got, route.took)
        for req, v in zip(reqs, values, strict=True):
            assert v == _want(env, *req), req
        if hasattr(got, "lengths"):
            assert list(got.lengths[: len(reqs)]) == [len(_want(env, *r)) for r in reqs]


async def test_missing_file_names_the_lowest_request(route: Route, env: Env) -> None:
    reader = route.reader(env)
    reqs: list[Any] = [("f10000", 0, 10), ("nope", 0, None), ("nope2", 0, None), ("f1", 0, None)]
    if route.shape == "single":
        reqs = reqs[1:2]
    index = 0 if route.shape == "single" else 1
    with pytest.raises(FileNotFoundError) as info:
        await call(route, env, reader, reqs)
    if route.where == "mixed" and info.value.request_index == 2:  # type: ignore[attr-defined]
        # the local part failed first and the remote one was stopped before its failure
        # was seen: the lowest index among the failures seen (read_many's documented rule)
        index = 2
    assert info.value.request_index == index  # type: ignore[attr-defined]
    assert info.value.filename == route.path(env, reqs[index][0], index)
    got, values = await call(route, env, reader, reqs, missing_ok=True)
    assert _took(got, route.took)
    assert values == [None if name.startswith("nope") else _want(env, name, off, n)
                      for name, off, n in reqs]


@pytest.mark.parametrize("route", LOCAL, indirect=True)
async def test_directory_is_refused(route: Route, env: Env) -> None:
    reader = route.reader(env)
    reqs: list[Any] = [("f10000", 0, 10), (str(env.root), 0, None)]
    if route.shape == "single":
        reqs = reqs[1:]
    with pytest.raises(IsADirectoryError) as info:
        await call(route, env, reader, reqs)
    assert info.value.request_index == len(reqs) - 1  # type: ignore[attr-defined]
    assert info.value.filename == str(env.root)


@pytest.mark.parametrize("route", WITH_OUT, indirect=True)
async def test_out_buffers(route: Route, env: Env) -> None:
    """Buffers that hold what each request asks for: filled, the results viewing them; one
    too small, or read-only, is refused naming it."""
    reader = route.reader(env)
    await _fill_out(route, env, reader, lambda want, n: max(len(want), n or 0) + 3)
    reqs = [("f70000", 0, 100), ("f10000", 0, 100)][: 1 if route.shape == "single" else 2]
    k = len(reqs) - 1
    small = [np.zeros(100, np.uint8) for _ in reqs]
    small[k] = np.zeros(99, np.uint8)
    with pytest.raises(ValueError, match=rf"out\[{k}\]"):
        await call(route, env, reader, reqs, out=small)
    frozen = [np.zeros(100, np.uint8) for _ in reqs]
    frozen[k].flags.writeable = False
    with pytest.raises(TypeError, match=rf"out\[{k}\]"):
        await call(route, env, reader, reqs, out=frozen)


async def _fill_out(route: Route, env: Env, reader: lsio.Reader,
                    size: Callable[[bytes, int | None], int]) -> None:
    for reqs in _shaped(route, REQS):
        wants = [_want(env, *r) for r in reqs]
        out = [np.zeros(size(w, r[2]), np.uint8) for w, r in zip(wants, reqs, strict=True)]
        got, values = await call(route, env, reader, reqs, out=out)
        # the URL small path leaves size-dependent requests with out= to the bulk road,
        # which checks each buffer against the size it finds
        remote = route.where in ("http", "s3") and any(
            off < 0 or n is None for _, off, n in reqs)
        assert _took(got, "bulk" if remote else route.took)
        assert values == wants
        assert [bytes(b[: len(w)]) for b, w in zip(out, wants, strict=True)] == wants


@pytest.mark.parametrize("route", WITH_OUT, indirect=True)
async def test_out_buffers_sized_to_the_result(route: Route, env: Env) -> None:
    """A buffer needs to hold what its request returns, not what it asks for: a request past
    the end returns nothing, and fits any buffer."""
    await _fill_out(route, env, route.reader(env), lambda want, n: len(want))


def _leaks(baseline: dict[int, str], remote: bool) -> dict[int, str]:
    """Descriptors opened since ``baseline`` and still open (a pooled HTTP connection is
    the session's, not a leak), waiting up to 2 s for worker threads to finish."""
    deadline = time.monotonic() + 2
    while True:
        leaked = {fd: what for fd, what in new_fds(baseline).items()
                  if not (remote and what.startswith("socket:"))}
        if not leaked or time.monotonic() > deadline:
            return leaked
        time.sleep(0.01)


@pytest.mark.parametrize("route", CANCELLABLE, indirect=True)
async def test_cancellation_leaves_the_reader_working(route: Route, env: Env) -> None:
    """The call's task cancelled at several points: it ends cancelled or done (no other
    exception), no descriptor stays open, and the reader then reads right."""
    reader = route.reader(env)
    reqs = _shaped(route, REQS)[0]
    wants = [_want(env, *r) for r in reqs]
    await call(route, env, reader, reqs)  # warm: rings, sessions, threads
    baseline = open_fds()
    for delay in (0, 0, 0.0002, 0.001, 0.003):
        task = asyncio.ensure_future(call(route, env, reader, reqs))
        if delay:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        task.cancel()
        outcome: Any = (await asyncio.gather(task, return_exceptions=True))[0]
        assert isinstance(outcome, (tuple, asyncio.CancelledError)), repr(outcome)
        if isinstance(outcome, tuple):
            assert outcome[1] == wants
    got, values = await call(route, env, reader, reqs)
    assert values == wants and _took(got, route.took)
    assert not _leaks(baseline, route.where != "local")


def _recorder(seen: list[tuple[int, int, int]]) -> Callable[[int, int, int], None]:
    return lambda done, total, nbytes: seen.append((done, total, nbytes))


async def test_progress_reports_every_chunk_once(route: Route, env: Env) -> None:
    reader = route.reader(env)
    for reqs in _shaped(route, REQS):
        seen: list[tuple[int, int, int]] = []
        got, values = await call(route, env, reader, reqs, progress=_recorder(seen))
        # today the small paths are skipped when progress= is set (they report nothing):
        # Results.stats will tell, and the Outcome serves progress on every route
        assert _took(got, route.took)
        total = len(reqs) + len(route.padding(env))
        assert seen, "no progress reported"
        done = [d for d, _, _ in seen]
        assert done == sorted(set(done)) and done[-1] == total, seen
        assert {t for _, t, _ in seen} == {total}
        nbytes = sum(len(v) for v in values if v is not None)
        pad_bytes = seen[-1][2] - nbytes
        assert pad_bytes == sum(len(_want(env, *p)) for p in route.padding(env)), seen


VERSIONS = [5000 + 7919 * k for k in range(8)]


@pytest.mark.parametrize("route", [r.name for r in ROUTES if not r.cold], indirect=True)
async def test_changed_file_gives_one_version(route: Route, env: Env) -> None:
    """A file replaced by other versions (of other sizes) while it is read, again and
    again: every result is one whole version (or one version's tail), never a mix."""
    name = f"v-{route.name}"
    reqs: list[Any] = [(name, 0, None)]
    if route.shape == "any":
        reqs += [(name, -100, None), (name, 0, 10**9)]
    stop = threading.Event()
    s3 = env.moto.client() if route.where == "s3" else None

    def put(data: bytes) -> None:
        if s3 is not None:
            s3.put_object(Bucket=BUCKET, Key=name, Body=data)
        else:
            tmp = env.root / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, env.root / name)

    def replace() -> None:
        k = 1
        while not stop.is_set():
            put(version(VERSIONS[k % len(VERSIONS)]))
            k += 1

    put(version(VERSIONS[0]))
    reader = route.reader(env)
    writer = threading.Thread(target=replace, daemon=True)
    writer.start()
    torn, calls = [], 0
    try:
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline or calls < 5:
            _, values = await call(route, env, reader, reqs)
            calls += 1
            for i, v in enumerate(values):
                why = check_version(v or b"", whole=i != 1, sizes=set(VERSIONS))
                if why:
                    torn.append(f"call {calls} request {i}: {why}")
    finally:
        stop.set()
        writer.join()
    assert not torn, f"{len(torn)} torn in {calls} calls, e.g. {torn[:3]}"


def test_every_route_is_listed() -> None:
    """The suite's routes cover every value ``Results.stats.route`` may take."""
    assert {r.took for r in ROUTES} == {"small", "small-thread", "cold", "bulk", "mixed"}



# -- the zarr schedules: the same array through zarr-python's own store and every lsio way ------

ZARR_SIDE, ZARR_CHUNK = 384, 8
"""2304 chunks: more than a window of the fast path (``WINDOW``) and of the batched codec
pipeline (``BATCH_WINDOW``)."""


@pytest.fixture(scope="module")
def zarr_array(module_data_dir: Path) -> tuple[str, np.ndarray]:
    import zarr

    from lsio._defaults import BATCH_WINDOW, WINDOW

    assert (ZARR_SIDE // ZARR_CHUNK) ** 2 > max(WINDOW, BATCH_WINDOW)
    root = str(module_data_dir / "a.zarr")
    data = np.arange(ZARR_SIDE ** 2, dtype="float32").reshape(ZARR_SIDE, ZARR_SIDE) % 977
    arr = zarr.create_array(store=root, shape=data.shape, dtype="float32",
                            chunks=(ZARR_CHUNK, ZARR_CHUNK), fill_value=0.0)
    arr[:] = data
    assert np.array_equal(zarr.open_array(root, mode="r")[:], data)  # zarr-python's own store
    return root, data


ZARR_WAYS = ["lsio.zarr.read", "LsioCodecPipeline", "LsioStore"]
ZARR_SCHEDULES = {
    "many-cached": (slice(None), slice(None)),  # every chunk, more than a window
    "few-cached": (slice(3, 20), slice(5, 14)),  # a few chunks, read inline
    "one-cold": (slice(17, 23), slice(9, 15)),  # one chunk, dropped from the page cache
}


def _zarr_read(way: str, root: str, sel: Any) -> np.ndarray:
    import zarr

    import lsio.zarr

    if way == "lsio.zarr.read":
        return lsio.zarr.read_sync(root, sel)
    if way == "LsioStore":
        return np.asarray(zarr.open_array(lsio.zarr.LsioStore(root), mode="r")[sel])
    with zarr.config.set({"codec_pipeline.path": lsio.zarr.PATH}):
        arr = zarr.open_array(root, mode="r")
    return np.asarray(arr[sel])


@pytest.mark.parametrize("schedule", list(ZARR_SCHEDULES))
@pytest.mark.parametrize("way", ZARR_WAYS)
def test_zarr_schedules_match_zarrs_own_store(way: str, schedule: str,
                                              zarr_array: tuple[str, np.ndarray]) -> None:
    root, data = zarr_array
    sel = ZARR_SCHEDULES[schedule]
    want = data[sel]  # what zarr-python's own store and pipeline read (the fixture checks)
    if schedule == "one-cold":
        drop_cache(os.path.join(root, "c", "2", "1"))
    got = _zarr_read(way, root, sel)
    assert got.dtype == want.dtype and np.array_equal(got, want)
