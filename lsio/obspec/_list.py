"""Listing a store's objects with their metadata: a local directory is walked (on a worker
thread); an object store is listed page by page (``Reader.list_keys``), and as its pages
carry names only, each object's metadata is then asked for (a few dozen at once). Plain
HTTP(S) cannot list: ``NotImplementedError``."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._defaults import LIST_CHUNK, LIST_HEADS
from .._objects import object_info

if TYPE_CHECKING:
    from obspec import ObjectMeta

    from .._reader import Reader
    from ._paths import Root

__all__ = ["list_chunks", "list_level"]


def meta_of(path: str, st: os.stat_result) -> ObjectMeta:
    """A local file's metadata as :func:`lsio._objects.object_info` gives it."""
    return {"path": path, "size": st.st_size,
            "last_modified": datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
            "e_tag": f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}", "version": None}


def walk(base: str, key: str, offset: str | None) -> list[ObjectMeta]:
    """Every file under ``base + key`` (recursive), sorted by path, after ``offset``."""
    found: list[ObjectMeta] = []
    top = base + key
    if not os.path.isdir(top):
        return found
    for here, dirs, files in os.walk(top):
        dirs.sort()
        rel = os.path.relpath(here, base).replace(os.sep, "/")
        for name in files:
            path = name if rel == "." else f"{rel}/{name}"
            if offset is not None and path <= offset:
                continue
            try:
                st = os.stat(os.path.join(here, name))
            except FileNotFoundError:  # removed while walked
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(meta_of(path, st))
    found.sort(key=lambda m: m["path"])
    return found


def scan(base: str, key: str) -> tuple[list[str], list[ObjectMeta]]:
    """The directories (as prefixes) and files directly under ``base + key``."""
    prefixes: list[str] = []
    objects: list[ObjectMeta] = []
    try:
        entries = sorted(os.scandir(base + key), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return prefixes, objects
    for entry in entries:
        if entry.is_dir():
            prefixes.append(key + entry.name)
        elif entry.is_file():
            try:
                objects.append(meta_of(key + entry.name, entry.stat()))
            except FileNotFoundError:
                continue
    return prefixes, objects


async def remote_meta(reader: Reader, root: Root, keys: list[str]) -> list[ObjectMeta]:
    """The metadata of the objects ``keys`` (under ``root``), at most :data:`LIST_HEADS`
    asked at once; an object deleted since the listing is left out."""
    slots = asyncio.Semaphore(LIST_HEADS)

    async def one(key: str) -> ObjectMeta | None:
        async with slots:
            try:
                info = await object_info(reader, root.base + key)
            except FileNotFoundError:
                return None
        return {"path": key, "size": info.size, "last_modified": info.last_modified,
                "e_tag": info.etag, "version": info.version}

    got = await asyncio.gather(*(one(k) for k in keys))
    return [m for m in got if m is not None]


async def list_chunks(reader: Reader, root: Root, prefix: str | None, offset: str | None
                      ) -> AsyncIterator[list[ObjectMeta]]:
    """The objects under ``prefix`` (recursive) after ``offset``, in chunks of at most
    :data:`LIST_CHUNK`."""
    key = root.key(prefix)
    if not root.remote:
        found = await asyncio.to_thread(walk, root.base, key, offset)
        for start in range(0, len(found), LIST_CHUNK):
            yield found[start:start + LIST_CHUNK]
        return
    names: list[str] = []
    async for name in reader.list_keys(root.url, key):
        if offset is None or name > offset:
            names.append(name)
        if len(names) == LIST_CHUNK:
            yield await remote_meta(reader, root, names)
            names = []
    if names:
        yield await remote_meta(reader, root, names)


async def list_level(reader: Reader, root: Root, prefix: str | None
                     ) -> tuple[list[str], list[ObjectMeta]]:
    """The common prefixes (one level below ``prefix``, without a trailing ``/``) and the
    objects directly under ``prefix``."""
    key = root.key(prefix)
    if not root.remote:
        return await asyncio.to_thread(scan, root.base, key)
    prefixes: list[str] = []
    names: list[str] = []
    async for name in reader.list_keys(root.url, key, "/"):
        if name.endswith("/"):
            prefixes.append(name.rstrip("/"))
        else:
            names.append(name)
    return prefixes, await remote_meta(reader, root, names)
