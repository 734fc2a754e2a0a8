"""GRIB2 section walking, pure: no I/O, no eccodes.

A GRIB2 message is section 0 (16 bytes: ``GRIB``, discipline, edition 2, total length),
then sections ``length (4 bytes) | number (1 byte) | ...``, ending with ``7777``. A
multi-field message repeats sections 2-7, 3-7 or 4-7 after the first field; each section 7
(data) ends one field. :class:`Walker` walks one file's messages from whatever bytes it is
fed (the scan reads ahead a fixed number of bytes a hop, skipping data sections unread);
:func:`single_field` rebuilds field ``k`` of a message as a message of its own, which is
what eccodes decodes.

Every length read here is checked against the message's bounds before it is used; a walk
advances by at least 4 bytes a step, so untrusted bytes end in a field, a request for more
bytes, or a ``ValueError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Grid", "Header", "Walker", "single_field"]

_SHAPED = frozenset({0, 1, 2, 3, 10, 20, 30, 31, 40, 41, 42, 43, 90})
"""Grid templates (code table 3.1) whose octets 31-38 hold the points along a row and a
column (Ni/Nj or Nx/Ny): lat/lon, Mercator, polar stereographic, Lambert, Gaussian, space
view."""
_MISSING = 0xFFFFFFFF
MAX_HEADER_SECTION = 1 << 20
"""Sections 1, 3 and 4 are parsed whole; real ones are tens to hundreds of bytes."""


@dataclass(frozen=True, slots=True)
class Grid:
    """A hashable description of a message's grid (section 3)."""

    template: int
    """Grid definition template number (code table 3.1): 0 lat/lon, 30 Lambert, ..."""
    nx: int | None
    """Points along a row (Ni / Nx); ``None`` when the grid has no (ny, nx) shape."""
    ny: int | None
    """Points along a column (Nj / Ny)."""
    points: int
    """Number of data points."""
    digest: str
    """A hash of the whole section 3: equal grids, equal digests."""

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self.nx is None or self.ny is None else (self.ny, self.nx)


@dataclass(frozen=True, slots=True)
class Header:
    """What the section headers of one field say."""

    offset: int
    length: int
    submessage: int
    discipline: int
    category: int
    number: int
    surface: int
    level: float
    time: datetime | None
    step_unit: int
    step: int
    grid: Grid


def _u(b: bytes | memoryview, i: int, n: int) -> int:
    return int.from_bytes(b[i:i + n], "big")


def _signed(b: bytes | memoryview, i: int, n: int) -> int:
    """GRIB's sign-and-magnitude integers."""
    v = _u(b, i, n)
    top = 1 << (8 * n - 1)
    return -(v - top) if v & top else v


def _time(sec1: bytes) -> datetime | None:
    try:
        return datetime(_u(sec1, 12, 2), sec1[14], sec1[15], sec1[16], sec1[17], sec1[18])
    except ValueError:
        return None


def _grid(sec3: bytes) -> Grid:
    template = _u(sec3, 12, 2)
    nx = ny = None
    if template in _SHAPED and len(sec3) >= 38:
        nx, ny = _u(sec3, 30, 4), _u(sec3, 34, 4)
        if _MISSING in (nx, ny) or nx * ny != _u(sec3, 6, 4):
            nx = ny = None
    return Grid(template, nx, ny, _u(sec3, 6, 4), hashlib.blake2b(sec3, digest_size=8).hexdigest())


class Walker:
    """One file's walk through its messages, fed bytes at the positions it asks for.

    ``want()`` is the next byte position to read (``None`` once the file ended);
    ``feed(pos, buf)`` gives it the bytes read there (fewer than asked only at the end of
    the file) and returns the fields whose headers completed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0
        self.done = False
        self._start = -1  # the current message's offset, -1 between messages
        self._end = 0
        self._sub = 0
        self._disc = 0
        self._sec: dict[int, bytes] = {}
        self._need = 16

    def want(self) -> tuple[int, int] | None:
        """``(position, bytes)``: read at least this many bytes there next (the scan reads
        ahead more); ``None`` once the file ended."""
        return None if self.done else (self.pos, self._need)

    def _fail(self, why: str) -> ValueError:
        where = f"message at offset {self._start}" if self._start >= 0 else f"offset {self.pos}"
        return ValueError(f"lsio.grib: {self.source}: {where}: {why}")

    def feed(self, pos: int, buf: bytes | memoryview, *, eof: bool) -> list[Header]:
        """The bytes read at ``pos``; ``eof``: the read came back short (the file ends
        there). Returns the fields whose headers completed."""
        if pos != self.pos or self.done:
            raise RuntimeError("lsio.grib: fed bytes the walk did not ask for")
        out: list[Header] = []
        while not self.done:
            rest = buf[self.pos - pos:]
            if eof and self._start < 0 and len(rest) == 0:
                self.done = True  # a clean end of file
                break
            step = self._begin(rest) if self._start < 0 else self._section(rest, out)
            if not step:
                if eof and not self.done:
                    raise self._fail("the file ends inside a message" if self._start >= 0
                                     else "the file ends inside a message header")
                break
        return out

    def _begin(self, head: bytes | memoryview) -> bool:
        """Section 0 of the next message; False when more bytes are needed."""
        if len(head) < 16:
            self._need = 16
            return False
        if bytes(head[:4]) != b"GRIB":
            raise self._fail(f"no GRIB message here (found {bytes(head[:4])!r})")
        if head[7] != 2:
            raise self._fail(f"GRIB edition {head[7]}, only GRIB2 is read")
        total = _u(head, 8, 8)
        if total < 16 + 4:
            raise self._fail(f"total length {total} is too small")
        self._start, self._end, self._sub, self._disc = self.pos, self.pos + total, 0, head[6]
        self._sec = {}
        self.pos += 16
        return True

    def _section(self, rest: bytes | memoryview, out: list[Header]) -> bool:
        """Parse the section at ``self.pos`` from ``rest``; False when more bytes are
        needed (the next hop reads from ``self.pos``)."""
        left = self._end - self.pos
        self._need = 5
        if left == 4:
            if len(rest) < 4:
                return False
            if bytes(rest[:4]) != b"7777":
                raise self._fail("no end marker 7777 where the total length says")
            self.pos, self._start = self._end, -1
            return True
        if len(rest) < 5:
            return False
        size, number = _u(rest, 0, 4), rest[4]
        if size < 5 or size > left - 4 or number not in range(1, 8):
            raise self._fail(f"section {number} of length {size} at offset {self.pos} does "
                             f"not fit the message")
        if number in (1, 3, 4):
            if size > MAX_HEADER_SECTION:
                raise self._fail(f"section {number} of {size} bytes is too long")
            if len(rest) < size:
                self._need = size
                return False
            self._sec[number] = bytes(rest[:size])
        if number == 7:
            out.append(self._header())
            self._sub += 1
        self.pos += size
        return True

    def _header(self) -> Header:
        sec1, sec3, sec4 = (self._sec.get(k) for k in (1, 3, 4))
        if sec1 is None or sec3 is None or sec4 is None or len(sec1) < 19:
            raise self._fail("a data section comes before sections 1, 3 and 4")
        if len(sec4) < 28:  # the point-in-time templates' fields; others keep what we know
            sec4 = sec4 + bytes(28 - len(sec4))
        return Header(
            offset=self._start, length=self._end - self._start, submessage=self._sub,
            discipline=self._disc, category=sec4[9], number=sec4[10], surface=sec4[22],
            level=_signed(sec4, 24, 4) / 10 ** _signed(sec4, 23, 1),
            time=_time(sec1), step_unit=sec4[17], step=_signed(sec4, 18, 4),
            grid=_grid(sec3))


def single_field(msg: bytes | memoryview, k: int, where: str) -> bytes:
    """Field ``k`` of a multi-field message as a message of its own: sections 0 and 1, the
    field's latest sections 2 and 3, its sections 4-7 (a bitmap "as before", indicator
    254, replaced by the one before it), ``7777``."""
    total = _u(msg, 8, 8) if len(msg) >= 16 else 0
    if total != len(msg) or bytes(msg[:4]) != b"GRIB":
        raise ValueError(f"lsio.grib: {where}: not a whole GRIB2 message")
    pos, field, latest, bitmap = 16, 0, {}, None
    while pos + 4 < total:
        size, number = _u(msg, pos, 4), msg[pos + 4]
        if size < 5 or pos + size > total - 4:
            raise ValueError(f"lsio.grib: {where}: section at {pos} does not fit")
        sec = bytes(msg[pos:pos + size])
        if number == 6 and sec[5] == 0:
            bitmap = sec
        elif number == 6 and sec[5] == 254 and bitmap is not None:
            sec = bitmap
        latest[number] = sec
        pos += size
        if number == 7:
            if field == k:
                parts = [latest[n] for n in (1, 2, 3, 4, 5, 6, 7) if n in latest]
                body = b"".join(parts)
                head = bytes(msg[:8]) + (16 + len(body) + 4).to_bytes(8, "big")
                return head + body + b"7777"
            field += 1
    raise ValueError(f"lsio.grib: {where}: the message has no field #{k + 1}")
