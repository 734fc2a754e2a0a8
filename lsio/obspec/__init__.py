"""lsio as an obspec store: :class:`Store` serves what obstore's callers ask for
(VirtualiZarr's ``ObjectStoreRegistry`` and parsers, obspec-utils' readers, code typed
against ``obspec.Get``, ``GetRange``, ``GetRanges``, ``Head``, ``List``,
``ListWithDelimiter`` and their async twins) with lsio's reader: concurrent range reads
of one event-loop turn become one planned ``read_many`` call.

>>> store = lsio.obspec.Store("s3://bucket/dir", preset="cloud")
>>> await store.get_range_async("data.nc", start=0, length=4096)

Importing this module loads neither the engine nor zarr; the first read does.

Modules: ``_store`` (the store), ``_result`` (``get``'s answer), ``_paths`` (the root and the
paths under it), ``_list`` (listing with metadata).
"""

from ._result import GetResult
from ._store import Store

__all__ = ["GetResult", "Store"]
