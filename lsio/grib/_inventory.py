"""``inventory``: the messages of GRIB2 files, from their sidecars or a header scan."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._defaults import GRIB_SCAN_BYTES, GRIB_SIDECAR_BYTES
from .._redact import redact, redacting
from ._message import Message, from_header, parse_idx, parse_index
from ._sections import Walker

if TYPE_CHECKING:
    from .._reader import Reader

__all__ = ["Match", "inventory", "reader_for"]

_EXTENSIONS = (".grib2", ".grb2", ".grib", ".grb")
Match = str | re.Pattern[str] | Callable[[Message], bool] | None


def reader_for(reader: Reader | None, settings: dict[str, Any]) -> Reader:
    from .._reader import Reader, default_reader

    if reader is not None and settings:
        raise TypeError("lsio.grib: pass reader= or reader settings, not both")
    return reader if reader is not None else Reader(**settings) if settings else (
        default_reader())


def sources_of(sources: str | os.PathLike[str] | Iterable[Any]) -> list[str]:
    if isinstance(sources, (str, os.PathLike)):
        return [os.fspath(sources)]
    return [os.fspath(s) for s in sources]


def _index_path(source: str) -> str:
    """ECMWF open data names the index after the file, with ``.index`` for ``.grib2``."""
    for ext in _EXTENSIONS:
        if source.endswith(ext):
            return source[:-len(ext)] + ".index"
    return source + ".index"


def _matcher(match: Match) -> Callable[[Message], bool]:
    if match is None:
        return lambda m: True
    if callable(match) and not isinstance(match, (str, re.Pattern)):
        return match
    pattern = re.compile(match) if isinstance(match, str) else match
    return lambda m: pattern.search(m.line) is not None


@redacting
async def inventory(sources: str | os.PathLike[str] | Iterable[Any], *, match: Match = None,
                    reader: Reader | None = None, **settings: Any) -> list[Message]:
    """The messages of GRIB2 files (paths or URLs), file after file in file order.

    Sidecars first: for each file, ``<file>.idx`` (wgrib2, as NOAA publishes) or
    ``<file minus .grib2>.index`` (ECMWF open data), all fetched in one call. A file with
    neither is scanned: its section headers are read by planned ranges, 64 KiB a hop from
    every file at once, skipping the data sections unread; each hop is a round trip, so for
    remote data publish or keep sidecars. A scanned message knows its ``grid``.

    ``match``: a regular expression searched in each message's wgrib2-style line (like
    Herbie's ``searchString``: ``"TMP:2 m above ground"``, ``":(U|V)GRD:10 m"``), or a
    predicate ``Message -> bool``. ``reader`` or reader settings (``lsio.Reader(**settings)``)
    choose how files are read.
    """
    keep = _matcher(match)
    paths = sources_of(sources)
    rd = reader_for(reader, settings)
    # one byte over the cap, so a sidecar that is too big is told apart (and never read whole)
    requests = [(p, 0, GRIB_SIDECAR_BYTES + 1) for s in paths
                for p in (s + ".idx", _index_path(s))]
    found = await rd.read_many(requests, missing_ok=True)
    per_source: dict[str, list[Message]] = {}
    scans: list[tuple[str, Walker]] = []
    for i, source in enumerate(paths):
        idx, index = found[2 * i], found[2 * i + 1]
        if idx is not None:
            per_source[source] = parse_idx(source, idx, redact(requests[2 * i][0]))
        elif index is not None:
            per_source[source] = parse_index(source, index, redact(requests[2 * i + 1][0]))
        else:
            scans.append((source, Walker(redact(source))))
            per_source[source] = []
    await _scan(rd, scans, per_source)
    return [m for s in paths for m in per_source[s] if keep(m)]


async def _scan(rd: Reader, scans: list[tuple[str, Walker]],
                out: dict[str, list[Message]]) -> None:
    """Walk every file without a sidecar, one planned ``read_many`` a hop for all."""
    counts = dict.fromkeys((s for s, _ in scans), 0)  # wgrib2's message numbers
    live = scans
    while live:
        requests = []
        for source, walker in live:
            pos, need = walker.want() or (0, 0)
            requests.append((source, pos, max(GRIB_SCAN_BYTES, need)))
        got = await rd.read_many(requests)
        for (source, walker), (_, pos, size), buf in zip(live, requests, got, strict=True):
            for h in walker.feed(pos, buf, eof=len(buf) < size):
                n = counts[source] = counts[source] + (h.submessage == 0)
                if h.submessage == 1:  # a multi-field message: its first field is n.1
                    first = out[source][-1]
                    out[source][-1] = replace(first, line=f"{n}.1{first.line[len(str(n)):]}")
                out[source].append(from_header(source, n, h))
        live = [(s, w) for s, w in live if w.want() is not None]
