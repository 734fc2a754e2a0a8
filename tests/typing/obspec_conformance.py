"""Checked by mypy (tests/test_obspec.py runs it): ``lsio.obspec.Store`` is each of
obspec's protocols, and ``get``'s answer is obspec's ``GetResult`` and ``GetResultAsync``."""

from __future__ import annotations

import obspec

import lsio.obspec

store = lsio.obspec.Store("/tmp")

get: obspec.Get = store
get_async: obspec.GetAsync = store
get_range: obspec.GetRange = store
get_range_async: obspec.GetRangeAsync = store
get_ranges: obspec.GetRanges = store
get_ranges_async: obspec.GetRangesAsync = store
head: obspec.Head = store
head_async: obspec.HeadAsync = store
listing: obspec.List = store
listing_async: obspec.ListAsync = store
level: obspec.ListWithDelimiter = store
level_async: obspec.ListWithDelimiterAsync = store


def answers(result: lsio.obspec.GetResult) -> tuple[obspec.GetResult, obspec.GetResultAsync]:
    return result, result
