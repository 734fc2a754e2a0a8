"""``Message``, and the two sidecar formats that list a GRIB2 file's messages: wgrib2's
``.idx`` (``n[.k]:offset:d=YYYYMMDDHH:VAR:LEVEL:FCST:``; a message runs to the next
different offset, the last to the end of the file; ``n.k`` is field ``k`` of the message at
that offset) and ECMWF's ``.index`` (one JSON object a line with ``_offset`` and
``_length``). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from .._defaults import GRIB_SIDECAR_BYTES, GRIB_SIDECAR_LINE
from .._redact import redact
from ._sections import Grid, Header

__all__ = ["Message", "from_header", "parse_idx", "parse_index"]


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """One field of a GRIB2 file: where its message lies and what it holds."""

    source: str
    """The file's path or URL."""
    offset: int
    """Where the message starts."""
    length: int | None
    """The message's length; ``None``: it runs to the end of the file (the last message of
    a wgrib2 ``.idx``)."""
    variable: str
    """wgrib2's name (``TMP``, ``UGRD``) or ECMWF's ``param`` (``2t``)."""
    level: str
    """``"2 m above ground"``, ``"500 mb"`` (wgrib2's wording), or ECMWF's ``levtype`` and
    ``levelist`` (``"sfc"``, ``"500 pl"``)."""
    time: datetime | None
    """The reference (analysis) time, UTC."""
    step: timedelta | None
    """The forecast step (``None`` when the sidecar's wording is not understood)."""
    grid: Grid | None = None
    """The grid, when the message's section 3 was read (a scan); ``None`` from sidecars."""
    submessage: int = 0
    """Which field of a multi-field message (0-based; wgrib2's ``n.k`` is ``k - 1``)."""
    line: str = ""
    """The sidecar line (or, from a scan, one written in wgrib2's form): what ``match=``
    searches."""

    def __repr__(self) -> str:  # a signed URL's secrets stay out of reprs and logs
        return (f"Message({redact(self.source)!r}, offset={self.offset}, "
                f"length={self.length}, line={self.line!r}, grid={self.grid!r}, "
                f"submessage={self.submessage})")


# wgrib2's names for the most common fields: (discipline, category, number)
_NAMES = {(0, 0, 0): "TMP", (0, 0, 6): "DPT", (0, 1, 0): "SPFH", (0, 1, 1): "RH",
          (0, 1, 8): "APCP", (0, 2, 2): "UGRD", (0, 2, 3): "VGRD", (0, 2, 22): "GUST",
          (0, 3, 0): "PRES", (0, 3, 1): "PRMSL", (0, 3, 5): "HGT", (0, 6, 1): "TCDC",
          (0, 19, 0): "VIS"}
# code table 4.4 units -> seconds
_UNITS = {0: 60, 1: 3600, 2: 86400, 10: 3 * 3600, 11: 6 * 3600, 12: 12 * 3600, 13: 1}
_STEP = re.compile(r"(?:\d+-)?(\d+) (min|hour|day) ")
_SECONDS = {"min": 60, "hour": 3600, "day": 86400}
_IDX = re.compile(r"(\d+)(?:\.(\d+))?:(\d+):d=(\d{8,12}):([^:]*):([^:]*):([^:]*):")


def _level(surface: int, value: float) -> str:
    if surface == 1:
        return "surface"
    if surface == 100:
        return f"{value / 100:g} mb"
    if surface == 101:
        return "mean sea level"
    if surface == 103:
        return f"{value:g} m above ground"
    return f"level {surface} {value:g}"


def from_header(source: str, n: int, h: Header) -> Message:
    """A scanned field as a ``Message``, with a wgrib2-style line for ``match=``."""
    var = _NAMES.get((h.discipline, h.category, h.number),
                     f"var{h.discipline}_{h.category}_{h.number}")
    level = _level(h.surface, h.level)
    seconds = _UNITS.get(h.step_unit)
    step = None if seconds is None else timedelta(seconds=h.step * seconds)
    hours = None if step is None else step.total_seconds() / 3600
    fcst = "anl" if hours == 0 else f"{hours:g} hour fcst" if hours is not None else "?"
    date = h.time.strftime("%Y%m%d%H") if h.time is not None else "?"
    label = f"{n}.{h.submessage + 1}" if h.submessage else str(n)
    return Message(source, h.offset, h.length, var, level, h.time, step, h.grid,
                   h.submessage, f"{label}:{h.offset}:d={date}:{var}:{level}:{fcst}:")


def _lines(text: bytes | memoryview, where: str) -> list[tuple[int, str]]:
    if len(text) > GRIB_SIDECAR_BYTES:
        raise ValueError(f"lsio.grib: {where}: {len(text)} bytes, more than a sidecar may "
                         f"hold ({GRIB_SIDECAR_BYTES})")
    try:
        lines = bytes(text).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"lsio.grib: {where}: not UTF-8 text ({exc.reason})") from None
    out = []
    for no, line in enumerate(lines, 1):
        if len(line) > GRIB_SIDECAR_LINE:
            raise ValueError(f"lsio.grib: {where} line {no}: longer than "
                             f"{GRIB_SIDECAR_LINE} characters")
        if line.strip():
            out.append((no, line))
    return out


def _when(d: str) -> datetime:
    return datetime.strptime(d.ljust(12, "0"), "%Y%m%d%H%M")


def _fcst(fcst: str) -> timedelta | None:
    if fcst == "anl":
        return timedelta(0)
    m = _STEP.match(fcst + " ")
    return None if m is None else timedelta(seconds=int(m.group(1)) * _SECONDS[m.group(2)])


def _lengths(offsets: list[int]) -> dict[int, int | None]:
    """Each distinct offset's length: to the next different offset, the last to EOF."""
    starts = sorted(set(offsets))
    return {a: (b - a if b is not None else None)
            for a, b in zip(starts, [*starts[1:], None], strict=True)}


def parse_idx(source: str, text: bytes | memoryview, where: str) -> list[Message]:
    """The messages a wgrib2 ``.idx`` lists (``where`` names it in errors)."""
    rows = []
    for no, line in _lines(text, where):
        m = _IDX.match(line)
        if m is None:
            raise ValueError(f"lsio.grib: {where} line {no}: not a wgrib2 inventory line "
                             f"(n:offset:d=YYYYMMDDHH:VAR:LEVEL:FCST:)")
        try:
            when = _when(m.group(4))
        except ValueError:
            raise ValueError(f"lsio.grib: {where} line {no}: bad date "
                             f"{m.group(4)!r}") from None
        sub = int(m.group(2)) - 1 if m.group(2) else 0
        if sub < 0:
            raise ValueError(f"lsio.grib: {where} line {no}: sub-message numbers start at 1")
        rows.append((int(m.group(3)), sub, m.group(5), m.group(6), when, _fcst(m.group(7)),
                     line))
    lengths = _lengths([r[0] for r in rows])
    return [Message(source, off, lengths[off], var, level, when, step, None, sub, line)
            for off, sub, var, level, when, step, line in rows]


def _index_row(source: str, no: int, line: str, where: str, seen: dict[int, int]
               ) -> Message:
    try:
        entry = json.loads(line)
        off, length = entry["_offset"], entry["_length"]
        if not (isinstance(off, int) and isinstance(length, int) and off >= 0
                and length > 0):
            raise ValueError("_offset and _length must be a non-negative and a positive int")
        step = timedelta(hours=int(entry["step"])) if "step" in entry else None
        when = _when(str(entry["date"]) + str(entry.get("time", "0000")).zfill(4)[:2])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"lsio.grib: {where} line {no}: not an ECMWF index entry "
                         f"({type(exc).__name__}: {exc})") from None
    levtype = str(entry.get("levtype", ""))
    level = f"{entry['levelist']} {levtype}" if "levelist" in entry else levtype
    var = str(entry.get("param", "?"))
    fcst = "anl" if step == timedelta(0) else f"{entry.get('step')} hour fcst"
    sub = seen[off] = seen.get(off, -1) + 1  # entries sharing an offset: its fields in order
    text = f"{no}:{off}:d={when:%Y%m%d%H}:{var}:{level}:{fcst}:"
    return Message(source, off, length, var, level, when, step, None, sub, text)


def parse_index(source: str, text: bytes | memoryview, where: str) -> list[Message]:
    """The messages an ECMWF ``.index`` lists (JSON lines with ``_offset``/``_length``);
    ``line`` is written in wgrib2's form, so one ``match=`` pattern fits both. Entries
    sharing an offset are the fields of one message, in order."""
    seen: dict[int, int] = {}
    return [_index_row(source, no, line, where, seen) for no, line in _lines(text, where)]
