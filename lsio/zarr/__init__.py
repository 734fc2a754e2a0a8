"""Zarr v3 on lsio: an async store for zarr-python, and a fast path straight into numpy.

- :class:`LsioStore` implements ``zarr.abc.store.Store`` over a local directory or a URL
  (``http(s)://``, ``s3://``, ``gs://``, ``az://``); ``get_partial_values`` is one
  ``read_many`` call. Local roots can be written; remote roots are read-only.
- :func:`read` reads a selection of a Zarr v3 array into a new numpy array: it works out the
  chunks the selection touches, reads them in one planned ``read_many`` (sharded arrays: the
  shard indexes with one suffix read each, then the inner chunks, coalesced) and decodes each
  chunk on the pinned pipeline workers straight into its place in the output.
- :class:`LsioCodecPipeline` is zarr-python's codec pipeline on lsio: :func:`enable` (or
  ``zarr.config.set({"codec_pipeline.path": "lsio.zarr.LsioCodecPipeline"})``) makes
  ``zarr.open_array(...)[sel]``, xarray and Dask read like :func:`read`.

Needs zarr-python 3 (``pip install 'lsio[zarr]'``).

- :class:`Located` is what a store's ``locate(keys)`` answers (the file and byte range of
  each key's value, or the value itself): the one store method the pipeline and :func:`read`
  use, so any store that implements it (``lsio.virtual.ReferenceStore``) is read the same way.

Modules: ``_locate`` (:class:`Located`), ``_store`` (the store), ``_fastpath``
(:func:`read`), ``_chain`` (zarr codecs as a numcodecs decode chain), ``_batched`` (the C
decoder's jobs, each chunk decoded through the engine's per-chunk hook
``lsio._each.read_each``), ``_grid`` (a basic selection's jobs as numpy arrays), ``_read``
(chunks and shards of a selection, for both), ``_pipeline`` (the codec pipeline).
"""

from zarr.registry import register_pipeline as _register_pipeline

from ._batched import codecs_lib as _codecs_lib  # noqa: F401 - tests: is the C decoder built?
from ._fastpath import read, read_sync
from ._locate import Located
from ._pipeline import PATH, LsioCodecPipeline, disable, enable
from ._store import LsioStore

# also registered through the "zarr.codec_pipeline" entry point; this covers a source tree
# on sys.path without an installed distribution
_register_pipeline(LsioCodecPipeline)

__all__ = ["PATH", "Located", "LsioCodecPipeline", "LsioStore", "disable", "enable", "read",
           "read_sync"]
