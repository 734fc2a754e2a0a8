"""HTTP range reads, sans I/O: pure functions from what was asked and what the server
answered to what it means (in the spirit of h11). Table-tested in ``tests/test_http.py``.

Nothing here touches a socket, aiohttp or the event loop; the client (``_client``) sends
and receives, and asks this module what an answer says.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from ..._defaults import MULTI_MAX_PART, MULTI_MAX_RANGES, RETRY_STATUS
from ..._plan import Plan
from ..._request import Requests

__all__ = [
    "UNKNOWN_SIZE", "HttpError", "Retry", "backoff_delay", "content_range", "multipart_boundary",
    "parse_multipart", "plan_jobs", "range_header", "size_probes", "status_error",
]

UNKNOWN_SIZE = 1 << 62
"""Size the planner sees for objects nobody asked the size of (nothing is clamped). No
answer can tell this size: :func:`content_range` refuses totals (and ends) this big."""

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|(0--1)|\*)/(\d+|\*)", re.I)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


class HttpError(Exception):
    """A failure with the errno the user will see (as an OSError) and what happened."""

    def __init__(self, err: int, detail: str) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail


class Retry(Exception):
    """A failure that may pass (429, 5xx, resets, timeouts, truncated bodies): retry after
    backoff; ``final`` is what to report if the retries run out."""

    def __init__(self, final: HttpError, *, progress: int = 0, after: float | None = None
                 ) -> None:
        super().__init__(final.detail)
        self.final = final
        self.progress = progress
        """Bytes received before the failure (a resumed read asks for the rest)."""
        self.after = after
        """The server's ``Retry-After`` in seconds, if it sent one."""


def status_error(status: int, reason: str | None, url: str,
                 headers: Mapping[str, str] | None = None) -> HttpError | Retry:
    """What a status the request cannot use means: 404/410 not found, 401/403 permission,
    ``RETRY_STATUS`` retried (after at least the server's ``Retry-After``, from
    ``headers``), anything else an I/O error. The one place a status becomes an error."""
    detail = f"HTTP {status} {reason or ''}".rstrip() + f" from {url}"
    if status in (404, 410):
        return HttpError(errno.ENOENT, detail)
    if status in (401, 403):
        return HttpError(errno.EACCES, detail)
    if status in RETRY_STATUS:
        after = None if headers is None else retry_after(headers.get("Retry-After"))
        return Retry(HttpError(errno.EIO, detail), after=after)
    return HttpError(errno.EIO, detail)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (an HTTP date: ``None``, our own backoff)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` -> (a, b + 1, total or None); ``bytes */total`` -> (-1, -1,
    total); an empty object's ``bytes 0--1/0`` (Azurite's answer to a range of an empty blob)
    -> (0, 0, 0), and ``bytes N-(N-1)/N`` (Azurite's to a range starting at the end of an
    object of N bytes) -> (N, N, N). ``None`` if the value is not a valid one: malformed, a
    range ending before it starts (``bytes 150-99/N``) or running past its total, or a number of
    :data:`UNKNOWN_SIZE` or more (no object is that big, and sizes must not collide with
    it). The one parser of ``Content-Range`` for every path (ranges, size probes, multipart
    parts)."""
    if not value:
        return None
    if value[:6] == "bytes ":  # the form servers send, parsed without the regex (~2x)
        first, slash, size = value[6:].partition("/")
        a, dash, b = first.partition("-")
        if slash and dash and a.isdecimal() and b.isdecimal() and (  # what \d takes
                size == "*" or size.isdecimal()):
            return _checked(a, b, size)
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    a, b, empty, size = m.groups()
    if empty is not None:  # bytes 0--1/total: only an empty object has no last byte
        total = _number(size)
        return (0, 0, 0) if total == 0 else None
    if a is None:  # bytes */total
        total = _number(size)
        return None if total is None else (-1, -1, total)
    return _checked(a, b, size)


def _number(digits: str) -> int | None:
    """A non-negative number below :data:`UNKNOWN_SIZE`, ``None`` if it is not one. The
    length is checked before ``int`` (which refuses over 4 300 digits, and is quadratic)."""
    if len(digits) > _MAX_DIGITS or not digits.isdecimal():
        return None
    n = int(digits)
    return n if n < UNKNOWN_SIZE else None


_MAX_DIGITS = len(str(UNKNOWN_SIZE))


def _checked(a: str, b: str, size: str) -> tuple[int, int, int | None] | None:
    """(a, b + 1, total or None) of ``bytes a-b/size`` if it is a range of its object."""
    first, last = _number(a), _number(b)
    if first is not None and last == first - 1 and size != "*" and _number(size) == first:
        return (first, first, first)  # bytes N-(N-1)/N: nothing from the end on (Azurite)
    if first is None or last is None or first > last or last + 1 >= UNKNOWN_SIZE:
        return None
    if size == "*":
        return (first, last + 1, None)
    total = _number(size)
    if total is None or last >= total:
        return None
    return (first, last + 1, total)


def range_header(start: int, length: int) -> str:
    """``Range`` for ``length`` bytes from ``start``; a negative start asks for the last
    ``length`` bytes (``bytes=-N``)."""
    return f"bytes=-{length}" if start < 0 else f"bytes={start}-{start + length - 1}"


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/byteranges`` answer, ``None`` if it is not one."""
    if not content_type.lower().startswith("multipart/byteranges"):
        return None
    m = _BOUNDARY.search(content_type)
    return m.group(1).encode("latin-1") if m else None


def parse_multipart(body: memoryview, boundary: bytes
                    ) -> tuple[list[tuple[int, int, memoryview]], int | None]:
    """Parts of a ``multipart/byteranges`` body, (start, end, bytes) each, and the object's
    size if the parts tell it. Raises ``ValueError`` on a malformed body (a part without a
    valid ``Content-Range``, parts disagreeing on the size, a part running past the body).

    Each turn of the loop moves past the part it read (its body has ``end - start >= 0``
    bytes after its headers), so the loop ends within one turn per delimiter of the body;
    the parts are views of ``body`` (nothing is copied)."""
    obj = body.obj  # positions in ``data`` are positions in ``body`` (a view of all of it)
    data = (obj if isinstance(obj, (bytes, bytearray)) and len(obj) == body.nbytes
            else bytes(body))
    delim = b"--" + boundary
    if not boundary:
        raise ValueError("empty boundary")
    parts = []
    total = None
    pos = data.find(delim)
    while pos >= 0:
        pos += len(delim)
        if data[pos:pos + 2] == b"--":
            break
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise ValueError("part headers do not end")
        rng = None
        for line in data[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-range":
                rng = content_range(value.decode("latin-1").strip())
                if rng is None:
                    raise ValueError(f"part with an invalid Content-Range {value[:80]!r}")
        if rng is None or rng[0] < 0:
            raise ValueError("part without a Content-Range")
        start, end, size = rng
        if size is not None:
            if total is not None and size != total:
                raise ValueError(f"parts disagree on the size ({total} and {size})")
            total = size
        body_start = head_end + 4
        body_end = body_start + (end - start)
        if body_end > len(data):
            raise ValueError("part runs past the body")
        parts.append((start, end, body[body_start:body_end]))
        nxt = data.find(delim, body_end)
        if 0 <= nxt < pos:  # cannot happen (body_end > pos): the loop must move forward
            raise ValueError("multipart parser made no progress")
        pos = nxt
    return parts, total


def backoff_delay(attempt: int, backoff: float, backoff_max: float, after: float | None,
                  uniform: Callable[[float, float], float]) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential backoff with full
    jitter (AWS's "exponential backoff and jitter"), at least the server's ``Retry-After``,
    never above ``backoff_max``. The exponent is capped so huge retry counts cannot
    overflow."""
    delay = uniform(0, min(backoff_max, backoff * 2.0 ** min(attempt, 64)))
    if after is not None:
        delay = max(delay, min(after, backoff_max))
    return delay


def size_probes(reqs: Requests, max_read: int
                ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Which objects need their size before planning, and for each the length of a tail
    probe (0: probe the head). Whole reads and suffixes need it; so do ranges longer than
    ``max_read``, which would otherwise be planned (and their memory allocated) at their
    asked length, however far past the end (``length=sys.maxsize``): a one-byte tail probe
    tells the size for those."""
    wants = (reqs.length < 0) | (reqs.offset < 0)
    need = np.zeros(len(reqs.paths), bool)
    need[reqs.file[wants]] = True
    # objects asked only for suffixes (shard indexes) are probed at their tail
    suffix = np.zeros(len(reqs.paths), np.int64)
    tails = wants & (reqs.offset < 0)
    np.maximum.at(suffix, reqs.file[tails], -reqs.offset[tails])
    suffix[reqs.file[wants & (reqs.offset >= 0)]] = 0
    suffix[suffix > max_read] = 0
    long = np.zeros(len(reqs.paths), bool)
    long[reqs.file[reqs.length > max_read]] = True
    long &= ~need
    need |= long
    suffix[long] = 1
    return need, suffix


def plan_jobs(p: Plan, multi: npt.NDArray[np.bool_]) -> list[int | list[int]]:
    """The plan's reads as jobs: single reads, or batches of up to ``MULTI_MAX_RANGES`` small
    reads (``<= MULTI_MAX_PART``) of one file for a multipart request, for the files
    ``multi`` allows (plain HTTP servers not known to refuse them)."""
    small = p.op_length <= MULTI_MAX_PART
    jobs: list[int | list[int]] = []
    batch: list[int] = []
    for op in range(p.nops):
        file = int(p.op_file[op])
        ok = bool(small[op]) and bool(multi[file])
        if batch and (not ok or int(p.op_file[batch[0]]) != file
                      or len(batch) >= MULTI_MAX_RANGES):
            jobs.append(batch if len(batch) > 1 else batch[0])
            batch = []
        if ok:
            batch.append(op)
        else:
            jobs.append(op)
    if batch:
        jobs.append(batch if len(batch) > 1 else batch[0])
    return jobs
