"""What a call tells about itself: ``Results.stats`` on every door (and on errors),
``Reader.explain``, the ``"lsio"`` logger, and the reader's lifecycle (``close``,
``async with``)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import check_ok, random_bytes, run_python, write_file

import lsio


@pytest.fixture
def files(data_dir: Path) -> list[Path]:
    return [write_file(data_dir / f"s{i}", random_bytes(10_000 + i, seed=i)) for i in range(4)]


async def test_stats_of_each_road(files: list[Path]) -> None:
    reqs = [(str(f), 10, 100) for f in files] + [(str(files[0]), 50, 100)]
    small = await lsio.Reader(route="small").read_many(reqs)
    bulk = await lsio.Reader(route="bulk").read_many(reqs)
    for got in (small, bulk):
        s = got.stats
        assert (s.requests, s.files, s.bytes_requested) == (5, 4, 500)
        assert s.retries == 0 and s.loop_hold >= 0.0
    assert small.stats.route == "small" and small.stats.operations == 5
    # the bulk road merges the two overlapping ranges of files[0]: 4 reads, 4 files' bytes
    assert bulk.stats.route == "bulk" and bulk.stats.operations == 4
    assert bulk.stats.bytes_transferred == 400 + 40
    assert bulk.stats.backend == lsio.Reader().backend
    assert "route='bulk'" in repr(bulk.stats)


async def test_stats_on_errors_iterators_and_pipelines(files: list[Path],
                                                       data_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        await lsio.Reader(route="bulk").read_many([(str(files[0]),), (str(data_dir / "no"),)])
    assert info.value.stats.requests == 2  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError) as sync:
        lsio.Reader(route="bulk").read_many_sync([(str(data_dir / "no"),)])
    assert sync.value.stats.route == "bulk"  # type: ignore[attr-defined]
    it = lsio.iter_many([(str(f),) for f in files])
    assert it.stats is None
    async for _ in it:
        pass
    assert it.stats is not None and it.stats.requests == 4
    assert it.stats.bytes_requested == sum(f.stat().st_size for f in files)
    out = await lsio.read_many([(str(f),) for f in files], pipeline=[len])
    assert list(out) == [f.stat().st_size for f in files]
    assert out.stats.requests == 4 and out.stats.route == "bulk"


async def test_stats_hold_the_loop_only_as_long_as_measured(files: list[Path]) -> None:
    """``loop_hold`` is the longest step the call ran on the loop: a progress callback that
    sleeps 30 ms on the loop thread shows in it."""
    import time

    def slow(*_: object) -> None:
        time.sleep(0.03)

    got = await lsio.Reader(route="bulk").read_many([(str(files[0]),)], progress=slow)
    assert got.stats.loop_hold >= 0.025
    quick = await lsio.Reader(route="bulk").read_many([(str(files[0]),)])
    assert quick.stats.loop_hold < got.stats.loop_hold


async def test_explain_plans_without_reading(files: list[Path]) -> None:
    reader = lsio.Reader(max_gap=1 << 20)
    reqs = [(str(files[0]), 0, 100), (str(files[0]), 200, 100), (str(files[1]), 0, None)]
    plan = await reader.explain(reqs)
    assert plan.route == "small" and plan.requests == 3 and plan.files == 2
    assert plan.reads == 2 and plan.merged == 2 and plan.split == 0
    assert plan.bytes_requested == 200 + files[1].stat().st_size
    assert plan.over_read == plan.bytes_read - plan.bytes_requested >= 100
    split = await lsio.Reader(max_read=4096, route="bulk").explain([(str(files[2]),)])
    assert split.route == "bulk" and split.split == 1 and split.reads >= 3


async def test_debug_log_tells_each_call(files: list[Path],
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="lsio"):
        await lsio.Reader(route="bulk").read_many([(str(files[0]),)])
        await lsio.Reader(route="small").read_many([(str(files[1]),)])
    told = [r.getMessage() for r in caplog.records if r.name == "lsio"]
    assert any("route='bulk'" in t for t in told) and any("route='small'" in t for t in told)


def test_nothing_is_logged_at_import() -> None:
    out = check_ok(run_python(
        "import logging, io\n"
        "h = logging.StreamHandler(buf := io.StringIO()); lg = logging.getLogger('lsio')\n"
        "lg.addHandler(h); lg.setLevel(logging.DEBUG)\n"
        "import lsio, lsio.zarr\nfrom lsio import Reader\nprint(repr(buf.getvalue()))"))
    assert out.strip() == "''"


async def test_close_and_context_managers(files: list[Path]) -> None:
    async with lsio.Reader(backend="threads") as reader:
        got = await reader.read_many([(str(files[0]),)], out=[np.zeros(20_000, np.uint8)])
        assert got.nbytes == files[0].stat().st_size
    with pytest.raises(ValueError, match="closed"):
        await reader.read_many([(str(files[0]),)])
    reader.close()  # idempotent
    with lsio.Reader() as sync_reader:
        assert sync_reader.read_many_sync([(str(files[1]),)]).nbytes > 0
    with pytest.raises(ValueError, match="closed"):
        sync_reader.read_many_sync([(str(files[1]),)])


def test_closing_a_threads_reader_ends_its_threads(files: list[Path]) -> None:
    code = f"""
import threading, lsio
before = threading.active_count()
r = lsio.Reader(backend="threads", route="bulk")
r.read_many_sync([({str(files[0])!r},), ({str(files[1])!r},)])
r.close()
import time
for _ in range(100):
    if not [t for t in threading.enumerate() if "lsio-sync" not in t.name
            and t is not threading.main_thread() and t.is_alive()
            and t.name.startswith("ThreadPoolExecutor")]:
        break
    time.sleep(0.02)
left = [t.name for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]
print(left)
"""
    out = check_ok(run_python(code))
    assert out.strip() == "[]", out


def test_sync_and_async_roads_agree(files: list[Path]) -> None:
    reqs = [(str(f), -50, None) for f in files]
    a = lsio.read_many_sync(reqs)
    b = asyncio.run(lsio.Reader().read_many(reqs))
    assert [bytes(x) for x in a] == [bytes(x) for x in b]
    assert a.stats.route == b.stats.route == "small"
    assert os.path.exists(str(files[0]))
