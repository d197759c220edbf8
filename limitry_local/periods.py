"""Clocks and the calendar periods (UTC, or a quota's time zone) that quotas are measured over."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limitry_local.errors import LimitryError

Clock = Callable[[], float]
"""Any zero-argument callable returning unix seconds, like :func:`time.time`."""

Period = Literal["hour", "day", "week", "month"]

system_clock: Clock = time.time

_HOUR = 3600
_DAY = 86_400
_WEEK = 7 * _DAY
# 1970-01-01 was a Thursday: day number + 3 is the Monday-based weekday.
_EPOCH_WEEKDAY = 3


def period_bounds(period: Period, at: float, timezone_name: str = "UTC") -> tuple[int, int]:
    """The ``[start, end)`` unix seconds of the calendar period holding ``at``.

    Hours start on the hour, days at 00:00, weeks on Monday 00:00, months on
    the 1st at 00:00, in ``timezone_name`` (an IANA name; UTC by default).

    >>> period_bounds("day", 86_400 * 1.5)
    (86400, 172800)
    """
    if timezone_name != "UTC":
        return _zoned_bounds(period, at, _zone(timezone_name))
    second = math.floor(at)
    if period == "hour":
        start = second - second % _HOUR
        return start, start + _HOUR
    if period == "day":
        start = second - second % _DAY
        return start, start + _DAY
    if period == "week":
        day = second // _DAY
        start = (day - (day + _EPOCH_WEEKDAY) % 7) * _DAY
        return start, start + _WEEK
    if period == "month":
        moment = datetime.fromtimestamp(second, timezone.utc)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        return int(first.timestamp()), int(following.timestamp())
    raise ValueError(f"unknown period {period!r}")


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # A quota stored where this zone was known (another host's tz database,
        # a name since retired): only its own quota fails, and it can be changed.
        raise LimitryError(
            f"time zone {name!r} of a quota is not known on this host: install the "
            "tzdata package, or change the quota's timezone (quotas.update)"
        ) from None


def _zoned_bounds(period: Period, at: float, zone: ZoneInfo) -> tuple[int, int]:
    """Calendar periods on the zone's wall clock, correct across DST changes.

    A day is local midnight to local midnight: 23 or 25 hours when the
    clocks change.  An hour is the local hour holding ``at`` and always 3600
    seconds, so the repeated hour of a fall-back is two periods, not one of
    two hours.  A local midnight the clocks skip begins at the change.
    """
    second = math.floor(at)
    local = datetime.fromtimestamp(second, zone)
    if period == "hour":
        start = int(local.replace(minute=0, second=0, microsecond=0).timestamp())
        # A zone whose offset is not whole hours can change it mid-hour: keep
        # ``at`` inside its period whatever the floor above gave.
        start = min(start, second)
        return start, start + _HOUR
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if period == "day":
        first, following = midnight, midnight + timedelta(days=1)
    elif period == "week":
        first = midnight - timedelta(days=midnight.weekday())
        following = first + timedelta(days=7)
    elif period == "month":
        first = midnight.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
    else:
        raise ValueError(f"unknown period {period!r}")
    # Wall-clock arithmetic on aware datetimes, then to unix seconds: each
    # boundary is that local midnight as it happened.
    return int(first.timestamp()), int(following.timestamp())


FixedPeriod = Literal["hour", "day", "week"]
"""The calendar periods of one length in UTC (a month is 28 to 31 days)."""


def utc_grid(period: FixedPeriod) -> tuple[int, int]:
    """``(seconds, origin)``: the UTC periods of ``period`` start at ``origin + k * seconds``.

    So the period holding whole second ``s`` starts at ``s - (s - origin) % seconds``,
    the start :func:`period_bounds` gives; a ledger can group events by it in
    SQL.  Weeks count from Monday 1969-12-29 00:00 UTC, the Monday before the epoch.

    >>> seconds, origin = utc_grid("week")
    >>> s = 86_400 * 10                      # Sunday 1970-01-11
    >>> s - (s - origin) % seconds == period_bounds("week", s)[0]
    True
    """
    if period == "hour":
        return _HOUR, 0
    if period == "day":
        return _DAY, 0
    if period == "week":
        return _WEEK, -_EPOCH_WEEKDAY * _DAY
    raise ValueError(f"unknown period {period!r}")
