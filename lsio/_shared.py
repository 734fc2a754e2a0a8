"""One object per identity in each process that unpickles it: readers and codec pipelines.

A Dask cluster ships an array, its store and the store's :class:`lsio.Reader` to its worker
processes in every graph (and in every task when the array is inlined). Built again each
time, a reader would open new HTTP sessions, ask its credentials provider again and start
its threads again. So a pickled reader carries an *identity* besides its settings
(:func:`identity`), and the receiving process keeps one reader per identity
(:func:`shared`): every later unpickle of it gets that same reader.

The identity is a SHA-256 digest of the settings' pickle, which holds every key, token,
header and endpoint, and of the identity of each credentials object in them
(``aws_credentials``, ``azure_credential``: the object in the process that pickled it). So
two readers whose settings differ in anything, or that hold two different credentials
objects, never share one reader in a worker, whatever their reprs say; a shared cluster
never serves one client's task with another's reader. A reader whose settings do not pickle
by plain :mod:`pickle` (a lambda, which cloudpickle ships by value) has no identity and is
built again on every unpickle, as before.

At most ``SHARED_OBJECTS`` entries per kind are kept, least recently used first out (an
entry dropped is only forgotten: tasks holding it go on using it). A forked child forgets
them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from . import _fork
from ._defaults import SHARED_OBJECTS

__all__ = ["identity", "shared"]

T = TypeVar("T")

_CREDENTIALS = ("aws_credentials", "azure_credential")
"""Settings fields holding credentials objects, told apart by identity, not by pickle."""
_PROCESS = os.urandom(16).hex()
"""This process, in identities: an ``id()`` names an object only within its process."""

_lock = _fork.lock()
_kept: dict[str, OrderedDict[str, Any]] = {}


def identity(settings: Any) -> str | None:
    """The identity of ``settings`` (see the module's docstring), or None where they do not
    pickle by plain :mod:`pickle`."""
    try:
        blob = pickle.dumps(settings, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything the pickler refuses: no identity, no sharing
        return None
    digest = hashlib.sha256(blob)
    for obj in _credentials(settings):
        digest.update(f"\0{_PROCESS}:{id(obj)}".encode())
    return digest.hexdigest()


def _credentials(value: Any, depth: int = 0) -> list[Any]:
    """The credentials objects in settings: fields of ``HttpOptions`` or of a dict of its
    fields, also in a dict of URL prefix -> settings."""
    if depth > 3:
        return []
    found = []
    items: Any = value.items() if isinstance(value, Mapping) else (
        (name, getattr(value, name, None)) for name in getattr(
            value, "__dataclass_fields__", ()))
    for name, field in items:
        if name in _CREDENTIALS and field is not None:
            found.append(field)
        elif isinstance(field, Mapping) or hasattr(field, "__dataclass_fields__"):
            found += _credentials(field, depth + 1)
    return found


def shared(kind: str, key: str, build: Callable[[], T],
           usable: Callable[[T], bool] = lambda _: True) -> T:
    """The ``kind`` object of identity ``key`` in this process: the one kept, if it is
    still ``usable``, else a new one from ``build()``, kept from now on."""
    with _lock:
        kept = _kept.setdefault(kind, OrderedDict())
        got = kept.get(key)
        if got is not None and usable(got):
            kept.move_to_end(key)
            return got  # type: ignore[no-any-return]
    new = build()  # outside the lock: a reader's settings are checked, a pipeline built
    with _lock:
        got = kept.get(key)
        if got is not None and usable(got):  # another thread built it meanwhile
            return got  # type: ignore[no-any-return]
        kept[key] = new
        while len(kept) > SHARED_OBJECTS:
            kept.popitem(last=False)
    return new


@_fork.forget_in_child
def _forget() -> None:
    """A forked child builds its own (the parent's readers' threads are not there)."""
    _fork.keep(list(_kept.values()))
    _kept.clear()
