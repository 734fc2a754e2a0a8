"""One planned ``read_many`` call whose failures stay each request's own.

:func:`read_return` is what :class:`lsio.fsspec.LsioFileSystem` reads with:
``reader.read_many(..., on_error="return")``, so a failed request's slot holds its own
exception and the others' bytes lie beside it. A call that fails as a whole (a request
lsio refuses before reading: a ``ValueError`` for an unknown URL scheme) is made again one
request a call, so the one bad path fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._reader import Reader

__all__ = ["read_return"]


async def read_return(reader: Reader, requests: Sequence[tuple[str, int, int | None]],
                      missing_ok: bool = False) -> list[Any]:
    """Each request's outcome (bytes as a memoryview, ``None`` or its exception), in
    order, from one ``read_many`` call."""
    try:
        return list(await reader.read_many(requests, missing_ok=missing_ok, on_error="return"))
    except Exception as exc:
        if len(requests) == 1:
            return [exc]
    outs = await asyncio.gather(*(reader.read_many([r], missing_ok=missing_ok)
                                  for r in requests), return_exceptions=True)
    return [o if isinstance(o, BaseException) else o[0] for o in outs]
