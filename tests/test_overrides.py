"""Per-value overrides of a limit's limitValue: tiers as data, not code."""

from __future__ import annotations

from pathlib import Path

import pytest

from limitry_local import InvalidRequestError, QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.testing import ManualClock

BIG = {"customer_id": "cust_big", "event_type": "e"}
SMALL = {"customer_id": "cust_small", "event_type": "e"}


def admitted(tracker: Tracker, event: dict[str, str], tries: int) -> int:
    count = 0
    for _ in range(tries):
        try:
            tracker.usage(event)
            count += 1
        except (QuotaExceeded, RateLimitExceeded):
            pass
    return count


def test_a_quota_override_wins_over_the_default(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="daily",
        metric="total_events",
        limit_value=2,
        period="day",
        per=["customer_id"],
        overrides={"customer_id": {"cust_big": 20}},
    )
    assert quota.overrides == {"customer_id": {"cust_big": 20}}
    assert admitted(tracker, BIG, 25) == 20
    assert admitted(tracker, SMALL, 5) == 2
    check = tracker.quotas.check({"customer_id": "cust_big"}).quotas[0]
    assert (check.limit, check.used, check.exceeded) == (20, 20, True)
    assert tracker.quotas.check({"customer_id": "cust_small"}).quotas[0].limit == 2


def test_a_rate_limit_override_sets_its_keys_capacity(tracker: Tracker) -> None:
    tracker.rate_limits.create(
        name="rpm",
        limit_value=2,
        window="hour",
        per=["customer_id"],
        overrides={"customer_id": {"cust_big": 5}},
    )
    first = tracker.usage(BIG)
    assert first.headers["X-RateLimit-Limit"] == "5"
    assert first.rate_limits[0].remaining == 4
    assert admitted(tracker, BIG, 10) == 4
    assert admitted(tracker, SMALL, 10) == 2


def test_the_first_overridden_dimension_the_event_has_decides(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=1,
        period="day",
        overrides={"model": {"cheap": 3}, "customer_id": {"cust_big": 10}},
    )
    cheap_big = {**BIG, "model": "cheap"}
    status = tracker.usage(cheap_big).quotas[0]
    assert status.limit == 3  # model is listed first
    assert tracker.usage(BIG).quotas[0].limit == 10


def test_bad_overrides_are_400s(tracker: Tracker) -> None:
    bad: list[dict[str, dict[str, object]]] = [
        {"customer_id": {"x": 0}},
        {"customer_id": {}},
        {"customer_id": {"x": True}},
        {"": {"x": 1}},
    ]
    for overrides in bad:
        with pytest.raises(InvalidRequestError, match="overrides"):
            tracker.quotas.create(
                name="q", metric="total_events", limit_value=1, period="day", overrides=overrides
            )
    assert tracker.quotas.list().data == []


def test_overrides_are_stored_and_can_be_removed(clock: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as tracker:
        limit = tracker.rate_limits.create(
            name="r", limit_value=1, window="hour", overrides={"customer_id": {"cust_big": 3}}
        )
        assert limit.model_dump(by_alias=True)["overrides"] == {"customer_id": {"cust_big": 3}}
    with Tracker(path, clock=clock) as reopened:
        (stored,) = reopened.rate_limits.list().data
        assert stored.overrides == {"customer_id": {"cust_big": 3}}
        reopened.rate_limits.update(stored.id, overrides={})
    with Tracker(path, clock=clock) as again:
        (plain,) = again.rate_limits.list().data
        assert plain.overrides == {}
        assert "overrides" not in plain.model_dump(by_alias=True)
        assert again.usage(BIG).rate_limits[0].limit == 1


def test_overrides_that_differ_only_in_order_are_a_change(tracker: Tracker) -> None:
    """Found in review: the first overridden dimension decides, but ensure() and
    apply() compared overrides as dicts (equal in any order), called a reordered
    limit "unchanged" and kept enforcing the old order (10 admitted where the
    new order means 2); update() kept the buckets of the old order."""
    old = {"customer_id": {"cust_big": 100}, "tier": {"free": 2}}
    new = {"tier": {"free": 2}, "customer_id": {"cust_big": 100}}
    shape = {"name": "rpm", "limit_value": 10, "window": "minute", "per": ["customer_id"]}
    first = tracker.rate_limits.ensure(**shape, overrides=old)
    (change,) = tracker.apply({"rate_limits": [{**shape, "overrides": new}]}, dry_run=True)
    assert change.action == "update" and "overrides" in change.diff
    limit = tracker.rate_limits.ensure(**shape, overrides=new)
    assert list(limit.overrides) == ["tier", "customer_id"]
    event = {"customer_id": "cust_big", "event_type": "x", "properties": {"tier": "free"}}
    admitted = 0
    for _ in range(10):
        try:
            tracker.usage(event)
            admitted += 1
        except RateLimitExceeded:
            pass
    assert admitted == 2
    # Back to the old order: a new limit, whose buckets start afresh (cust_big's
    # bucket, empty at 2, would otherwise refill slowly toward 100).
    tracker.rate_limits.update(first.id, overrides=old)
    tracker.usage(event)
    # The same order again is no change at all.
    (same,) = tracker.apply({"rate_limits": [{**shape, "overrides": old}]}, dry_run=True)
    assert same.action == "unchanged"


def test_the_same_limit_spelled_another_way_is_no_change(tracker: Tracker) -> None:
    """Found in review: any-of filter values in another order, or "1m" for "minute",
    planned an update, and a rate limit's update starts its buckets afresh."""
    shape = {"name": "rpm", "limit_value": 2, "per": ["customer_id"]}
    tracker.rate_limits.ensure(
        **shape, window="minute", dimension_filters={"model": ["gpt-4o", "gpt-4.1"]}
    )
    event = {"customer_id": "c", "event_type": "x", "model": "gpt-4o"}
    tracker.usage(event)
    tracker.usage(event)
    reordered = {**shape, "window": "minute", "dimension_filters": {"model": ["gpt-4.1", "gpt-4o"]}}
    (change,) = tracker.apply({"rate_limits": [reordered]}, dry_run=True)
    assert change.action == "unchanged"
    # Another spelling of the window is stored as given, and keeps the buckets.
    respelled = {**reordered, "window": "1m"}
    (change,) = tracker.apply({"rate_limits": [respelled]}, dry_run=True)
    assert (change.action, list(change.diff)) == ("update", ["window"])
    assert tracker.rate_limits.ensure(**respelled).window == "1m"
    with pytest.raises(RateLimitExceeded):  # the bucket kept: still empty
        tracker.usage(event)
    # A one-value list is the value itself.
    one = {**respelled, "dimension_filters": {"model": "gpt-4o"}}
    tracker.rate_limits.ensure(**{**one, "dimension_filters": {"model": ["gpt-4o"]}})
    (change,) = tracker.apply({"rate_limits": [one]}, dry_run=True)
    assert change.action == "unchanged"
