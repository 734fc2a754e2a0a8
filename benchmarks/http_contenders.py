"""HTTP contenders: one async setup function per way of reading a workload from an HTTP server.

``await setup(hw, ctx) -> RunFn``: the setup runs on the benchmark's event loop (aiohttp and
fsspec sessions belong to the loop they were created on) and does the one-off work a user would
do once (build the request list, create the reader / session / store); it returns an async
callable that performs exactly one full read of the workload and returns the buffers in request
order (checked by `harness.verify` against the local files nginx serves). Sessions are closed
through ``ctx.cleanup`` on the same loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .contenders import Payload, RunFn
from .workloads import Workload


@dataclass(frozen=True)
class HttpWorkload:
    """A materialized workload plus, per request, the key and URL nginx serves it under."""

    wl: Workload
    base_url: str  # the server root, ending in "/"
    keys: tuple[str, ...]  # per request: path relative to the served directory
    urls: tuple[str, ...]  # per request: base_url + quoted key

    @classmethod
    def build(cls, wl: Workload, root: Path, url: Callable[[str], str]) -> HttpWorkload:
        """`root` is the directory nginx serves, `url(key)` the URL of a key under it."""
        keys = tuple(Path(os.path.relpath(r.path, root)).as_posix() for r in wl.requests)
        return cls(wl=wl, base_url=url(""), keys=keys, urls=tuple(url(k) for k in keys))

    @property
    def ranges(self) -> bool:
        """Byte ranges of one object (else: whole objects)."""
        return self.wl.spec.kind == "ranges"

    @property
    def single_object(self) -> bool:
        """One whole object (the big-object workload)."""
        return not self.ranges and self.wl.n_ops == 1

    @property
    def starts(self) -> list[int]:
        return [r.offset for r in self.wl.requests]

    @property
    def ends(self) -> list[int]:
        """Exclusive ends."""
        return [r.offset + r.length for r in self.wl.requests]

    def one_object(self) -> str:
        """The key of the only object a ranges workload reads."""
        if len(set(self.keys)) != 1:
            raise ValueError("ranges workloads must read one object")
        return self.keys[0]


@dataclass
class HttpContext:
    cleanup: AsyncExitStack = field(default_factory=AsyncExitStack)


Setup = Callable[[HttpWorkload, HttpContext], Awaitable[RunFn]]


@dataclass(frozen=True)
class HttpContender:
    name: str
    setup: Setup
    peer: bool = True  # False for lsio itself: "best peer" is the best non-lsio contender


# --------------------------------------------------------------------------- lsio


async def lsio_contender(hw: HttpWorkload, ctx: HttpContext) -> RunFn:
    """One ``lsio.Reader()``; ``read_many`` of ``(url, offset, length)`` / ``(url, 0, None)``."""
    import lsio

    requests: list[tuple[str, int, int | None]]
    if hw.ranges:
        requests = [(u, r.offset, r.length)
                    for u, r in zip(hw.urls, hw.wl.requests, strict=True)]
    else:
        requests = [(u, 0, None) for u in hw.urls]
    reader = lsio.Reader()

    async def run() -> Payload:
        return await reader.read_many(requests)

    return run


# --------------------------------------------------------------------------- peers


async def aiohttp_contender(hw: HttpWorkload, ctx: HttpContext) -> RunFn:
    """One ``aiohttp.ClientSession`` (default connector: at most 100 connections);
    ``asyncio.gather`` of one GET per request (``Range: bytes=a-b`` for ranges)."""
    import aiohttp

    session = aiohttp.ClientSession()
    ctx.cleanup.push_async_callback(session.close)
    gets: list[tuple[str, dict[str, str] | None]]
    if hw.ranges:
        gets = [(u, {"Range": f"bytes={s}-{e - 1}"})
                for u, s, e in zip(hw.urls, hw.starts, hw.ends, strict=True)]
    else:
        gets = [(u, None) for u in hw.urls]

    async def get(url: str, headers: dict[str, str] | None) -> bytes:
        async with session.get(url, headers=headers) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def run() -> Payload:
        return await asyncio.gather(*(get(u, h) for u, h in gets))

    return run


async def fsspec_contender(hw: HttpWorkload, ctx: HttpContext) -> RunFn:
    """``HTTPFileSystem(asynchronous=True)`` built on the running loop: ``_cat_ranges`` for
    ranges, ``_cat`` (a dict keyed by URL) for files, ``_cat_file`` for one big object."""
    import fsspec

    fs = fsspec.filesystem("http", asynchronous=True, skip_instance_cache=True)
    session = await fs.set_session()
    ctx.cleanup.push_async_callback(session.close)
    urls = list(hw.urls)
    starts, ends = hw.starts, hw.ends

    async def run() -> Payload:
        if hw.ranges:
            # on_error="raise": the default ("return") puts exceptions in the result list
            return await fs._cat_ranges(urls, starts, ends, on_error="raise")
        if hw.single_object:
            return [await fs._cat_file(urls[0])]
        by_url = await fs._cat(urls)
        return [by_url[u] for u in urls]

    return run


async def obstore_contender(hw: HttpWorkload, ctx: HttpContext) -> RunFn:
    """``HTTPStore.from_url(base)``: one ``get_ranges_async`` for ranges (obstore merges ranges
    less than 1 MiB apart, its default ``coalesce``), else ``gather`` of ``get_async`` +
    ``bytes_async``. ``allow_http`` is required for a plain-http URL."""
    import obstore
    from obstore.store import HTTPStore

    store = HTTPStore.from_url(hw.base_url, client_options={"allow_http": True})
    keys = list(hw.keys)
    starts, ends = hw.starts, hw.ends
    key = hw.one_object() if hw.ranges else ""

    async def get(k: str) -> Payload:
        return await (await obstore.get_async(store, k)).bytes_async()

    async def run() -> Payload:
        if hw.ranges:
            return await obstore.get_ranges_async(store, key, starts=starts, ends=ends)
        return await asyncio.gather(*(get(k) for k in keys))

    return run


# --------------------------------------------------------------------------- registry

LSIO = "lsio"
CONTENDERS: tuple[HttpContender, ...] = (
    HttpContender(LSIO, lsio_contender, peer=False),
    HttpContender("aiohttp gather", aiohttp_contender),
    HttpContender("fsspec", fsspec_contender),
    HttpContender("obstore", obstore_contender),
)
