"""xarray's ``engine="lsio"``: Zarr stores opened with :class:`lsio.zarr.LsioStore` and read
through :class:`lsio.zarr.LsioCodecPipeline`.

    xr.open_dataset("s3://bucket/data.zarr", engine="lsio", chunks={})
    xr.open_dataset(url, engine="lsio", storage_options={"preset": "cloud"})  # Reader settings
    xr.open_datatree(path, engine="lsio")

Registered through the ``xarray.backends`` entry point; it never claims a file by itself
(``guess_can_open`` is False), so installing lsio does not change what
``xr.open_dataset("x.zarr")`` does. Everything else is xarray's own Zarr backend: the options
it takes (``group``, ``consolidated``, ``mask_and_scale``, ``decode_times``,
``drop_variables``, ...) mean the same here.

zarr picks an array's codec pipeline when the array is opened, from its global config, and
the array keeps it (pickled to Dask's workers too). So the backend switches the config to
lsio's pipeline only while it opens the arrays (:func:`lsio.zarr.enable` as a context) and
puts back what it found: ``zarr.config.get("codec_pipeline.path")`` is unchanged afterwards
(another thread opening arrays at that very moment would get lsio's pipeline too).

Importing this module imports neither zarr nor lsio's engine: xarray loads every backend's
entry point to list them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xarray.backends.zarr import ZarrBackendEntrypoint

if TYPE_CHECKING:
    from xarray import Dataset, DataTree

    from ._reader import Reader


class LsioBackendEntrypoint(ZarrBackendEntrypoint):
    """xarray backend ``engine="lsio"``: a Zarr path or URL read through lsio.

    ``filename_or_obj`` is a local directory or a URL lsio reads (``http(s)://``, ``s3://``,
    ``gs://``, ``az://``), or a zarr store (an :class:`lsio.zarr.LsioStore`, used as is).
    lsio's own keywords (also through ``backend_kwargs``):

    - ``reader``: the :class:`lsio.Reader` to read with (default: lsio's default reader);
    - ``storage_options``: the keyword arguments of a new :class:`lsio.Reader`
      (``{"preset": "cloud", "http": HttpOptions(...)}``), instead of ``reader``.

    The other keywords are those of xarray's Zarr backend (``engine="zarr"``).
    """

    description = "Open Zarr stores (a path or URL) through lsio"
    supports_groups = True
    # named here because open_dataset passes xarray's Zarr options on as **kwargs, whose
    # names xarray cannot read from the signature (it refuses to guess them)
    open_dataset_parameters = (
        "filename_or_obj", "mask_and_scale", "decode_times", "concat_characters",
        "decode_coords", "drop_variables", "use_cftime", "decode_timedelta", "group", "mode",
        "consolidated", "zarr_format", "cache_members", "storage_options", "reader")

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return False  # only ever chosen by name: engine="lsio"

    def open_dataset(self, filename_or_obj: Any, *, reader: Reader | None = None,
                     storage_options: dict[str, Any] | None = None,
                     drop_variables: str | Iterable[str] | None = None,
                     **kwargs: Any) -> Dataset:
        store = _store(filename_or_obj, reader, storage_options)
        with _lsio_pipeline():
            ds: Dataset = super().open_dataset(store, drop_variables=drop_variables, **kwargs)
        return ds

    def open_datatree(self, filename_or_obj: Any, *, reader: Reader | None = None,
                      storage_options: dict[str, Any] | None = None,
                      **kwargs: Any) -> DataTree:
        store = _store(filename_or_obj, reader, storage_options)
        with _lsio_pipeline():
            tree: DataTree = super().open_datatree(store, **kwargs)
        return tree

    def open_groups_as_dict(self, filename_or_obj: Any, *, reader: Reader | None = None,
                            storage_options: dict[str, Any] | None = None,
                            **kwargs: Any) -> dict[str, Dataset]:
        store = _store(filename_or_obj, reader, storage_options)
        with _lsio_pipeline():
            groups: dict[str, Dataset] = super().open_groups_as_dict(store, **kwargs)
        return groups


def _store(where: Any, reader: Reader | None, settings: dict[str, Any] | None) -> Any:
    """An :class:`LsioStore` over a path or URL; a zarr store passes through unchanged."""
    from .zarr import LsioStore

    if reader is not None and settings:
        raise ValueError("lsio: engine='lsio' takes a reader or storage_options (the "
                         "settings of a new Reader), not both")
    if settings:
        from ._reader import Reader

        reader = Reader(**settings)
    if isinstance(where, str | os.PathLike):
        return LsioStore(where, read_only=True, reader=reader)
    if reader is not None:
        raise TypeError(f"lsio: engine='lsio' gives its reader to a path or URL; a "
                        f"{type(where).__name__} reads with its own")
    return where  # a zarr store the caller built (an LsioStore, or any other)


@contextmanager
def _lsio_pipeline() -> Iterator[None]:
    """lsio's codec pipeline for the arrays opened inside, zarr's config as found after."""
    from .zarr import enable

    with enable():
        yield
