"""The kerchunk contender of bench_grib: kerchunk's references to the wanted messages,
read through zarr 3 + fsspec's ``ReferenceFileSystem`` (HTTP), decoded by kerchunk's
``GRIBCodec`` (a numcodecs filter calling eccodes under a global lock).

The references are made once per file (``kerchunk.grib2.scan_grib`` on the local copy,
untimed: the indexing a user does ahead of time) and pointed at the served URLs per run.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

_scans: dict[Path, list[dict[str, Any]]] = {}


def _scan(path: Path) -> list[dict[str, Any]]:
    if path not in _scans:
        from kerchunk.grib2 import scan_grib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _scans[path] = scan_grib(str(path))
    return _scans[path]


def references(paths: list[Path], urls: list[str], match: str
               ) -> tuple[dict[str, Any], list[str]]:
    """One reference set holding each wanted message as group ``m<k>``, and the arrays
    to read, in order."""
    pat = re.compile(match)
    refs: dict[str, Any] = {".zgroup": json.dumps({"zarr_format": 2})}
    names: list[str] = []
    for path, url in zip(paths, urls, strict=True):
        lines = Path(f"{path}.idx").read_text().splitlines()
        for i, message in enumerate(_scan(path)):
            if not pat.search(lines[i]):
                continue
            k = len(names)
            var = ""
            for key, value in message["refs"].items():
                if key.startswith("."):
                    continue
                if isinstance(value, list) and value and value[0] == "{{u}}":
                    value = [url, *value[1:]]
                    var = key.split("/")[0]
                refs[f"m{k}/{key}"] = value
            refs[f"m{k}/.zgroup"] = json.dumps({"zarr_format": 2})
            names.append(f"m{k}/{var}")
    return refs, names


def run_kerchunk(refs: dict[str, Any], names: list[str]) -> np.ndarray:
    import zarr
    from fsspec.implementations.reference import ReferenceFileSystem
    from zarr.storage import FsspecStore

    fs = ReferenceFileSystem({"version": 1, "refs": refs}, asynchronous=True,
                             remote_protocol="http",
                             remote_options={"asynchronous": True})
    group = zarr.open_group(FsspecStore(fs, read_only=True, path=""), mode="r",
                            zarr_format=2)
    return np.stack([group[n][:].astype(np.float32) for n in names])
