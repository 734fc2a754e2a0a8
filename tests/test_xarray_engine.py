"""xarray's ``engine="lsio"`` (:mod:`lsio.xarray`): a Zarr path or URL opened through
:class:`lsio.zarr.LsioStore` and lsio's codec pipeline reads what ``engine="zarr"`` reads,
on Dask's workers too, and leaves zarr's global config and xarray's engine guessing alone.

The entry point is passed as a class (``engine=LsioBackendEntrypoint``): the tests do not
depend on the installed distribution's metadata."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.codecs as zc
from conftest import check_ok, run_python
from distributed import Client, LocalCluster
from servers import Nginx
from test_xarray_dask import pipelines_of
from zarr.errors import ZarrUserWarning

import lsio
from lsio.xarray import LsioBackendEntrypoint
from lsio.zarr import LsioCodecPipeline, LsioStore

ENGINE = LsioBackendEntrypoint
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@pytest.fixture(autouse=True)
def _zarr_config_untouched() -> Iterator[None]:
    """Every test here checks that zarr's global codec pipeline is what it was."""
    before = zarr.config.get("codec_pipeline.path")
    assert before == DEFAULT
    yield
    assert zarr.config.get("codec_pipeline.path") == before


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(23)
    return xr.Dataset(
        {"t2m": (("time", "y", "x"), rng.standard_normal((6, 30, 20)).astype("f4")),
         "mask": (("y", "x"), rng.integers(0, 3, (30, 20)).astype("i2"))},
        coords={"time": np.arange(6), "y": np.linspace(0.0, 1.0, 30)}, attrs={"src": "lsio"})


ENCODING = {"t2m": {"chunks": (2, 16, 8), "compressors": [zc.ZstdCodec(level=3)]},
            "mask": {"chunks": (16, 16), "compressors": [zc.GzipCodec()]}}


@pytest.fixture(scope="module")
def store_path(nginx: Nginx) -> str:
    """The dataset in nginx's root (Zarr v3, consolidated, so a plain HTTP URL opens it)."""
    path = nginx.root / "xarray-engine.zarr"
    shutil.rmtree(path, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
        _dataset().to_zarr(path, zarr_format=3, consolidated=True, encoding=ENCODING, mode="w-")
    for d, _, files in os.walk(path):  # nginx's workers may run as another user
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return str(path)


def _expected(path: str) -> xr.Dataset:
    return xr.open_dataset(path, engine="zarr", chunks={}, consolidated=True).load()


@pytest.mark.parametrize("where", ["path", "url", "LsioStore"])
def test_open_dataset_reads_what_engine_zarr_reads(store_path: str, nginx: Nginx,
                                                   where: str) -> None:
    source: Any = {"path": store_path, "url": nginx.url("xarray-engine.zarr"),
                   "LsioStore": LsioStore(store_path)}[where]
    ds = xr.open_dataset(source, engine=ENGINE, chunks={}, consolidated=True)
    assert zarr.config.get("codec_pipeline.path") == DEFAULT  # back as found after open
    assert pipelines_of(ds) == [LsioCodecPipeline] * 4  # 2 variables, 2 coordinates
    assert ds.t2m.chunks == ((2, 2, 2), (16, 14), (8, 8, 4))  # Dask chunks = Zarr's
    loaded = ds.load()
    xr.testing.assert_identical(loaded, _expected(store_path))
    xr.testing.assert_identical(loaded, _dataset())


def test_xarray_options_and_reader_settings_reach_the_store(store_path: str) -> None:
    ds = xr.open_dataset(store_path, engine=ENGINE, drop_variables=["mask"],
                         mask_and_scale=False, decode_times=False,
                         storage_options={"queue_depth": 8}, chunks=None)
    assert set(ds.data_vars) == {"t2m"}
    np.testing.assert_array_equal(ds.t2m.isel(time=[0, 5], x=slice(3, 17, 2)).values,
                                  _dataset().t2m.isel(time=[0, 5], x=slice(3, 17, 2)).values)
    reader = lsio.Reader(queue_depth=8)
    with_reader = xr.open_dataset(store_path, engine=ENGINE, backend_kwargs={"reader": reader},
                                  chunks={})
    xr.testing.assert_identical(with_reader.load(), _dataset())
    with pytest.raises(ValueError, match="not both"):
        xr.open_dataset(store_path, engine=ENGINE, reader=reader,
                        storage_options={"queue_depth": 8})
    with pytest.raises(TypeError, match="its own"):
        xr.open_dataset(LsioStore(store_path), engine=ENGINE, reader=reader)


def test_open_datatree_and_groups(module_data_dir: Path) -> None:
    path = str(module_data_dir / "tree.zarr")
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs={"a": 1}), "/run1": _dataset(),
                                  "/run2": _dataset() * 2})
    tree.to_zarr(path, zarr_format=3, consolidated=False, encoding={
        "/run1": ENCODING, "/run2": {"t2m": ENCODING["t2m"]}})
    got = xr.open_datatree(path, engine=ENGINE, chunks={}, consolidated=False)
    assert zarr.config.get("codec_pipeline.path") == DEFAULT
    assert set(pipelines_of(got)) == {LsioCodecPipeline}
    xr.testing.assert_identical(got["run2"].to_dataset().load(), _dataset() * 2)
    groups = xr.open_groups(path, engine=ENGINE, consolidated=False)
    assert set(groups) == {"/", "/run1", "/run2"}
    xr.testing.assert_identical(groups["/run1"].load(), _dataset())


def test_never_guesses_and_imports_lightly() -> None:
    """Installing lsio must not change which engine ``open_dataset("x.zarr")`` picks, and
    xarray imports every backend's entry point to list them: that must not import zarr."""
    assert not ENGINE().guess_can_open("x.zarr")
    assert not ENGINE().guess_can_open("https://host/x.zarr")
    out = check_ok(run_python("""
        import sys
        import lsio.xarray
        print(sorted(m for m in ("zarr", "lsio.zarr", "lsio._reader") if m in sys.modules))
    """))
    assert out.strip() == "[]"


ENTRY_POINT = "lsio = lsio.xarray:LsioBackendEntrypoint"
"""The line pyproject.toml has under ``[project.entry-points."xarray.backends"]``."""


def test_entry_point_names_the_engine(tmp_path: Path, store_path: str) -> None:
    """Through an installed distribution's entry point (a stand-in one on ``sys.path``),
    ``engine="lsio"`` is found by name, and ``.zarr`` paths still go to xarray's own
    Zarr backend."""
    info = tmp_path / "lsio_entry-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lsio-entry\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[xarray.backends]\n{ENTRY_POINT}\n")
    code = f"""
        import xarray as xr
        from xarray.backends.plugins import guess_engine, list_engines
        print(type(list_engines()["lsio"]).__name__, guess_engine({store_path!r}))
        ds = xr.open_dataset({store_path!r}, engine="lsio", chunks={{}})
        print(type(ds.t2m.variable._data).__name__, float(ds.t2m[0, 0, 0]))
    """
    path = os.pathsep.join([str(tmp_path), str(Path(lsio.__file__).parents[1]),
                            os.environ.get("PYTHONPATH", "")])
    out = check_ok(run_python(code, env={"PYTHONPATH": path})).split()
    assert out == ["LsioBackendEntrypoint", "zarr", "Array",  # Dask's, with chunks={}
                   str(float(_dataset().t2m[0, 0, 0]))], out


# -- Dask's workers -----------------------------------------------------------------------

class _Heard(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.heard: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.heard.append(record.getMessage())


def _listen() -> None:
    """Keep what the ``"lsio"`` logger says at DEBUG in this worker: each read_many call's
    ``stats`` (the Reader logs them) and the codec pipeline's batches."""
    logger = logging.getLogger("lsio")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Heard())


def _heard() -> list[str]:
    return [m for h in logging.getLogger("lsio").handlers for m in getattr(h, "heard", [])]


def _configured() -> str:
    return str(zarr.config.get("codec_pipeline.path"))


@pytest.mark.slow  # two worker processes: ~5-15 s
def test_dask_workers_read_with_lsio(store_path: str, nginx: Nginx) -> None:
    url = nginx.url("xarray-engine.zarr")
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None,
                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
          Client(cluster) as client):
        client.run(_listen)
        ds = xr.open_dataset(url, engine=ENGINE, chunks={}, consolidated=True)
        assert not any(client.run(_heard).values())
        got = ds.compute()  # every chunk read and decoded on the workers
        xr.testing.assert_identical(got, _expected(store_path))
        heard = client.run(_heard)
        assert set(client.run(_configured).values()) == {DEFAULT}  # workers' config untouched
    stats = [m for ms in heard.values() for m in ms if m.startswith("lsio: lsio.Stats(")]
    assert stats, heard  # the workers' reads were lsio's read_many calls
    batches = [m for ms in heard.values() for m in ms if "the lsio pipeline read" in m]
    assert sum(int(m.split("read ")[1].split()[0]) for m in batches) == 3 * 2 * 3 + 2 * 2
