"""The backend conformance kit: io_uring, threads and HTTP pass the same suite, byte for byte
against the source, through the same public door (``Reader.read_many``).

Each backend reads the same files: the local ones by path, HTTP through nginx serving the
same directory. The property draws hostile request lists (suffixes, ranges past the end,
lengths up to ``sys.maxsize``, duplicates, empty files) and checks every result against a
slice of the file's bytes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_bytes, write_file
from hypothesis import given, settings
from hypothesis import strategies as st

import lsio

SIZES = [0, 1, 4095, 4096, 10_000, 70_000, (1 << 20) + 3]

Kit = tuple[lsio.Reader, Callable[[str], str], dict[str, bytes]]
"""A reader, the path (or URL) it reads each file name by, and each file's bytes."""


@pytest.fixture(scope="module")
def conformance_dir(nginx: Any) -> tuple[Path, dict[str, bytes]]:
    """The files, in a directory of their own under the session's nginx root (the local
    backends read the same files by path)."""
    root = nginx.root / "conformance"
    root.mkdir()
    root.chmod(0o755)
    data = {f"f{n}": random_bytes(n, seed=n + 7) for n in SIZES}
    for name, content in data.items():
        write_file(root / name, content)
    return root, data


@pytest.fixture(scope="module",
                params=["uring", "threads", "small", "http", "http-aiohttp", "http-small"])
def kit(request: pytest.FixtureRequest, nginx: Any,
        conformance_dir: tuple[Path, dict[str, bytes]]) -> Kit:
    """``uring``, ``threads`` and ``http``: the bulk path of each backend (the small-call
    paths off; ``http`` sends through the C transport where lsio has it); ``http-aiohttp``:
    the same through aiohttp alone; ``small``: every local call through the local small path
    (``backends/_local_small.py``), the bulk path taking over only what it cannot serve;
    ``http-small``: the default reader on URLs (calls of distinct objects take
    ``backends/http/_small.py``)."""
    root, data = conformance_dir
    if not request.param.startswith("http"):
        small = request.param == "small"
        reader = lsio.Reader(backend="uring" if small else request.param,
                             route="small" if small else "bulk")
        return reader, lambda name: str(root / name), data
    # "http", "http-aiohttp": the bulk path only; "http-small": one-object calls through the
    # URL twin
    transport = "aiohttp" if request.param == "http-aiohttp" else "auto"
    reader = lsio.Reader(http=lsio.HttpOptions(retries=1, transport=transport),
                         route="auto" if request.param == "http-small" else "bulk")
    return reader, lambda name: nginx.url(f"conformance/{name}"), data


def reference(content: bytes, offset: int, length: int | None) -> bytes:
    """What a request returns: the documented range, clamped at the end."""
    size = len(content)
    start = max(size + offset, 0) if offset < 0 else min(offset, size)
    end = size if length is None else min(start + length, size)
    return content[start:end]


requests_strategy = st.lists(st.tuples(
    st.sampled_from([f"f{n}" for n in SIZES]),
    st.one_of(st.integers(-80_000, 80_000), st.sampled_from([0, -1, 4095, 4096, 1 << 20])),
    st.one_of(st.none(), st.integers(0, 80_000),
              st.sampled_from([0, 1, sys.maxsize, 2**62, (1 << 20) + 3]))),
    min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(reqs=requests_strategy, dup=st.booleans())
def test_every_backend_matches_the_source(kit: Kit, reqs: list[tuple[str, int, int | None]],
                                          dup: bool) -> None:
    reader, where, data = kit
    if dup:
        reqs = reqs + reqs[: len(reqs) // 2]
    requests = [(where(name), off, n) for name, off, n in reqs]
    results = asyncio.run(reader.read_many(requests))
    if reader.route == "small":  # the files are in the page cache: the small path served the call
        assert results.stats.route == "small"
    assert len(results) == len(reqs)
    for i, (name, off, n) in enumerate(reqs):
        want = reference(data[name], off, n)
        assert bytes(results[i]) == want, f"request #{i} {reqs[i]}"
        assert results.lengths[i] == len(want)


async def test_every_backend_fills_out_buffers(kit: Kit) -> None:
    reader, where, data = kit
    reqs = [("f70000", 5, 1000), ("f10000", -100, None), ("f0", 0, None), ("f4096", 0, None)]
    out = [np.zeros(len(reference(data[name], off, n)) + 3, np.uint8) for name, off, n in reqs]
    results = await reader.read_many([(where(name), off, n) for name, off, n in reqs], out=out)
    for (name, off, n), buf, got in zip(reqs, out, results, strict=True):
        want = reference(data[name], off, n)
        assert bytes(got) == want and buf[: len(want)].tobytes() == want


async def test_every_backend_names_a_missing_file(kit: Kit) -> None:
    reader, where, _ = kit
    requests: list[Any] = [(where("f4096"), 0, 10), (where("nope"), 0, None),
                           (where("f1"), 0, None)]
    with pytest.raises(FileNotFoundError) as info:
        await reader.read_many(requests)
    assert info.value.request_index == 1  # type: ignore[attr-defined]
    got = await reader.read_many(requests, missing_ok=True)
    assert got[1] is None and bytes(got[0]) and len(got[2]) == 1
