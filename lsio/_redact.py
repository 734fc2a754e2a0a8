"""Secrets never shown: the one redactor of error messages, ``filename``\\ s, notes, exception
chains and reprs.

A secret is named by its key: a URL query parameter, a header, or a ``name=value`` pair whose
name holds one of :data:`DENY` (case-insensitive substring: ``X-Amz-Signature``,
``X-Amz-Credential``, ``X-Amz-Security-Token``, ``X-Goog-Signature``, Azure's ``sig``,
``Proxy-Authorization``, ``Cookie``, a connection string's ``AccountKey``...), or it is the
user information of a URL (``user:pass@host``, ``TOKEN@host``), or the credentials of an
``Authorization`` scheme (``Bearer``, ``Basic``, ``SharedKey``...). Their values become
``REDACTED``; the URL's host and path stay, so an error still says what failed.

Errors are made safe once, where they leave lsio (:func:`redact_exception`, called by the
reader's public calls); reprs of objects holding secrets use :func:`redact` and
:func:`redact_headers`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["redact", "redact_exception", "redact_headers", "redacting"]

F = TypeVar("F", bound=Callable[..., Any])

DENY = ("sig", "signature", "token", "credential", "key", "password", "secret",
        "authorization", "cookie")
"""Parts of a query key or header name whose value is a secret."""

MASK = "REDACTED"

_WORDS = "|".join(DENY)
_NAME = rf"[\w.~-]*(?:{_WORDS})[\w.~-]*"

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]*@")
"""``scheme://user:password@``: the whole user information (to the last ``@`` before the
path), as a token is often passed as the user name alone (``https://TOKEN@host``)."""

_PAIR = re.compile(rf"(?i)(?<![\w.~-])({_NAME})=[^&#\s'\"<>,;]*")
"""``name=value`` in a query, a connection string or an ``Authorization`` value."""

_QUOTED = re.compile(rf"""(?i)(['"])({_NAME})\1(\s*[:=,]\s*)(['"])(?:\\.|(?!\4).)*\4""")
"""A quoted pair, as a dict or multidict repr shows a header: ``'Cookie': 'a=b'``."""

_LINE = re.compile(rf"(?im)^([ \t]*{_NAME}[ \t]*:)[ \t]*\S.*$")
"""A header line, ``X-Amz-Security-Token: ...`` (as in a canonical request)."""

_SCHEME = re.compile(r"\b(Bearer|SharedKey|SharedKeyLite|AWS4-HMAC-SHA256)[ \t]+[\w.~+/:=-]+")
"""The credentials of an ``Authorization`` value, whatever names it (schemes whose names
ordinary text does not use: not ``Basic``, which a header's name gives away anyway)."""

_HINTS = ("@", "=", ":", "Bearer", "SharedKey", "AWS4")


def secret_name(name: str) -> bool:
    """Whether a query key or header called ``name`` holds a secret."""
    low = name.lower()
    return any(word in low for word in DENY)


def redact(text: str) -> str:
    """``text`` without the secrets it quotes (see the module's docstring)."""
    if not any(h in text for h in _HINTS):
        return text
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUOTED.sub(rf"\1\2\1\3\4{MASK}\4", text)
    text = _LINE.sub(rf"\1 {MASK}", text)
    text = _SCHEME.sub(rf"\1 {MASK}", text)
    return _PAIR.sub(rf"\1={MASK}", text)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` with the value of each secret one (:func:`secret_name`) masked."""
    return {k: MASK if secret_name(str(k)) else v for k, v in headers.items()}


def _clean(value: Any) -> Any:
    """``value`` (an exception's argument) redacted: a text as text, anything else whose
    text quotes a secret (a URL object, a request's description) as its redacted text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):  # a filename as bytes
        return redact(value.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape")
    if value is None or isinstance(value, (int, float)):
        return value
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - keep what cannot be shown anyway
        return value
    safe = redact(text)
    return value if safe == text else safe


def redact_exception(exc: BaseException) -> BaseException:
    """Make ``exc`` (in place) and every exception it chains to (``__cause__``,
    ``__context__``, an exception group's members) safe to print: messages, ``args``,
    ``filename``\\ s and notes are redacted; an exception whose text still shows a secret
    (it is made from state lsio does not know, as aiohttp's ``ClientResponseError`` shows
    its request's URL) is replaced in the chain by a :class:`RedactedError` saying what it
    was. Returns ``exc``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        _scrub(e)
        for link in ("__cause__", "__context__"):
            inner = getattr(e, link)
            if inner is None:
                continue
            if _still_leaks(inner):
                safe = RedactedError(f"{type(inner).__module__}.{type(inner).__qualname__}: "
                                     f"{redact(_text(inner))}")
                safe.__cause__, safe.__context__ = inner.__cause__, inner.__context__
                safe.__suppress_context__ = inner.__suppress_context__
                safe.__traceback__ = inner.__traceback__
                suppress = e.__suppress_context__  # setting __cause__ would set it
                setattr(e, link, safe)
                e.__suppress_context__ = suppress
                inner = safe
            todo.append(inner)
        todo.extend(getattr(e, "exceptions", ()) or ())
    return exc


def redacting(fn: F) -> F:
    """``fn`` (a public entry point, sync or async) with :func:`redact_exception` applied to
    what it raises."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                redact_exception(exc)
                raise
        return call_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            redact_exception(exc)
            raise
    return call  # type: ignore[return-value]


class RedactedError(Exception):
    """Stands in an exception chain for a foreign exception whose text held a secret."""


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the real error
        return ""


def _still_leaks(e: BaseException) -> bool:
    _scrub(e)
    text = _text(e)
    try:
        shown = repr(e)
    except Exception:  # noqa: BLE001
        shown = ""
    return redact(text) != text or redact(shown) != shown


def _scrub(e: BaseException) -> None:
    """Redact ``e``'s own texts in place (where Python lets them be set)."""
    try:
        args = tuple(_clean(a) for a in e.args)
        if args != e.args:
            e.args = args
        if isinstance(e, OSError):
            for name in ("strerror", "filename", "filename2"):
                value = getattr(e, name)
                if value is not None and _clean(value) != value:
                    setattr(e, name, _clean(value))
        notes = getattr(e, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [_clean(n) for n in notes]
        info = getattr(e, "request_info", None)  # aiohttp's ClientResponseError
        if info is not None:
            e.request_info = _safe_request_info(info)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # read-only attributes: _still_leaks replaces it
        pass


def _safe_request_info(info: Any) -> Any:
    """aiohttp's ``RequestInfo`` with its URLs redacted and its secret headers masked."""
    try:
        from aiohttp import RequestInfo
        from multidict import CIMultiDict, CIMultiDictProxy
        from yarl import URL

        headers = CIMultiDict((k, MASK if secret_name(k) else v)
                              for k, v in info.headers.items())
        return RequestInfo(URL(redact(str(info.url))), info.method,
                           CIMultiDictProxy(headers), URL(redact(str(info.real_url))))
    except Exception:  # noqa: BLE001 - another aiohttp: drop what cannot be made safe
        return None
