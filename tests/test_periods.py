"""UTC calendar periods: hour, day, week from Monday, month from the 1st."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limitry_local.periods import Period, period_bounds


def at(text: str) -> int:
    """Unix seconds of a UTC date-time written as ``YYYY-MM-DDTHH:MM:SS``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def test_docstring_example() -> None:
    assert period_bounds("day", 86_400 * 1.5) == (86_400, 172_800)


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (at("2026-11-25T10:00:00"), at("2026-11-25T10:00:00"), at("2026-11-25T11:00:00")),
        (at("2026-11-25T10:59:59"), at("2026-11-25T10:00:00"), at("2026-11-25T11:00:00")),
        (at("2026-11-25T11:00:00"), at("2026-11-25T11:00:00"), at("2026-11-25T12:00:00")),
        (at("2026-12-31T23:30:00"), at("2026-12-31T23:00:00"), at("2027-01-01T00:00:00")),
    ],
)
def test_hour(moment: int, start: int, end: int) -> None:
    assert period_bounds("hour", moment) == (start, end)


def test_fractional_seconds_are_floored() -> None:
    assert period_bounds("hour", at("2026-11-25T10:59:59") + 0.999) == (
        at("2026-11-25T10:00:00"),
        at("2026-11-25T11:00:00"),
    )


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (at("2026-11-25T00:00:00"), at("2026-11-25T00:00:00"), at("2026-11-26T00:00:00")),
        (at("2026-11-25T10:00:00"), at("2026-11-25T00:00:00"), at("2026-11-26T00:00:00")),
        (at("2026-11-25T23:59:59"), at("2026-11-25T00:00:00"), at("2026-11-26T00:00:00")),
        (at("2026-12-31T12:00:00"), at("2026-12-31T00:00:00"), at("2027-01-01T00:00:00")),
        (at("2028-02-29T12:00:00"), at("2028-02-29T00:00:00"), at("2028-03-01T00:00:00")),
    ],
)
def test_day_runs_from_midnight_utc(moment: int, start: int, end: int) -> None:
    assert period_bounds("day", moment) == (start, end)


@pytest.mark.parametrize(
    ("moment", "start"),
    [
        # 2026-11-23 is a Monday.
        (at("2026-11-23T00:00:00"), at("2026-11-23T00:00:00")),
        (at("2026-11-23T00:00:01"), at("2026-11-23T00:00:00")),
        (at("2026-11-25T10:00:00"), at("2026-11-23T00:00:00")),
        (at("2026-11-29T23:59:59"), at("2026-11-23T00:00:00")),
        (at("2026-11-30T00:00:00"), at("2026-11-30T00:00:00")),
        (at("2026-11-22T23:59:59"), at("2026-11-16T00:00:00")),
        # Across a month and a year: Thursday 2026-12-31 -> Monday 2026-12-28.
        (at("2026-12-31T12:00:00"), at("2026-12-28T00:00:00")),
        (at("2027-01-03T23:59:59"), at("2026-12-28T00:00:00")),
        (at("2027-01-04T00:00:00"), at("2027-01-04T00:00:00")),
        # 1970-01-01 was a Thursday: its week began Monday 1969-12-29.
        (0, -3 * 86_400),
    ],
)
def test_week_runs_from_monday_midnight(moment: int, start: int) -> None:
    assert period_bounds("week", moment) == (start, start + 7 * 86_400)
    assert datetime.fromtimestamp(start, timezone.utc).weekday() == 0


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (at("2026-11-01T00:00:00"), at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00")),
        (at("2026-11-25T10:00:00"), at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00")),
        (at("2026-11-30T23:59:59"), at("2026-11-01T00:00:00"), at("2026-12-01T00:00:00")),
        (at("2026-12-01T00:00:00"), at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00")),
        (at("2026-12-31T23:59:59"), at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00")),
        (at("2027-01-01T00:00:00"), at("2027-01-01T00:00:00"), at("2027-02-01T00:00:00")),
        (at("2027-01-31T23:59:59"), at("2027-01-01T00:00:00"), at("2027-02-01T00:00:00")),
        (at("2027-02-28T12:00:00"), at("2027-02-01T00:00:00"), at("2027-03-01T00:00:00")),
        (at("2028-02-29T23:59:59"), at("2028-02-01T00:00:00"), at("2028-03-01T00:00:00")),
        (at("2028-03-31T00:00:00"), at("2028-03-01T00:00:00"), at("2028-04-01T00:00:00")),
    ],
)
def test_month_runs_from_the_first(moment: int, start: int, end: int) -> None:
    assert period_bounds("month", moment) == (start, end)


def test_february_length_follows_leap_years() -> None:
    leap_start, leap_end = period_bounds("month", at("2028-02-10T00:00:00"))
    plain_start, plain_end = period_bounds("month", at("2027-02-10T00:00:00"))
    assert leap_end - leap_start == 29 * 86_400
    assert plain_end - plain_start == 28 * 86_400


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_end_of_one_period_is_start_of_the_next(period: Period) -> None:
    start, end = period_bounds(period, at("2026-12-31T23:59:59"))
    assert start <= at("2026-12-31T23:59:59") < end
    assert period_bounds(period, end)[0] == end
    assert period_bounds(period, end - 1) == (start, end)


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="year"):
        period_bounds("year", 0)  # type: ignore[arg-type]


# --- time zones ---------------------------------------------------------------------------

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",  # +05:30, no DST
    "Australia/Lord_Howe",  # a 30-minute DST change
    "America/Havana",  # DST changes at midnight
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
]


@given(
    period=st.sampled_from(["hour", "day", "week", "month"]),
    zone=st.sampled_from(ZONES),
    at=st.integers(0, 4_102_444_800),  # 1970-2100
)
def test_zoned_periods_hold_their_instant_and_follow_each_other(
    period: Period, zone: str, at: int
) -> None:
    start, end = period_bounds(period, at, zone)
    assert start <= at < end
    # Contiguous: the next period starts where this one ends.
    assert period_bounds(period, end, zone)[0] == end
    assert period_bounds(period, end - 1, zone) == (start, end)
    if period == "hour":
        assert end - start == 3600
    else:
        local = datetime.fromtimestamp(start, ZoneInfo(zone))
        # Local midnight, unless the clocks skipped it (then the change itself).
        assert (local.hour, local.minute) in ((0, 0), (1, 0), (0, 30))


def test_a_new_york_day_is_23_or_25_hours_when_the_clocks_change() -> None:
    ny = ZoneInfo("America/New_York")
    lengths = {}
    for day in ("2026-03-08", "2026-06-01", "2026-11-01"):
        at = datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=ny).timestamp()
        start, end = period_bounds("day", at, "America/New_York")
        assert datetime.fromtimestamp(start, ny).isoformat()[:19] == f"{day}T00:00:00"
        lengths[day] = (end - start) / 3600
    assert lengths == {"2026-03-08": 23, "2026-06-01": 24, "2026-11-01": 25}


def test_the_repeated_hour_of_a_fall_back_is_two_periods() -> None:
    ny = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ny, fold=0).timestamp()
    second = datetime(2026, 11, 1, 1, 30, tzinfo=ny, fold=1).timestamp()
    a = period_bounds("hour", first, "America/New_York")
    b = period_bounds("hour", second, "America/New_York")
    assert a[1] == b[0] and b[0] - a[0] == 3600


def test_weeks_and_months_follow_the_local_calendar() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    # Sunday 2026-11-29 23:30 UTC is Monday 08:30 in Tokyo: a new local week.
    at = datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc).timestamp()
    start, _ = period_bounds("week", at, "Asia/Tokyo")
    assert datetime.fromtimestamp(start, tokyo).isoformat() == "2026-11-30T00:00:00+09:00"
    assert period_bounds("week", at)[0] < start  # in UTC it is still the old week
    start, end = period_bounds("month", at, "Asia/Tokyo")
    assert datetime.fromtimestamp(start, tokyo).date().isoformat() == "2026-11-01"
    assert datetime.fromtimestamp(end, tokyo).date().isoformat() == "2026-12-01"
