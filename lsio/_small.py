"""TEMPORARY: the old small-path entry points the zarr layer calls, until it uses the
engine's public hooks (removed by the same change)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._call import parse
from ._defaults import SMALL_BYTES, SMALL_COLD_REQUESTS, SMALL_OFF_LOOP_BYTES
from ._results import Results
from .backends._local_small import read_now

__all__ = ["read", "read_cold"]


def read(requests: Any, out: Sequence[Any] | None, missing_ok: bool, *,
         limit: int = SMALL_BYTES, wait: bool = False) -> Results | None:
    call = parse(requests, out, missing_ok, plain_max=64)
    got = read_now(call, limit)
    if got is None and wait:
        return read_cold(requests, out, missing_ok, limit)
    return got


def read_cold(requests: Any, out: Sequence[Any] | None, missing_ok: bool,
              limit: int = SMALL_OFF_LOOP_BYTES) -> Results | None:
    if len(requests) > SMALL_COLD_REQUESTS:
        return None
    return read_now(parse(requests, out, missing_ok, plain_max=64), limit, wait=True)
