"""lsio._gather: the reads of one event-loop turn become one call; each keeps its own result."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from lsio._gather import Gatherer


class _Results:
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.errors = np.array([isinstance(x, BaseException) for x in items], bool)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class _Reader:
    """Serves requests named ``ok:N`` (N bytes), ``gone`` (missing), ``bad`` (an OSError in
    its slot) and ``refused`` (a ValueError for the whole call); counts its calls."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    async def read_many(self, requests: list[Any], *, missing_ok: bool, on_error: str) -> Any:
        assert on_error == "return"
        self.calls.append(list(requests))
        await asyncio.sleep(0)
        if "refused" in requests:
            raise ValueError("lsio: request 'refused' is not a request")
        items: list[Any] = []
        for r in requests:
            if r == "gone":
                items.append(None if missing_ok else FileNotFoundError(2, "missing", r))
            elif r == "bad":
                items.append(PermissionError(13, "denied", r))
            else:
                items.append(memoryview(b"x" * int(r.split(":")[1])))
        return _Results(items)


async def test_one_turn_is_one_call_and_a_lone_read_waits_for_nothing() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)
    got = await asyncio.gather(*(g.read(f"ok:{n}") for n in range(1, 9)))
    assert [len(v) for v in got] == list(range(1, 9))  # type: ignore[arg-type]
    assert reader.calls == [[f"ok:{n}" for n in range(1, 9)]]
    assert len(await g.read("ok:3")) == 3  # type: ignore[arg-type]
    assert len(reader.calls) == 2


async def test_each_read_keeps_its_own_failure() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)
    got = await asyncio.gather(g.read("ok:1"), g.read("bad"), g.read("gone"), g.read("ok:2"),
                               return_exceptions=True)
    assert bytes(got[0]) == b"x" and bytes(got[3]) == b"xx"  # type: ignore[arg-type]
    assert isinstance(got[1], PermissionError) and got[1].filename == "bad"
    assert isinstance(got[2], FileNotFoundError)
    assert len(reader.calls) == 1


async def test_missing_ok_reads_are_their_own_batch() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)
    a, b = await asyncio.gather(g.read("gone", missing_ok=True), g.read("gone"),
                                return_exceptions=True)
    assert a is None and isinstance(b, FileNotFoundError)
    assert sorted(map(len, reader.calls)) == [1, 1]


async def test_a_refused_request_does_not_fail_the_others() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)
    got = await asyncio.gather(g.read("ok:4"), g.read("refused"), g.read("ok:5"),
                               return_exceptions=True)
    assert len(got[0]) == 4 and len(got[2]) == 5  # type: ignore[arg-type]
    assert isinstance(got[1], ValueError) and "refused" in str(got[1])


async def test_a_cancelled_reader_leaves_the_rest_served() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)
    first = asyncio.ensure_future(g.read("ok:1"))
    second = asyncio.ensure_future(g.read("ok:2"))
    await asyncio.sleep(0)  # both joined the batch
    first.cancel()
    assert len(await second) == 2  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await first


def test_each_loop_has_its_own_batches() -> None:
    reader = _Reader()
    g = Gatherer(lambda: reader)

    async def three() -> list[Any]:
        return await asyncio.gather(*(g.read("ok:1") for _ in range(3)))

    for _ in range(2):
        assert len(asyncio.run(three())) == 3
    assert [len(c) for c in reader.calls] == [3, 3]


def test_the_engine_and_http_client_load_off_the_event_loop() -> None:
    """The first gathered call imports lsio's engine and HTTP client on a worker thread
    (~0.2-0.5 s of imports the loop would otherwise be held for)."""
    from conftest import check_ok, run_python

    out = check_ok(run_python(
        "import asyncio, sys, threading\n"
        "where = {}\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] in ('lsio._reader', 'aiohttp',\n"
        "                                         'lsio.backends.http._client'):\n"
        "        where.setdefault(args[0], threading.current_thread() is threading.main_thread())\n"
        "sys.addaudithook(hook)\n"
        "import lsio.obspec\n"
        "store = lsio.obspec.Store('http://127.0.0.1:9', http=lsio.HttpOptions(retries=0))\n"
        "async def main():\n"
        "    try:\n"
        "        await store.get_range_async('x', start=0, length=10)\n"
        "    except OSError:\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(sorted(where.items()))\n"))
    assert out.strip() == str(sorted({"lsio._reader": False, "aiohttp": False,
                                      "lsio.backends.http._client": False}.items()))
