"""Limitry 1.0 windows: calendar and anchored periods of ``every`` units, rolling slots."""

from __future__ import annotations

import calendar
from datetime import datetime, timezone
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limitry_local.periods import Period, period_bounds
from limitry_local.windows import (
    PERIODIC,
    ROLLING,
    WINDOWS,
    rolling_slot_seconds,
    rolling_slots,
    window_bounds,
)

UNIT = {"minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}
# 1900-01-01 to 2200-01-01: inside datetime's range, so datetime can be the reference.
LOW, HIGH = -2_208_988_800, 7_258_118_400

seconds = st.integers(LOW, HIGH)
moments = seconds | st.floats(LOW, HIGH, allow_nan=False)
anchors = st.none() | moments
everys = st.integers(1, 40)


def at(text: str) -> int:
    """Unix seconds of a UTC date-time written as ``YYYY-MM-DDTHH:MM:SS``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, timezone.utc)


def anchored_start(anchor: int, months: int) -> int:
    """Reference: the start ``months`` after ``anchor``, from datetime and calendar."""
    a = utc(anchor)
    year, zero_based = divmod(a.year * 12 + a.month - 1 + months, 12)
    month = zero_based + 1
    day = min(a.day, calendar.monthrange(year, month)[1])
    moment = a.replace(year=year, month=month, day=day)
    return int(moment.timestamp())


def test_names() -> None:
    assert WINDOWS == ("minute", "hour", "day", "week", "month", "year", "total", "concurrent")
    assert PERIODIC == ("minute", "hour", "day", "week", "month", "year")
    assert ROLLING == ("minute", "hour", "day")


def test_docstring_examples() -> None:
    assert window_bounds("day", 1, 86_400 * 1.5) == (86_400, 172_800)
    assert window_bounds("hour", 2, 3 * 3600 + 5, anchor=1800) == (9000, 16_200)
    assert rolling_slots("hour", 7200 + 61) == (3720, 60, 60)


@given(st.sampled_from(PERIODIC), everys, moments, anchors)
def test_the_period_holds_at_and_periods_tile(
    window: str, every: int, moment: float, anchor: float | None
) -> None:
    start, end = window_bounds(window, every, moment, anchor)
    assert start <= moment < end
    assert window_bounds(window, every, start, anchor) == (start, end)
    assert window_bounds(window, every, end - 1, anchor) == (start, end)
    assert window_bounds(window, every, end, anchor)[0] == end
    assert window_bounds(window, every, start - 1, anchor)[1] == start
    if window in UNIT:
        assert end - start == every * UNIT[window]


@given(st.sampled_from(["minute", "hour", "day", "week"]), everys, moments, anchors)
def test_fixed_periods_count_from_the_epoch_unit_or_the_anchor(
    window: str, every: int, moment: float, anchor: float | None
) -> None:
    start, _ = window_bounds(window, every, moment, anchor)
    # Monday 1969-12-29 for calendar weeks, 1970-01-01 00:00 for the rest.
    origin = (-3 * 86_400 if window == "week" else 0) if anchor is None else int(anchor // 1)
    assert (start - origin) % (every * UNIT[window]) == 0
    if anchor is None and window == "week":
        assert utc(start).weekday() == 0


@given(st.sampled_from(["hour", "day", "week", "month"]), moments)
def test_calendar_every_one_agrees_with_period_bounds(window: str, moment: float) -> None:
    assert window_bounds(window, 1, moment) == period_bounds(cast(Period, window), moment)


@given(everys, moments)
def test_calendar_months_count_from_january_1970(every: int, moment: float) -> None:
    start, end = window_bounds("month", every, moment)
    first = utc(start)
    assert (first.day, first.hour, first.minute, first.second) == (1, 0, 0, 0)
    assert ((first.year - 1970) * 12 + first.month - 1) % every == 0
    assert end == anchored_start(start, every)


@given(moments)
def test_calendar_quarters_and_years(moment: float) -> None:
    start, end = window_bounds("month", 3, moment)
    assert utc(start).month in (1, 4, 7, 10)
    assert utc(start).year == utc(int(moment // 1)).year
    assert end == anchored_start(start, 3)
    year = utc(int(moment // 1)).year
    assert window_bounds("month", 12, moment) == window_bounds("year", 1, moment)
    assert window_bounds("year", 1, moment) == (
        at(f"{year:04}-01-01T00:00:00"),
        at(f"{year + 1:04}-01-01T00:00:00"),
    )
    even = year - year % 2
    assert window_bounds("year", 2, moment) == (
        at(f"{even:04}-01-01T00:00:00"),
        at(f"{even + 2:04}-01-01T00:00:00"),
    )


def test_a_large_every_has_no_year_9999_ceiling() -> None:
    start, end = window_bounds("year", 100_000, at("2026-05-01T00:00:00"))
    assert start == 0
    assert end > at("9999-12-31T23:59:59")


@given(st.sampled_from(["month", "year"]), everys, moments, seconds)
def test_anchored_months_agree_with_a_datetime_reference(
    window: str, every: int, moment: float, anchor: int
) -> None:
    months = every * 12 if window == "year" else every
    start, end = window_bounds(window, every, moment, anchor)
    first = utc(start)
    offset = (first.year - utc(anchor).year) * 12 + first.month - utc(anchor).month
    assert offset % months == 0
    assert start == anchored_start(anchor, offset)
    assert end == anchored_start(anchor, offset + months)


@given(st.sampled_from(["month", "year"]), everys, moments, moments)
def test_anchored_starts_keep_the_anchor_day_clamped_and_time_of_day(
    window: str, every: int, moment: float, anchor: float
) -> None:
    a = utc(int(anchor // 1))
    for bound in window_bounds(window, every, moment, anchor):
        b = utc(bound)
        assert b.day == min(a.day, calendar.monthrange(b.year, b.month)[1])
        assert b.time() == a.time()


@pytest.mark.parametrize(
    ("anchor", "moment", "start", "end"),
    [
        # The 31st through February, then back to the 31st: no drift.
        (
            "2023-01-31T10:00:00",
            "2023-02-15T00:00:00",
            "2023-01-31T10:00:00",
            "2023-02-28T10:00:00",
        ),
        (
            "2023-01-31T10:00:00",
            "2023-02-28T09:59:59",
            "2023-01-31T10:00:00",
            "2023-02-28T10:00:00",
        ),
        (
            "2023-01-31T10:00:00",
            "2023-03-01T00:00:00",
            "2023-02-28T10:00:00",
            "2023-03-31T10:00:00",
        ),
        (
            "2023-01-31T10:00:00",
            "2023-04-15T00:00:00",
            "2023-03-31T10:00:00",
            "2023-04-30T10:00:00",
        ),
        (
            "2023-01-31T10:00:00",
            "2023-05-10T00:00:00",
            "2023-04-30T10:00:00",
            "2023-05-31T10:00:00",
        ),
        (
            "2024-01-31T10:00:00",
            "2024-02-15T00:00:00",
            "2024-01-31T10:00:00",
            "2024-02-29T10:00:00",
        ),
        (
            "2024-01-31T10:00:00",
            "2024-03-01T00:00:00",
            "2024-02-29T10:00:00",
            "2024-03-31T10:00:00",
        ),
        # The 30th: short only in February.
        (
            "2023-04-30T00:00:00",
            "2023-05-31T00:00:00",
            "2023-05-30T00:00:00",
            "2023-06-30T00:00:00",
        ),
        (
            "2023-04-30T00:00:00",
            "2024-02-29T12:00:00",
            "2024-02-29T00:00:00",
            "2024-03-30T00:00:00",
        ),
        # Across the year.
        (
            "2023-12-31T23:00:00",
            "2024-01-15T00:00:00",
            "2023-12-31T23:00:00",
            "2024-01-31T23:00:00",
        ),
        # Centuries are leap years only every 400 years.
        (
            "2096-01-31T00:00:00",
            "2100-02-15T00:00:00",
            "2100-01-31T00:00:00",
            "2100-02-28T00:00:00",
        ),
        (
            "1996-01-31T00:00:00",
            "2000-02-15T00:00:00",
            "2000-01-31T00:00:00",
            "2000-02-29T00:00:00",
        ),
        # Before the anchor: the periods extend backwards, clamped the same way.
        (
            "2024-03-31T00:00:00",
            "2024-02-10T00:00:00",
            "2024-01-31T00:00:00",
            "2024-02-29T00:00:00",
        ),
        (
            "2024-03-31T00:00:00",
            "2024-03-05T00:00:00",
            "2024-02-29T00:00:00",
            "2024-03-31T00:00:00",
        ),
    ],
)
def test_billing_months_at_month_ends(anchor: str, moment: str, start: str, end: str) -> None:
    assert window_bounds("month", 1, at(moment), at(anchor)) == (at(start), at(end))


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        ("2025-02-28T11:59:59", "2024-02-29T12:00:00", "2025-02-28T12:00:00"),
        ("2025-03-01T00:00:00", "2025-02-28T12:00:00", "2026-02-28T12:00:00"),
        ("2028-03-01T00:00:00", "2028-02-29T12:00:00", "2029-02-28T12:00:00"),
        ("2023-06-01T00:00:00", "2023-02-28T12:00:00", "2024-02-29T12:00:00"),
    ],
)
def test_february_29_anniversaries(moment: str, start: str, end: str) -> None:
    anchor = at("2024-02-29T12:00:00")
    assert window_bounds("year", 1, at(moment), anchor) == (at(start), at(end))


def test_quarters_from_a_billing_date() -> None:
    anchor = at("2025-11-30T08:00:00")
    assert window_bounds("month", 3, at("2026-03-01T00:00:00"), anchor) == (
        at("2026-02-28T08:00:00"),
        at("2026-05-30T08:00:00"),
    )


def test_fixed_anchored_periods_extend_backwards() -> None:
    assert window_bounds("hour", 1, 0, anchor=1800) == (-1800, 1800)
    assert window_bounds("week", 2, at("2026-01-01T00:00:00"), at("2026-01-10T06:00:00")) == (
        at("2025-12-27T06:00:00"),
        at("2026-01-10T06:00:00"),
    )


@given(st.sampled_from(ROLLING), moments)
def test_rolling_slots_are_sixty_ending_with_the_one_holding_at(window: str, moment: float) -> None:
    first, slot, count = rolling_slots(window, moment)
    assert count == 60
    assert slot == rolling_slot_seconds(window) == UNIT[window] // 60
    assert first % slot == 0
    last = first + (count - 1) * slot
    assert last <= moment < last + slot


def test_rolling_slot_lengths() -> None:
    assert [rolling_slot_seconds(w) for w in ROLLING] == [1, 60, 1440]


@pytest.mark.parametrize("window", ["total", "concurrent", "fortnight", ""])
def test_a_window_without_periods_is_refused_by_name(window: str) -> None:
    with pytest.raises(ValueError, match=r"^window must be one of minute, .*year.*got"):
        window_bounds(window, 1, 0)


@pytest.mark.parametrize("window", ["week", "month", "year", "total", "concurrent", "Minute"])
def test_a_window_that_cannot_roll_is_refused_by_name(window: str) -> None:
    with pytest.raises(ValueError, match=r"^window must be one of minute, hour, day to be rolling"):
        rolling_slots(window, 0)
    with pytest.raises(ValueError, match=r"^window must be one of minute, hour, day to be rolling"):
        rolling_slot_seconds(window)


@pytest.mark.parametrize("every", [0, -1, True, False, 1.0, 2.5, "2", None])
def test_a_bad_every_is_refused_by_name(every: object) -> None:
    with pytest.raises(ValueError, match=r"^every must be"):
        window_bounds("day", cast(int, every), 0)
    with pytest.raises(ValueError, match=r"^every must be"):
        window_bounds("month", cast(int, every), 0, anchor=86_400)
