"""Quotas counted in a time zone: local calendar periods, across DST changes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from limitry_local import InvalidRequestError, QuotaExceeded, Tracker
from limitry_local.testing import ManualClock

NY = ZoneInfo("America/New_York")


def at(text: str) -> str:
    """A New York wall-clock time as the ISO timestamp an event carries."""
    return datetime.fromisoformat(text).replace(tzinfo=NY).isoformat()


def call(when: str) -> dict[str, str]:
    return {"customer_id": "c", "event_type": "e", "timestamp": at(when)}


def test_a_quota_counts_days_from_local_midnight(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="ny", metric="total_events", limit_value=1, period="day", timezone="America/New_York"
    )
    # 23:30 and 00:30 New York time: one UTC day (04:30 and 05:30), two New York days.
    tracker.usage(call("2026-11-25T23:30:00"))
    tracker.usage(call("2026-11-26T00:30:00"))
    with pytest.raises(QuotaExceeded) as denied:
        tracker.usage(call("2026-11-26T22:00:00"))
    resets = datetime.fromtimestamp(int(denied.value.headers["X-Quota-Reset"]), NY)
    assert resets.isoformat() == "2026-11-27T00:00:00-05:00"


def test_the_same_events_in_utc_share_a_day(tracker: Tracker) -> None:
    tracker.quotas.create(name="utc", metric="total_events", limit_value=1, period="day")
    tracker.usage(call("2026-11-25T23:30:00"))
    with pytest.raises(QuotaExceeded):
        tracker.usage(call("2026-11-26T00:30:00"))


def test_a_day_of_25_hours_when_the_clocks_fall_back(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="ny", metric="total_events", limit_value=10, period="day", timezone="America/New_York"
    )
    assert quota.timezone == "America/New_York"
    status = tracker.usage(call("2026-11-01T12:00:00")).quotas[0]
    start = datetime(2026, 11, 1, tzinfo=NY).timestamp()
    assert status.reset is not None and (status.reset - start) / 3600 == 25


def test_a_day_of_23_hours_when_the_clocks_spring_forward(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="ny", metric="total_events", limit_value=10, period="day", timezone="America/New_York"
    )
    status = tracker.usage(call("2026-03-08T12:00:00")).quotas[0]
    start = datetime(2026, 3, 8, tzinfo=NY).timestamp()
    assert status.reset is not None and (status.reset - start) / 3600 == 23


def test_an_unknown_time_zone_is_a_400_naming_the_field(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError, match="timezone"):
        tracker.quotas.create(
            name="x", metric="total_events", limit_value=1, period="day", timezone="Mars/Olympus"
        )
    assert tracker.quotas.list().data == []


@pytest.mark.parametrize(
    "name",
    [
        "x" * 256,  # too long for a file name: OSError in 0.2
        "Europe",  # a folder of zone files, not a zone: IsADirectoryError in 0.2
        "America/" + "y" * 300,
        "/etc/localtime",
        "../zoneinfo/UTC",
        "UTC\x00",
        "",
    ],
    ids=["long", "folder", "long-in-folder", "absolute", "relative", "nul", "empty"],
)
def test_any_bad_time_zone_is_a_400_naming_the_field(tracker: Tracker, name: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"^400 Bad Request: timezone: .*IANA time zone"):
        tracker.quotas.create(
            name="x", metric="total_events", limit_value=1, period="day", timezone=name
        )
    quota = tracker.quotas.create(name="y", metric="total_events", limit_value=1, period="day")
    with pytest.raises(InvalidRequestError, match="timezone"):
        tracker.quotas.update(quota.id, timezone=name)
    assert [q.name for q in tracker.quotas.list().data] == ["y"]


def test_changing_the_zone_recounts_and_survives_a_reopen(
    clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as tracker:
        quota = tracker.quotas.create(
            name="q", metric="total_events", limit_value=1, period="day", timezone="Asia/Tokyo"
        )
        assert quota.model_dump(by_alias=True)["timezone"] == "Asia/Tokyo"
        tracker.usage(call("2026-11-25T23:30:00"))  # Tokyo: the 26th, 13:30
        tracker.quotas.update(quota.id, timezone="UTC")
    with Tracker(path, clock=clock) as reopened:
        (stored,) = reopened.quotas.list().data
        assert stored.timezone == "UTC"
        assert "timezone" not in stored.model_dump(by_alias=True)  # the default stays unwritten
        with pytest.raises(QuotaExceeded):  # the same UTC day as the first event
            reopened.usage(call("2026-11-26T00:30:00"))
