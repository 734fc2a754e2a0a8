"""The installed package's entry points (pyproject.toml) name what they should: fsspec finds
``"lsio"`` and takes over no other protocol, xarray finds ``engine="lsio"``."""

from __future__ import annotations

from conftest import check_ok, run_python


def test_installed_entry_points_resolve() -> None:
    out = check_ok(run_python(
        "import fsspec, xarray\n"
        "import lsio.fsspec, lsio.xarray\n"
        "assert fsspec.get_filesystem_class('lsio') is lsio.fsspec.LsioFileSystem\n"
        "for p in ('file', 'http', 'https'):\n"
        "    assert not issubclass(fsspec.get_filesystem_class(p), lsio.fsspec.LsioFileSystem)\n"
        "engines = xarray.backends.list_engines()\n"
        "assert isinstance(engines['lsio'], lsio.xarray.LsioBackendEntrypoint)\n"
        "print('ok')\n"))
    assert out.strip() == "ok"
