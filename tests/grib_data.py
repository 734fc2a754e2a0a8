"""GRIB2 test files written offline with eccodes from its bundled ``GRIB2`` sample, with the
sidecars real archives ship: a wgrib2-style ``.idx`` (NOAA GFS/HRRR on AWS) and an
ECMWF-style ``.index`` (JSON lines with ``_offset``/``_length``, ECMWF open data).

Shared by the tests (small grids) and the benchmark (``benchmarks/bench_grib.py``:
HRRR-size 1799 x 1059). Fixed seeds: the same arguments write the same bytes.

Sub-messages: eccodes writes multi-field messages (``codes_grib_multi_new`` /
``codes_grib_multi_append`` from section 4: the later fields share sections 0-3), and wgrib2
numbers their fields ``n.1``, ``n.2`` sharing one offset; ``multi=True`` writes the 10 m
winds that way, as GFS does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKINGS = ("grid_simple", "grid_complex_spatial_differencing", "grid_ccsds", "grid_jpeg")
HRRR = (1799, 1059)  # Ni, Nj of NOAA HRRR's CONUS grid


@dataclass(frozen=True)
class Field:
    var: str  # wgrib2 name
    short: str  # ECMWF param
    category: int
    number: int
    surface: int  # code table 4.5: 103 height above ground, 100 isobaric (Pa)
    level: int  # metres, or hPa for isobaric
    idx_level: str
    levtype: str


FIELDS = (
    Field("TMP", "2t", 0, 0, 103, 2, "2 m above ground", "sfc"),
    Field("UGRD", "10u", 2, 2, 103, 10, "10 m above ground", "sfc"),
    Field("VGRD", "10v", 2, 3, 103, 10, "10 m above ground", "sfc"),
    Field("RH", "2r", 1, 1, 103, 2, "2 m above ground", "sfc"),
    Field("TMP", "t", 0, 0, 100, 500, "500 mb", "pl"),
    Field("TMP", "t", 0, 0, 100, 850, "850 mb", "pl"),
)


def _values(rng: np.random.Generator, ni: int, nj: int, k: int) -> np.ndarray:
    """A smooth field plus noise, so every packing has something to compress."""
    y, x = np.mgrid[0:nj, 0:ni].astype(np.float64)
    base = 270 + 10 * np.sin(x / max(ni, 1) * 6 + k) * np.cos(y / max(nj, 1) * 4)
    return (base + rng.normal(0, 0.5, (nj, ni))).ravel()


def _handle(field: Field, *, packing: str, ni: int, nj: int, date: int, step: int,
            values: np.ndarray, bitmap: bool) -> Any:
    import eccodes

    h = eccodes.codes_grib_new_from_samples("GRIB2")
    eccodes.codes_set(h, "packingType", packing)  # before the grid: the sample is simple
    eccodes.codes_set(h, "Ni", ni)
    eccodes.codes_set(h, "Nj", nj)
    eccodes.codes_set(h, "latitudeOfFirstGridPointInDegrees", 50.0)
    eccodes.codes_set(h, "longitudeOfFirstGridPointInDegrees", 230.0)
    eccodes.codes_set(h, "latitudeOfLastGridPointInDegrees", 50.0 - 0.25 * (nj - 1))
    eccodes.codes_set(h, "longitudeOfLastGridPointInDegrees", 230.0 + 0.25 * (ni - 1))
    eccodes.codes_set(h, "iDirectionIncrementInDegrees", 0.25)
    eccodes.codes_set(h, "jDirectionIncrementInDegrees", 0.25)
    eccodes.codes_set(h, "dataDate", date // 100)
    eccodes.codes_set(h, "dataTime", (date % 100) * 100)
    eccodes.codes_set(h, "parameterCategory", field.category)
    eccodes.codes_set(h, "parameterNumber", field.number)
    eccodes.codes_set(h, "typeOfFirstFixedSurface", field.surface)
    level = field.level * 100 if field.surface == 100 else field.level
    eccodes.codes_set(h, "scaleFactorOfFirstFixedSurface", 0)
    eccodes.codes_set(h, "scaledValueOfFirstFixedSurface", level)
    eccodes.codes_set(h, "indicatorOfUnitOfTimeRange", 1)  # hours
    eccodes.codes_set(h, "forecastTime", step)
    eccodes.codes_set(h, "bitsPerValue", 16)
    if bitmap:
        eccodes.codes_set(h, "bitmapPresent", 1)
        eccodes.codes_set(h, "missingValue", 9999.0)
    eccodes.codes_set_values(h, values)
    return h


def _idx_line(n: str, offset: int, date: int, field: Field, step: int) -> str:
    fcst = "anl" if step == 0 else f"{step} hour fcst"
    return f"{n}:{offset}:d={date}:{field.var}:{field.idx_level}:{fcst}:"


def _index_line(offset: int, length: int, date: int, field: Field, step: int) -> str:
    entry: dict[str, Any] = {
        "domain": "g", "date": str(date // 100), "time": f"{(date % 100):02d}00",
        "expver": "0001", "class": "od", "type": "fc", "stream": "oper",
        "step": str(step), "levtype": field.levtype, "param": field.short}
    if field.levtype == "pl":
        entry["levelist"] = str(field.level)
    entry.update(_offset=offset, _length=length)
    return json.dumps(entry)


def write_grib(path: str | Path, *, packing: str = "grid_simple", ni: int = 24,
               nj: int = 18, seed: int = 0, date: int = 2024010100,
               steps: tuple[int, ...] = (0, 6), fields: tuple[Field, ...] = FIELDS,
               bitmap: bool = False, multi: bool = False,
               sidecars: bool = True) -> list[dict[str, Any]]:
    """Write one GRIB2 file (``len(steps) * len(fields)`` fields) and its ``.idx`` and
    ``.index`` sidecars; return one record per field: ``offset``, ``length`` (of its
    message), ``submessage``, ``field``, ``step``.

    ``bitmap=True`` makes every 7th point of every field missing. ``multi=True`` writes
    UGRD and VGRD at 10 m (when both are in ``fields``, next to each other) as one
    two-field message."""
    import eccodes

    rng = np.random.default_rng(seed)
    path = Path(path)
    records: list[dict[str, Any]] = []
    with path.open("wb") as f:
        for step in steps:
            pending: Any = None  # the open multi-field message
            for k, field in enumerate(fields):
                values = _values(rng, ni, nj, k + step)
                if bitmap:
                    values[::7] = 9999.0
                h = _handle(field, packing=packing, ni=ni, nj=nj, date=date, step=step,
                            values=values, bitmap=bitmap)
                try:
                    if multi and field.var == "UGRD":
                        pending = eccodes.codes_grib_multi_new()
                        eccodes.codes_grib_multi_append(h, 0, pending)
                        records.append(dict(field=field, step=step, submessage=0))
                        continue
                    if pending is not None:
                        eccodes.codes_grib_multi_append(h, 4, pending)
                        records.append(dict(field=field, step=step, submessage=1))
                        start = f.tell()
                        eccodes.codes_grib_multi_write(pending, f)
                        eccodes.codes_grib_multi_release(pending)
                        pending = None
                        for r in records[-2:]:
                            r.update(offset=start, length=f.tell() - start)
                        continue
                    start = f.tell()
                    eccodes.codes_write(h, f)
                    records.append(dict(field=field, step=step, submessage=0, offset=start,
                                        length=f.tell() - start))
                finally:
                    eccodes.codes_release(h)
    if sidecars:
        write_sidecars(path, records, date)
    return records


def write_sidecars(path: Path, records: list[dict[str, Any]], date: int) -> None:
    """The ``.idx`` (wgrib2: ``n`` or ``n.k`` sub-fields sharing an offset; ``<file>.idx``)
    and the ``.index`` (ECMWF: one JSON object a line; ``x.grib2`` -> ``x.index``) of a file
    written by :func:`write_grib`."""
    idx, index, n = [], [], 0
    for r in records:
        if r["submessage"] == 0:
            n += 1
        multi = r["submessage"] > 0 or any(
            o is not r and o["offset"] == r["offset"] for o in records)
        label = f"{n}.{r['submessage'] + 1}" if multi else str(n)
        idx.append(_idx_line(label, r["offset"], date, r["field"], r["step"]))
        index.append(_index_line(r["offset"], r["length"], date, r["field"], r["step"]))
    Path(f"{path}.idx").write_text("\n".join(idx) + "\n")
    index_path = path.with_suffix(".index") if path.suffix == ".grib2" else Path(f"{path}.index")
    index_path.write_text("\n".join(index) + "\n")


def decode_all(path: str | Path) -> list[np.ndarray]:
    """Every field of the file as eccodes decodes it reading the whole file (sub-fields of
    multi-field messages included): the reference the tests compare with. Float32,
    missing points NaN, shaped (Nj, Ni)."""
    import eccodes

    out = []
    eccodes.codes_grib_multi_support_on()
    try:
        with open(path, "rb") as f:
            while (h := eccodes.codes_grib_new_from_file(f)) is not None:
                try:
                    vals = eccodes.codes_get_values(h)
                    if eccodes.codes_get(h, "bitmapPresent"):
                        vals[vals == eccodes.codes_get(h, "missingValue")] = np.nan
                    shape = (eccodes.codes_get(h, "Nj"), eccodes.codes_get(h, "Ni"))
                    out.append(vals.astype(np.float32).reshape(shape))
                finally:
                    eccodes.codes_release(h)
    finally:
        eccodes.codes_grib_multi_support_off()
    return out
