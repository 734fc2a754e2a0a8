"""Zarr the way its users read it: xarray and a Dask distributed cluster, reading through
:class:`lsio.zarr.LsioCodecPipeline`, give what zarr's own pipeline gives.

How the pipeline reaches Dask's workers (zarr's config is per process; a worker process
starts with zarr's default): an array opened where the pipeline is enabled keeps it, and
pickling the array (Dask shipping a graph) carries it along. Arrays opened *on* a worker
(``xarray.open_mfdataset(..., parallel=True)``, a task that calls ``zarr.open_array``) take
the worker's own config: a worker plugin enables it there.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.codecs as zc
from conftest import check_ok, run_python
from distributed import Client, LocalCluster, WorkerPlugin
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.errors import ZarrUserWarning

import lsio.zarr
from lsio import HttpOptions
from lsio.zarr import LsioCodecPipeline, LsioStore

LSIO = "lsio.zarr.LsioCodecPipeline"
DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@pytest.fixture(autouse=True)
def _restore_zarr_config() -> Iterator[None]:
    """Every test leaves zarr's codec pipeline as it found it."""
    before = zarr.config.get("codec_pipeline.path")
    try:
        yield
    finally:
        zarr.config.set({"codec_pipeline.path": before})


def _dataset() -> xr.Dataset:
    """Two variables with partial edge chunks, and coordinates (xarray reads those eagerly)."""
    rng = np.random.default_rng(13)
    return xr.Dataset(
        {"temperature": (("time", "y", "x"), rng.standard_normal((10, 40, 50)).astype("f4")),
         "count": (("y", "x"), rng.integers(0, 1000, (40, 50)).astype("i4"))},
        coords={"time": np.arange(10), "y": np.linspace(0.0, 1.0, 40)},
        attrs={"title": "lsio test"})


ENCODING = {
    "temperature": {"chunks": (4, 16, 16), "compressors": [zc.BloscCodec(cname="zstd")]},
    "count": {"chunks": (16, 16), "compressors": [zc.ZstdCodec(level=3)]},
}


@pytest.fixture(scope="module")
def stores(module_data_dir: Path) -> dict[bool, str]:
    """The dataset written by xarray, Zarr v3, with and without consolidated metadata
    (zarr warns that v3 has no consolidated metadata in its spec yet; xarray writes it)."""
    out = {}
    for consolidated in (False, True):
        path = str(module_data_dir / f"consolidated-{consolidated}.zarr")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
            _dataset().to_zarr(path, zarr_format=3, consolidated=consolidated,
                               encoding=ENCODING, mode="w-")
        out[consolidated] = path
    return out


def pipelines_of(obj: Any) -> list[type[Any]]:
    """The codec pipeline class of every zarr array in ``obj``, found by pickling it as Dask
    does to ship a graph to its workers: exactly what a worker would unpickle."""
    found: list[type[Any]] = []

    class Finder(cloudpickle.CloudPickler):  # type: ignore[misc]
        def persistent_id(self, o: Any) -> None:
            if isinstance(o, zarr.AsyncArray):
                found.append(type(o.codec_pipeline))
            return None  # pickle it as usual

    Finder(io.BytesIO()).dump(obj)
    return found


@pytest.mark.parametrize("consolidated", [False, True], ids=["plain", "consolidated"])
@pytest.mark.parametrize("opened", ["LsioStore", "path"])
def test_xarray_reads_the_same_through_lsio(stores: dict[bool, str], opened: str,
                                           consolidated: bool) -> None:
    path = stores[consolidated]
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        expected = xr.open_zarr(path, consolidated=consolidated)
    with zarr.config.set({"codec_pipeline.path": LSIO}):  # picked when the arrays open
        got = xr.open_zarr(LsioStore(path) if opened == "LsioStore" else path,
                           consolidated=consolidated)
        lazy = xr.open_zarr(path, consolidated=consolidated, chunks=None)  # no Dask
    assert zarr.config.get("codec_pipeline.path") == DEFAULT  # the reads below run without it

    # each opened array carries its own pipeline: 2 variables + 2 coordinates
    assert pipelines_of(expected) == [BatchedCodecPipeline] * 4
    assert pipelines_of(got) == [LsioCodecPipeline] * 4
    assert pipelines_of(lazy) == [LsioCodecPipeline] * 4
    assert got.temperature.chunks == ((4, 4, 2), (16, 16, 8), (16, 16, 16, 2))

    loaded = got.load()  # Dask's threads, several chunk reads at once
    xr.testing.assert_identical(loaded, expected.load())
    xr.testing.assert_identical(loaded, _dataset())
    # xarray's lazy indexing: a stepped slice and a list are one zarr orthogonal selection
    sel = {"time": slice(1, None, 3), "y": slice(5, 37), "x": [0, 7, 33, 49]}
    xr.testing.assert_identical(lazy.isel(sel).load(), _dataset().isel(sel))


class EnableLsioZarr(WorkerPlugin):  # type: ignore[misc]
    """The recipe in the docs: lsio's pipeline on every worker, also ones started later."""

    def setup(self, worker: Any) -> None:
        lsio.zarr.enable()


def _configured() -> str:
    return str(zarr.config.get("codec_pipeline.path"))


class _Heard(logging.Handler):
    """Keeps what the ``"lsio"`` logger says in this process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.heard: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.heard.append(record.getMessage())


def _listen() -> None:
    """Listen to ``"lsio"`` at DEBUG in this process (a Dask worker)."""
    logger = logging.getLogger("lsio")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Heard())


def _lsio_decoded() -> bool:
    """Whether lsio's pipeline read a batch of chunks itself in this process (zarr's own
    pipeline, or a fallback to it, says nothing): its DEBUG line."""
    # by attribute: the class may arrive on the worker twice (pickled by value)
    heard = [m for h in logging.getLogger("lsio").handlers for m in getattr(h, "heard", [])]
    return any("the lsio pipeline read" in m for m in heard)


def _pipeline_on_worker(array: zarr.Array) -> str:
    """The pipeline of ``array`` as unpickled on a worker, which reads with it here."""
    assert array[:2, :2].shape == (2, 2)
    return type(array._async_array.codec_pipeline).__name__


@pytest.mark.slow  # starting two worker processes: ~5-15 s here
def test_dask_cluster_reads_through_lsio(stores: dict[bool, str]) -> None:
    ref = _dataset()
    path = stores[False]
    # No dashboard; and the scheduler's HTTP server (which runs without one) on a free port:
    # on its default, 8787, a machine's other cluster makes it warn and leak a socket
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None,
                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
          Client(cluster) as client):
        # zarr's config is per process: the workers start with zarr's default
        assert set(client.run(_configured).values()) == {DEFAULT}
        client.run(_listen)
        assert not any(client.run(_lsio_decoded).values())

        # arrays opened here keep the pipeline they were opened with, and pickling (Dask
        # shipping its graph) carries it to the workers, whatever their config says
        with zarr.config.set({"codec_pipeline.path": LSIO}):
            ds = xr.open_zarr(LsioStore(path), consolidated=False)  # Dask chunks = Zarr's
            count = zarr.open_array(LsioStore(path), path="count", mode="r")
        mean = ds.temperature.mean("time").compute()
        np.testing.assert_allclose(mean.values, ref.temperature.values.mean(axis=0),
                                   rtol=0, atol=1e-6)  # float32 sums in another order
        np.testing.assert_array_equal(da.from_zarr(count).sum(axis=0).compute(),
                                      ref["count"].values.sum(axis=0))
        assert any(client.run(_lsio_decoded).values())  # lsio decoded chunks on the workers
        assert set(client.run(_configured).values()) == {DEFAULT}  # their config unchanged
        assert set(client.run(_pipeline_on_worker, count).values()) == {"LsioCodecPipeline"}
        shipped = pipelines_of(ds.temperature.data.__dask_graph__())
        assert shipped == [LsioCodecPipeline]

        # arrays opened on the workers take the workers' config: zarr's default ...
        with zarr.config.set({"codec_pipeline.path": LSIO}):
            opened_there = xr.open_mfdataset([path], engine="zarr", parallel=True,
                                             consolidated=False)
        assert set(pipelines_of(opened_there.temperature.data.__dask_graph__())) == {
            BatchedCodecPipeline}
        # ... until a worker plugin enables lsio's pipeline there (the documented recipe)
        client.register_plugin(EnableLsioZarr())
        assert set(client.run(_configured).values()) == {LSIO}
        opened_there = xr.open_mfdataset([path], engine="zarr", parallel=True,
                                         consolidated=False)
        assert set(pipelines_of(opened_there.temperature.data.__dask_graph__())) == {
            LsioCodecPipeline}
        total = opened_there["count"].sum(dim="x").compute()
        np.testing.assert_array_equal(total.values, ref["count"].values.sum(axis=1))


def test_the_pipeline_is_found_by_its_entry_point() -> None:
    """A process that sets zarr's config from the environment (``ZARR_CODEC_PIPELINE__PATH``,
    as a batch job's workers can) finds the pipeline through the ``zarr.codec_pipeline``
    entry point, without importing ``lsio.zarr`` first."""
    code = """
        import sys, tempfile
        import zarr
        assert "lsio.zarr" not in sys.modules
        a = zarr.create_array(tempfile.mkdtemp(), shape=(4,), chunks=(2,), dtype="i4")
        a[:] = [1, 2, 3, 4]
        print(type(a._async_array.codec_pipeline).__name__, a[1:].tolist())
    """
    env = {"ZARR_CODEC_PIPELINE__PATH": LSIO,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(lsio.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    assert check_ok(run_python(code, env=env)).split() == ["LsioCodecPipeline", "[2,", "3,",
                                                           "4]"]


def _count_builds() -> None:
    """On a worker: count from now on the readers and lsio codec pipelines built, the stores
    unpickled and the pipeline's reads (one per task reading a Dask chunk)."""
    import lsio._reader
    import lsio.zarr._pipeline
    import lsio.zarr._store

    counts = {"reader": 0, "pipeline": 0, "unpickled": 0, "reads": 0}
    lsio._reader._test_counts = counts  # type: ignore[attr-defined]

    def counting(cls: Any, name: str, key: str) -> None:
        method = getattr(cls, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return method(*args, **kwargs)
        setattr(cls, name, counted)

    counting(lsio._reader.Reader, "__init__", "reader")
    counting(lsio.zarr._pipeline.LsioCodecPipeline, "__init__", "pipeline")
    counting(lsio.zarr._store.LsioStore, "__setstate__", "unpickled")
    counting(lsio.zarr._pipeline.LsioCodecPipeline, "read", "reads")


def _builds() -> dict[str, int]:
    import lsio._reader

    return dict(lsio._reader._test_counts)  # type: ignore[attr-defined]


def _workers() -> int:
    from lsio._pipeline import worker_count

    return worker_count()


def _readers_of(*stores: LsioStore) -> list[Any]:
    """On a worker: the readers of stores as unpickled there, and their secrets."""
    ids = {}
    return [ids.setdefault(id(s.reader), len(ids)) for s in stores] + [
        s.reader.http.aws_secret_access_key for s in stores]


@pytest.mark.slow  # starting two worker processes: ~5-15 s here
def test_dask_workers_build_a_reader_and_pipeline_once(stores: dict[bool, str]) -> None:
    """Every task unpickles its own copy of the array (``inline_array=True``), and a second
    graph ships it again: each worker builds the store's reader and the codec pipeline
    once. Stores whose readers hold other keys get readers of their own. And each of the
    two worker processes on this host runs its share of pipeline workers (one: Dask gives
    each one thread), not one per host CPU."""
    ref = _dataset()
    reader = lsio.Reader(max_gap=1 << 16)  # a reader of its own: it pickles with the store
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None,
                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
          Client(cluster) as client):
        client.run(_count_builds)
        with zarr.config.set({"codec_pipeline.path": LSIO}):
            ds = xr.open_dataset(LsioStore(stores[False], read_only=True, reader=reader),
                                 engine="zarr", consolidated=False, inline_array=True,
                                 chunks={})  # Dask chunks = Zarr's
        for _ in range(2):  # two graphs
            mean = ds.temperature.mean("time").compute()
            np.testing.assert_allclose(mean.values, ref.temperature.values.mean(axis=0),
                                       rtol=0, atol=1e-6)
        counts = client.run(_builds)
        assert sum(c["reads"] for c in counts.values()) == 3 * 3 * 4 * 2  # tasks
        assert sum(c["unpickled"] for c in counts.values()) >= 4  # per graph and worker
        for c in counts.values():
            assert c["reader"] <= 1 and c["pipeline"] <= 1, counts

        keys = [HttpOptions(aws_access_key_id="AKIA", aws_secret_access_key=s)
                for s in ("secret-1", "secret-2")]
        one, two = (LsioStore("s3://bucket/x.zarr", reader=lsio.Reader(http=k))
                    for k in keys)
        seen = client.run(_readers_of, one, two, one)
        assert list(seen.values()) == [[0, 1, 0, "secret-1", "secret-2", "secret-1"]] * 2

        # Dask gave each process one thread: one pipeline worker each, whatever the host
        assert set(client.run(_workers).values()) == {1}
