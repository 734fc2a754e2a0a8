"""GRIB2 messages of many files, read and decoded in one planned call (``lsio[grib]``:
eccodes with its binary library).

>>> msgs = await lsio.grib.inventory(urls, match=":(TMP|RH):2 m above ground:")
>>> fields = await lsio.grib.read(msgs)          # (n, ny, nx) float32, NaN where bitmapped

``inventory`` finds messages in wgrib2 ``.idx`` / ECMWF ``.index`` sidecars (all fetched
in one call), else by scanning section headers; ``read`` reads every message in one
``read_many`` and decodes each with eccodes on the pinned workers into its slice.
"""

from __future__ import annotations

from typing import Any

from .._sync import run_sync
from ._dataset import open_dataset, open_dataset_async
from ._inventory import inventory
from ._message import Message
from ._read import coordinates, read
from ._sections import Grid

__all__ = ["Grid", "Message", "coordinates", "inventory", "inventory_sync", "open_dataset",
           "open_dataset_async", "read", "read_sync"]


def inventory_sync(sources: Any, **kwargs: Any) -> list[Message]:
    """Blocking :func:`inventory`."""
    return run_sync(inventory(sources, **kwargs))


def read_sync(messages: Any, **kwargs: Any) -> Any:
    """Blocking :func:`read`."""
    return run_sync(read(messages, **kwargs))
