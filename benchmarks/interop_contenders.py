"""The interop benchmark's data (one pinned NetCDF4/HDF5 file and its kerchunk references) and
its contenders: the code people already have, reading that file through fsspec, obspec or a
file object, once with the usual filesystem or store underneath and once with lsio's.

Every contender's ``setup(ctx)`` (a coroutine, on the benchmark's event loop) does what a user
does once (filesystems, stores, parsing the file into a ``ManifestStore``) and returns the
async callable the harness times: one whole read of the variable into a numpy array. lsio's
contenders import ``lsio.fsspec`` / ``lsio.obspec`` inside their setup, so the peers run where
those modules are not there yet (their rows then say FAILED and why).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .contenders import RunFn

KiB, MiB = 1 << 10, 1 << 20
VAR = "t"
SEED = 23
CHUNK = (1, 128, 128)  # float32: 64 KiB uncompressed
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
BLOCK_SIZES = (64 * KiB, 512 * KiB, 2 * MiB, 8 * MiB)  # fsspec HTTP file's sweep


@dataclass(frozen=True)
class DataSpec:
    steps: int  # time steps; the variable is (steps, ny, nx), one chunk per 128 x 128 tile
    ny: int
    nx: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.steps, self.ny, self.nx)

    @property
    def n_chunks(self) -> int:
        return self.steps * (self.ny // CHUNK[1]) * (self.nx // CHUNK[2])

    @property
    def nbytes(self) -> int:
        return self.steps * self.ny * self.nx * 4


FULL = DataSpec(steps=64, ny=512, nx=512)  # 1024 chunks x 64 KiB = 64 MiB of float32
QUICK = DataSpec(steps=4, ny=256, nx=256)  # 16 chunks


def field_values(spec: DataSpec) -> np.ndarray:
    """A temperature-like float32 field (kelvin): smooth waves drifting in time plus noise,
    rounded to 1/64 K as NetCDF writers quantize (compressible, far from trivially so)."""
    rng = np.random.default_rng(SEED)
    t = np.arange(spec.steps, dtype="f8")[:, None, None]
    y = np.linspace(0, 2 * np.pi, spec.ny)[None, :, None]
    x = np.linspace(0, 4 * np.pi, spec.nx)[None, None, :]
    smooth = 280 + 12 * np.sin(y + 0.05 * t) * np.cos(x - 0.1 * t) + 3 * np.sin(3 * x + 2 * y)
    noisy = smooth + rng.normal(0.0, 0.4, spec.shape)
    return (np.round(noisy * 64) / 64).astype("f4")


@dataclass(frozen=True)
class Data:
    spec: DataSpec
    path: Path  # the NetCDF4 file
    refs_local: dict[str, Any]  # kerchunk references to `path`
    expected: np.ndarray  # the variable as h5py reads it from `path`
    chunk_ranges: list[tuple[int, int]]  # (offset, length) of each stored chunk

    def refs_at(self, url: str) -> dict[str, Any]:
        """The references with the file's local path replaced by ``url``."""
        local = str(self.path)
        refs = {k: [url, *v[1:]] if isinstance(v, list) and v and v[0] == local else v
                for k, v in self.refs_local["refs"].items()}
        return {**self.refs_local, "refs": refs}


def materialize(spec: DataSpec, data_dir: Path) -> Data:
    """Write the file (once per spec: its name carries the shape) and scan it with kerchunk."""
    import h5netcdf
    import h5py
    from kerchunk.hdf import SingleHdf5ToZarr

    path = data_dir / f"interop-{spec.steps}x{spec.ny}x{spec.nx}.nc"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with h5netcdf.File(tmp, "w") as f:
            f.dimensions = {"time": spec.steps, "y": spec.ny, "x": spec.nx}
            f.create_variable("time", ("time",), "i4", data=np.arange(spec.steps))
            v = f.create_variable(VAR, ("time", "y", "x"), "f4", chunks=CHUNK, **COMPRESSION)
            v[...] = field_values(spec)
            v.attrs["units"] = "K"
        os.replace(tmp, path)
    os.chmod(path, 0o644)  # nginx's workers may run as another user
    with open(path, "rb") as f:
        refs = SingleHdf5ToZarr(f, str(path), inline_threshold=300).translate()
    with h5py.File(path, "r") as f:
        expected = f[VAR][...]
    ranges = [(int(v[1]), int(v[2])) for k, v in sorted(refs["refs"].items())
              if k.startswith(f"{VAR}/") and isinstance(v, list) and len(v) == 3]
    assert len(ranges) == spec.n_chunks, (len(ranges), spec.n_chunks)
    return Data(spec, path, refs, expected, ranges)


def decode_seconds(data: Data) -> float:
    """How long decoding every chunk takes on one thread, from memory, with numcodecs (the
    filters kerchunk recorded: zlib then shuffle): what every contender pays alike."""
    from numcodecs import Shuffle, Zlib

    with open(data.path, "rb") as f:
        raw = [os.pread(f.fileno(), length, offset) for offset, length in data.chunk_ranges]
    zlib, shuffle = Zlib(level=4), Shuffle(elementsize=4)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for chunk in raw:
            shuffle.decode(zlib.decode(chunk))
        best = min(best, time.perf_counter() - t0)
    return best


def compressed_bytes(data: Data) -> int:
    return sum(length for _, length in data.chunk_ranges)


# --------------------------------------------------------------------------- contenders


@dataclass
class Context:
    data: Data
    url: str  # the file on nginx
    base: str  # nginx's root URL (no trailing slash)
    cleanup: AsyncExitStack = field(default_factory=AsyncExitStack)


@dataclass(frozen=True)
class Contender:
    name: str
    workload: str
    setup: Callable[[Context], Awaitable[RunFn]]
    lsio: bool = False
    on_loop: bool = True  # awaits on the event loop: its worst loop stall is reported
    floor: bool = False  # no I/O at all: what the read costs above its storage (not a peer)


async def _zarr_reader(store: Any, **open_kw: Any) -> RunFn:
    """Read the whole variable through zarr 3's async API (zarr's default codec pipeline)."""
    import zarr

    arr = await zarr.api.asynchronous.open_array(store=store, path=VAR, mode="r", **open_kw)

    async def run() -> np.ndarray:
        return np.asarray(await arr.getitem(...))

    return run


def _refs_store(refs: dict[str, Any], **fs_kw: Any) -> Any:
    from fsspec.implementations.reference import ReferenceFileSystem
    from zarr.storage import FsspecStore

    rfs = ReferenceFileSystem(refs, asynchronous=True, **fs_kw)
    return FsspecStore(rfs, read_only=True, path="")


def _lsio_fs() -> Any:
    from lsio.fsspec import LsioFileSystem

    return LsioFileSystem(asynchronous=True)


async def refs_fsspec_http(ctx: Context) -> RunFn:
    from fsspec.implementations.http import HTTPFileSystem

    fs = HTTPFileSystem(asynchronous=True)
    return await _zarr_reader(_refs_store(ctx.data.refs_at(ctx.url), fs={"http": fs}),
                              zarr_format=2)


async def refs_lsio_http(ctx: Context) -> RunFn:
    return await _zarr_reader(_refs_store(ctx.data.refs_at(ctx.url), fs={"http": _lsio_fs()}),
                              zarr_format=2)


async def refs_fsspec_local(ctx: Context) -> RunFn:
    from fsspec.implementations.local import LocalFileSystem

    # a synchronous filesystem: ReferenceFileSystem wraps it (AsyncFileSystemWrapper)
    return await _zarr_reader(_refs_store(ctx.data.refs_local, fs=LocalFileSystem()),
                              zarr_format=2)


async def refs_lsio_local(ctx: Context) -> RunFn:
    return await _zarr_reader(_refs_store(ctx.data.refs_local, fs=_lsio_fs()), zarr_format=2)


async def refs_inline(ctx: Context) -> RunFn:
    """The same references with every chunk's bytes inlined: zarr, ReferenceFileSystem and
    decoding with no I/O at all, the floor under both filesystems."""
    with open(ctx.data.path, "rb") as f:
        refs = {k: os.pread(f.fileno(), v[2], v[1]) if isinstance(v, list) and len(v) == 3
                else v for k, v in ctx.data.refs_local["refs"].items()}
    return await _zarr_reader(_refs_store({**ctx.data.refs_local, "refs": refs}),
                              zarr_format=2)


async def _manifest_reader(ctx: Context, store: Any) -> RunFn:
    """VirtualiZarr: parse the file on nginx into a ManifestStore through ``store`` (in a
    thread: the parser makes synchronous obspec calls), then read it through zarr."""
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({ctx.base: store})
    manifest = await asyncio.to_thread(HDFParser(), url=ctx.url, registry=registry)
    return await _zarr_reader(manifest, zarr_format=3)


async def vz_obstore(ctx: Context) -> RunFn:
    from obstore.store import HTTPStore

    return await _manifest_reader(
        ctx, HTTPStore.from_url(ctx.base, client_options={"allow_http": True}))


async def vz_lsio(ctx: Context) -> RunFn:
    from lsio.obspec import Store

    return await _manifest_reader(ctx, Store(ctx.base))


def _h5py_reader(open_file: Callable[[], Any]) -> RunFn:
    """h5py reading the whole variable from a file object (in a thread: the file objects'
    synchronous reads run their filesystem's event loop, which may not be this one)."""
    import h5py

    def read() -> np.ndarray:
        with open_file() as f, h5py.File(f, "r") as h5:
            return np.asarray(h5[VAR][...])

    async def run() -> np.ndarray:
        return await asyncio.to_thread(read)

    return run


def h5py_fsspec(block_size: int) -> Callable[[Context], Awaitable[RunFn]]:
    async def setup(ctx: Context) -> RunFn:
        from fsspec.implementations.http import HTTPFileSystem

        fs = HTTPFileSystem()
        return _h5py_reader(lambda: fs.open(ctx.url, "rb", block_size=block_size))

    return setup


async def h5py_lsio(ctx: Context) -> RunFn:
    from lsio.fsspec import LsioFileSystem

    fs = LsioFileSystem()
    return _h5py_reader(lambda: fs.open(ctx.url, "rb"))


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


LSIO_FS = "lsio LsioFileSystem"
INLINE = "(no I/O: chunks inlined in the references)"
CONTENDERS: tuple[Contender, ...] = (
    Contender("fsspec HTTPFileSystem", "refs-http", refs_fsspec_http),
    Contender(LSIO_FS, "refs-http", refs_lsio_http, lsio=True),
    Contender(INLINE, "refs-http", refs_inline, floor=True),
    Contender("fsspec LocalFileSystem", "refs-local", refs_fsspec_local),
    Contender(LSIO_FS, "refs-local", refs_lsio_local, lsio=True),
    Contender(INLINE, "refs-local", refs_inline, floor=True),
    Contender("obstore HTTPStore", "vz-http", vz_obstore),
    Contender("lsio.obspec.Store", "vz-http", vz_lsio, lsio=True),
    *(Contender(f"fsspec HTTPFile block_size={_size(b)}", "h5py-http", h5py_fsspec(b),
                on_loop=False) for b in BLOCK_SIZES),
    Contender("lsio LsioFileSystem.open", "h5py-http", h5py_lsio, lsio=True, on_loop=False),
)
