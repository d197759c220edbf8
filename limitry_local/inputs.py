"""Input checks shared by the Tracker and its faces: texts, dimensions, pages, dates, waits.

Each raises :class:`~limitry_local.errors.InvalidRequestError` (a 400) naming
the field, as the hosted API does; none reads state.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone

from limitry_local.dimensions import Dimensions
from limitry_local.errors import InvalidRequestError, is_text

DateLike = date | datetime | str | None


def text(value: object, name: str) -> str:
    """A string that every ledger can store, or a 400 naming ``name``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name}: must be a string, got {type(value).__name__}")
    if not is_text(value):
        raise InvalidRequestError(f"{name}: must be valid Unicode text")
    return value


def optional_texts(*named: tuple[str, object]) -> None:
    """Each ``(wire name, value)`` given (not None) is a text, or a 400 naming it."""
    for name, value in named:
        if value is not None:
            text(value, name)


def limit_id(value: object, kind: str) -> str:
    """The id of a quota, rate limit or alert, as given to get, update or delete."""
    return text(value, f"id (a {kind} id)")


def check_dimensions(dimensions: Mapping[str, str]) -> Dimensions:
    """The dimensions of a check (``quotas.check``, ``rate_limits.check``)."""
    if not isinstance(dimensions, Mapping):
        raise InvalidRequestError("dimensions: must be an object of string values")
    for name, value in dimensions.items():
        text(name, "dimensions")
        text(value, f"dimensions.{name}")
    return dict(dimensions)


def wait_seconds(value: object) -> float:
    """``usage(wait=...)``: a finite number of seconds >= 0, or a 400 naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidRequestError(
            f"wait: must be a number of seconds >= 0 (how long to wait for rate limits), "
            f"got {value!r}"
        )
    return float(value)


def seconds_argument(text: str) -> float:
    """A command line's ``--timeout``: a finite number of seconds >= 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def page_size(limit: int) -> int:
    """A page of 1 to 100 items."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise InvalidRequestError(f"limit: must be an integer from 1 to 100, got {limit!r}")
    return limit


def date_range(start: DateLike, end: DateLike) -> tuple[float | None, float | None]:
    """A ``[start, end)`` range in unix seconds; a plain date as ``end`` includes that whole day."""
    return instant(start, "startDate", end_of_day=False), instant(end, "endDate", end_of_day=True)


# The ISO forms of a whole day (extended, basic, a week's day), and of a date-time:
# one of them, then T (or a space) and the time.
_DAY = r"\d{4}-\d{2}-\d{2}|\d{8}|\d{4}-W\d{2}-\d|\d{4}W\d{3}"
_A_DAY = re.compile(_DAY)
_A_TIME = re.compile(f"(?:{_DAY})[Tt ]")
_UTC_SUFFIX = re.compile(r"[Zz]$")  # RFC 3339 allows z too


def iso_date_or_time(text: str) -> date | datetime:
    """A day in any of its ISO forms ("2026-12-01", "20261201", "2026-W49-2") as a date,
    so an end includes it (found in review: only the first did); a date and a time,
    joined by T or a space, as a date-time.  Anything else (a week or a month alone,
    a date with an offset but no time) raises ValueError: Python would read
    "2026-12-01-05:00" as 05:00 and "20261201T1" as a day."""
    if _A_DAY.fullmatch(text):
        return date.fromisoformat(text)
    if _A_TIME.match(text):
        return datetime.fromisoformat(_UTC_SUFFIX.sub("+00:00", text))
    raise ValueError(f"not an ISO 8601 date or date-time: {text!r}")


def instant(value: DateLike, name: str, *, end_of_day: bool) -> float | None:
    """Unix seconds of a date, datetime or ISO 8601 string (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = iso_date_or_time(value)
        except ValueError:
            raise InvalidRequestError(
                f"{name}: {value!r} is not an ISO 8601 date or date-time"
            ) from None
    try:
        if isinstance(value, datetime):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            return aware.timestamp()
        if isinstance(value, date):
            day = value + timedelta(days=1) if end_of_day else value
            return datetime.combine(day, time(), timezone.utc).timestamp()
    except (OverflowError, ValueError):
        # date.max + 1 day, or an offset that leaves the datetime range: beyond
        # every event the ledger can hold, so an end is no bound, a start excludes all.
        return None if end_of_day else math.inf
    raise InvalidRequestError(f"{name}: expected a date, a datetime or an ISO 8601 string")
