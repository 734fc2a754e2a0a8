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
from ._decode import decode_into
from ._inventory import reader_for
from ._sections import Grid, Walker, single_field

if TYPE_CHECKING:
    from .._reader import Reader
    from ._message import Message

__all__ = ["coordinates", "read", "read_with_grid"]

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


def _describe(grid: Grid) -> str:
    shape = "no (ny, nx) shape" if grid.shape is None else f"{grid.ny} x {grid.nx}"
    return f"grid template {grid.template}, {shape}, section 3 digest {grid.digest}"


def _different(a: Message, ga: Grid, b: Message, gb: Grid) -> ValueError:
    return ValueError(f"lsio.grib: fields on different grids: {_where(a)} is on "
                      f"{_describe(ga)}; {_where(b)} on {_describe(gb)}")


class _Sink:
    """The output array, made when the first field's grid is known (unless given), and
    the grid every other field must be on."""

    def __init__(self, messages: list[Message], out: Any, dtype: Any, coords: bool,
                 grid: tuple[Grid, int] | None) -> None:
        self.messages, self.out, self.dtype, self.coords = messages, out, dtype, coords
        self.first = grid
        """The grid of the call and the message that showed it."""
        self.lock = threading.Lock()

    def slot(self, i: int, grid: Grid) -> npt.NDArray[Any]:
        shape = grid.shape
        assert shape is not None
        with self.lock:
            if self.first is None:
                self.first = (grid, i)
                if self.out is None:
                    self.out = _empty((len(self.messages), *shape), self.dtype)
            if grid != self.first[0]:
                j = self.first[1]
                raise _different(self.messages[i], grid, self.messages[j], self.first[0])
            if self.out.shape[1:] != shape:
                raise ValueError(f"lsio.grib: {_where(self.messages[i])}: the field is "
                                 f"{shape[0]} x {shape[1]}, out= has {self.out.shape}")
            return self.out[i]  # type: ignore[no-any-return]

    def decode(self, i: int, buf: Any) -> None:
        m = self.messages[i]
        data, grid = _one_message(buf, m)
        if grid.shape is None:
            raise ValueError(f"lsio.grib: {_where(m)}: grid template {grid.template} has no "
                             f"(ny, nx) shape")
        decode_into(data, self.slot(i, grid), _where(m))
        if self.coords and grid not in _coords:
            _remember(grid, data, m)


def _empty(shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
    """The output array, in lsio's result memory rather than numpy's: numpy asks for huge
    pages on big arrays, and with the kernel's default THP ``defrag=madvise`` each first
    touch of one may compact memory; the workers filling 96 HRRR-size fields spent more
    system time faulting it in than eccodes took decoding (354 ms of 16 fields' ~0.9 s).
    A pooled arena from an earlier call is even faulted in already."""
    from .._memory import allocate

    dt = np.dtype(dtype)
    count = int(np.prod(shape))
    out: npt.NDArray[Any] = allocate(count * dt.itemsize).view(dt).reshape(shape)
    return out


def _remember(grid: Grid, data: Any, m: Message) -> None:
    import eccodes

    shape = grid.shape
    try:
        h = eccodes.codes_new_from_message(data)
    except Exception as exc:  # eccodes' errors are its own classes
        raise ValueError(f"lsio.grib: {_where(m)}: eccodes cannot read it: {exc}") from exc
    try:
        lat = eccodes.codes_get_array(h, "latitudes").reshape(shape)
        lon = eccodes.codes_get_array(h, "longitudes").reshape(shape)
    except Exception as exc:
        raise ValueError(f"lsio.grib: {_where(m)}: eccodes cannot decode it: "
                         f"{exc}") from exc
    finally:
        eccodes.codes_release(h)
    with _coords_lock:
        _coords.setdefault(grid, (lat, lon))


def coordinates(grid: Grid) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The (ny, nx) latitudes and longitudes of a grid a ``read(..., coords=True)`` decoded
    (computed once per grid, cached)."""
    return _coords[grid]


def _known_grid(messages: list[Message]) -> tuple[Grid, int] | None:
    """The messages' grid if the inventory told it (a scan), checked to be one."""
    first: tuple[Grid, int] | None = None
    for i, m in enumerate(messages):
        if m.grid is None:
            continue
        if m.grid.shape is None:
            raise ValueError(f"lsio.grib: {_where(m)}: grid template {m.grid.template} "
                             "has no (ny, nx) shape")
        if first is None:
            first = (m.grid, i)
        elif m.grid != first[0]:
            raise _different(m, m.grid, messages[first[1]], first[0])
    return first


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
    (naming the file and the message's offset). ``coords=True`` also computes the grid's
    latitudes and longitudes once (:func:`coordinates`).
    """
    array, _ = await read_with_grid(list(messages), out=out, dtype=dtype, coords=coords,
                                    reader=reader_for(reader, settings))
    return array


async def read_with_grid(msgs: list[Message], *, out: npt.NDArray[Any] | None, dtype: Any,
                         coords: bool, reader: Reader
                         ) -> tuple[npt.NDArray[Any], Grid | None]:
    """:func:`read`, also telling the fields' grid (``None`` for no messages)."""
    known = _known_grid(msgs)
    shape = None if known is None else known[0].shape
    if out is not None:
        if out.ndim != 3 or out.shape[0] != len(msgs) or (
                shape is not None and out.shape[1:] != shape):
            raise ValueError(f"lsio.grib: out= has shape {out.shape}, the messages need "
                             f"({len(msgs)}, {shape or 'ny, nx'})")
    elif shape is not None:
        out = _empty((len(msgs), *shape), dtype)
    if not msgs:
        return (out if out is not None else np.empty((0, 0, 0), dtype)), None
    sink = _Sink(msgs, out, dtype, coords, known)
    requests = [(m.source, m.offset, m.length) for m in msgs]
    await reader.read_many(requests, pipeline=lambda i: [functools.partial(sink.decode, i)])
    assert sink.first is not None
    return sink.out, sink.first[0]
