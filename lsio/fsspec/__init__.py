"""lsio as an fsspec filesystem: :class:`LsioFileSystem`, protocol ``"lsio"``.

>>> fs = fsspec.filesystem("lsio", queue_depth=64)         # or LsioFileSystem(reader=...)
>>> fs.cat_ranges(["s3://b/k", "/data/x.nc"], [0, 100], [10, 200])
>>> fsspec.filesystem("reference", fo=refs, fs=fs)             # references to local paths
>>> fsspec.filesystem("reference", fo=refs, fs={"s3": fs})     # ... to URLs: per protocol

Registered under ``"lsio"`` only; :func:`register` takes over other protocols when asked
(never on import). Storage options are :class:`lsio.Reader`'s keyword arguments. The
filesystem is read-only: writes raise ``NotImplementedError``.

Paths (``_strip_protocol``; ``unstrip_protocol`` puts ``lsio://`` back in front, so
``strip(unstrip(p)) == p``; ``_parent`` cuts the last segment):

===========================  ===============================  ==========================
given                        read as                          note
===========================  ===============================  ==========================
``/data/x.nc``               ``/data/x.nc``                   local path
``data/x.nc``, ``~/x.nc``    ``$PWD/data/x.nc``, ``$HOME/...``  made absolute
``file:///data/x.nc``        ``/data/x.nc``                   also ``file://localhost/``
``lsio:///data/x.nc``        ``/data/x.nc``                   ``lsio://`` stripped once
``lsio://data/x.nc``         ``$PWD/data/x.nc``               a relative path after it
``lsio::/data/x.nc``         ``/data/x.nc``                   fsspec's chained form
``lsio://s3://b/k``          ``s3://b/k``                     any URL after it
``s3://b/k/``                ``s3://b/k``                     object stores: no final /
``https://h/p/``             ``https://h/p/``                 http(s): kept verbatim
``lsio://lsio://x``          ``lsio://x``                     stripped once: then lsio's
                                                              ValueError (unknown scheme)
===========================  ===============================  ==========================

``import lsio.fsspec`` imports fsspec and nothing of lsio's engine (its reader, backends)
or zarr: those load on the first read.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._fs import LsioFile as LsioFile
from ._fs import LsioFileSystem as LsioFileSystem

__all__ = ["LsioFile", "LsioFileSystem", "register"]


def register(protocols: Iterable[str] = ("s3", "s3a", "gs", "gcs", "az", "abfs", "http",
                                         "https", "file")) -> None:
    """Make ``fsspec.filesystem(p)`` (and ``fsspec.open("p://...")``) use
    :class:`LsioFileSystem` for each protocol in ``protocols``, replacing what was
    registered. Never done on import; a process that wants it calls this once."""
    import fsspec

    for protocol in protocols:
        fsspec.register_implementation(protocol, LsioFileSystem, clobber=True)
