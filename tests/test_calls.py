"""The call's contract with its caller: forcing a route (``Reader(route=...)``), callbacks
that raise (``progress=``, pipeline steps, ``iter_many``) on every route, Ctrl-C and
deadlines during a read into ``out=`` (nothing writes into ``out`` once the call raised),
and the blocking twins raising the very exception the coroutine raised.

Every test of a possible hang runs its code in a fresh interpreter with a hard timeout."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import check_ok, random_bytes, run_python, write_file
from servers import FaultServer, Nginx, serving_faults

import lsio

HARD_TIMEOUT = 90
"""Seconds a subprocess may take before the test fails (a hang fails in this, not in CI's
90 minutes); each call inside also has an ``asyncio.wait_for`` guard of 20 s."""


# -- Reader(route=...) ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["fast", "", "SMALL", None, 1, True])
def test_route_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match=r"route must be one of 'auto', 'small', 'bulk'"):
        lsio.Reader(route=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("route", ["auto", "small", "bulk"])
def test_route_survives_pickling(route: str) -> None:
    reader = lsio.Reader(backend="threads", route=route)  # type: ignore[arg-type]
    again = pickle.loads(pickle.dumps(reader))
    assert again.route == route and again.backend == "threads"
    assert (f"route={route!r}" in repr(again)) == (route != "auto")


def test_route_steers_local_calls(data_dir: Path) -> None:
    """``small``: a call over the small path's request limit still takes it; ``bulk``: a
    one-chunk call never does; ``auto``: the one-chunk call does, and the long one too
    (the split small path: 2 000 bytes are copied on the calling thread). Results are the
    same."""
    data = random_bytes(10_000, seed=1)
    path = str(write_file(data_dir / "f.bin", data))
    many = [(path, i, 10) for i in range(200)]  # over SMALL_REQUESTS
    want = [data[i:i + 10] for i in range(200)]
    for route, requests, expected, taken in [("small", many, want, True),
                                             ("bulk", [(path,)], [data], False),
                                             ("auto", [(path,)], [data], True),
                                             ("auto", many, want, True)]:
        reader = lsio.Reader(route=route)  # type: ignore[arg-type]
        for read in (reader.read_many_sync,
                     lambda r, reader=reader: asyncio.run(reader.read_many(r))):
            got = read(requests)
            assert [bytes(g) for g in got] == expected
            assert (got.stats.route == "small") == taken, (route, len(requests))


# -- callbacks that raise -----------------------------------------------------------------------

CALLBACKS = r"""
import asyncio, gc, json, os, sys, threading, time
import numpy as np
import lsio

kind, paths = sys.argv[1], json.loads(sys.argv[2])
if kind == "http":
    reader = lsio.Reader(route="bulk", http=lsio.HttpOptions(retries=1))
elif kind == "small":
    reader = lsio.Reader(route="small")
elif kind == "parallel":  # cached reads spread over one ring per core
    reader = lsio.Reader(backend="uring", route="bulk", coalesce=False)
else:
    reader = lsio.Reader(backend=kind, route="bulk")
requests = [(p, 100, 1000) for p in paths] + [(p, 0, 2000) for p in paths]
if kind == "parallel":  # enough reads (PARALLEL_MIN_READS) of the biggest file
    requests = [(paths[-2], 1400 * i, 1000) for i in range(2100)]
elif kind != "http":  # (a URL of unknown size is probed, and small objects read whole)
    requests += [(p,) for p in paths]

class Boom(Exception):
    pass

def raising(when):
    # a callback raising at its first call, or at the last one (the call's last chunk:
    # progress tells (chunks_done, chunks_total, bytes); a step counts its calls)
    err = Boom(f"the caller's own, at the {when} call")
    calls = [0]
    lock = threading.Lock()  # steps run on the workers at once: no increment may be lost
    def fn(*args):
        with lock:
            calls[0] += 1
            n = calls[0]
        last = args[0] == args[1] if args else n == len(requests)
        if when == "first" or last:
            raise err
    return fn, err

def fds():
    gc.collect()
    return len(os.listdir("/proc/self/fd"))

async def guarded(coro):
    return await asyncio.wait_for(coro, 20)  # a hang fails here in seconds

async def expect(err, coro, what):
    t0 = time.monotonic()
    try:
        await guarded(coro)
    except Boom as exc:
        assert exc is err, (what, exc, err)
    else:
        raise AssertionError(f"{what}: the call did not raise")
    return time.monotonic() - t0

async def raise_everywhere(want):
    for when in ("first", "last"):
        fn, err = raising(when)
        await expect(err, reader.read_many(requests, progress=fn), f"progress, {when}")

        fn, err = raising(when)
        async def iterate():
            async for _ in reader.iter_many(requests, progress=fn):
                pass
        await expect(err, iterate(), f"iter_many, {when}")

        fn, err = raising(when)
        def step(buf, fn=fn):
            fn()
            return buf
        try:
            await guarded(reader.read_many(requests, pipeline=[step]))
        except Boom as exc:
            assert exc is err
            assert exc.request_index in range(len(requests))
            assert any("pipeline step #0" in n for n in exc.__notes__)
        else:
            raise AssertionError(f"pipeline, {when}: the call did not raise")

        # out=: once the call raised, nothing writes into the caller's buffers
        out = [np.zeros(len(w) + 2001, np.uint8) for w in want]  # a URL's size: unknown
        fn, err = raising(when)
        await expect(err, reader.read_many(requests, out=out, progress=fn), f"out=, {when}")
        snap = [o.copy() for o in out]
        await asyncio.sleep(0.2)
        assert all((a == b).all() for a, b in zip(snap, out)), "out changed after the raise"

        # the blocking twin raises the same object
        fn, err = raising(when)
        try:
            await asyncio.to_thread(reader.read_many_sync, requests, progress=fn)
        except Boom as exc:
            assert exc is err
        else:
            raise AssertionError(f"read_many_sync, {when}: did not raise")

    # the reader still works
    assert [bytes(r) for r in await guarded(reader.read_many(requests))] == want
    assert [bytes(r) for r in reader.read_many_sync(requests)] == want

async def main():
    want = [bytes(r) for r in await guarded(reader.read_many(requests))]
    await raise_everywhere(want)  # starts every thread, ring and pool lsio keeps
    baseline = fds()
    for _ in range(3):
        await raise_everywhere(want)
    await asyncio.sleep(0.1)
    now = fds()
    assert now <= baseline, f"descriptors: {baseline} before, {now} after"
    print("ok")

asyncio.run(main())
"""


def _local_files(root: Path) -> list[str]:
    sizes = [70_000] * 24 + [3_000_000, 1]
    return [str(write_file(root / f"c{i}.bin", random_bytes(n, seed=i)))
            for i, n in enumerate(sizes)]


@pytest.mark.parametrize("kind", ["small", "uring", "parallel", "threads"])
def test_raising_callbacks_end_local_calls(kind: str, data_dir: Path) -> None:
    """A progress callback, a pipeline step or an ``iter_many`` report that raises ends
    the call, which raises that very exception (on io_uring it reached only the loop's
    log, and the call went on or never finished); the reader still works afterwards."""
    paths = _local_files(data_dir)
    assert check_ok(run_python(CALLBACKS, kind, json.dumps(paths),
                               timeout=HARD_TIMEOUT)).strip() == "ok"


def test_raising_callbacks_end_http_calls(nginx: Nginx) -> None:
    root = nginx.root / "calls"
    root.mkdir(exist_ok=True)
    names = [Path(p).name for p in _local_files(root)]
    urls = [nginx.url(f"calls/{name}") for name in names]
    assert check_ok(run_python(CALLBACKS, "http", json.dumps(urls),
                               timeout=HARD_TIMEOUT)).strip() == "ok"


ESCAPING = """
import sys
import lsio
path = sys.argv[1]
size = len(open(path, "rb").read())

def progress(*_):
    raise KeyboardInterrupt("mine")

def step(_):
    raise SystemExit(7)

for route in ("auto", "bulk"):
    reader = lsio.Reader(route=route)
    for knobs, kind in (({"progress": progress}, KeyboardInterrupt),
                        ({"pipeline": [step]}, SystemExit)):
        try:
            reader.read_many_sync([(path,)], **knobs)
        except kind as exc:
            assert exc.args in (("mine",), (7,)), exc
        else:
            raise AssertionError("the call returned")
        (got,) = reader.read_many_sync([(path,)])  # lsio's loop thread still serves calls
        assert len(got) == size
print("ok")
"""


def test_keyboard_interrupt_or_exit_from_a_callback_reaches_the_sync_caller(
        data_dir: Path) -> None:
    """A callback raising ``KeyboardInterrupt`` or ``SystemExit`` inside a ``*_sync`` call:
    asyncio re-raised it out of lsio's loop thread, which died, and the caller waited for
    ever; now the caller gets it and the next call works."""
    path = write_file(data_dir / "k.bin", random_bytes(1 << 20))
    assert check_ok(run_python(ESCAPING, str(path), timeout=30)).strip() == "ok"


# -- Ctrl-C, a raising callback and a deadline during a read into out= --------------------------

COLD = r"""
import asyncio, os, signal, socket, sys, threading, time
import numpy as np
import lsio
# a shell that starts a job in the background (CI, nohup) makes it ignore SIGINT, and its
# children inherit that: Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)

backend, how, path = sys.argv[1], sys.argv[2], sys.argv[3]
size = os.path.getsize(path)
n = 16
step = size // n
arr = np.zeros(step * n, np.uint8)
out = [arr[i * step:(i + 1) * step] for i in range(n)]
requests = [(path, i * step, step) for i in range(n)]

def drop_cache():
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)

class Boom(Exception):
    pass

def boom(*args):
    raise Boom()

if how == "deadline":  # a server that accepts and never answers: the deadline ends the call
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)],
                     daemon=True).start()
    requests.append((f"http://127.0.0.1:{server.getsockname()[1]}/never", 0, 10))
    out.append(bytearray(10))

main = threading.main_thread().ident
for delay in (0.05, 0.02, 0.1, 0.005, 0.2, 0.001, 0.4):  # until it lands mid-read
    arr[:] = 0
    drop_cache()
    reader = lsio.Reader(backend=backend, route="bulk", max_read=1 << 20,
                         http=lsio.HttpOptions(timeout=delay, retries=0))
    timer = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
    t0 = time.monotonic()
    try:
        if how == "sigint":
            timer.start()
        reader.read_many_sync(requests, out=out, progress=boom if how == "callback" else False)
    except (KeyboardInterrupt, Boom, TimeoutError) as exc:
        took = time.monotonic() - t0
        probe = arr[::4096].copy()  # one byte a page, at once: a read landing shows here
        snap = arr.copy()
        time.sleep(0.5)
        late_pages = int(np.count_nonzero(probe != arr[::4096]))
        late_bytes = int(np.count_nonzero(snap != arr))
        landed = int(np.count_nonzero(snap))
        if not 0 < landed < arr.size:
            continue  # stopped before the first byte or after the last: again
        print(type(exc).__name__, f"{took:.3f}", late_pages, late_bytes, landed)
        break
    finally:
        timer.cancel()
else:
    print("never interrupted mid-read")
"""

COLD_SIZE = 128 << 20


@pytest.fixture(scope="module")
def cold_file(module_data_dir: Path) -> str:
    """A file on a real disk, each subprocess drops it from the page cache before it reads;
    no zero byte in it, so an unwritten byte shows."""
    path = module_data_dir / "cold.bin"
    block = bytes(range(1, 256)) * 4112  # ~1 MiB of non-zero bytes
    with open(path, "wb") as f:
        for _ in range(COLD_SIZE // len(block) + 1):
            f.write(block)
        f.truncate(COLD_SIZE)
        f.flush()
        os.fsync(f.fileno())
    return str(path)


@pytest.mark.parametrize("backend", ["uring", "threads"])
@pytest.mark.parametrize("how", ["sigint", "callback", "deadline"])
def test_nothing_writes_into_out_after_the_call_raised(backend: str, how: str,
                                                       cold_file: str) -> None:
    """Ctrl-C (the first one), a raising progress callback and the call's deadline during
    ``read_many_sync(out=...)`` of a cold file: the call raises only once no read can write
    into ``out`` any more (Ctrl-C returned at once while 4-50 MB still landed), within the
    bounded wait."""
    got = check_ok(run_python(COLD, backend, how, cold_file, timeout=HARD_TIMEOUT)).split()
    assert got[0] == {"sigint": "KeyboardInterrupt", "callback": "Boom",
                      "deadline": "TimeoutError"}[how], got
    took, late_pages, late_bytes, landed = float(got[1]), *map(int, got[2:])
    assert 0 < landed < COLD_SIZE  # the call was stopped mid-read
    assert (late_pages, late_bytes) == (0, 0), f"out changed after the call raised: {got}"
    assert took < 4.0  # the wait for the reads in flight is bounded (~2 s)


SECOND_INTERRUPT = r"""
import asyncio, signal, sys, threading, time
from lsio._sync import run_sync
# a shell that starts a job in the background (CI, nohup) makes it ignore SIGINT, and its
# children inherit that: Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)

async def stubborn():  # a call whose reads take long to stop (a stalled filesystem)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(30)  # ends only when the loop thread dies with the process

main = threading.main_thread().ident
for when in sys.argv[1:]:
    threading.Timer(float(when), signal.pthread_kill, (main, signal.SIGINT)).start()
t0 = time.monotonic()
try:
    run_sync(stubborn())
except KeyboardInterrupt:
    print(f"{time.monotonic() - t0:.2f}")
"""


def test_ctrl_c_wait_is_bounded_and_a_second_one_ends_it() -> None:
    """The first Ctrl-C waits ~2 s for the cancelled call at most; a second one raises at
    once."""
    once = float(check_ok(run_python(SECOND_INTERRUPT, "0.05", timeout=HARD_TIMEOUT)))
    assert 1.8 < once < 5, once
    twice = float(check_ok(run_python(SECOND_INTERRUPT, "0.05", "0.3",
                                      timeout=HARD_TIMEOUT)))
    assert 0.25 < twice < 1.5, twice


# -- the sync twins raise the coroutine's exception --------------------------------------------

@pytest.fixture(scope="module")
def slow_server() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": random_bytes(1000, seed=3)})


@pytest.mark.parametrize("route", ["auto", "bulk"])
def test_sync_timeout_keeps_request_and_notes(slow_server: FaultServer, route: str) -> None:
    """The deadline's TimeoutError through ``read_many_sync`` (any ``*_sync``) keeps
    ``filename``, ``request_index`` and its note, as through ``await`` (asyncio rebuilt it
    from its args). Called from a plain thread: ``asyncio.to_thread`` itself rebuilds a
    TimeoutError the same way."""
    slow_server.reset()
    slow = slow_server.url("slowx9", "f.bin")
    requests = [(slow_server.url("ok", "f.bin"), 0, 10), (slow, 0, 10)]
    reader = lsio.Reader(route=route,  # type: ignore[arg-type]
                         http=lsio.HttpOptions(timeout=0.3, backoff=0.001))
    seen = []
    with pytest.raises(TimeoutError) as info:
        asyncio.run(reader.read_many(requests))
    seen.append(info.value)
    with pytest.raises(TimeoutError) as info:
        reader.read_many_sync(requests)
    seen.append(info.value)
    for exc in seen:
        assert exc.filename == slow
        assert exc.request_index == 1  # type: ignore[attr-defined]
        assert any("request #1" in note for note in exc.__notes__), exc.__notes__
