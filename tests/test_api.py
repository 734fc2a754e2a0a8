"""The package's interface: the public API is ``lsio.__all__``, exactly the documented set."""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import types
from pathlib import Path

import pytest

import lsio

PACKAGE = Path(lsio.__file__).resolve().parent
API_DOC = PACKAGE.parent / "docs" / "api.md"


def test_public_api_is_all_once_documented() -> None:
    """Each public name is exported once (``lsio.__all__``), has a docstring, and has its
    entry in the API reference; ``import lsio`` offers nothing else of lsio's own."""
    documented = re.findall(r"^::: lsio\.(\w+)$", API_DOC.read_text(), re.M)
    assert len(lsio.__all__) == len(set(lsio.__all__)), sorted(lsio.__all__)
    assert len(documented) == len(set(documented)), documented
    assert set(lsio.__all__) == set(documented), "lsio.__all__ is not what docs/api.md lists"
    public = {name for name, obj in vars(lsio).items()
              if not name.startswith("_") and not isinstance(obj, types.ModuleType)
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

