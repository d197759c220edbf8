"""Clocks and the UTC calendar periods that quotas are measured over."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

Clock = Callable[[], float]
"""Any zero-argument callable returning unix seconds, like :func:`time.time`."""

Period = Literal["hour", "day", "week", "month"]

system_clock: Clock = time.time

_HOUR = 3600
_DAY = 86_400
_WEEK = 7 * _DAY
# 1970-01-01 was a Thursday: day number + 3 is the Monday-based weekday.
_EPOCH_WEEKDAY = 3


def period_bounds(period: Period, at: float) -> tuple[int, int]:
    """The ``[start, end)`` unix seconds of the UTC calendar period holding ``at``.

    Hours start on the hour, days at 00:00, weeks on Monday 00:00, months on
    the 1st at 00:00.

    >>> period_bounds("day", 86_400 * 1.5)
    (86400, 172800)
    """
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
