"""``open_dataset``: GRIB2 messages as an ``xarray.Dataset`` (time, step, level, y, x)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._sync import run_sync
from ._inventory import Match, inventory, reader_for
from ._read import coordinates, read_with_grid

if TYPE_CHECKING:
    import xarray as xr

    from .._reader import Reader
    from ._message import Message

__all__ = ["open_dataset", "open_dataset_async"]

_NUMBER = re.compile(r"^\s*(-?[\d.]+)\s*(.*)$")


def _kind(level: str) -> tuple[str, float]:
    """``"500 mb"`` -> ``("mb", 500.0)``; ``"surface"`` -> ``("surface", 0.0)``."""
    m = _NUMBER.match(level)
    if m is None:
        return level, 0.0
    try:
        return m.group(2), float(m.group(1))
    except ValueError:
        return level, 0.0


def _slug(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "level"


def _names(groups: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A data variable's name: the GRIB name, with the level kind when one name comes at
    several kinds of level (``TMP_m_above_ground``, ``TMP_mb``)."""
    keys = list(groups)
    counts: dict[str, int] = {}
    for var, _ in keys:
        counts[var] = counts.get(var, 0) + 1
    return {(var, kind): var if counts[var] == 1 else f"{var}_{_slug(kind)}"
            for var, kind in keys}


def _assemble(msgs: list[Message], fields: np.ndarray, dims_yx: tuple[str, str]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    times = sorted({np.datetime64(m.time, "ns") for m in msgs if m.time is not None})
    steps = sorted({m.step for m in msgs if m.step is not None})
    groups: dict[tuple[str, str], list[int]] = {}
    for i, m in enumerate(msgs):
        groups.setdefault((m.variable, _kind(m.level)[0]), []).append(i)
    names = _names(groups)
    kinds = sorted({k for _, k in groups})
    level_dim = {k: "level" if len(kinds) == 1 else f"level_{_slug(k)}" for k in kinds}
    coords: dict[str, Any] = {"time": np.array(times, "datetime64[ns]"),
                              "step": np.array([np.timedelta64(s, "ns") for s in steps],
                                               "timedelta64[ns]")}
    for k in kinds:
        values = sorted({_kind(msgs[i].level)[1] for (_, kk), ix in groups.items()
                         if kk == k for i in ix})
        coords[level_dim[k]] = np.array(values)
    data: dict[str, Any] = {}
    for (var, k), ix in groups.items():
        lv = list(coords[level_dim[k]])
        block = np.full((len(times), len(steps), len(lv), *fields.shape[1:]), np.nan,
                        fields.dtype)
        for i in ix:
            m = msgs[i]
            if m.time is None or m.step is None:
                raise ValueError(f"lsio.grib: {m.line!r}: no reference time or step to "
                                 "place it by")
            at = (times.index(np.datetime64(m.time, "ns")), steps.index(m.step),
                  lv.index(_kind(m.level)[1]))
            block[at] = fields[i]
        data[names[(var, k)]] = (("time", "step", level_dim[k], *dims_yx), block,
                                 {"GRIB_name": var, "level_kind": k})
    return data, coords


async def open_dataset_async(sources: Any, *, match: Match = None,
                             reader: Reader | None = None, **settings: Any) -> xr.Dataset:
    """:func:`open_dataset`, awaitable."""
    import xarray as xr

    rd = reader_for(reader, settings)
    msgs = await inventory(sources, match=match, reader=rd)
    if not msgs:
        raise ValueError(f"lsio.grib: no message matches {match!r}")
    fields, grid = await read_with_grid(msgs, out=None, dtype=np.float32, coords=True,
                                        reader=rd)
    assert grid is not None
    dims_yx = ("y", "x")
    data, coords = _assemble(msgs, fields, dims_yx)
    lat, lon = coordinates(grid)
    coords["latitude"] = (dims_yx, lat)
    coords["longitude"] = (dims_yx, lon)
    coords["valid_time"] = (("time", "step"),
                            coords["time"][:, None] + coords["step"][None, :])
    ds = xr.Dataset(data, coords=coords)
    ds.attrs["source"] = ", ".join(sorted({os.path.basename(m.source) for m in msgs})[:8])
    return ds


def open_dataset(sources: Any, *, match: Match = None, reader: Reader | None = None,
                 **settings: Any) -> xr.Dataset:
    """GRIB2 files (paths or URLs) as an ``xarray.Dataset`` read into memory.

    The messages ``match`` selects (see :func:`inventory`) are read and decoded in one
    planned call (:func:`read`); each GRIB name (``TMP``, ``2t``; with the level kind
    appended when one name comes at several kinds of level) becomes a variable of dims
    ``(time, step, level, y, x)``: ``time`` the reference time, ``step`` the forecast step,
    ``level`` the level's value (its kind, ``m above ground`` or ``mb``, in the variable's
    ``level_kind`` attribute; one level dimension per kind when there are several).
    Combinations no message holds are NaN. ``latitude``/``longitude`` (y, x) come from
    eccodes, computed once per grid and cached; ``valid_time`` is ``time + step``.
    """
    return run_sync(open_dataset_async(sources, match=match, reader=reader, **settings))


