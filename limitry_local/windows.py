"""The periods of a Limitry 1.0 limit: ``window`` times ``every``, from the calendar or an anchor.

All times are unix seconds; bounds are whole seconds ``[start, end)``.

- ``anchor=None`` (``start: calendar``): UTC boundaries. Minutes, hours and days
  start on the boundary, weeks on Monday 00:00, months on the 1st 00:00, years on
  1 January 00:00. A period of ``every`` N units counts from the epoch's unit:
  minutes, hours, days from 1970-01-01 00:00, weeks from Monday 1969-12-29,
  months from January 1970 (every 3: quarters from Jan/Apr/Jul/Oct; every 12:
  calendar years), years from 1970 (every 2: even years).
- ``anchor`` given (``start: billing_date`` or ``first_use``; the caller finds it):
  periods of N units from the anchor instant, forwards and backwards (an ``at``
  before the anchor is in an earlier period). Minute to week: ``anchor + k*N*unit``.
  Months: the k-th period starts k*N months after the anchor on its day of month
  and time of day, clamped to the month's last day, so Jan 31 gives Feb 28 (29),
  Mar 31, Apr 30. Each start comes from the anchor, never from the previous one,
  so clamping never drifts. Years are 12 months: Feb 29 gives Feb 28 off leap years.
- ``rolling`` (minute, hour, day): 60 slots of 1/60 of the window, ending with
  the slot holding the moment of the check.

Month arithmetic is integer civil-date math rather than :mod:`datetime`: it is
cheaper per check and has no year 9999 ceiling for a large ``every``.
"""

from __future__ import annotations

import math
from typing import Literal

Window = Literal["minute", "hour", "day", "week", "month", "year", "total", "concurrent"]
Start = Literal["calendar", "billing_date", "first_use"]

WINDOWS: tuple[str, ...] = ("minute", "hour", "day", "week", "month", "year", "total", "concurrent")
PERIODIC: tuple[str, ...] = WINDOWS[:6]
ROLLING: tuple[str, ...] = ("minute", "hour", "day")

_DAY = 86_400
_FIXED = {"minute": 60, "hour": 3600, "day": _DAY, "week": 7 * _DAY}
# Calendar weeks count from Monday 1969-12-29, three days before the epoch (a Thursday).
_CALENDAR_ORIGIN = {"minute": 0, "hour": 0, "day": 0, "week": -3 * _DAY}
_SLOTS = 60


def window_bounds(
    window: str, every: int, at: float, anchor: float | None = None
) -> tuple[int, int]:
    """``[start, end)`` unix seconds of the period holding ``at``, for one of :data:`PERIODIC`.

    >>> window_bounds("day", 1, 86_400 * 1.5)
    (86400, 172800)
    >>> window_bounds("hour", 2, 3 * 3600 + 5, anchor=1800)
    (9000, 16200)
    """
    if window not in PERIODIC:
        raise ValueError(
            f"window must be one of {', '.join(PERIODIC)} to have periods, got {window!r}"
        )
    _check_every(every)
    second = math.floor(at)
    if window in _FIXED:
        length = _FIXED[window] * every
        origin = _CALENDAR_ORIGIN[window] if anchor is None else math.floor(anchor)
        start = second - (second - origin) % length
        return start, start + length
    months = every * 12 if window == "year" else every
    # The calendar is the anchor 1970-01-01 00:00: day 1 never clamps.
    return _month_bounds(months, second, 0 if anchor is None else math.floor(anchor))


def rolling_slot_seconds(window: str) -> int:
    """Slot length of a rolling window: the window / 60 (minute 1, hour 60, day 1440)."""
    if window not in ROLLING:
        raise ValueError(
            f"window must be one of {', '.join(ROLLING)} to be rolling, got {window!r}"
        )
    return _FIXED[window] // _SLOTS


def rolling_slots(window: str, at: float) -> tuple[int, int, int]:
    """``(first_slot_start, slot_seconds, count)``: the slots summed for the rolling window.

    The 60 slots ending with the one holding ``at``; slot starts are multiples of
    ``slot_seconds``, so every check and every writer agree on them.

    >>> rolling_slots("hour", 7200 + 61)
    (3720, 60, 60)
    """
    slot = rolling_slot_seconds(window)
    second = math.floor(at)
    last = second - second % slot
    return last - (_SLOTS - 1) * slot, slot, _SLOTS


def _check_every(every: object) -> None:
    # bool is an int subclass; `every: true` is a mistake, not 1.
    if isinstance(every, bool) or not isinstance(every, int):
        raise ValueError(f"every must be a whole number of windows (1 or more), got {every!r}")
    if every < 1:
        raise ValueError(f"every must be 1 or more windows, got {every}")


def _month_bounds(months: int, second: int, anchor: int) -> tuple[int, int]:
    days, time_of_day = divmod(anchor, _DAY)
    year, month, day = _civil(days)
    anchor_month = year * 12 + month - 1
    at_year, at_month, _ = _civil(second // _DAY)
    k = (at_year * 12 + at_month - 1 - anchor_month) // months
    start = _month_start(anchor_month + k * months, day, time_of_day)
    if start > second:
        # Same month as `at` but a later day or hour: `at` is in the period before.
        k -= 1
        start = _month_start(anchor_month + k * months, day, time_of_day)
    return start, _month_start(anchor_month + (k + 1) * months, day, time_of_day)


def _month_start(month_index: int, day: int, time_of_day: int) -> int:
    """Unix seconds of ``day`` (clamped to the month's last) at ``time_of_day``."""
    year, zero_based = divmod(month_index, 12)
    month = zero_based + 1
    return _days(year, month, min(day, _days_in_month(year, month))) * _DAY + time_of_day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


# Howard Hinnant's days_from_civil / civil_from_days: proleptic Gregorian calendar
# in years of March to February, so the leap day is the last day of its year.
def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a date."""
    year -= month <= 2
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number since 1970-01-01."""
    era, day_of_era = divmod(days + 719_468, 146_097)
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    month = shifted + (3 if shifted < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day_of_year - (153 * shifted + 2) // 5 + 1
