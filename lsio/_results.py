"""Results: the bytes of every request, in request order, as zero-copy views."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:  # annotations only; numpy.typing would add ~1 ms to ``import lsio``
    import numpy.typing as npt

    from ._outcome import Stats

__all__ = ["Results", "shared_columns"]


@functools.lru_cache(maxsize=128)
def shared_columns(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                    npt.NDArray[np.bool_]]:
    """``arange(n)``, ``zeros(n)`` and ``n`` False, read-only, shared by the results of the
    small-call paths (made once per size, not per call)."""
    index, zeros, none = np.arange(n, dtype=np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    index.flags.writeable = zeros.flags.writeable = none.flags.writeable = False
    return index, zeros, none


class Results(Sequence[memoryview]):
    """The chunks ``read_many`` returned, in request order.

    Each item is a read-only ``memoryview`` of unsigned bytes (format ``"B"``): it supports
    ``len()`` and the buffer protocol, so ``numpy.frombuffer(item, dtype)`` and
    ``memoryview`` slicing cost no copy; ``bytes(item)`` copies. Items are views of a few
    large buffers, which stay alive while any item does.

    With ``on_error="return"``, the item of a request that failed is its exception (an
    ``OSError`` subclass naming the path, as ``on_error="raise"`` would raise it), and
    :attr:`errors` says which items are.
    """

    __slots__ = ("_views", "_base", "_start", "lengths", "missing", "_stats", "_failed")

    def __init__(self, buffers: list[Any], base: npt.NDArray[np.int64],
                 start: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
                 missing: npt.NDArray[np.bool_] | None = None) -> None:
        self._views = [memoryview(b).cast("B") for b in buffers]
        self._base = base
        self._start = start
        self.lengths = lengths
        """Length of every chunk, as an array (``len(results[i]) == results.lengths[i]``)."""
        self.missing = np.zeros(len(lengths), bool) if missing is None else missing
        """Which requests named a file or object that does not exist (``missing_ok=True``);
        their items are ``None``."""
        self._stats: Any = None
        self._failed: dict[int, BaseException] | None = None

    @classmethod
    def absent(cls, n: int) -> Results:
        """``n`` requests whose files do not exist."""
        zeros = np.zeros(n, np.int64)
        return cls([], zeros, zeros, zeros.copy(), np.ones(n, bool))

    @classmethod
    def merge(cls, n: int, parts: list[tuple[Results, npt.NDArray[np.int64]]]) -> Results:
        """One result list of ``n`` chunks from parts, each with the request index of each
        of its chunks (a call mixing local and remote requests)."""
        merged = cls.__new__(cls)
        merged._views = []
        merged._base = np.zeros(n, np.int64)
        merged._start = np.zeros(n, np.int64)
        merged.lengths = np.zeros(n, np.int64)
        merged.missing = np.zeros(n, bool)
        merged._stats = merged._failed = None
        for part, index in parts:
            if part._failed:
                merged.fail({int(index[k]): exc for k, exc in part._failed.items()})
            merged._base[index] = part._base + len(merged._views)
            merged._start[index] = part._start
            merged.lengths[index] = part.lengths
            merged.missing[index] = part.missing
            merged._views.extend(part._views)
        return merged

    def take(self, index: npt.NDArray[np.int64]) -> Results:
        """The chunks ``index`` names, as a result list of their own (same memory)."""
        part = Results.__new__(Results)
        part._views = self._views
        part._base = self._base[index]
        part._start = self._start[index]
        part.lengths = self.lengths[index]
        part.missing = self.missing[index]
        part._stats = part._failed = None
        if self._failed:
            part.fail({k: self._failed[i] for k, i in enumerate(np.asarray(index).tolist())
                       if i in self._failed})
        return part

    @property
    def errors(self) -> npt.NDArray[np.bool_]:
        """Which requests failed (``on_error="return"``): their items are their exceptions.
        All ``False`` when none did (always, with ``on_error="raise"``)."""
        mask = np.zeros(len(self.lengths), bool)
        if self._failed:
            mask[list(self._failed)] = True
        return mask

    def fail(self, excs: dict[int, BaseException]) -> None:
        """Items ``i`` of ``excs`` failed with ``excs[i]`` (they hold no bytes)."""
        if not excs:
            return
        idx = np.fromiter(excs, np.int64, len(excs))
        if not self.missing.flags.writeable:
            self.missing = self.missing.copy()
        if not self.lengths.flags.writeable:
            self.lengths = self.lengths.copy()
        self.missing[idx] = False
        self.lengths[idx] = 0
        self._failed = {**(self._failed or {}), **excs}

    def addresses(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """Memory address and length of every chunk (for C code that reads them while
        this object is alive); missing chunks give address 0."""
        bases = np.array([np.frombuffer(v, np.uint8).ctypes.data if v.nbytes else 0
                          for v in self._views] or [0], np.uint64)
        addr = bases[self._base] + self._start.astype(np.uint64)
        addr[self.missing | self.errors] = 0
        return addr, self.lengths.astype(np.uint64)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def stats(self) -> Stats:
        """What the call did (:class:`lsio.Stats`): its road, operations, bytes, retries and
        longest hold of the event loop."""
        raw = self._stats
        if raw is None:
            from ._outcome import Stats

            raw = Stats("bulk", "", len(self), 0, None, 0, 0.0, 0, self.lengths)
        elif type(raw) is tuple:
            from ._outcome import Stats

            raw = Stats(*raw)
        self._stats = raw
        return raw  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        """Total bytes returned."""
        return int(self.lengths.sum())

    def _item(self, i: int) -> memoryview:
        if self.missing[i]:
            return None  # type: ignore[return-value]
        if self._failed is not None and i in self._failed:
            return self._failed[i]  # type: ignore[return-value]
        start = int(self._start[i])
        view = self._views[int(self._base[i])][start : start + int(self.lengths[i])]
        return view.toreadonly()

    @overload
    def __getitem__(self, index: int) -> memoryview: ...
    @overload
    def __getitem__(self, index: slice) -> list[memoryview]: ...
    def __getitem__(self, index: int | slice) -> memoryview | list[memoryview]:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"lsio.Results index {index} out of range for {n} chunks")
        return self._item(index % n)

    def __iter__(self) -> Iterator[memoryview]:
        return (self._item(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"<lsio.Results: {len(self)} chunks, {self.nbytes} bytes>"
