"""kerchunk's parquet references (``refs_to_dataframe``, fsspec's ``LazyReferenceMapper``):
a directory holding ``.zmetadata`` (``{"metadata": {key: document}, "record_size": n}``) and,
per array, ``refs.{i}.parq`` files of ``record_size`` rows each (columns ``path``, ``offset``,
``size``, ``raw``), row ``j`` of record ``i`` being the chunk at flat index
``i * record_size + j`` of the array's chunk grid in C order. A row with ``raw`` holds the
value; one with no path is a missing chunk; offset and size both 0 mean the whole file.
Read with pyarrow (``pip install pyarrow``), eagerly, into the same table as JSON references.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["from_parquet", "is_parquet"]


def is_parquet(refs: Any) -> bool:
    """A local directory of parquet references."""
    return (isinstance(refs, (str, os.PathLike)) and os.path.isdir(refs)
            and os.path.isfile(os.path.join(refs, ".zmetadata")))


def from_parquet(root: str | os.PathLike[str], entry: Any) -> dict[str, Any]:
    """The table of the references under ``root``; ``entry(key, value)`` checks each
    ``[url, offset, length]`` (the JSON form's rules)."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as exc:
        raise ImportError("lsio.virtual: parquet references need pyarrow "
                          "(pip install pyarrow)") from exc
    root = os.fspath(root)
    with open(os.path.join(root, ".zmetadata"), "rb") as f:
        try:
            doc = json.load(f)
            metadata, record_size = doc["metadata"], int(doc["record_size"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ValueError(f"lsio.virtual: {root}/.zmetadata is not parquet references' "
                             f"metadata: {exc!r}") from None
    if not isinstance(metadata, dict) or record_size <= 0:
        raise ValueError(f"lsio.virtual: {root}/.zmetadata is not parquet references' "
                         f"metadata")
    table: dict[str, Any] = {}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        table[key] = entry(key, text)
        if key.endswith("/.zarray"):
            _add_array(table, root, key[:-len("/.zarray")], json.loads(text), record_size,
                       entry, pq)
    return table


def _add_array(table: dict[str, Any], root: str, name: str, zarray: dict[str, Any],
               record_size: int, entry: Any, pq: Any) -> None:
    shape, chunks = zarray.get("shape"), zarray.get("chunks")
    if not (isinstance(shape, list) and isinstance(chunks, list) and len(shape) == len(chunks)
            and all(type(c) is int and c > 0 for c in chunks)
            and all(type(s) is int and s >= 0 for s in shape)):
        raise ValueError(f"lsio.virtual: {name}/.zarray has no valid shape and chunks")
    grid = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
    n = math.prod(grid)
    sep = zarray.get("dimension_separator") or "."
    for record in range(-(-n // record_size)):
        path = os.path.join(root, name, f"refs.{record}.parq")
        if not os.path.exists(path):
            continue  # a record with no references
        cols = pq.read_table(path, columns=["path", "offset", "size", "raw"]).to_pydict()
        for j, (url, offset, size, raw) in enumerate(zip(
                cols["path"], cols["offset"], cols["size"], cols["raw"], strict=True)):
            flat = record * record_size + j
            if flat >= n:
                break
            coords, rest = [], flat
            for g in reversed(grid):
                coords.append(rest % g)
                rest //= g
            key = f"{name}/" + sep.join(map(str, reversed(coords))) if grid else f"{name}/0"
            if raw is not None:
                table[key] = bytes(raw)
            elif url is not None:
                table[key] = entry(key, [url] if (offset, size) == (0, 0)
                                   else [url, offset, size])
