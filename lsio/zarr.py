"""Zarr v3 on lsio: an async store for zarr-python, and a fast path straight into numpy.

- :class:`LsioStore` implements ``zarr.abc.store.Store`` over a local directory or a URL
  (``http(s)://``, ``s3://``, ``gs://``, ``az://``); ``get_partial_values`` is one
  ``read_many`` call. Local roots can be written; remote roots are read-only.
- :func:`read` reads a selection of a Zarr v3 array into a new numpy array: it works out the
  chunks the selection touches, reads them in one planned ``read_many`` (sharded arrays: the
  shard indexes with one suffix read each, then the inner chunks, coalesced) and decodes each
  chunk on the pinned pipeline workers straight into its place in the output.

Needs zarr-python 3 (``pip install 'lsio[zarr]'``).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from ._defaults import BATCH_WINDOW, BATCH_WINDOWS_MIN
from ._memory import allocate
from ._progress import make_progress
from ._reader import Reader, default_reader
from ._sync import run_sync
from ._url import is_url

__all__ = ["LsioStore", "read", "read_sync"]


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # failures reach the waiting get() calls; nothing to log here


def _check_key(key: str) -> str:
    """Keys are relative '/'-separated paths that stay inside the root.

    Listing prefixes follow the same rule (``""`` and a trailing ``/`` pass): a prefix
    that may not name a key may not be listed either, so one check guards both."""
    if not isinstance(key, str):
        raise TypeError(f"lsio: a store key must be str, not {type(key).__name__}")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or "\0" in key or any(p in ("..", ".")
                                                                 for p in parts):
        raise ValueError(f"lsio: store key {key!r} would leave the store's root")
    return key


class LsioStore(Store):
    """A zarr-python store that reads through lsio.

    Parameters
    ----------
    root
        A local directory, or a URL (``http(s)://``, ``s3://``, ``gs://``, ``az://``).
    read_only
        Default: ``False`` for local roots, ``True`` (and only ``True``) for URLs.
    reader
        The :class:`lsio.Reader` to use (default: lsio's default reader).
    """

    supports_partial_writes = False

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool | None = None,
                 reader: Reader | None = None) -> None:
        root = os.fspath(root)
        self.remote = is_url(root)
        if self.remote:
            if read_only is False:
                raise ValueError(f"lsio: {root!r}: writes to remote roots are not supported")
            read_only = True
            root = root.rstrip("/")
        else:
            root = os.path.abspath(root)
        super().__init__(read_only=bool(read_only))
        self.root = root
        self._reader = reader
        self._batches: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, builtins.list[Any]] = weakref.WeakKeyDictionary()

    # -- identity ------------------------------------------------------------------------
    @property
    def reader(self) -> Reader:
        return self._reader or default_reader()

    @property
    def supports_writes(self) -> bool:
        return not self.remote

    @property
    def supports_deletes(self) -> bool:
        return not self.remote

    @property
    def supports_listing(self) -> bool:
        return not self.remote

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.root == other.root

    def __hash__(self) -> int:
        return hash((type(self), self.root))

    def __repr__(self) -> str:
        return f"LsioStore({self.root!r})"

    def __str__(self) -> str:
        return self.root if self.remote else f"file://{self.root}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # readers hold thread pools; the unpickled store makes its own
        del state["_batches"]  # pending reads belong to this process's loops
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batches = weakref.WeakKeyDictionary()

    def with_read_only(self, read_only: bool = False) -> LsioStore:
        return type(self)(self.root, read_only=read_only, reader=self._reader)

    def path_of(self, key: str) -> str:
        """The path or URL that holds ``key``."""
        _check_key(key)
        if not self.remote:
            return os.path.join(self.root, key)
        if self.root.lower().startswith(("http://", "https://")):
            return f"{self.root}/{quote(key, safe='/')}"
        return f"{self.root}/{key}"

    # -- reading -------------------------------------------------------------------------
    def _request(self, key: str, byte_range: ByteRequest | None) -> tuple[str, int, int | None]:
        path = self.path_of(key)
        if byte_range is None:
            return (path, 0, None)
        if isinstance(byte_range, RangeByteRequest):
            return (path, byte_range.start, max(0, byte_range.end - byte_range.start))
        if isinstance(byte_range, OffsetByteRequest):
            return (path, byte_range.offset, None)
        if isinstance(byte_range, SuffixByteRequest):
            if byte_range.suffix == 0:
                return (path, 0, 0)
            return (path, -byte_range.suffix, None)
        raise TypeError(f"Unexpected byte_range, got {byte_range}")

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        """One value. zarr-python asks for chunks with many concurrent ``get`` calls; those
        made in the same event-loop turn are gathered into one ``read_many`` call (one
        plan, one submission), since a call costs ~0.8 ms whatever its size."""
        if not self._is_open:
            await self._open()
        request = self._request(key, byte_range)
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            loop.call_soon(self._flush, loop)
        fut: asyncio.Future[Any] = loop.create_future()
        batch.append((request, fut))
        chunk = await fut
        return None if chunk is None else prototype.buffer.from_bytes(chunk)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, [])
        if batch:
            task = loop.create_task(self._read_batch(batch))
            task.add_done_callback(_retrieve)

    async def _read_batch(self, batch: builtins.list[tuple[tuple[str, int, int | None],
                                                  asyncio.Future[Any]]]) -> None:
        try:
            results = list(await self.reader.read_many([r for r, _ in batch],
                                                       missing_ok=True))
        except (IsADirectoryError, NotADirectoryError, PermissionError, OSError) as exc:
            if len(batch) == 1:
                results = [None] if isinstance(exc, (IsADirectoryError, NotADirectoryError)) \
                    else [exc]
            else:  # find out which request failed: read them one by one
                results = []
                for request, _ in batch:
                    try:
                        results.append((await self.reader.read_many(
                            [request], missing_ok=True))[0])
                    except (IsADirectoryError, NotADirectoryError):
                        results.append(None)
                    except OSError as one:
                        results.append(one)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception)
                                      else asyncio.CancelledError())
            raise
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> builtins.list[Buffer | None]:
        return await self._get_many_now(prototype, list(key_ranges))

    async def _get_many_now(self, prototype: BufferPrototype,
                            key_ranges: builtins.list[tuple[str, ByteRequest | None]]
                            ) -> builtins.list[Buffer | None]:
        if not key_ranges:
            return []
        requests = [self._request(k, r) for k, r in key_ranges]
        try:
            results = await self.reader.read_many(requests, missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            if len(requests) == 1:
                return [None]  # a "directory" key holds no value, as for LocalStore
            return [await self.get(k, prototype, r) for k, r in key_ranges]
        return [None if chunk is None else prototype.buffer.from_bytes(chunk)
                for chunk in results]

    async def exists(self, key: str) -> bool:
        if not self.remote:
            return os.path.isfile(self.path_of(key))
        (found,) = await self.reader.read_many([(self.path_of(key), 0, 1)], missing_ok=True)
        return found is not None

    async def getsize(self, key: str) -> int:
        if self.remote:
            return await super().getsize(key)
        try:
            return os.path.getsize(self.path_of(key))
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(self.path_of(key)) from None

    # zarr's optional synchronous protocol (run on lsio's own loop thread)
    def get_sync(self, key: str, *, prototype: BufferPrototype | None = None,
                 byte_range: ByteRequest | None = None) -> Buffer | None:
        from zarr.core.buffer import default_buffer_prototype

        return run_sync(self.get(key, prototype or default_buffer_prototype(), byte_range))

    def set_sync(self, key: str, value: Buffer) -> None:
        run_sync(self.set(key, value))

    def delete_sync(self, key: str) -> None:
        run_sync(self.delete(key))

    # -- writing (local roots) -----------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"lsio: LsioStore.set takes a zarr Buffer, not "
                            f"{type(value).__name__}")
        if not self._is_open:
            await self._open()
        path = self.path_of(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # write aside, then rename: readers never see a half-written chunk
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".lsio-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value.as_numpy_array().data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    async def delete(self, key: str) -> None:
        self._check_writable()
        path = self.path_of(key)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    # -- listing (local roots) -----------------------------------------------------------
    def _no_listing(self) -> NotImplementedError:
        return NotImplementedError(f"lsio: {self.root!r}: listing is not possible over HTTP")

    async def list(self) -> AsyncIterator[str]:
        if self.remote:
            raise self._no_listing()
        for key in self._walk(self.root):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        _check_key(prefix)  # "../" would walk the root's parent
        if self.remote:
            raise self._no_listing()
        start = os.path.join(self.root, os.path.dirname(prefix))
        for key in self._walk(start):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        _check_key(prefix)  # "../../etc" would list /etc
        if self.remote:
            raise self._no_listing()
        base = os.path.join(self.root, prefix.rstrip("/"))
        try:
            with os.scandir(base) as entries:
                names = [e.name for e in entries if not e.name.startswith(".lsio-")]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            yield name

    def _walk(self, start: str) -> builtins.list[str]:
        keys = []
        for dirpath, _, files in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if not name.startswith(".lsio-"):
                    keys.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        return keys


# -- the fast path ---------------------------------------------------------------------------

MAX_UINT64 = 2**64 - 1


def _location(array_or_url: Any) -> tuple[str, Any]:
    """(root path or URL of the array, its ArrayV3Metadata) for an Array or a location."""
    if isinstance(array_or_url, (str, os.PathLike)):
        return os.fspath(array_or_url).rstrip("/"), None
    store_path = getattr(array_or_url, "store_path", None)
    if store_path is None:
        raise TypeError(f"lsio.zarr.read takes a zarr.Array, a path or a URL, not "
                        f"{type(array_or_url).__name__}")
    store = store_path.store
    if isinstance(store, LsioStore):
        root = store.root
    elif type(store).__name__ == "LocalStore":
        root = os.fspath(store.root)
    else:
        raise TypeError(f"lsio.zarr.read reads arrays in an LsioStore or LocalStore, not "
                        f"{type(store).__name__}; pass the array's URL or path instead")
    path = store_path.path
    return (f"{root}/{path}" if path else root), array_or_url.metadata


def _join(root: str, key: str) -> str:
    if root.lower().startswith(("http://", "https://")):
        return f"{root}/{quote(key, safe='/')}"
    return f"{root}/{key}" if is_url(root) else os.path.join(root, key)


class _Chain:
    """Decodes one chunk's bytes into an array of the chunk's shape (numcodecs)."""

    def __init__(self, codecs: Sequence[Any], shape: tuple[int, ...], dtype: np.dtype[Any]
                 ) -> None:
        import numcodecs
        from numcodecs.checksum32 import CRC32C

        self.shape = shape
        self.order: tuple[int, ...] | None = None
        self.dtype = dtype
        self.byte_codecs: list[Any] = []
        stored_shape = shape
        for codec in codecs:
            name = type(codec).__name__
            if name == "TransposeCodec":
                self.order = tuple(codec.order)
                stored_shape = tuple(stored_shape[i] for i in codec.order)
            elif name == "BytesCodec":
                endian = getattr(codec.endian, "value", codec.endian)
                if endian is not None and dtype.itemsize > 1:
                    self.dtype = dtype.newbyteorder("<" if endian == "little" else ">")
            elif name == "BloscCodec":
                shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[
                    getattr(codec.shuffle, "value", codec.shuffle)]
                self.byte_codecs.append(numcodecs.Blosc(
                    cname=getattr(codec.cname, "value", codec.cname), clevel=codec.clevel,
                    shuffle=shuffle, blocksize=codec.blocksize))
            elif name == "ZstdCodec":
                self.byte_codecs.append(numcodecs.Zstd(level=codec.level,
                                                       checksum=codec.checksum))
            elif name == "GzipCodec":
                self.byte_codecs.append(numcodecs.GZip(level=codec.level))
            elif name == "Crc32cCodec":
                self.byte_codecs.append(CRC32C())
            else:
                raise NotImplementedError(f"lsio.zarr.read: codec {name} is not supported")
        self.byte_codecs.reverse()  # decode runs the chain backwards
        self.stored_shape = stored_shape
        self.nbytes = int(np.prod(stored_shape)) * self.dtype.itemsize
        self._local = threading.local()
        # the last decompression, into scratch memory: numcodecs' module-level functions
        # skip the codec objects' per-call argument checks (~5 us a chunk)
        self.last: Any = None
        if self.byte_codecs:
            final = self.byte_codecs[-1]
            kind = type(final).__name__
            if kind == "Blosc":
                from numcodecs import blosc

                def into_scratch(b: Any, out: Any) -> Any:
                    # blosc would accept a smaller frame and leave the scratch's old bytes
                    # in the tail: a chunk of the wrong size must fail, not mix chunks
                    head = memoryview(b).cast("B")
                    # blosc 1 header: bytes 4-7 are the decoded size, little-endian
                    size = int.from_bytes(head[4:8], "little") if len(head) >= 16 else -1
                    if size != self.nbytes:
                        raise ValueError(f"lsio.zarr: a chunk decodes to {size} bytes, "
                                         f"expected {self.nbytes}")
                    return blosc.decompress(b, out)

                self.last = into_scratch
            else:  # fresh memory of the decoded size: a wrong size fails in reshape
                self.last = lambda b, out: final.decode(b)

    def _scratch(self) -> npt.NDArray[np.uint8]:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.empty(self.nbytes, np.uint8)
        return buf

    def __call__(self, buf: Any) -> npt.NDArray[Any]:
        """The decoded chunk; valid until this thread decodes its next chunk (the last
        decompression writes into a per-thread scratch buffer, already faulted in, instead
        of fresh memory per chunk)."""
        for codec in self.byte_codecs[:-1]:
            buf = codec.decode(buf)
        if self.byte_codecs:
            buf = self.last(buf, self._scratch())
        arr = np.frombuffer(buf, self.dtype).reshape(self.stored_shape)
        if self.order is not None:
            arr = arr.transpose(np.argsort(self.order))
        return arr


# -- the batched C path: many chunks decoded and placed per GIL-free call ----------------------

def _codecs_lib() -> Any:
    try:
        from . import _codecs  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _codecs


def _chunk_dtype(ffi: Any) -> np.dtype[Any]:
    """numpy twin of the C ``lsio_chunk`` struct, read from the compiled struct itself
    (field offsets and size from cffi), so the struct is written once, in codecs.h."""
    fields = [("src", "<u8"), ("srclen", "<u8"), ("dst", "<u8"), ("src_offset", "<i8"),
              ("shape", ("<i8", 8)), ("dst_strides", ("<i8", 8))]
    return np.dtype({"names": [n for n, _ in fields], "formats": [f for _, f in fields],
                     "offsets": [ffi.offsetof("lsio_chunk", n) for n, _ in fields],
                     "itemsize": ffi.sizeof("lsio_chunk")})


def _batch_plan(decode: _Chain, selection: Any, meta: Any, out: npt.NDArray[Any]
                ) -> dict[str, Any] | None:
    """The chunk grid work of a basic selection, as arrays, when the C path applies: native
    byte order, no transpose, blosc / zstd / no compression, ints and unit-step slices,
    default chunk keys."""
    lib = _codecs_lib()
    if lib is None:
        return None
    names = [type(c).__name__ for c in decode.byte_codecs]
    codec = {(): lib.lib.LSIO_CODEC_RAW, ("Blosc",): lib.lib.LSIO_CODEC_BLOSC,
             ("Zstd",): lib.lib.LSIO_CODEC_ZSTD}.get(tuple(names))
    shape, chunks = tuple(meta.shape), decode.shape
    enc = meta.chunk_key_encoding
    if (codec is None or decode.order is not None or len(shape) > lib.lib.LSIO_MAX_DIM
            or len(shape) == 0 or not decode.dtype.isnative or decode.dtype != out.dtype
            or getattr(enc, "name", "") != "default" or getattr(enc, "separator", "") != "/"):
        return None
    sel = selection if isinstance(selection, tuple) else (selection,)
    if sum(x is Ellipsis for x in sel) > 1:
        return None
    if Ellipsis in sel:
        k = sel.index(Ellipsis)
        sel = sel[:k] + (slice(None),) * (len(shape) - len(sel) + 1) + sel[k + 1:]
    sel = sel + (slice(None),) * (len(shape) - len(sel))
    if len(sel) != len(shape):
        return None
    per_dim = []  # per array dim: (chunk index, start in chunk, length, start in out) arrays
    out_dim = 0
    out_strides, dims_kept = [], []
    for n, c, x in zip(shape, chunks, sel, strict=True):
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            i = int(x) + n if x < 0 else int(x)
            lo, hi, kept = i, i + 1, False
        elif isinstance(x, slice) and x.step in (None, 1):
            lo, hi, _ = x.indices(n)
            hi = max(hi, lo)
            kept = True
        else:
            return None
        if lo >= hi:
            return {"empty": True}
        first, last = lo // c, (hi - 1) // c
        idx = np.arange(first, last + 1, dtype=np.int64)
        start = np.maximum(lo - idx * c, 0)
        stop = np.minimum(hi - idx * c, c)
        per_dim.append((idx, start, stop - start, idx * c + start - lo))
        if kept:
            out_strides.append(out.strides[out_dim])
            out_dim += 1
        else:
            out_strides.append(0)
        dims_kept.append(kept)
    grids = np.meshgrid(*[np.arange(len(d[0])) for d in per_dim], indexing="ij")
    picks = [g.ravel() for g in grids]
    ndim = len(shape)
    coords = np.stack([per_dim[k][0][picks[k]] for k in range(ndim)], axis=1)
    jobs = np.zeros(len(coords), _chunk_dtype(lib.ffi))
    ostarts = np.zeros((len(coords), ndim), np.int64)
    item = decode.dtype.itemsize
    cstrides = np.cumprod((chunks[1:] + (1,))[::-1])[::-1] * item
    for k in range(ndim):
        idx, start, length, ostart = (a[picks[k]] for a in per_dim[k])
        jobs["shape"][:, k] = length
        jobs["src_offset"] += start * int(cstrides[k])
        jobs["dst"] += (ostart * out_strides[k]).astype(np.uint64)
        jobs["dst_strides"][:, k] = out_strides[k]
        ostarts[:, k] = ostart
    jobs["dst"] += np.uint64(out.ctypes.data)
    return {"empty": False, "codec": codec, "coords": coords, "jobs": jobs, "lib": lib,
            "ostarts": ostarts, "kept": dims_kept}


async def _read_batched(reader: Reader, root: str, plan: dict[str, Any], decode: _Chain,
                        out: npt.NDArray[Any], fill: Any, progress: Any) -> None:
    """Read the chunks window by window; each window is decoded by the pinned workers in
    two GIL-free C calls while the next window is read."""
    from ._pipeline import worker_count, worker_pool

    if plan["empty"]:
        return
    coords, jobs, lib = plan["coords"], plan["jobs"], plan["lib"].lib
    ffi = plan["lib"].ffi
    keys = ["c/" + "/".join(map(str, c)) for c in coords.tolist()]
    paths = [_join(root, k) for k in keys]
    loop = asyncio.get_running_loop()
    pool = worker_pool()
    workers = worker_count()
    chunk_shape = np.array(decode.shape, np.int64)
    nbytes = decode.nbytes
    pending: list[asyncio.Future[None]] = []

    running: list[Any] = []  # concurrent futures: C calls write into `out` until done

    def run(batch: npt.NDArray[Any], keep: Any) -> None:
        scratch = np.empty(nbytes, np.uint8)
        ret = lib.lsio_decode_scatter(
            plan["codec"], ffi.cast("lsio_chunk *", batch.ctypes.data), len(batch),
            len(chunk_shape), ffi.cast("int64_t *", chunk_shape.ctypes.data),
            decode.dtype.itemsize, ffi.cast("char *", scratch.ctypes.data), nbytes)
        if ret == lib.LSIO_DECODE_NOMEM:
            raise MemoryError("lsio.zarr.read: no memory for a zstd decompression context")
        if ret < 0:
            bad = int(batch["src"][-1 - ret]) if -1 - ret < len(batch) else 0
            raise ValueError(f"lsio.zarr.read: a chunk of {root!r} is corrupt or has the "
                             f"wrong size (stored chunk at 0x{bad:x})")
        del keep

    size = min(BATCH_WINDOW, max(64, -(-len(paths) // BATCH_WINDOWS_MIN)))
    bar = make_progress(progress)  # one bar (or callback) for all the windows
    if bar is not None:
        bar.start(len(paths))
    try:
        for lo in range(0, len(paths), size):
            hi = min(lo + size, len(paths))
            results = await reader.read_many([(p, 0, None) for p in paths[lo:hi]],
                                             missing_ok=True)
            if bar is not None:
                bar(np.arange(lo, hi), results, np.arange(hi - lo))
            window = jobs[lo:hi].copy()
            window["src"], window["srclen"] = results.addresses()
            found = ~results.missing
            for k in np.flatnonzero(results.missing).tolist():  # never written: fill
                region = tuple(slice(int(o), int(o + n)) for o, n, kept in zip(
                    plan["ostarts"][lo + k], window["shape"][k], plan["kept"], strict=False)
                    if kept)
                out[region] = fill
            window = window[found]
            for part in np.array_split(window, workers):
                if len(part):
                    cf = pool.submit(run, part, (results, out))
                    running.append(cf)
                    pending.append(asyncio.wrap_future(cf, loop=loop))
            if len(pending) > 2 * workers:  # at most two windows in flight
                done, rest = pending[:-workers], pending[-workers:]
                await asyncio.gather(*done)
                pending = rest
        await asyncio.gather(*pending)
    finally:
        # cancelled or failed: the C calls already running still write into `out`, whose
        # memory returns to the pool once the caller lets go; wait for them to end
        for cf in running:
            if not cf.done() and not cf.cancel():
                await asyncio.shield(asyncio.wrap_future(cf, loop=loop))
        if bar is not None:
            bar.close()


def _view(arr: npt.NDArray[Any], sel: Any) -> npt.NDArray[Any]:
    """``arr[sel]`` as a view (an empty selection tuple would give a scalar copy)."""
    return arr[...] if sel == () else arr[sel]


def _sink(decode: _Chain, target: npt.NDArray[Any], chunk_sel: Any) -> Any:
    whole = target.shape == decode.shape and all(
        isinstance(s, slice) and s == slice(0, n, 1) for s, n in zip(chunk_sel, decode.shape,
                                                                      strict=False))

    def put(buf: Any) -> bool:
        target[...] = decode(buf) if whole else decode(buf)[chunk_sel]
        return True  # written (a missing chunk's output stays None)
    return put


async def read(array_or_url: Any, selection: Any = Ellipsis, *,
               reader: Reader | None = None, progress: Any = False) -> npt.NDArray[Any]:
    """Read ``array[selection]`` of a Zarr v3 array into a new numpy array.

    ``array_or_url`` is a ``zarr.Array`` (in an :class:`LsioStore` or zarr's ``LocalStore``)
    or the array's path or URL. ``selection`` is a basic selection (ints, slices,
    ``...``). Missing chunks read as the fill value. Supported codecs: bytes, transpose,
    blosc, zstd, gzip, crc32c, and sharding_indexed around them.
    """
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.indexing import BasicIndexer
    from zarr.core.metadata.v3 import ArrayV3Metadata

    reader = reader or default_reader()
    root, meta = _location(array_or_url)
    if meta is None:
        (raw,) = await reader.read_many([(_join(root, "zarr.json"), 0, None)])
        doc = json.loads(bytes(raw))
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
            raise ValueError(f"lsio.zarr.read: {root!r} is not a Zarr v3 array")
        meta = ArrayV3Metadata.from_dict(doc)
    dtype = meta.dtype.to_native_dtype()
    fill = meta.fill_value
    indexer = BasicIndexer(selection, shape=meta.shape, chunk_grid=meta.chunk_grid)
    # result memory from lsio's arena pool: recycled once the caller drops the array, so
    # repeated reads skip the first-touch page faults (~0.1-0.4 s per 256 MiB on this VM)
    size = int(np.prod(indexer.shape)) * dtype.itemsize
    out: npt.NDArray[Any] = allocate(size).view(dtype).reshape(indexer.shape)
    codecs = list(meta.codecs)
    sharding = codecs[-1] if len(codecs) == 1 and type(codecs[0]).__name__ == (
        "ShardingCodec") else None
    grid_shape = tuple(meta.chunk_grid.chunk_shape)

    if sharding is None:
        decode = _Chain(codecs, grid_shape, dtype)
        batched = _batch_plan(decode, selection, meta, out)
        if batched is not None:
            await _read_batched(reader, root, batched, decode, out, fill, progress)
            return out
        projections = list(indexer)
        requests = [(_join(root, meta.encode_chunk_key(p.chunk_coords)), 0, None)
                    for p in projections]
        steps = [[_sink(decode, _view(out, p.out_selection), p.chunk_selection)]
                 for p in projections]
        written = await reader.read_many(requests, pipeline=steps, missing_ok=True,
                                         progress=progress) if requests else []
        for p, ok in zip(projections, written, strict=True):
            if ok is None:
                _view(out, p.out_selection)[...] = fill
        return out

    inner_shape = tuple(sharding.chunk_shape)
    per_shard = tuple(s // c for s, c in zip(grid_shape, inner_shape, strict=True))
    n_inner = int(np.prod(per_shard))
    index_chain = _Chain(list(sharding.index_codecs), (*per_shard, 2), np.dtype("<u8"))
    index_bytes = 16 * n_inner + 4 * sum(type(c).__name__ == "Crc32cCodec"
                                         for c in sharding.index_codecs)
    at_end = getattr(sharding.index_location, "value", sharding.index_location) == "end"
    shards = list(indexer)
    paths = [_join(root, meta.encode_chunk_key(s.chunk_coords)) for s in shards]
    index_requests = [(p, -index_bytes, None) if at_end else (p, 0, index_bytes)
                      for p in paths]
    indexes = await reader.read_many(index_requests, missing_ok=True) if shards else []
    decode = _Chain(list(sharding.codecs), inner_shape, dtype)
    inner_grid = RegularChunkGrid(chunk_shape=inner_shape)
    inner_requests: list[tuple[str, int, int]] = []
    inner_steps: list[list[Any]] = []
    for shard, path, raw_index in zip(shards, paths, indexes, strict=True):
        target = _view(out, shard.out_selection)
        if raw_index is None:  # the whole shard is missing
            target[...] = fill
            continue
        index = index_chain(raw_index)
        within: Any = shard.chunk_selection
        for p in BasicIndexer(within, shape=grid_shape, chunk_grid=inner_grid):
            offset, nbytes = (int(v) for v in index[p.chunk_coords])
            region = _view(target, p.out_selection)
            if offset == MAX_UINT64 and nbytes == MAX_UINT64:
                region[...] = fill
                continue
            inner_requests.append((path, offset, nbytes))
            inner_steps.append([_sink(decode, region, p.chunk_selection)])
    if inner_requests:
        await reader.read_many(inner_requests, pipeline=inner_steps, progress=progress)
    return out


def read_sync(array_or_url: Any, selection: Any = Ellipsis, *, reader: Reader | None = None,
              progress: Any = False) -> npt.NDArray[Any]:
    """Blocking :func:`read`; safe to call from inside a running event loop (Jupyter)."""
    return run_sync(read(array_or_url, selection, reader=reader, progress=progress))
