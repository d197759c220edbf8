"""Soft and shadow limits: rolling a new limit out without denying anyone."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import InvalidRequestError, QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.testing import ManualClock
from tests.conftest import START

CALL = {"customer_id": "c", "event_type": "e"}


@settings(max_examples=40)
@given(amounts=st.lists(st.integers(0, 50), min_size=1, max_size=30))
def test_soft_limits_never_deny_and_say_when_they_are_exceeded(amounts: list[int]) -> None:
    with Tracker(clock=ManualClock(START)) as tracker:
        tracker.rate_limits.create(
            name="r", limit_value=3, window="hour", metric="total_tokens", mode="soft"
        )
        tracker.quotas.create(
            name="q", metric="total_tokens", limit_value=40, period="day", mode="soft"
        )
        used = 0
        for amount in amounts:
            answer = tracker.usage({**CALL, "total_tokens": amount})  # never a 429
            used += amount
            (quota,) = answer.quotas
            assert (quota.used, quota.exceeded) == (used, used > 40)
            (rate,) = answer.rate_limits
            assert rate.remaining >= 0
        assert tracker.ledger.event_count() == len(amounts)
        assert sum(tracker.ledger.counters().values()) == used


def test_a_soft_rate_limit_drains_its_bucket_and_reports_it(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=2, window="hour", mode="soft")
    remaining = [tracker.usage(CALL).rate_limits[0] for _ in range(4)]
    assert [(s.remaining, s.exceeded) for s in remaining] == [
        (1, False),
        (0, False),
        (0, True),
        (0, True),
    ]
    check = tracker.rate_limits.check({"customer_id": "c"})
    assert check.allowed is True  # a soft limit never makes a call fail
    assert check.rate_limits[0].exceeded is True


def test_shadow_limits_never_show_and_are_logged(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    tracker.rate_limits.create(name="new rpm", limit_value=1, window="hour", mode="shadow")
    tracker.quotas.create(
        name="new daily", metric="total_events", limit_value=1, period="day", mode="shadow"
    )
    with caplog.at_level(logging.INFO, logger="limitry_local.tracker"):
        for _ in range(3):
            answer = tracker.usage(CALL)
            assert (answer.rate_limits, answer.quotas, answer.headers) == ([], [], {})
    assert "shadow rate limit 'new rpm' would have denied" in caplog.text
    assert "shadow quota 'new daily' would have denied" in caplog.text
    assert tracker.rate_limits.check({"customer_id": "c"}).rate_limits == []
    assert tracker.quotas.check({"customer_id": "c"}).quotas == []
    assert sum(tracker.ledger.counters().values()) == 3  # counted all the same


def test_enforced_limits_still_deny_beside_soft_and_shadow_ones(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="soft", limit_value=1, window="hour", mode="soft")
    tracker.rate_limits.create(name="shadow", limit_value=1, window="hour", mode="shadow")
    tracker.rate_limits.create(name="hard", limit_value=2, window="hour")
    tracker.quotas.create(name="q", metric="total_events", limit_value=3, period="day")
    tracker.usage(CALL)
    tracker.usage(CALL)
    with pytest.raises(RateLimitExceeded) as denied:
        tracker.usage(CALL)
    assert [s.name for s in denied.value.body.rate_limits] == ["soft", "hard"]
    assert denied.value.headers["X-RateLimit-Limit"] == "2"
    assert "hard" in str(denied.value)


def test_a_soft_limits_tokens_go_back_with_a_released_reservation(tracker: Tracker) -> None:
    tracker.rate_limits.create(
        name="tpm", limit_value=100, window="hour", metric="total_tokens", mode="soft"
    )
    tracker.reserve(CALL, estimate=80).release()
    assert tracker.rate_limits.check({"customer_id": "c"}).rate_limits[0].remaining == 100


def test_modes_are_stored_updated_and_validated(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="q", metric="total_events", limit_value=1, period="day", mode="shadow"
    )
    assert quota.model_dump(by_alias=True)["mode"] == "shadow"
    tracker.usage(CALL)
    tracker.usage(CALL)  # shadow: admitted
    enforced = tracker.quotas.update(quota.id, mode="enforce")
    assert "mode" not in enforced.model_dump(by_alias=True)  # the default stays unwritten
    with pytest.raises(QuotaExceeded):
        tracker.usage(CALL)
    with pytest.raises(InvalidRequestError, match="mode"):
        tracker.rate_limits.create(name="r", limit_value=1, window="hour", mode="loud")
