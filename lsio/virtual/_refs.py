"""References, parsed once into one table: each store key's value as bytes held in memory
or as a byte range of a file.

Sources: kerchunk references (version 1, ``{"version": 1, "templates": {...},
"refs": {key: value}}``, and version 0, the ``refs`` mapping alone; JSON text, a path to
it, or the dict; values are inline text, ``"base64:..."`` bytes, ``[url]`` (the whole
file) or ``[url, offset, length]``; ``{{name}}`` in a URL is replaced by that template),
their parquet form (a directory, :mod:`._parquet`), and VirtualiZarr manifests (a
``ManifestStore``, ``ManifestGroup`` or ``ManifestArray``: zarr v3 metadata and each
array's ``ChunkManifest``, read through its public ``dict()``).
References are untrusted: a bad entry is a ValueError naming its key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from ._parquet import from_parquet, is_parquet

__all__ = ["Entry", "parse"]

Entry = bytes | tuple[str, int, int]
"""A key's value: the bytes themselves, or (file path or URL, offset, length; ``-1``: to
the end of the file)."""

_TEMPLATE = re.compile(r"{{\s*(\w+)\s*}}")
MAX_OFFSET = 2**63 - 1
"""No file holds bytes beyond this (lsio's requests are int64)."""


def parse(refs: Any) -> dict[str, Entry]:
    """The table of ``refs`` (see the module docstring)."""
    if _is_manifest(refs):
        return _from_manifest(refs)
    if is_parquet(refs):
        return from_parquet(refs, lambda key, value: _entry(_key(key), value, {}))
    if isinstance(refs, (str, os.PathLike)) and not _looks_like_json(refs):
        with open(refs, "rb") as f:
            refs = f.read()
    if isinstance(refs, (str, bytes, bytearray)):
        try:
            refs = json.loads(refs)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"lsio.virtual: the references are not JSON: {exc}") from None
    if not isinstance(refs, Mapping):
        raise TypeError(f"lsio.virtual: references must be kerchunk JSON, a dict or a "
                        f"VirtualiZarr manifest, not {type(refs).__name__}")
    return _from_kerchunk(refs)


def _looks_like_json(text: str | os.PathLike[str]) -> bool:
    return isinstance(text, str) and text.lstrip()[:1] == "{"


def _from_kerchunk(doc: Mapping[str, Any]) -> dict[str, Entry]:
    version = doc.get("version")
    templates: Any
    if version is None:  # version 0: the mapping is the references
        refs, templates = doc, {}
    elif version == 1:
        refs, templates = doc.get("refs", {}), doc.get("templates") or {}
        if doc.get("gen"):
            raise ValueError("lsio.virtual: kerchunk 'gen' references are not supported; "
                             "expand them first (kerchunk.utils.expand_gen)")
    else:
        raise ValueError(f"lsio.virtual: kerchunk references version {version!r} is not "
                         f"supported (0 or 1)")
    if not isinstance(refs, Mapping) or not isinstance(templates, Mapping):
        raise ValueError("lsio.virtual: 'refs' and 'templates' must be JSON objects")
    if not all(isinstance(v, str) for v in templates.values()):
        raise ValueError("lsio.virtual: every template must be a string")
    return {_key(k): _entry(k, v, templates) for k, v in refs.items()}


def _key(key: Any) -> str:
    from ..zarr._locate import check_key

    if not isinstance(key, str):
        raise ValueError(f"lsio.virtual: reference key {key!r} is not a string")
    try:
        return check_key(key)
    except ValueError:
        raise ValueError(f"lsio.virtual: reference key {key!r} would leave the store's "
                         f"root") from None


def _entry(key: str, value: Any, templates: Mapping[str, str]) -> Entry:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        if value.startswith("base64:"):
            try:
                return base64.b64decode(value[7:], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"lsio.virtual: reference {key!r} is not valid "
                                 f"base64") from None
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (list, tuple)) and len(value) in (1, 3):
        url = value[0]
        if not isinstance(url, str) or not url:
            raise ValueError(f"lsio.virtual: reference {key!r} names no file: {url!r}")
        url = _expand(key, url, templates)
        if len(value) == 1:
            return (url, 0, -1)
        offset, length = value[1], value[2]
        if not all(type(v) is int for v in (offset, length)) or not (
                0 <= offset and 0 <= length and offset + length <= MAX_OFFSET):
            raise ValueError(f"lsio.virtual: reference {key!r} has a bad byte range: "
                             f"offset {offset!r}, length {length!r}")
        return (url, offset, length)
    raise ValueError(f"lsio.virtual: reference {key!r} is neither a value nor [url] nor "
                     f"[url, offset, length]: {str(value)[:80]}")


def _expand(key: str, url: str, templates: Mapping[str, str]) -> str:
    if "{{" not in url:
        return url

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in templates:
            raise ValueError(f"lsio.virtual: reference {key!r} uses template {name!r}, "
                             f"which the references do not define")
        return templates[name]

    return _TEMPLATE.sub(sub, url)


# -- VirtualiZarr ---------------------------------------------------------------------------

def _is_manifest(refs: Any) -> bool:
    return type(refs).__module__.startswith("virtualizarr.")


def _from_manifest(refs: Any) -> dict[str, Entry]:
    """ManifestStore, ManifestGroup or ManifestArray: zarr v3 metadata documents, and each
    array's chunks by its chunk key encoding."""
    kind = type(refs).__name__
    if kind == "ManifestStore":
        # VirtualiZarr 2.8 offers no public way from the store to its group
        refs = refs._group
        kind = type(refs).__name__
    table: dict[str, Entry] = {}
    if kind == "ManifestArray":
        _add_array(table, "", refs)
    elif kind == "ManifestGroup":
        _add_group(table, "", refs)
    else:
        raise TypeError(f"lsio.virtual: cannot read references from a {kind}")
    return table


def _document(metadata: Any) -> bytes:
    from zarr.core.buffer import default_buffer_prototype

    return bytes(metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())


def _add_group(table: dict[str, Entry], prefix: str, group: Any) -> None:
    table[prefix + "zarr.json"] = _document(group.metadata)
    for name, array in group.arrays.items():
        _add_array(table, f"{prefix}{name}/", array)
    for name, sub in group.groups.items():
        _add_group(table, f"{prefix}{name}/", sub)


def _add_array(table: dict[str, Entry], prefix: str, array: Any) -> None:
    metadata = array.metadata
    table[prefix + "zarr.json"] = _document(metadata)
    for index, entry in array.manifest.dict().items():
        coords = tuple(int(i) for i in index.split(".")) if index else ()
        key = prefix + metadata.encode_chunk_key(coords)
        data = entry.get("data")
        if data is not None:
            table[key] = bytes(data)
        else:
            table[key] = _entry(key, [str(entry["path"]), int(entry["offset"]),
                                      int(entry["length"])], {})
