"""``LsioFileSystem`` under the code people already have: kerchunk references of a NetCDF4
file read by zarr 3 through fsspec's ``ReferenceFileSystem``, and h5py reading the file
through ``LsioFileSystem.open``; local and through nginx, values equal to h5py's on the
local file, and the bytes read by lsio (a counting reader)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import fsspec
import h5netcdf
import h5py
import kerchunk.hdf
import numpy as np
import pytest
import zarr
from servers import Nginx
from zarr.storage import FsspecStore

import lsio
import lsio.fsspec as lf

SHAPE, CHUNKS = (48, 256), (4, 64)  # 48 chunks of 1 KiB (float32) before zlib


class CountingReader(lsio.Reader):
    """Counts the requests each ``read_many`` call made."""

    calls: list[int]

    async def read_many(self, requests: Any, **kwargs: Any) -> Any:
        requests = list(requests)
        self.calls.append(len(requests))
        return await super().read_many(requests, **kwargs)

    def read_many_sync(self, requests: Any, **kwargs: Any) -> Any:
        requests = list(requests)
        self.calls.append(len(requests))
        return super().read_many_sync(requests, **kwargs)


def counting_fs(asynchronous: bool) -> tuple[lf.LsioFileSystem, CountingReader]:
    reader = CountingReader(queue_depth=16)
    reader.calls = []
    return lf.LsioFileSystem(reader=reader, asynchronous=asynchronous,
                             skip_instance_cache=True), reader


@pytest.fixture(scope="module")
def netcdf(nginx: Nginx, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Any]:
    """A NetCDF4 file (h5netcdf; chunked, zlib level 4 + shuffle) on disk and on nginx,
    and its values as h5py reads them."""
    path = tmp_path_factory.mktemp("nc") / "t.nc"
    rng = np.random.default_rng(23)
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"t": SHAPE[0], "x": SHAPE[1]}
        v = f.create_variable("temp", ("t", "x"), "f4", chunks=CHUNKS, compression="gzip",
                              compression_opts=4, shuffle=True)
        v[...] = np.round(rng.normal(280, 5, SHAPE), 2).astype("f4")
        f.attrs["title"] = "lsio"
    served = nginx.root / "fsspec-nc"
    served.mkdir(exist_ok=True)
    shutil.copy(path, served / "t.nc")
    with h5py.File(path) as h:
        values = h["temp"][...]
    return path, nginx.url("fsspec-nc/t.nc"), values


def read_refs(refs: dict[str, Any], fs: Any) -> Any:
    rfs = fsspec.filesystem("reference", fo=refs, fs=fs, asynchronous=True)
    group = zarr.open_group(FsspecStore(rfs, read_only=True, path=""), mode="r",
                            zarr_format=2)
    return group["temp"][...]


@pytest.mark.parametrize("where", ["path", "file", "nginx"])
def test_kerchunk_references_through_zarr(netcdf: tuple[Path, str, Any], where: str) -> None:
    """References naming a local path (``fs=lsio_fs``: the one filesystem of every
    reference), a ``file://`` URL or an ``http://`` one (``fs={protocol: lsio_fs}``)."""
    path, url, values = netcdf
    target = {"path": str(path), "file": f"file://{path}", "nginx": url}[where]
    with path.open("rb") as h5f:  # the scanner reads the local copy; the refs name target
        refs = kerchunk.hdf.SingleHdf5ToZarr(h5f, url=target, inline_threshold=0).translate()
    nchunks = (SHAPE[0] // CHUNKS[0]) * (SHAPE[1] // CHUNKS[1])
    assert sum(isinstance(v, list) for v in refs["refs"].values()) == nchunks
    lsio_fs, reader = counting_fs(asynchronous=True)
    fs = {"path": lsio_fs, "file": {"file": lsio_fs}, "nginx": {"http": lsio_fs}}[where]
    got = read_refs(refs, fs)
    np.testing.assert_array_equal(got, values)
    # zarr's gets, concurrent and in file order, were gathered and read ahead
    assert 0 < len(reader.calls) <= nchunks // 8, reader.calls


@pytest.mark.parametrize("remote", [False, True], ids=["local", "nginx"])
def test_h5py_through_open(netcdf: tuple[Path, str, Any], remote: bool) -> None:
    path, url, values = netcdf
    lsio_fs, reader = counting_fs(asynchronous=False)
    with lsio_fs.open(url if remote else str(path)) as f, h5py.File(f, "r") as h:
        np.testing.assert_array_equal(h["temp"][...], values)
        assert h.attrs["title"] == "lsio"
    assert reader.calls  # read through lsio


def test_reference_protocol_lsio(netcdf: tuple[Path, str, Any]) -> None:
    """References whose URLs are ``lsio://`` paths, read with ``remote_protocol="lsio"``
    and lsio's storage options (as Dask workers get them)."""
    path, _, values = netcdf
    with path.open("rb") as h5f:
        refs = kerchunk.hdf.SingleHdf5ToZarr(h5f, url=f"lsio://{path}",
                                             inline_threshold=0).translate()
    fsspec.register_implementation("lsio", lf.LsioFileSystem, clobber=True)
    rfs = fsspec.filesystem("reference", fo=refs, remote_protocol="lsio",
                            remote_options={"queue_depth": 8, "asynchronous": True},
                            asynchronous=True)
    group = zarr.open_group(FsspecStore(rfs, read_only=True, path=""), mode="r",
                            zarr_format=2)
    np.testing.assert_array_equal(group["temp"][...], values)
    assert isinstance(rfs.fss["lsio"], lf.LsioFileSystem)
    with fsspec.open(f"lsio://{path}", queue_depth=8) as f:  # fsspec's own door, too
        assert f.read(4) == b"\x89HDF"


def test_xarray_h5netcdf_through_open(netcdf: tuple[Path, str, Any]) -> None:
    """netCDF readers that take a file object (xarray's h5netcdf engine) read through lsio."""
    import xarray as xr

    _, url, values = netcdf
    lsio_fs, reader = counting_fs(asynchronous=False)
    with lsio_fs.open(url) as f, xr.open_dataset(f, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["temp"].values, values)
        assert ds.attrs["title"] == "lsio"
    assert reader.calls
