"""Progress reporting: a ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal) or the
caller's own callback, fed with finished chunks and their bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._results import Results

__all__ = ["ProgressArg", "Progress", "make_progress"]

ProgressArg = bool | Callable[[int, int, int], Any] | None
"""``read_many(progress=...)``: ``True`` shows a bar; a callable is called as
``fn(chunks_done, chunks_total, bytes_done)`` whenever chunks finish."""


class Progress:
    """Counts finished chunks and bytes of one call."""

    def __init__(self, arg: ProgressArg) -> None:
        self.arg = arg
        self.total = 0
        self.chunks = 0
        self.nbytes = 0
        self.bar: Any = None

    def start(self, total: int) -> None:
        self.total = total
        if self.arg is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="chunk", desc="lsio",
                            dynamic_ncols=True, leave=True)

    def __call__(self, finished: npt.NDArray[np.int64], results: Results,
                 local: npt.NDArray[np.int64]) -> None:
        n = len(finished)
        self.chunks += n
        self.nbytes += int(results.lengths[local].sum())
        if self.bar is not None:
            self.bar.set_postfix_str(_size(self.nbytes), refresh=False)
            self.bar.update(n)
        elif callable(self.arg):
            self.arg(self.chunks, self.total, self.nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""  # pragma: no cover


def make_progress(arg: ProgressArg) -> Progress | None:
    if arg is None or arg is False:
        return None
    if isinstance(arg, Progress):  # the engine's own (``read_each``'s hand-off as chunks land)
        return arg
    if arg is not True and not callable(arg):
        raise TypeError(f"lsio: progress must be True, False or a callable, got {arg!r}")
    return Progress(arg)
