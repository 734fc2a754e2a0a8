"""Zarr v3 on lsio: an async store for zarr-python, and a fast path straight into numpy.

- :class:`LsioStore` implements ``zarr.abc.store.Store`` over a local directory or a URL
  (``http(s)://``, ``s3://``, ``gs://``, ``az://``); ``get_partial_values`` is one
  ``read_many`` call. Local roots can be written; remote roots are read-only.
- :func:`read` reads a selection of a Zarr v3 array into a new numpy array: it works out the
  chunks the selection touches, reads them in one planned ``read_many`` (sharded arrays: the
  shard indexes with one suffix read each, then the inner chunks, coalesced) and decodes each
  chunk on the pinned pipeline workers straight into its place in the output.

Needs zarr-python 3 (``pip install 'lsio[zarr]'``).

Modules: ``_store`` (the store), ``_fastpath`` (:func:`read`), ``_chain`` (zarr codecs as a
numcodecs decode chain), ``_batched`` (the C batch decoder path), ``_sharding`` (shard indexes
and inner chunks).
"""

from ._batched import codecs_lib as _codecs_lib  # noqa: F401 - tests: is the C decoder built?
from ._fastpath import read, read_sync
from ._store import LsioStore

__all__ = ["LsioStore", "read", "read_sync"]
