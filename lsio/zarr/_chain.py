"""Zarr v3 codecs mapped to a decode chain (numcodecs)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._sizes import nbytes

__all__ = ["Chain"]

_BYTE_FILTERS = frozenset({"Shuffle", "Zlib", "GZip", "Zstd", "Blosc", "LZ4", "BZ2", "LZMA",
                           "Fletcher32", "CRC32", "CRC32C", "Adler32", "JenkinsLookup3"})
"""zarr v2 filters (numcodecs classes) that decode bytes into bytes whatever the dtype:
the chain runs them; any other filter (Delta, FixedScaleOffset, ...) is zarr's to run."""


class Chain:
    """Decodes one chunk's bytes into an array of the chunk's shape (numcodecs).
    ``order``: the memory order of zarr v2 chunks (v3 stores C order; its transpose codec
    says otherwise)."""

    def __init__(self, codecs: Sequence[Any], shape: tuple[int, ...], dtype: np.dtype[Any],
                 order: str = "C") -> None:
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
            elif name in _BYTE_FILTERS and isinstance(getattr(codec, "codec_config", None),
                                                      dict):
                # zarr 3's numcodecs.* codecs (VirtualiZarr writes HDF5's as these)
                self.byte_codecs.append(numcodecs.get_codec(dict(codec.codec_config)))
            elif name == "V2Codec" and all(type(f).__name__ in _BYTE_FILTERS
                                           for f in codec.filters or ()):
                # a zarr v2 chunk: compressor over bytes-to-bytes filters (kerchunk's HDF5
                # shuffle) over the raw bytes in the array's dtype, in C or F order
                self.byte_codecs.extend(codec.filters or ())
                if codec.compressor is not None:
                    self.byte_codecs.append(codec.compressor)
                if order == "F" and len(shape) > 1:
                    self.order = tuple(range(len(shape)))[::-1]
                    stored_shape = tuple(shape[::-1])
            else:
                raise NotImplementedError(f"lsio.zarr.read: codec {name} is not supported")
        self.byte_codecs.reverse()  # decode runs the chain backwards
        self.stored_shape = stored_shape
        # Python ints: np.prod wraps around on untrusted shapes (callers name the array
        # first with _sizes.check_layout; this refuses anything that slipped by)
        self.nbytes = nbytes(stored_shape, self.dtype.itemsize, "a chunk")
        self._local = threading.local()
        self.c_decoders: dict[np.dtype[Any], Any] = {}
        """The C decoder of these chunks per output dtype (``_batched.c_decoder``),
        worked out once."""
        # the last decompression, into scratch memory: numcodecs' module-level functions
        # skip the codec objects' per-call argument checks (~5 us a chunk)
        self.last: Any = self._last_step() if self.byte_codecs else None

    def _last_step(self) -> Any:
        """``(encoded, scratch) -> decoded`` for the last decompression of the chain."""
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

            return into_scratch
        # fresh memory of the decoded size: a wrong size fails in reshape
        return lambda b, out: final.decode(b)

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
