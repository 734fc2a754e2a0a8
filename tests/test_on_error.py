"""Partial results: ``on_error="return"`` on every door and every road.

A failed request's item is its own exception (the one ``on_error="raise"`` raises for it,
naming its path), ``Results.errors`` marks them, the other requests' bytes equal the
source, and ``missing_ok`` still gives ``None`` for a missing file. Each case forces its
road (``Reader(route=..., backend=...)``) and asserts through ``stats.route`` that it was
taken; ``"raise"`` stays as it was.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_bytes, write_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import FaultServer, Nginx, serving_faults

import lsio

SIZES = {"a": 5000, "b": 70_000, "c": 1}
ROADS = [("auto", "uring"), ("small", "uring"), ("small", "threads"), ("bulk", "uring"),
         ("bulk", "threads")]


@pytest.fixture(scope="module")
def files(module_data_dir: Path) -> dict[str, str]:
    """Good files, a directory, a FIFO, and names of files that do not exist."""
    paths = {name: str(write_file(module_data_dir / name, random_bytes(n, seed=n)))
             for name, n in SIZES.items()}
    (module_data_dir / "dir").mkdir()
    os.mkfifo(module_data_dir / "fifo")
    paths.update(dir=str(module_data_dir / "dir"), fifo=str(module_data_dir / "fifo"),
                 gone=str(module_data_dir / "gone"), under=str(module_data_dir / "a" / "x"))
    return paths


def pread(path: str, offset: int, length: int | None) -> bytes:
    """The source's bytes of a request (``offset`` >= 0)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        want = size - min(offset, size) if length is None else length
        return os.pread(f.fileno(), want, offset)


def raised(reader: lsio.Reader, request: Any, **kw: Any) -> OSError:
    """The exception ``on_error="raise"`` raises for ``request`` alone."""
    with pytest.raises(OSError) as info:
        reader.read_many_sync([request], **kw)
    return info.value


def check(results: Any, requests: list[Any], reader: lsio.Reader, *,
          missing_ok: bool = False) -> None:
    """Good slots byte for byte against the source; each failed slot the exception "raise"
    gives for that request alone (type, path, errno); ``errors`` and ``missing`` agree."""
    assert len(results) == len(requests)
    errors = np.asarray(results.errors)
    assert errors.dtype == bool and errors.shape == (len(requests),)
    for i, req in enumerate(requests):
        item = results[i]
        if errors[i]:
            assert isinstance(item, OSError), (i, req, item)
            want = raised(reader, req, missing_ok=missing_ok)
            assert type(item) is type(want) and item.errno == want.errno, (item, want)
            assert item.filename == req[0] == want.filename
        elif item is None:
            assert missing_ok and not os.path.exists(req[0]), (i, req)
        else:
            assert bytes(item) == pread(*req), (i, req)
    if hasattr(results, "missing"):
        assert not np.any(results.missing & errors)


# -- local roads: a table ---------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    names: list[tuple[str, int, int | None]]
    failed: list[int]
    exc: type[OSError] | None = None


CASES = [
    Case("all-good", [("a", 0, 100), ("b", 10, 5000), ("c", 0, None)], []),
    Case("missing", [("a", 0, 100), ("gone", 0, 10), ("b", 0, None)], [1], FileNotFoundError),
    Case("directory", [("dir", 0, 10), ("a", 5, 10)], [0], IsADirectoryError),
    Case("fifo", [("a", 0, 10), ("fifo", 0, 10), ("c", 0, 1)], [1], OSError),
    Case("under-a-file", [("under", 0, 10), ("b", 100, 200)], [0], NotADirectoryError),
    Case("all-fail", [("gone", 0, 10), ("dir", 0, None)], [0, 1], OSError),
]


@pytest.mark.parametrize(("route", "backend"), ROADS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_local_roads(files: dict[str, str], route: str, backend: str, case: Case) -> None:
    reader = lsio.Reader(route=route, backend=backend)  # type: ignore[arg-type]
    requests = [(files[n], o, k) for n, o, k in case.names]
    sync = reader.read_many_sync(requests, on_error="return")
    got = await reader.read_many(requests, on_error="return")
    for results in (sync, got):
        assert np.flatnonzero(results.errors).tolist() == case.failed
        if case.exc is not None:
            assert all(isinstance(results[i], case.exc) for i in case.failed)
        check(results, requests, reader)
        # a call with a failure leaves the small path: the bulk road keeps going
        want = ("bulk" if route == "bulk" or case.failed else
                "small" if route == "small" else results.stats.route)
        assert results.stats.route == want
        assert results.stats.backend == backend
    if case.failed:  # "raise" is unchanged: the lowest failing request's error
        with pytest.raises(OSError) as info:
            await reader.read_many(requests)
        assert info.value.filename == requests[case.failed[0]][0]
        assert info.value.request_index == case.failed[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["uring", "threads"])
async def test_missing_ok_is_not_an_error(files: dict[str, str], backend: str) -> None:
    reader = lsio.Reader(backend=backend)  # type: ignore[arg-type]
    requests = [(files["gone"], 0, 10), (files["dir"], 0, 10), (files["a"], 0, 10),
                (files["under"], 0, 5)]
    results = await reader.read_many(requests, missing_ok=True, on_error="return")
    assert results.missing.tolist() == [True, False, False, True]
    assert results.errors.tolist() == [False, True, False, False]
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], IsADirectoryError)
    check(results, requests, reader, missing_ok=True)


@pytest.mark.parametrize("backend", ["uring", "threads"])
async def test_out_buffers_of_good_requests(files: dict[str, str], backend: str) -> None:
    """Good requests land in their ``out=`` buffers; a failed one's buffer is undefined."""
    reader = lsio.Reader(backend=backend)  # type: ignore[arg-type]
    requests = [(files["b"], 7, 3000), (files["gone"], 0, 10), (files["a"], 0, 100)]
    out = [bytearray(3000), bytearray(10), bytearray(100)]
    results = await reader.read_many(requests, out=out, on_error="return")
    assert results.errors.tolist() == [False, True, False]
    assert bytes(out[0]) == pread(*requests[0]) and bytes(out[2]) == pread(*requests[2])
    assert isinstance(results[1], FileNotFoundError)


@pytest.mark.parametrize("backend", ["uring", "threads"])
async def test_file_vanishes_or_shrinks_mid_call(files: dict[str, str], data_dir: Path,
                                                 backend: str) -> None:
    """A file removed between the stat and its reads fails alone; one that shrank is read
    as it is now (not an error), the rest of the call goes on."""
    victim = str(write_file(data_dir / "victim", random_bytes(9000, seed=1)))
    shrinks = str(write_file(data_dir / "shrinks", random_bytes(9000, seed=2)))
    reader = lsio.Reader(backend=backend, route="bulk")  # type: ignore[arg-type]
    stat = reader._backend.stat

    async def stat_then_change(reqs: Any, **kw: Any) -> Any:
        res = await stat(reqs, **kw)
        if os.path.exists(victim):  # once: the requests read again see the new state
            os.unlink(victim)
            os.truncate(shrinks, 100)
        return res

    reader._backend.stat = stat_then_change  # type: ignore[method-assign]
    requests = [(files["a"], 0, 500), (victim, 0, 4000), (victim, 4000, None),
                (shrinks, 0, None), (files["b"], 60_000, None)]
    results = await reader.read_many(requests, on_error="return")
    assert results.errors.tolist() == [False, True, True, False, False]
    for i in (1, 2):
        assert isinstance(results[i], FileNotFoundError) and results[i].filename == victim
        assert results[i].request_index == i
    assert bytes(results[3]) == pread(shrinks, 0, None) and len(results[3]) == 100
    assert bytes(results[0]) == pread(*requests[0])
    assert bytes(results[4]) == pread(*requests[4])


@pytest.mark.parametrize("backend", ["uring", "threads"])
async def test_a_failed_read_does_not_stop_the_others(data_dir: Path, backend: str) -> None:
    """A read that fails (its file removed after the stat) stops no other read: none of
    the call's other requests is read a second time (``stats.retries``)."""
    paths = [str(write_file(data_dir / f"g{i}", random_bytes(3000, seed=i))) for i in range(300)]
    reader = lsio.Reader(backend=backend, route="bulk", queue_depth=4)  # type: ignore[arg-type]
    stat = reader._backend.stat

    async def stat_then_unlink(reqs: Any, **kw: Any) -> Any:
        res = await stat(reqs, **kw)
        if os.path.exists(paths[0]):
            os.unlink(paths[0])
        return res

    reader._backend.stat = stat_then_unlink  # type: ignore[method-assign]
    requests = [(p, 0, 3000) for p in paths]
    results = await reader.read_many(requests, on_error="return")
    assert np.flatnonzero(results.errors).tolist() == [0]
    assert results.stats.retries == 0
    assert all(bytes(results[i]) == pread(*requests[i]) for i in range(1, len(paths)))


# -- the doors ---------------------------------------------------------------------------------

async def test_iter_many_yields_each_failure(files: dict[str, str]) -> None:
    requests = [(files["a"], 0, 10), (files["gone"], 0, 1), (files["dir"], 0, 1),
                (files["b"], 0, None)]
    got = dict([item async for item in lsio.iter_many(requests, on_error="return")])
    assert sorted(got) == [0, 1, 2, 3]
    assert isinstance(got[1], FileNotFoundError) and got[1].filename == files["gone"]
    assert isinstance(got[2], IsADirectoryError) and got[2].filename == files["dir"]
    assert bytes(got[0]) == pread(*requests[0]) and bytes(got[3]) == pread(*requests[3])
    with pytest.raises(FileNotFoundError):  # "raise": as before
        async for _ in lsio.iter_many(requests):
            pass


async def test_pipeline_skips_failed_requests_and_keeps_step_errors(
        files: dict[str, str]) -> None:
    """A failed read's output is its error and its steps do not run; a step that raises
    for one chunk makes that chunk's output the step's exception, the others go on."""
    requests = [(files["a"], 0, 10), (files["gone"], 0, 1), (files["b"], 0, 20),
                (files["c"], 0, 1)]
    ran: list[int] = []

    def step(buf: Any) -> bytes:
        ran.append(len(buf))
        if len(buf) == 20:
            raise ValueError("no twenties")
        return bytes(buf)

    out = await lsio.read_many(requests, pipeline=[step], on_error="return")
    assert out.errors.tolist() == [False, True, True, False]
    assert out[0] == pread(*requests[0]) and out[3] == pread(*requests[3])
    assert isinstance(out[1], FileNotFoundError) and out[1].filename == files["gone"]
    assert isinstance(out[2], ValueError) and getattr(out[2], "request_index", None) == 2
    assert sorted(ran) == [1, 10, 20]  # never for the failed read
    with pytest.raises(FileNotFoundError):
        await lsio.read_many(requests, pipeline=[bytes])
    ok = await lsio.read_many(requests[:1], pipeline=[bytes])
    assert ok.errors.tolist() == [False]


def test_module_functions_and_sync(files: dict[str, str]) -> None:
    requests = [(files["gone"], 0, 1), (files["a"], 1, 2)]
    results = lsio.read_many_sync(requests, on_error="return")
    assert results.errors.tolist() == [True, False]
    results = asyncio.run(lsio.read_many(requests, on_error="return"))
    assert results.errors.tolist() == [True, False]
    good = lsio.read_many_sync(requests[1:])
    assert good.errors.tolist() == [False]  # present on every result, all False


async def test_bad_on_error_is_named(files: dict[str, str]) -> None:
    reader = lsio.Reader()
    requests = [(files["a"], 0, 1)]
    with pytest.raises(ValueError, match="'omit'"):
        await reader.read_many(requests, on_error="omit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'ignore'"):
        reader.read_many_sync(requests, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'RETURN'"):
        reader.iter_many(requests, on_error="RETURN")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_each"):
        await reader.read_each(requests, lambda i, v: None, on_error="return")


# -- a property: good, missing and failing requests mixed, on every door ------------------------

NAMES = ["a", "b", "c", "gone", "dir", "under"]
requests_strategy = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 80_000),
                                       st.one_of(st.none(), st.integers(0, 9000))),
                             min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=requests_strategy, road=st.sampled_from(ROADS), missing_ok=st.booleans(),
       door=st.sampled_from(["async", "sync", "iter", "pipeline"]))
def test_mixed_requests_property(files: dict[str, str], names: list[Any], road: Any,
                                 missing_ok: bool, door: str) -> None:
    reader = lsio.Reader(route=road[0], backend=road[1])
    requests = [(files[n], o, k) for n, o, k in names]
    if door == "sync":
        results: Any = reader.read_many_sync(requests, missing_ok=missing_ok,
                                             on_error="return")
    elif door == "async":
        results = asyncio.run(reader.read_many(requests, missing_ok=missing_ok,
                                               on_error="return"))
    elif door == "pipeline":
        results = asyncio.run(reader.read_many(requests, missing_ok=missing_ok,
                                               pipeline=[memoryview], on_error="return"))
    else:
        async def collect() -> list[Any]:
            slots: list[Any] = [...] * len(requests)
            async for i, chunk in reader.iter_many(requests, missing_ok=missing_ok,
                                                   on_error="return"):
                assert slots[i] is ...
                slots[i] = chunk
            return slots

        results = _Slots(asyncio.run(collect()))
    check(results, requests, reader, missing_ok=missing_ok)


class _Slots(list[Any]):
    """iter_many's items in request order, with an ``errors`` mask like a result's."""

    @property
    def errors(self) -> np.ndarray[Any, Any]:
        return np.array([isinstance(x, BaseException) for x in self], bool)


# -- remote roads: nginx, a faulty server, a deadline, mixed calls ------------------------------

@pytest.fixture(scope="module")
def served(nginx: Nginx) -> dict[str, str]:
    root = nginx.root / "on_error"
    root.mkdir()
    root.chmod(0o755)
    for name, n in SIZES.items():
        write_file(root / name, random_bytes(n, seed=n))
    return {name: str(root / name) for name in SIZES}


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    yield from serving_faults({"f.bin": random_bytes(1000, seed=3)})


def local_of(url: str, nginx: Nginx) -> str:
    return str(nginx.root / url.split("/", 3)[3])


@pytest.mark.parametrize("route", ["auto", "bulk"])
async def test_http_404_and_500(nginx: Nginx, served: dict[str, str], faults: FaultServer,
                                route: str) -> None:
    reader = lsio.Reader(route=route,  # type: ignore[arg-type]
                         http=lsio.HttpOptions(retries=1, backoff=0.001))
    requests = [(nginx.url("on_error/a"), 0, 100), (nginx.url("on_error/nope"), 0, 10),
                (faults.url("status500", "f.bin"), 0, 10), (nginx.url("on_error/b"), 5, None),
                (faults.url("ok", "f.bin"), 10, 20)]
    results = await reader.read_many(requests, on_error="return")
    assert results.stats.route == ("small" if route == "auto" else "bulk")
    assert results.errors.tolist() == [False, True, True, False, False]
    assert isinstance(results[1], FileNotFoundError)
    for i in (1, 2):
        assert results[i].filename == requests[i][0]
        assert results[i].request_index == i
        want, item = raised(reader, requests[i]), results[i]
        assert isinstance(item, OSError) and isinstance(want, OSError)
        assert type(item) is type(want) and item.errno == want.errno
    assert bytes(results[0]) == pread(local_of(requests[0][0], nginx), 0, 100)
    assert bytes(results[3]) == pread(local_of(requests[3][0], nginx), 5, None)
    assert bytes(results[4]) == random_bytes(1000, seed=3)[10:30]
    maybe = await reader.read_many(requests[:2], missing_ok=True, on_error="return")
    assert maybe[1] is None and maybe.missing.tolist() == [False, True]
    assert not maybe.errors.any()


async def test_mixed_local_and_remote(nginx: Nginx, served: dict[str, str],
                                      files: dict[str, str]) -> None:
    reader = lsio.Reader(http=lsio.HttpOptions(retries=1, backoff=0.001))
    requests = [(files["gone"], 0, 1), (nginx.url("on_error/a"), 0, 50),
                (nginx.url("on_error/nope"), 0, 1), (files["a"], 3, 40), (files["dir"], 0, 1)]
    results = await reader.read_many(requests, on_error="return")
    assert results.stats.route == "mixed"
    assert results.errors.tolist() == [True, False, True, False, True]
    assert bytes(results[1]) == pread(served["a"], 0, 50)
    assert bytes(results[3]) == pread(files["a"], 3, 40)
    assert [results[i].filename for i in (0, 2, 4)] == [requests[i][0] for i in (0, 2, 4)]
    with pytest.raises(FileNotFoundError) as info:
        await reader.read_many(requests)
    assert info.value.request_index == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ["auto", "bulk"])
async def test_deadline_fails_only_the_late_requests(faults: FaultServer, route: str) -> None:
    """Past ``HttpOptions.timeout`` each request not read yet is a ``TimeoutError``
    naming its path; those read keep their bytes."""
    faults.reset()
    slow = faults.url("slowx99", "f.bin")
    requests = [(faults.url("ok", "f.bin"), 0, 10), (slow, 0, 10),
                (faults.url("ok", "f.bin"), 500, 20)]
    reader = lsio.Reader(route=route,  # type: ignore[arg-type]
                         http=lsio.HttpOptions(timeout=0.3, backoff=0.001))
    results = await reader.read_many(requests, on_error="return")
    assert results.errors.tolist() == [False, True, False]
    assert isinstance(results[1], TimeoutError) and results[1].filename == slow
    assert bytes(results[0]) == random_bytes(1000, seed=3)[:10]
    assert bytes(results[2]) == random_bytes(1000, seed=3)[500:520]
    got = dict([item async for item in reader.iter_many(requests, on_error="return")])
    assert isinstance(got[1], TimeoutError) and bytes(got[2]) == bytes(results[2])
    with pytest.raises(TimeoutError):  # "raise": the call's deadline, as before
        await reader.read_many(requests)
