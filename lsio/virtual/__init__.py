"""Virtual datasets: zarr arrays whose chunks are byte ranges of other files (NetCDF4/HDF5,
GRIB2, ...), read through lsio.

- :class:`ReferenceStore` is a read-only zarr store over kerchunk references or a
  VirtualiZarr manifest. With lsio's codec pipeline (:func:`lsio.zarr.enable`), the chunks a
  selection touches, across every referenced file, are one planned ``read_many`` (ranges of
  one file merged by its storage's rules, big ones split), each decoded on the pinned workers.

Needs zarr-python 3 (``pip install 'lsio[zarr]'``).

Modules: ``_refs`` (references parsed into one table), ``_store`` (the store).
"""

from ._store import ReferenceStore

__all__ = ["ReferenceStore"]
