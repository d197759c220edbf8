"""Definitions safe to re-run: ``ensure``, ``Tracker.apply`` and the duplicate-name warning."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import warnings
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import (
    APIError,
    Client,
    ConflictError,
    DuplicateNameWarning,
    InvalidRequestError,
    LedgerError,
    LimitsConfig,
    QuotaCreate,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.testing import ManualClock
from tests.conftest import START

CONFIG = {
    "rate_limits": [{"name": "rpm", "limit_value": 60, "window": "minute"}],
    "quotas": [
        {"name": "daily tokens", "metric": "total_tokens", "limitValue": 1000, "period": "day"}
    ],
}


def test_ensure_creates_once_and_returns_the_same_limit(tmp_path: Path) -> None:
    ids = []
    for _ in range(2):
        with Tracker(tmp_path / "usage.db") as tracker, warnings.catch_warnings():
            warnings.simplefilter("error")
            rpm = tracker.rate_limits.ensure(name="rpm", limit_value=60, window="minute")
            quota = tracker.quotas.ensure(
                name="daily", metric="total_events", limit_value=5, period="day"
            )
            ids.append((rpm.id, quota.id))
            assert [limit.id for limit in tracker.rate_limits.list().data] == [rpm.id]
            assert [q.id for q in tracker.quotas.list().data] == [quota.id]
    assert ids[0] == ids[1]


def test_ensure_brings_a_changed_limit_to_the_code_and_keeps_its_id() -> None:
    with Tracker() as tracker:
        first = tracker.quotas.ensure(
            name="daily", metric="total_events", limit_value=5, period="day"
        )
        tracker.usage(customer_id="c", event_type="call")
        changed = tracker.quotas.ensure(
            {"name": "daily", "metric": "total_events", "limitValue": 9, "period": "day"}
        )
        assert (changed.id, changed.limit_value) == (first.id, 9)
        assert tracker.quotas.get(first.id).limit_value == 9
        # The counter stayed, as for update(): 1 used of 9.
        status = tracker.quotas.check({"customer_id": "c"}).quotas[0]
        assert (status.used, status.limit) == (1, 9)
        # A field left out means its default, as in a limits file.
        tracker.quotas.ensure(
            QuotaCreate(
                name="daily",
                metric="total_events",
                limit_value=9,
                period="day",
                per=["customer_id"],
            )
        )
        tracker.quotas.ensure(name="daily", metric="total_events", limit_value=9, period="day")
        assert tracker.quotas.get(first.id).per == []


def test_ensuring_an_unchanged_rate_limit_keeps_its_buckets() -> None:
    with Tracker() as tracker:
        tracker.rate_limits.ensure(name="two", limit_value=2, window="hour")
        tracker.usage(customer_id="c", event_type="call")
        tracker.rate_limits.ensure(name="two", limit_value=2, window="hour")
        tracker.usage(customer_id="c", event_type="call")
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="c", event_type="call")


def test_ensure_refuses_a_name_several_limits_share() -> None:
    with Tracker() as tracker, warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateNameWarning)
        a = tracker.rate_limits.create(name="rpm", limit_value=60, window="minute")
        b = tracker.rate_limits.create(name="rpm", limit_value=10, window="minute")
        with pytest.raises(ConflictError) as caught:
            tracker.rate_limits.ensure(name="rpm", limit_value=60, window="minute")
    assert isinstance(caught.value, APIError)
    assert caught.value.status_code == 409
    assert f"2 rate limits named 'rpm' ({a.id}, {b.id})" in caught.value.message
    assert "delete or rename all but one" in caught.value.message


def test_create_under_a_taken_name_warns_and_names_the_remedy() -> None:
    with Tracker() as tracker:
        first = tracker.quotas.create(
            name="daily", metric="total_events", limit_value=1, period="day"
        )
        with pytest.warns(DuplicateNameWarning) as caught:
            second = tracker.quotas.create(
                name="daily", metric="total_events", limit_value=1, period="day"
            )
        message = str(caught[0].message)
        assert first.id in message
        assert "ensure(" in message
        assert caught[0].filename == __file__  # points at the caller's line
        # Still created, as on the hosted API: both are enforced.
        assert {q.id for q in tracker.quotas.list().data} == {first.id, second.id}
        # A rate limit may share a quota's name: different kinds never warn.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tracker.rate_limits.create(name="daily", limit_value=1, window="minute")


def test_threads_ensuring_one_name_create_it_once() -> None:
    with Tracker() as tracker:
        barrier = threading.Barrier(8)
        got: list[str] = []

        def run() -> None:
            barrier.wait()
            got.append(tracker.rate_limits.ensure(name="rpm", limit_value=5, window="second").id)

        threads = [threading.Thread(target=run) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(got)) == 1
        assert [limit.id for limit in tracker.rate_limits.list().data] == got[:1]


def test_apply_creates_then_leaves_unchanged(tmp_path: Path) -> None:
    with Tracker(tmp_path / "usage.db") as tracker:
        first = tracker.apply(CONFIG)
        assert [(c.action, c.kind, c.name) for c in first] == [
            ("create", "rate_limit", "rpm"),
            ("create", "quota", "daily tokens"),
        ]
        assert all(c.id is not None for c in first)
    with Tracker(tmp_path / "usage.db") as tracker:
        again = tracker.apply(CONFIG)
        assert [(c.action, c.id) for c in again] == [("unchanged", c.id) for c in first]


def test_apply_updates_keeps_or_prunes_and_dry_runs() -> None:
    with Tracker() as tracker:
        tracker.apply(CONFIG)
        extra = tracker.quotas.create(
            name="extra", metric="total_events", limit_value=1, period="day"
        )
        smaller = {
            "rate_limits": [{"name": "rpm", "limit_value": 30, "window": "minute"}],
            "quotas": CONFIG["quotas"],
        }
        planned = tracker.apply(smaller, dry_run=True)
        assert [(c.action, c.name) for c in planned] == [
            ("update", "rpm"),
            ("unchanged", "daily tokens"),
            ("keep", "extra"),
        ]
        assert planned[0].diff == {"limit_value": (60, 30)}
        assert tracker.rate_limits.list().data[0].limit_value == 60  # dry run: nothing made
        tracker.apply(smaller, prune=True)
        assert tracker.rate_limits.list().data[0].limit_value == 30
        assert extra.id not in {q.id for q in tracker.quotas.list().data}


def test_apply_takes_a_limits_config() -> None:
    with Tracker() as tracker:
        config = LimitsConfig(
            quotas=[QuotaCreate(name="q", metric="total_events", limit_value=3, period="hour")]
        )
        assert [c.action for c in tracker.apply(config)] == ["create"]
        assert [c.action for c in tracker.apply(config)] == ["unchanged"]


def test_a_bad_config_is_a_400_naming_the_entry_and_field() -> None:
    with Tracker() as tracker:
        with pytest.raises(InvalidRequestError) as caught:
            tracker.apply({"rate_limits": [{"name": "rpm", "limit_value": -1, "window": "x"}]})
        assert "rate_limits[0] ('rpm').limitValue" in caught.value.message
        with pytest.raises(InvalidRequestError, match="'limits': unknown section"):
            tracker.apply({"limits": []})
        with pytest.raises(InvalidRequestError, match="both named 'q'"):
            tracker.apply({"quotas": [CONFIG["quotas"][0] | {"name": "q"}] * 2})
        assert tracker.rate_limits.list().data == []


limit_st = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c"]),
        "limit_value": st.integers(1, 5),
        "window": st.sampled_from(["second", "minute", "10s"]),
        "per": st.sampled_from([[], ["customer_id"]]),
    }
)


@settings(max_examples=40, deadline=None)
@given(st.lists(limit_st, max_size=12))
def test_ensure_leaves_one_limit_per_name_as_last_declared(calls: list[dict[str, object]]) -> None:
    """Whatever the order of calls, the ledger ends as a dict of name -> last declaration."""
    expected: dict[str, dict[str, object]] = {}
    ids: dict[str, str] = {}
    with Tracker() as tracker:
        for call in calls:
            limit = tracker.rate_limits.ensure(**call)
            name = str(call["name"])
            assert ids.setdefault(name, limit.id) == limit.id  # an ensured name keeps its id
            expected[name] = call
        got = {
            limit.name: {
                "name": limit.name,
                "limit_value": limit.limit_value,
                "window": limit.window,
                "per": limit.per,
            }
            for limit in tracker.rate_limits.list().data
        }
        assert len(tracker.rate_limits.list().data) == len(expected)
    assert got == expected


def test_the_async_client_ensures_too() -> None:
    with Tracker() as tracker:
        asyncio.run(_ensure_through_the_client(tracker))


async def _ensure_through_the_client(tracker: Tracker) -> None:
    client = Client(tracker)
    first = await client.quotas.ensure(name="q", metric="total_events", limit_value=1, period="day")
    again = await client.quotas.ensure(name="q", metric="total_events", limit_value=1, period="day")
    rpm = await client.rate_limits.ensure(name="rpm", limit_value=1, window="minute")
    assert first.id == again.id
    assert [q.id for q in tracker.quotas.list().data] == [first.id]
    assert [r.id for r in tracker.rate_limits.list().data] == [rpm.id]


def test_an_apply_that_rolls_back_keeps_the_buckets_of_what_it_deleted(tmp_path: Path) -> None:
    """Found in review: an apply that pruned a rate limit and then failed rolled back
    in the ledger, but had told the bucket store the limit's buckets were gone; the
    next sweep forgot a customer's spent tokens mid-minute (3 more of 3 admitted)."""
    path = tmp_path / "usage.db"
    with Tracker(path, clock=ManualClock(START)) as tracker:
        tracker.apply(
            {
                "rate_limits": [
                    {"name": "rpm", "limit_value": 3, "window": "minute", "per": ["customer_id"]}
                ]
            }
        )
        for _ in range(3):
            tracker.usage(customer_id="c", event_type="x")
        with closing(sqlite3.connect(path)) as conn:  # the quota's recount will fail on it
            conn.execute("UPDATE events SET properties = '{not json' WHERE seq = 1")
            conn.commit()
        quota = {"name": "q", "metric": "total_tokens", "limit_value": 10, "period": "day"}
        with pytest.raises(LedgerError, match="cannot be read"):
            tracker.apply({"rate_limits": [], "quotas": [quota]}, prune=True)
        assert [limit.name for limit in tracker.rate_limits.list().data] == ["rpm"]
        for n in range(1500):  # ordinary traffic: enough writes for a sweep
            tracker.usage(customer_id=f"other{n % 500}", event_type="x")
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="c", event_type="x")
