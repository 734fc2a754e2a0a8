"""Settings per URL prefix: ``Reader(http={"": HttpOptions(...), "s3://bucket-a": {...}})``.

obstore has one store per bucket; a :class:`lsio.Reader` reads many buckets and hosts in
one call, so it takes its :class:`~lsio.HttpOptions` per URL prefix instead. Pure (no I/O).

- A prefix is parsed once into (scheme, place, path segments): the scheme after its alias
  (``s3a`` -> ``s3``, ``gcs`` -> ``gs``, ``abfs``/``abfss`` -> ``az``), the place (an object
  store's bucket or container, with an ``abfs://`` URL's account: ``container@account``;
  an HTTP(S) URL's host and port, in lower case) and whole path segments. A URL matches a
  prefix when the scheme and place are equal and the prefix's segments begin its path:
  ``s3://bucket-a`` never matches ``s3://bucket-a-evil/k``, ``s3://b/dir`` never
  ``s3://b/dir2/x``. Never a string comparison.
- The longest matching prefix wins. Its fields overlay those of the shorter prefixes
  containing it, which overlay the Reader's (the ``""`` entry, or ``HttpOptions()``), field
  by field; a field (``headers`` too) is replaced whole.
- A prefix's value is a dict of the fields it sets, or an ``HttpOptions`` (then the fields
  it sets to other than their defaults). Call-wide fields (:data:`CALL_WIDE`) come from the
  Reader only: a prefix setting one is a ``ValueError`` naming both.
- Lookups are cached per place: a call touching one bucket parses each URL's scheme and
  bucket, and walks segments only where a prefix below the bucket exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from ._redact import redact
from ._url import ALIASES, HttpOptions

__all__ = ["Prefixes", "by_prefix"]

CALL_WIDE = frozenset({"timeout", "concurrency", "connections_per_host", "trust_env",
                       "retries", "backoff", "backoff_max", "max_transfer_ratio",
                       "multi_range", "transport"})
"""Fields one call has one value of: its deadline and concurrency, the loop's connection
pool, the proxies read once per call, the one retry loop, the plan's merging rules, the
transport its batch goes through."""

Place = tuple[str, str]
"""(scheme, bucket or host)."""

_DEFAULTS = HttpOptions()


def parse(url: str) -> tuple[Place, tuple[str, ...]]:
    """``url``'s (scheme, place) and path segments (empty ones dropped); ``ValueError`` for
    text that is no ``scheme://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"lsio: settings prefix {redact(repr(url))} is not a URL "
                         "(scheme://bucket/path or http(s)://host/path)")
    scheme = scheme.lower()
    scheme = ALIASES.get(scheme, scheme)
    place, _, path = rest.partition("/")
    if scheme in ("http", "https"):
        place = place.rpartition("@")[2].lower()  # no user info; host names ignore case
        path = path.split("?", 1)[0].split("#", 1)[0]
    elif scheme == "az" and "@" in place:  # container@account.dfs.core.windows.net
        container, _, host = place.partition("@")
        place = f"{container}@{host.split('.', 1)[0].lower()}"
    return (scheme, place), tuple(s for s in path.split("/") if s)


def _overrides(prefix: str, value: Any) -> dict[str, Any]:
    """The fields ``value`` (a dict or an ``HttpOptions``) sets for ``prefix``."""
    if isinstance(value, HttpOptions):
        given = {f.name: getattr(value, f.name) for f in fields(value)
                 if getattr(value, f.name) != getattr(_DEFAULTS, f.name)}
    elif isinstance(value, Mapping):
        given = dict(value)
        unknown = sorted(set(given) - {f.name for f in fields(HttpOptions)})
        if unknown:
            raise ValueError(f"lsio: settings for {redact(repr(prefix))}: unknown "
                             f"HttpOptions field(s) {', '.join(unknown)}")
    else:
        raise TypeError(f"lsio: settings for {redact(repr(prefix))} must be an "
                        f"lsio.HttpOptions or a dict of its fields, got "
                        f"{type(value).__name__}")
    wide = sorted(set(given) & CALL_WIDE)
    if wide:
        raise ValueError(f"lsio: settings for {redact(repr(prefix))} set {', '.join(wide)}: "
                         "call-wide, set them on the Reader's own HttpOptions only")
    return given


class Prefixes:
    """Each prefix's options, and the lookup of a URL's."""

    def __init__(self, base: HttpOptions, table: Mapping[str, Any]) -> None:
        self.base = base
        parsed: dict[tuple[Place, tuple[str, ...]], dict[str, Any]] = {}
        for prefix, value in table.items():
            if not isinstance(prefix, str):
                raise TypeError(f"lsio: settings prefixes are URL strings, got {prefix!r}")
            key = parse(prefix)
            if key in parsed:
                raise ValueError(f"lsio: settings prefix {redact(repr(prefix))} given twice")
            parsed[key] = _overrides(prefix, value)
        self._places: dict[Place, list[tuple[tuple[str, ...], HttpOptions]]] = {}
        for (place, segs), _ in sorted(parsed.items(), key=lambda kv: len(kv[0][1])):
            given: dict[str, Any] = {}
            for n in range(len(segs) + 1):  # shorter prefixes first: the longer overlays
                given.update(parsed.get((place, segs[:n]), {}))
            self._places.setdefault(place, []).append((segs, replace(base, **given)))
        for found in self._places.values():
            found.sort(key=lambda item: -len(item[0]))  # the longest match first
        self._whole: dict[Place, HttpOptions] = {
            place: found[0][1] for place, found in self._places.items()
            if len(found) == 1 and not found[0][0]}
        """Places whose one prefix is the place itself: no path to look at."""

    def options_for(self, url: str) -> HttpOptions:
        """The options of ``url``: its longest matching prefix's, else the Reader's."""
        scheme, _, rest = url.partition("://")
        scheme = scheme.lower()
        place_text, _, path = rest.partition("/")
        if scheme in ("http", "https") or "@" in place_text:
            place, segs = parse(url)
        else:
            place, segs = (ALIASES.get(scheme, scheme), place_text), None
        whole = self._whole.get(place)
        if whole is not None:
            return whole
        found = self._places.get(place)
        if found is None:
            return self.base
        if segs is None:
            segs = tuple(s for s in path.split("/") if s)
        for prefix, options in found:
            if segs[:len(prefix)] == prefix:
                return options
        return self.base


def by_prefix(http: Any) -> tuple[HttpOptions, Prefixes | None]:
    """``Reader(http=...)``: the Reader's own options, and the per-prefix table (``None``:
    no prefix but ``""``)."""
    if http is None or isinstance(http, HttpOptions):
        return http or HttpOptions(), None
    if not isinstance(http, Mapping):
        raise TypeError(f"lsio: http must be an lsio.HttpOptions or a dict of URL prefix -> "
                        f"settings, got {type(http).__name__}")
    table = dict(http)
    named = sorted(set(table) & {f.name for f in fields(HttpOptions)})
    if named:  # Reader(http={"retries": 1}): options meant, not prefixes
        raise TypeError(f"lsio: http keys are URL prefixes; {', '.join(named)} is an "
                        f"lsio.HttpOptions field: pass http=HttpOptions({named[0]}=...)")
    base = table.pop("", None) or HttpOptions()
    if not isinstance(base, HttpOptions):
        base = HttpOptions(**base) if isinstance(base, Mapping) else base
    if not isinstance(base, HttpOptions):
        raise TypeError(f"lsio: http[''] must be an lsio.HttpOptions, got "
                        f"{type(base).__name__}")
    return base, (Prefixes(base, table) if table else None)
