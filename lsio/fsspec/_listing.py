"""What is where: ``info``, ``ls`` and ``find`` of local paths and object-store URLs.

Local paths are ``os.stat``/``os.scandir``'ed on a worker thread (a network filesystem's
stat can block). A URL's size comes from :func:`lsio._objects.object_info` (one 1-byte
request, what the obspec store's ``head`` makes). Object stores (``s3://``,
``gs://``, ``az://``) list through :meth:`lsio.Reader.list_keys`, which gives names only:
listed entries carry ``size=None`` (``info`` of one object probes its size). Plain
``http(s)://`` has no listing: ``ls`` and ``find`` raise ``NotImplementedError``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import TYPE_CHECKING, Any

from .._objects import object_info
from .._url import is_url, listable, redact
from ._paths import join, split_bucket

if TYPE_CHECKING:
    from .._reader import Reader

__all__ = ["find", "info", "ls"]

Info = dict[str, Any]


def _entry(path: str, st: os.stat_result) -> Info:
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    return {"name": path, "size": st.st_size, "type": kind, "mtime": st.st_mtime}


def _stat(path: str) -> os.stat_result:
    """``os.stat``, or for a link to nothing the link's own (``lstat``)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return os.lstat(path)


def _dir(name: str) -> Info:
    return {"name": name, "size": 0, "type": "directory"}


def _no_listing(url: str) -> NotImplementedError:
    return NotImplementedError(f"lsio: {redact(repr(url))}: plain HTTP(S) has no listing; read the "
                               "URLs by name (info, cat and open work)")


async def info(reader: Reader, path: str) -> Info:
    """fsspec's info of an inner path: ``name``, ``size``, ``type`` (and ``mtime`` for a
    local path); ``FileNotFoundError`` naming it when there is nothing there."""
    if not is_url(path):
        return _entry(path, await asyncio.to_thread(os.stat, path))
    if listable(path):
        bucket, key = split_bucket(path)
        if not key:
            return _dir(bucket)
    try:
        size = (await object_info(reader, path)).size  # one request, as obspec's head
    except FileNotFoundError:
        if listable(path) and await _has_children(reader, path):
            return _dir(path)
        raise
    return {"name": path, "size": size, "type": "file"}


async def _has_children(reader: Reader, url: str) -> bool:
    bucket, key = split_bucket(url)
    async for _ in reader.list_keys(bucket, f"{key}/", "/"):
        return True
    return False


async def ls(reader: Reader, path: str, detail: bool) -> list[Any]:
    """The entries right under ``path`` (a file: itself), sorted by name."""
    if not is_url(path):
        entries = await asyncio.to_thread(_scan, path)
    elif not listable(path):
        raise _no_listing(path)
    else:
        bucket, key = split_bucket(path)
        base = f"{key}/" if key else ""
        entries = []
        async for name in reader.list_keys(bucket, base, "/"):
            if name.endswith("/"):
                entries.append(_dir(join(bucket, name.rstrip("/"))))
            else:
                entries.append({"name": join(bucket, name), "size": None, "type": "file"})
        if not entries:
            entries = [await info(reader, path)]  # a file, or FileNotFoundError
    entries.sort(key=lambda e: e["name"])
    return entries if detail else [e["name"] for e in entries]


def _scan(path: str) -> list[Info]:
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return [_entry(path, st)]
    with os.scandir(path) as it:
        names = [os.path.join(path, e.name) for e in it]
    return [_entry(n, _stat(n)) for n in names]


async def find(reader: Reader, path: str, maxdepth: int | None, withdirs: bool
               ) -> dict[str, Info]:
    """Every file below ``path`` (with ``withdirs``, the directories too; ``path`` itself
    when it is a file), by name."""
    if maxdepth is not None and maxdepth < 1:
        raise ValueError("lsio: maxdepth must be at least 1")
    if not is_url(path):
        return await asyncio.to_thread(_walk, path, maxdepth, withdirs)
    if not listable(path):
        raise _no_listing(path)
    bucket, key = split_bucket(path)
    base = f"{key}/" if key else ""
    out: dict[str, Info] = {}
    async for name in reader.list_keys(bucket, base, None):
        parts = name[len(base):].split("/")
        if maxdepth is not None and len(parts) > maxdepth:
            continue
        if withdirs:
            for depth in range(1, len(parts)):
                d = join(bucket, base + "/".join(parts[:depth]))
                out.setdefault(d, _dir(d))
        out[join(bucket, name)] = {"name": join(bucket, name), "size": None, "type": "file"}
    if not out and key:
        found = await info(reader, path)  # a file is its own find; nothing: FileNotFoundError
        if found["type"] == "file":
            out[path] = found
    elif withdirs:
        out[path] = _dir(path)
    return dict(sorted(out.items()))


def _walk(path: str, maxdepth: int | None, withdirs: bool) -> dict[str, Info]:
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return {path: _entry(path, st)}
    out: dict[str, Info] = {path: _entry(path, st)} if withdirs else {}
    top = path.rstrip(os.sep).count(os.sep)
    for root, dirs, files in os.walk(path):
        names = (*dirs, *files) if withdirs else files
        if maxdepth is not None and root.rstrip(os.sep).count(os.sep) - top + 1 >= maxdepth:
            dirs.clear()
        for name in names:
            full = os.path.join(root, name)
            out[full] = _entry(full, _stat(full))
    return dict(sorted(out.items()))
