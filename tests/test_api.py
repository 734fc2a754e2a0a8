"""The package's interfaces: the public API is ``lsio.__all__``, exactly the documented set;
each private module's ``__all__`` lists exactly what other lsio modules import from it;
``import lsio`` loads only what it needs."""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import re
import types
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import check_ok, random_bytes, run_python, write_file

import lsio

PACKAGE = Path(lsio.__file__).resolve().parent
API_DOC = PACKAGE.parent / "docs" / "api.md"


def test_public_api_is_all_once_documented() -> None:
    """Each public name is exported once (``lsio.__all__``), has a docstring, and has its
    entry in the API reference; ``import lsio`` offers nothing else of lsio's own."""
    documented = re.findall(r"^::: lsio\.(\w+)$", API_DOC.read_text(), re.M)
    assert len(lsio.__all__) == len(set(lsio.__all__)), sorted(lsio.__all__)
    assert len(documented) == len(set(documented)), documented
    assert set(lsio.__all__) == set(documented), (
        "lsio.__all__ is not what docs/api.md lists")
    public = {name for name in dir(lsio) if not name.startswith("_")
              and not isinstance(obj := getattr(lsio, name), types.ModuleType)
              and getattr(obj, "__module__", "").startswith("lsio")}
    assert public == set(lsio.__all__)
    for name in lsio.__all__:
        assert (getattr(lsio, name).__doc__ or "").strip(), f"lsio.{name} has no docstring"
    assert (PACKAGE / "py.typed").exists()
    assert issubclass(lsio.BackendWarning, UserWarning)
    assert issubclass(lsio.Results, collections.abc.Sequence)
    chunk = lsio.Chunk("p")
    assert (chunk.path, chunk.offset, chunk.length) == ("p", 0, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunk.offset = 3  # type: ignore[misc]


# -- private modules --------------------------------------------------------------------------

def _module_files() -> dict[str, Path]:
    """Every Python module of the package by dotted name (``lsio._ring``, ``lsio.backends``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_module(dotted: str) -> bool:
    """A module or package, compiled ones (``lsio._codecs``) included."""
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return (path.with_suffix(".py").exists() or path.is_dir()
            or any(path.parent.glob(f"{path.name}.*.so")))


def _imports(name: str, path: Path) -> dict[str, set[str]]:
    """Per lsio module: the names ``name`` takes from it (``from .m import x``, and ``m.x``
    after ``from . import m``; the cffi builders import their sibling ``_cbuild`` by path)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    taken: dict[str, set[str]] = defaultdict(set)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        elif node.module and (path.parent / f"{node.module}.py").exists():
            source = f"{package}.{node.module}"
        else:
            source = node.module or ""
        if source != "lsio" and not source.startswith("lsio."):
            continue
        for alias in node.names:
            if _is_module(f"{source}.{alias.name}"):
                aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            else:
                taken[source].add(alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            taken[aliases[node.value.id]].add(node.attr)
    return taken


def _declared_all(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text()).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
            return list(ast.literal_eval(node.value))
    return None


def test_private_modules_all_is_what_the_others_import() -> None:
    """``__all__`` of every module but the public ``lsio`` (tested above) and the public
    packages (``lsio.zarr``, ``lsio.obspec``, ``lsio.fsspec``, ``lsio.grib``,
    ``lsio.virtual``) is exactly what the other modules import from it: nothing more,
    nothing missing. A module nothing imports from (a command, a build script) lists
    nothing."""
    files = _module_files()
    used: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for source, names in _imports(name, path).items():
            if source != name:
                used[source] |= names
    wrong = []
    for name, path in files.items():
        if name in ("lsio", "lsio.zarr", "lsio.obspec", "lsio.fsspec", "lsio.grib",
                    "lsio.virtual") or name.startswith("lsio.zarr."):
            continue
        declared = _declared_all(path)
        if declared is None and not used[name]:
            continue
        if declared is None or sorted(declared) != sorted(used[name]):
            wrong.append(f"{name}: __all__ = {declared}; others import {sorted(used[name])}")
    assert not wrong, "\n".join(wrong)


# -- what importing costs ---------------------------------------------------------------------

OPTIONAL = {"aiohttp", "yarl", "botocore", "google", "requests", "tqdm", "zarr", "numcodecs"}
"""Third-party packages loaded only by the features that use them (URLs, S3 signing, GCS tokens,
``progress=True``, ``lsio.zarr``, codecs)."""

TOOLS = {"lsio.__main__", "lsio._calibrate", "lsio._demo", "lsio._doctables", "lsio.zarr",
         "lsio._codecs", "lsio.backends.http", "argparse"}
"""The command line, calibration, the demo, the zarr integration and its C codecs."""

ENGINE = {"asyncio", "concurrent.futures", "ssl", "socket", "subprocess", "mmap",
          "queue", "_cffi_backend", "lsio._uring", "lsio._ring", "lsio.backends._local_small",
          "lsio._reader",
          "lsio._plan", "lsio._presets", "lsio._pipeline", "lsio._progress", "lsio._memory",
          "lsio._sync", "lsio.backends"}
"""The engine and what it imports (asyncio with its ssl, socket and subprocess, io_uring
through cffi, the planner, the backends, the thread pools): loaded by the first call."""


POOLS = {"concurrent.futures.thread", "queue", "lsio.backends.threads"}
"""Thread pools: the fallback backend's, the pipeline workers', the parallel ring workers'."""


def _loaded_after(code: str) -> set[str]:
    """The modules of a fresh interpreter after ``code`` runs."""
    out = check_ok(run_python(f"{code}\nimport sys\nprint(*sys.modules)"))
    return set(out.split())


def test_import_lsio_loads_numpy_and_the_value_types_only() -> None:
    """``import lsio`` (issue 12: a fixed cost of every process) loads numpy and lsio's own
    value types (``Chunk``, ``HttpOptions``, ``Results``); the engine waits for the first
    call or the first ``lsio.Reader``, the optional packages for their features. Checked by
    module, not by time: a heavy import that creeps back in fails here on any machine."""
    loaded = _loaded_after("import lsio")
    assert "numpy" in loaded
    assert not loaded & (OPTIONAL | TOOLS | ENGINE), sorted(loaded & (OPTIONAL | TOOLS | ENGINE))
    assert {"Reader", "backend_name", "copy_to"} <= set(dir(lsio))
    lazy = _loaded_after("from lsio import Reader, backend_name, copy_to")
    assert {"asyncio", "lsio._reader", "lsio._pipeline"} <= lazy
    assert not lazy & (OPTIONAL | TOOLS), sorted(lazy & (OPTIONAL | TOOLS))


def test_a_first_read_loads_no_optional_package_and_no_thread_pool(data_dir: Path) -> None:
    """A process's first local reads (the small-call path and the bulk path, blocking and
    async) on io_uring load neither the optional packages and tools nor a thread pool."""
    path = write_file(data_dir / "f.bin", random_bytes(1 << 16))
    loaded = _loaded_after(f"""
import asyncio
import lsio
few = [({str(path)!r}, 0, 100)]
many = [({str(path)!r}, i * 500, 100) for i in range(100)]
assert lsio.backend_name() == "uring"
assert bytes(lsio.read_many_sync(few)[0]) == bytes(lsio.read_many_sync(many)[0])
assert len(asyncio.run(lsio.read_many(many))) == 100
""")
    assert "lsio._ring" in loaded
    assert not loaded & (OPTIONAL | TOOLS | POOLS), sorted(loaded & (OPTIONAL | TOOLS | POOLS))
