"""What the C transport's answers mean to a batch's reads (:mod:`._batch`): each served
read gets its body and size, the call's version record its validators, the host's cost
record a few times; a read not served gets how it failed (an error, a first failed attempt
to retry, or nothing: send it again through :meth:`HttpClient.get`)."""

from __future__ import annotations

import errno
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..._defaults import RATE_MIN_BYTES
from ._cost import cost_of
from ._curl import BAD_RANGE, CANCELLED, LONG_VALUE, NOMEM, OK, OVERFLOW, SKIPPED, strerror
from ._protocol import HttpError, Retry, status_error
from ._read import Read, origin
from ._version import Validators, VersionChanged

if TYPE_CHECKING:
    from ._client import HttpClient

__all__ = ["settle"]

TTFB_SAMPLES = 8
"""Small answers per wake-up whose time to first byte goes to their host's record (it keeps
a window of the latest; every answer's would cost a Python call each)."""

def _timed(client: HttpClient, reads: list[Read], reqs: Any, idx: Any,
           served: npt.NDArray[np.bool_], got: npt.NDArray[np.int64]) -> None:
    """What the served answers tell their host's record (:mod:`._cost`: time to first byte,
    and the stream rate of bodies worth timing), as the aiohttp road's answers do: every
    big body, and a few small ones per wake-up (their times to first byte)."""
    big = served & (got >= RATE_MIN_BYTES)
    some = np.flatnonzero(served & ~big)[:TTFB_SAMPLES]
    ks = np.sort(np.concatenate((np.flatnonzero(big), some)))
    if not len(ks):
        return
    rows = idx[ks]  # (each field read once, for these rows only)
    for i, n, first, whole in zip(rows.tolist(), got[ks].tolist(),
                                  reqs["ttfb_us"][rows].tolist(),
                                  reqs["total_us"][rows].tolist(), strict=True):
        ttfb, total = first / 1e6, whole / 1e6
        if 0 < ttfb <= total:
            cost_of(origin(client.urls[reads[i].file])).answer(ttfb, n, total - ttfb)


def settle(client: HttpClient, reads: list[Read], reqs: Any, idx: Any,
            bodies: dict[int, memoryview], url_index: Any, pins: list[str | None],
            left: list[Read], final: dict[int, HttpError]) -> list[Read]:
    """Record what the finished requests ``idx`` told; those not served go to ``left``,
    with how they failed. A request not sent because another of its object was answered
    otherwise gets that answer's error when it is final (a missing object, a changed
    version), else is sent again. Returns the served reads."""
    done: list[Read] = []
    # (each field read for these rows on its own: copying whole rows of the structured
    # array is ~10x slower)
    served, got_arr = (reqs["flags"][idx] & OK) != 0, reqs["got"][idx]
    _timed(client, reads, reqs, idx, served, got_arr)
    ok, got, total = served.tolist(), got_arr.tolist(), reqs["total"][idx].tolist()
    etag, modified = reqs["etag"][idx].tolist(), reqs["modified"][idx].tolist()
    check, urls, sizes = client.versions.check_seen, client.urls, client.sizes
    for k, i in enumerate(idx.tolist()):
        r = reads[i]
        f = r.file
        if not ok[k]:
            r.failed = (final.get(f) if int(reqs["flags"][i]) & SKIPPED else
                        _failure(client, r, reqs[i], pins[int(url_index[i])]))
            if isinstance(r.failed, HttpError):
                final.setdefault(f, r.failed)
            left.append(r)
            continue
        e, m, size = etag[k], modified[k], total[k]
        try:
            check(f, urls[f], Validators(e.decode("latin-1") if e else None,
                                         m.decode("latin-1") if m else None,
                                         size if size >= 0 else None))
        except VersionChanged as exc:
            r.failed = final.setdefault(f, exc)
            left.append(r)
            continue
        if size >= 0:
            sizes[f] = size
        if r.pieces is not None:  # sparse: its pieces keep their bytes, the gaps go
            r.put(0, bodies[i])
        elif r.dest is None:  # a size probe: the memory the answer sized
            r.dest = bodies[i]
            r.length = min(r.length, size) if size >= 0 else got[k]
        r.got = got[k]
        done.append(r)
    return done


_TRANSIENT = {7: errno.ECONNREFUSED, 18: errno.EIO, 28: errno.ETIMEDOUT, 52: errno.ECONNRESET,
              55: errno.ECONNRESET, 56: errno.ECONNRESET}
"""libcurl's failures that may pass (``CURLcode``: couldn't connect, partial file, timed
out, got nothing, send and receive errors), as the errno reported if the retries run out:
aiohttp's resets and timeouts are retried alike (``_session.aiohttp_error``)."""

_RESENT = SKIPPED | CANCELLED | BAD_RANGE | OVERFLOW | LONG_VALUE | NOMEM
"""Requests sent again through aiohttp, which gives their answer its full treatment."""


def _failure(client: HttpClient, r: Read, rec: Any, pin: str | None
             ) -> HttpError | Retry | None:
    """What the C transport's attempt at ``r`` (its record ``rec``) means to
    :meth:`HttpClient.get`: an error (a status that is one, a changed version), a first
    failed attempt to retry, or ``None``: send it again (a redirect, ``Range`` ignored, a
    416, an answer the C parser refused, a TLS failure: aiohttp's path says what they are)."""
    flags, status, code = int(rec["flags"]), int(rec["status"]), int(rec["code"])
    if flags & _RESENT:
        return None
    url = client.urls[r.file]
    if status == 412 and pin is not None:
        try:
            client.versions.check(r.file, url, 412, {}, pin)
        except VersionChanged as exc:
            return exc
    if status >= 400 and status not in (412, 416):
        after = rec["retry_after"].decode("latin-1")
        return status_error(status, _phrase(status), str(url),
                            {"Retry-After": after} if after else None)
    if code in _TRANSIENT and status in (0, 206):
        return Retry(HttpError(_TRANSIENT[code], f"{url}: {strerror(code)}"))
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""

