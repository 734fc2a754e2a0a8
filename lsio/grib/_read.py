"""``read``: GRIB2 messages of many files into one ``(n, ny, nx)`` array, in one planned
``read_many`` call; each message is decoded by eccodes on lsio's pinned pipeline workers
right after its bytes arrive, straight into its slice.

eccodes (the ``eccodeslib`` build) is thread-safe for this use: each worker decodes its own
handle made by ``codes_new_from_message`` (a copy of the message); tests/test_grib.py's
hammer test checks N threads x M messages of every packing against a serial decode.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .._redact import redact, redacting
from ._inventory import reader_for
from ._sections import Grid, Walker, single_field

if TYPE_CHECKING:
    from .._reader import Reader
    from ._message import Message

__all__ = ["coordinates", "read"]

_coords: dict[Grid, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
_coords_lock = threading.Lock()


def _where(m: Message) -> str:
    sub = f" field {m.submessage + 1}" if m.submessage else ""
    return f"{redact(m.source)}: message at offset {m.offset}{sub}"


def _one_message(buf: Any, m: Message) -> tuple[memoryview | bytes, Grid]:
    """The field's own message bytes (sub-fields rebuilt as messages) and its grid."""
    view = memoryview(buf)
    where = _where(m)
    if len(view) < 16 or bytes(view[:4]) != b"GRIB":
        raise ValueError(f"lsio.grib: {where}: no GRIB message there")
    total = int.from_bytes(view[8:16], "big")
    if len(view) < total:
        raise ValueError(f"lsio.grib: {where}: truncated, {len(view)} of {total} bytes")
    view = view[:total]
    data = view if m.submessage == 0 else single_field(view, m.submessage, where)
    headers = Walker(where).feed(0, data, eof=True)
    if not headers:
        raise ValueError(f"lsio.grib: {where}: the message has no field")
    return data, headers[0].grid


class _Sink:
    """The output array, made when the first field's shape is known (unless given), and
    the shape every other field must have."""

    def __init__(self, messages: list[Message], out: Any, dtype: Any, coords: bool) -> None:
        self.messages, self.out, self.dtype, self.coords = messages, out, dtype, coords
        self.first: tuple[tuple[int, int], int] | None = None
        self.lock = threading.Lock()

    def slot(self, i: int, shape: tuple[int, int]) -> npt.NDArray[Any]:
        with self.lock:
            if self.first is None:
                self.first = (shape, i)
                if self.out is None:
                    self.out = np.empty((len(self.messages), *shape), self.dtype)
            if shape != self.first[0] or self.out.shape[1:] != shape:
                other = self.messages[self.first[1]]
                raise ValueError(f"lsio.grib: fields on different grids: {_where(self.messages[i])}"
                                 f" is {shape[0]} x {shape[1]}, {_where(other)} "
                                 f"{self.first[0][0]} x {self.first[0][1]}"
                                 f" (out= {self.out.shape[1:]})")
            return self.out[i]  # type: ignore[no-any-return]

    def decode(self, i: int, buf: Any) -> None:
        m = self.messages[i]
        data, grid = _one_message(buf, m)
        if grid.shape is None:
            raise ValueError(f"lsio.grib: {_where(m)}: grid template {grid.template} has no "
                             f"(ny, nx) shape")
        import eccodes

        try:
            h = eccodes.codes_new_from_message(data)
        except Exception as exc:  # eccodes' errors are its own classes
            raise ValueError(f"lsio.grib: {_where(m)}: eccodes cannot read it: {exc}") from exc
        try:
            values = eccodes.codes_get_values(h)
            if eccodes.codes_get(h, "bitmapPresent"):
                values[eccodes.codes_get_array(h, "bitmap") == 0] = np.nan
            if self.coords and grid not in _coords:
                _remember(grid, h)
        except Exception as exc:
            raise ValueError(f"lsio.grib: {_where(m)}: eccodes cannot decode it: "
                             f"{exc}") from exc
        finally:
            eccodes.codes_release(h)
        self.slot(i, grid.shape)[...] = values.reshape(grid.shape)


def _remember(grid: Grid, h: Any) -> None:
    import eccodes

    shape = grid.shape
    lat = eccodes.codes_get_array(h, "latitudes").reshape(shape)
    lon = eccodes.codes_get_array(h, "longitudes").reshape(shape)
    with _coords_lock:
        _coords.setdefault(grid, (lat, lon))


def coordinates(grid: Grid) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The (ny, nx) latitudes and longitudes of a grid a ``read(..., coords=True)`` decoded
    (computed once per grid, cached)."""
    return _coords[grid]


def _known_shape(messages: list[Message]) -> tuple[int, int] | None:
    shapes: dict[tuple[int, int], Message] = {}
    for m in messages:
        if m.grid is not None:
            if m.grid.shape is None:
                raise ValueError(f"lsio.grib: {_where(m)}: grid template {m.grid.template} "
                                 "has no (ny, nx) shape")
            shapes.setdefault(m.grid.shape, m)
    if len(shapes) > 1:
        (a, ma), (b, mb) = list(shapes.items())[:2]
        raise ValueError(f"lsio.grib: fields on different grids: {_where(ma)} is "
                         f"{a[0]} x {a[1]}, {_where(mb)} {b[0]} x {b[1]}")
    return next(iter(shapes), None)


@redacting
async def read(messages: Iterable[Message], *, out: npt.NDArray[Any] | None = None,
               dtype: Any = np.float32, reader: Reader | None = None, coords: bool = False,
               **settings: Any) -> npt.NDArray[Any]:
    """Decode ``messages`` (from :func:`inventory`) into one ``(n, ny, nx)`` array.

    One planned ``read_many`` call reads every message of every file (adjacent messages of
    a file coalesced by the planner); each message is decoded by eccodes on lsio's pinned
    worker threads as soon as it arrives, into ``out[i]``. Points a bitmap leaves out are
    NaN. Fields on different grids, or on a grid with no (ny, nx) shape, raise
    ``ValueError`` naming them; so does a message eccodes cannot decode or a truncated one
    (naming the file and the message's offset). ``coords=True`` also computes each grid's
    latitudes and longitudes once (:func:`coordinates`).
    """
    msgs = list(messages)
    shape = _known_shape(msgs)
    if out is not None:
        if out.ndim != 3 or out.shape[0] != len(msgs) or (
                shape is not None and out.shape[1:] != shape):
            raise ValueError(f"lsio.grib: out= has shape {out.shape}, the messages need "
                             f"({len(msgs)}, {shape or 'ny, nx'})")
    elif shape is not None:
        out = np.empty((len(msgs), *shape), dtype)
    if not msgs:
        return out if out is not None else np.empty((0, 0, 0), dtype)
    sink = _Sink(msgs, out, dtype, coords)
    rd = reader_for(reader, settings)
    requests = [(m.source, m.offset, m.length) for m in msgs]
    await rd.read_many(requests, pipeline=lambda i: [functools.partial(sink.decode, i)])
    return sink.out  # type: ignore[no-any-return]
