"""Denial counters: ``tracker.stats()`` per limit, denied and would-have-denied."""

from __future__ import annotations

from contextlib import suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import LimitExceeded, QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.testing import ManualClock
from tests.conftest import START

EVENT = {"customer_id": "acme", "event_type": "model_call"}


def test_each_limit_counts_the_calls_it_denied() -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        rpm = tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
        tracker.quotas.create(name="daily", metric="total_events", limit_value=3, period="day")
        assert tracker.stats().limits == []
        tracker.usage(EVENT)
        tracker.usage(EVENT)
        for _ in range(3):
            with pytest.raises(RateLimitExceeded):
                tracker.usage(EVENT)
        clock.advance(60)
        tracker.usage(EVENT)  # the third event: the quota is now used up
        clock.advance(60)
        with pytest.raises(QuotaExceeded):
            tracker.usage(EVENT)
        with pytest.raises(QuotaExceeded):
            tracker.reserve(EVENT)
        stats = tracker.stats()
        rate = stats.get("rpm")
        quota = stats.get("daily")
        assert rate is not None and quota is not None
        assert (rate.kind, rate.id, rate.mode, rate.denied, rate.would_deny) == (
            "rate_limit",
            rpm.id,
            "enforce",
            3,
            0,
        )
        assert (quota.kind, quota.denied, quota.would_deny) == ("quota", 2, 0)
        assert stats.denied == 5
        assert [s.name for s in stats.limits] == ["rpm", "daily"]  # most denials first
        assert stats.get(rpm.id) == rate


def test_checks_count_nothing() -> None:
    with Tracker() as tracker:
        tracker.quotas.create(name="none", metric="total_events", limit_value=1, period="day")
        tracker.usage(EVENT)
        assert not tracker.quotas.check(EVENT).allowed
        assert tracker.stats().limits == []


@pytest.mark.parametrize("mode", ["soft", "shadow"])
def test_soft_and_shadow_limits_count_what_they_would_have_denied(mode: str) -> None:
    with Tracker(clock=ManualClock(START)) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=1, window="minute", mode=mode)
        tracker.quotas.create(
            name="daily", metric="total_events", limit_value=2, period="day", mode=mode
        )
        for _ in range(4):
            tracker.usage(EVENT)  # never denied
        counts = {s.name: (s.mode, s.denied, s.would_deny) for s in tracker.stats().limits}
        assert counts == {"rpm": (mode, 0, 3), "daily": (mode, 0, 2)}


def test_a_waiting_call_counts_once_when_it_gives_up_and_not_when_admitted() -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=1, window="minute")
        tracker.usage(EVENT)
        tracker.usage(EVENT, wait=60)  # waited, admitted: no denial
        assert tracker.stats().limits == []
        with pytest.raises(RateLimitExceeded):
            tracker.usage(EVENT, wait=10)
        rate = tracker.stats().get("rpm")
        assert rate is not None and rate.denied == 1


def test_counters_live_in_the_process_not_the_ledger(tmp_path: object) -> None:
    path = f"{tmp_path}/usage.db"
    with Tracker(path, clock=ManualClock(START)) as tracker:
        tracker.quotas.create(name="one", metric="total_events", limit_value=1, period="day")
        tracker.usage(EVENT)
        with pytest.raises(QuotaExceeded):
            tracker.usage(EVENT)
        assert tracker.stats().denied == 1
    with Tracker(path, clock=ManualClock(START)) as reopened:
        assert reopened.stats().limits == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["a", "b"])), max_size=40))
def test_the_denied_count_equals_the_429s_raised(
    steps: list[tuple[int, str]],
) -> None:
    """With one limit per customer, each 429 counts once, on the limit that raised it."""
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        tracker.rate_limits.create(
            name="per customer", limit_value=2, window="minute", per=["customer_id"]
        )
        raised = 0
        for gap, customer in steps:
            clock.advance(gap * 10)
            with suppress(LimitExceeded):
                tracker.usage(customer_id=customer, event_type="call")
                continue
            raised += 1
        stats = tracker.stats()
        assert stats.denied == raised
        assert tracker.ledger.event_count() + raised == len(steps)
