"""One version per object per call: what the first answer said about each object, and
whether a later answer is of the same version. Pure (headers in, verdicts out), table-tested
in ``tests/test_http_version.py``.

An object longer than ``max_read`` is read in parts, a whole-object read sends a size probe
first, a sharded read asks for an index and then chunks: several requests of one object in
one call. If the object is replaced between them, the call must not return part of one
version and part of another. So:

- the first answer's validators (``ETag``, ``Last-Modified``, the object's size from
  ``Content-Range``/``Content-Length``) are recorded per object;
- with a strong ``ETag``, every later request for the object carries ``If-Match`` with it:
  the server answers ``412`` once the object is another (and the ETag of any answer is
  compared too, for requests sent before the first answer came and servers ignoring
  ``If-Match``);
- with a weak ETag (``W/"..."``: never matches ``If-Match``) or none, no precondition is
  sent; each answer's validators are compared with the first's (best effort: a server that
  changes neither the ETag, ``Last-Modified`` nor the size is not caught).

The client raises :class:`VersionChanged` on a difference; the caller reads the object again
from a fresh record (a bounded number of times, ``lsio._defaults.READ_ATTEMPTS``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from ._protocol import HttpError, content_range

__all__ = ["STALE", "Validators", "VersionChanged", "Versions", "one_version", "validators"]

STALE = errno.ESTALE
"""The errno of an object that changed while a call read it (and kept changing for every
attempt): ``OSError(ESTALE)``, "stale file handle", naming the URL."""


class VersionChanged(HttpError):
    """An answer is of another version of the object than the call's first answer."""

    def __init__(self, url: object, why: str) -> None:
        super().__init__(STALE, f"{url} changed while it was read ({why})")


class Validators(NamedTuple):
    """What one answer says about the version of the object it comes from (a tuple: the
    C transport makes one per answer, and a frozen dataclass costs ~4x as much to build)."""

    etag: str | None
    """The ``ETag`` header as sent (``W/"..."`` for a weak one), ``None`` if none."""
    last_modified: str | None
    """The ``Last-Modified`` header as sent."""
    size: int | None
    """The object's size: the total of ``Content-Range`` (206, 416), the ``Content-Length``
    of a 200 answer; ``None`` where the answer does not tell it (multipart, ``/*``)."""

    @property
    def strong(self) -> bool:
        """An ETag ``If-Match`` can pin (a weak one never matches, RFC 9110 13.1.1)."""
        return self.etag is not None and not self.etag.startswith("W/")


def validators(status: int, headers: Mapping[str, str]) -> Validators:
    """The validators of an answer with ``status`` and ``headers`` (a case-insensitive
    mapping, as aiohttp's)."""
    size = None
    if status in (206, 416):  # the one Content-Range parser: None if absent, * or invalid
        told = content_range(headers.get("Content-Range"))
        size = None if told is None else told[2]
    elif status == 200:
        length = headers.get("Content-Length")
        # (int() of a hostile 5 000-digit length would raise, and is quadratic)
        size = (int(length) if length is not None and length.isdecimal() and len(length) < 20
                else None)
    etag = headers.get("ETag")
    return Validators(etag.strip() if etag else None, headers.get("Last-Modified"), size)


def differs(first: Validators, later: Validators) -> str | None:
    """How ``later`` shows another version than ``first``, ``None`` if it does not. A field
    counts only where both answers have it (a multipart answer tells no size; some answers,
    such as a 416, carry no ``Last-Modified``)."""
    if first.etag is not None and later.etag is not None and first.etag != later.etag:
        return f"ETag {first.etag} then {later.etag}"
    if first.size is not None and later.size is not None and first.size != later.size:
        return f"size {first.size} then {later.size}"
    if (not first.strong and first.last_modified is not None
            and later.last_modified is not None and first.last_modified != later.last_modified):
        return f"Last-Modified {first.last_modified} then {later.last_modified}"
    return None


_SCOPE: contextvars.ContextVar[dict[str, Validators] | None] = contextvars.ContextVar(
    "lsio_one_version", default=None)
"""The first answers of the calls of a :func:`one_version` scope, by URL."""


@contextlib.contextmanager
def one_version() -> Iterator[None]:
    """Calls made inside (in this task and the tasks it starts) read one version of each
    object, as one call does: a sharded Zarr read asks for the shard indexes in one call and
    the inner chunks in the next (``lsio.zarr._read``). A change between the calls fails
    the later one with ``ESTALE`` (its retries cannot help: the earlier bytes are another
    version); the caller reads everything again in a new scope."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


class Versions:
    """One call's record: each object's first answer (by the client's file number), shared
    by URL with the other calls of a :func:`one_version` scope."""

    __slots__ = ("_first", "_paths", "_shared")

    def __init__(self, paths: Sequence[str] = ()) -> None:
        self._first: dict[int, Validators] = {}
        self._paths = paths
        self._shared = _SCOPE.get()

    def _record(self, file: int) -> Validators | None:
        first = self._first.get(file)
        if first is None and self._shared is not None:
            first = self._shared.get(self._paths[file])
            if first is not None:
                self._first[file] = first
        return first

    def if_match(self, file: int) -> str | None:
        """The ``If-Match`` value for a request of ``file``: the first answer's strong ETag,
        ``None`` until an answer came or when it had a weak ETag or none."""
        first = self._record(file)
        return first.etag if first is not None and first.strong else None

    def check(self, file: int, url: object, status: int, headers: Mapping[str, str],
              sent: str | None) -> None:
        """Record the first answer for ``file``; raise :class:`VersionChanged` if a later
        one shows another version, or if it is a ``412`` to the ``If-Match: sent`` of its
        request. Other statuses than 200, 206, 416 and that 412 are not looked at."""
        if status == 412 and sent is not None:
            raise VersionChanged(url, f"412 Precondition Failed to If-Match {sent}")
        if status not in (200, 206, 416):
            return
        self.check_seen(file, url, validators(status, headers))

    def check_seen(self, file: int, url: object, seen: Validators) -> None:
        """:meth:`check` of an answer whose validators are parsed already (the C
        transport's)."""
        first = self._record(file)
        if first is None:
            self._first[file] = seen
            if self._shared is not None:
                self._shared.setdefault(self._paths[file], seen)
            return
        why = differs(first, seen)
        if why is not None:
            raise VersionChanged(url, why)
