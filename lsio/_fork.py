"""fork: the one ``os.register_at_fork`` of lsio. A forked child forgets lsio's state.

A child gets a copy of lsio's Python state but none of its threads, and it shares with its
parent every kernel object behind that state: the io_uring instances (their queues are
shared memory: a child reaping completions would steal the parent's), the eventfds
registered with them, the event loops' epoll sets and self-pipes, the HTTP sessions'
sockets. Using any of them hangs the child (nobody runs the parent's private loop or pools
there); closing or draining them breaks the parent.

So in the child, right after the fork (``after_in_child``):

* every lock made by :func:`lock` is made free again: a thread of the parent may have held
  one, and it does not exist in the child to release it. What those locks guard is
  forgotten below, so a half-done update cannot matter. (Taking the locks in ``before``
  instead would make ``fork()`` wait for, or deadlock with, a thread inside lsio.)
* every finalizer made by :func:`finalizer` is detached, so no garbage collection and no
  exit of the child runs it; its ``in_child`` callable runs instead (it only gives back
  this process's descriptors and mappings of the object);
* every callback registered with :func:`forget_in_child` (module state: the private loop,
  the rings by loop, the pools, the sessions by loop) and :func:`track` (an object's state:
  a backend's pool) runs: it drops the state, handing the inherited objects to :func:`keep`,
  so that lsio builds fresh ones on first use.

What :func:`keep` holds stays referenced, untouched, for the child's whole life, even
through interpreter shutdown: a destructor of an inherited loop, executor or session would
otherwise act on the parent's kernel objects (a loop's ``close`` unregisters its self-pipe
from the epoll set it shares with the parent, a session's connector closes shared sockets).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["finalizer", "forget_in_child", "keep", "lock", "track"]

F = TypeVar("F", bound=Callable[[], None])

_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_forgets: list[Callable[[], None]] = []
_tracked: dict[int, tuple[weakref.ref[Any], Callable[[Any], None]]] = {}
_finalizers: dict[int, tuple[weakref.finalize[..., Any], Callable[[], None] | None]] = {}
_ids = itertools.count()
_inherited: list[Any] = []
"""What this process inherited and must never release (see the module's docstring)."""


def lock() -> threading.Lock:
    """A ``threading.Lock`` that a forked child finds free, whoever held it at the fork."""
    new = threading.Lock()
    _locks.add(new)
    return new


def locks() -> list[threading.Lock]:
    """Every live lock made by :func:`lock` (the fork tests hold them all)."""
    return list(_locks)


def forget_in_child(fn: F) -> F:
    """Register ``fn`` (a module's "forget my state") to run in every forked child."""
    _forgets.append(fn)
    return fn


def track(obj: Any, forget: Callable[[Any], None]) -> None:
    """``forget(obj)`` runs in every forked child while ``obj`` is alive."""
    key = next(_ids)
    _tracked[key] = (weakref.ref(obj, lambda _ref: _tracked.pop(key, None)), forget)


def keep(*objs: Any) -> None:
    """Hold inherited objects for good (a child calls it from its forget callbacks)."""
    _inherited.extend(o for o in objs if o is not None)


def finalizer(obj: Any, fn: Callable[..., Any], *args: Any,
              in_child: Callable[[], None] | None = None) -> weakref.finalize[..., Any]:
    """``weakref.finalize(obj, fn, *args)`` that never runs at interpreter exit, nor in a
    forked child: there it is detached at the fork and ``in_child`` runs instead."""
    key = next(_ids)
    fin = weakref.finalize(obj, _finish, key, os.getpid(), fn, args)
    fin.atexit = False
    _finalizers[key] = (fin, in_child)
    return fin


def _finish(key: int, pid: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _finalizers.pop(key, None)
    if os.getpid() == pid:  # made by another process (a fork raced its registration)
        fn(*args)


def _after_in_child() -> None:
    errors: list[BaseException] = []

    def attempt(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - every step runs; reported below
            errors.append(exc)

    for held in list(_locks):
        attempt(held._at_fork_reinit)
    for fin, in_child in list(_finalizers.values()):
        if fin.detach() is not None and in_child is not None:
            attempt(in_child)
    _finalizers.clear()
    for fn in _forgets:
        attempt(fn)
    for ref, forget in list(_tracked.values()):
        obj = ref()
        if obj is not None:
            attempt(forget, obj)
    _immortal(_inherited)
    if errors:  # Python reports it as unraisable; the rest of the child's state is forgotten
        raise errors[0]


def _immortal(obj: Any) -> None:
    """One reference to ``obj`` that nothing ever drops, so that not even the interpreter's
    shutdown runs the destructors of what it holds (on CPython; elsewhere best effort)."""
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not CPython
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_in_child)
