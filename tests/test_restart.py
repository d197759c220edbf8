"""A file ledger outlives its Tracker: a new Tracker on the same path continues exactly.

Limits, events, quota usage and idempotency keys are in the ledger; token
buckets are in memory and start full in a new Tracker (docs/semantics.md).
A closed Tracker refuses further calls with ``LimitryError``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from limitry_local import (
    Event,
    LimitryError,
    NotFoundError,
    Quota,
    QuotaExceeded,
    RateLimit,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.testing import ManualClock
from tests.pages import walk


def all_events(tracker: Tracker, **filters: Any) -> list[Event]:
    return walk(tracker.events.list, limit=3, **filters)


def quotas_of(tracker: Tracker) -> list[Quota]:
    return tracker.quotas.list(limit=100).data


def rate_limits_of(tracker: Tracker) -> list[RateLimit]:
    return tracker.rate_limits.list(limit=100).data


def test_limits_survive_a_restart(ledger_path: Path, clock: ManualClock) -> None:
    with Tracker(ledger_path, clock=clock) as first:
        tokens = first.quotas.create(
            name="daily gpt-4 tokens",
            metric="total_tokens",
            limit_value=100_000,
            period="day",
            dimension_filters={"model": ["gpt-4", "gpt-4o"], "team": "red"},
            per=["customer_id"],
        )
        cents = first.quotas.create(
            name="monthly spend", metric="total_cost_cents", limit_value=5000, period="month"
        )
        gone = first.quotas.create(
            name="to delete", metric="total_events", limit_value=1, period="week"
        )
        rpm = first.rate_limits.create(
            name="tokens per 30s",
            limit_value=5000,
            window="30s",
            per=["customer_id", "model"],
            metric="total_tokens",
        )
        hourly = first.rate_limits.create(name="hourly", limit_value=10, window="hour")
        clock.advance(90)
        cents = first.quotas.update(cents.id, name="monthly spend (raised)", limit_value=9000)
        hourly = first.rate_limits.update(hourly.id, enabled=False)
        first.quotas.delete(gone.id)
        quotas_before = quotas_of(first)
        rate_limits_before = rate_limits_of(first)
        assert [q.id for q in quotas_before] == [tokens.id, cents.id]

    clock.advance(3600)
    with Tracker(ledger_path, clock=clock) as second:
        assert quotas_of(second) == quotas_before
        assert rate_limits_of(second) == rate_limits_before
        assert second.quotas.get(tokens.id) == tokens
        assert second.quotas.get(cents.id) == cents
        assert second.rate_limits.get(rpm.id) == rpm
        reloaded = second.rate_limits.get(hourly.id)
        assert reloaded == hourly
        assert (reloaded.enabled, reloaded.window) == (False, "hour")
        assert second.rate_limits.get(rpm.id).window == "30s"
        with pytest.raises(NotFoundError):
            second.quotas.get(gone.id)
        # The wire form is the same too (camelCase, our additions only when set).
        assert [q.model_dump(mode="json") for q in quotas_of(second)] == [
            q.model_dump(mode="json") for q in quotas_before
        ]


def test_quota_usage_continues_from_the_same_counters(
    ledger_path: Path, clock: ManualClock
) -> None:
    def call(tracker: Tracker, customer: str, tokens: int) -> Any:
        return tracker.usage(customer_id=customer, event_type="call", total_tokens=tokens)

    with Tracker(ledger_path, clock=clock) as first:
        calls = first.quotas.create(
            name="calls",
            metric="total_events",
            limit_value=5,
            period="day",
            per=["customer_id"],
        )
        tokens = first.quotas.create(
            name="tokens", metric="total_tokens", limit_value=100, period="day"
        )
        for _ in range(3):
            call(first, "cust_a", 20)
        call(first, "cust_b", 10)
        counters_before = first.ledger.counters()

    clock.advance(60)
    with Tracker(ledger_path, clock=clock) as second:
        assert second.ledger.counters() == counters_before
        check = {s.id: s for s in second.quotas.check({"customer_id": "cust_a"}).quotas}
        assert (check[calls.id].used, check[calls.id].remaining) == (3, 2)
        assert (check[tokens.id].used, check[tokens.id].remaining) == (70, 30)

        # Exactly the 30 tokens left fit, then the 5th call of cust_a, then nothing more.
        with pytest.raises(QuotaExceeded) as too_many_tokens:
            call(second, "cust_a", 31)
        assert too_many_tokens.value.headers["X-Quota-Metric"] == "total_tokens"
        response = call(second, "cust_a", 30)
        used = {s.id: s.used for s in response.quotas}
        assert used == {calls.id: 4, tokens.id: 100}
        call(second, "cust_a", 0)
        with pytest.raises(QuotaExceeded) as too_many_calls:
            call(second, "cust_a", 0)
        assert too_many_calls.value.headers["X-Quota-Metric"] == "total_events"
        with pytest.raises(QuotaExceeded):
            call(second, "cust_b", 1)
        call(second, "cust_b", 0)
        assert second.ledger.event_count() == 7

    # The next day starts afresh, on a third Tracker.
    clock.advance(86_400)
    with Tracker(ledger_path, clock=clock) as third:
        check = {s.id: s for s in third.quotas.check({"customer_id": "cust_a"}).quotas}
        assert (check[calls.id].used, check[tokens.id].used) == (0, 0)
        assert call(third, "cust_a", 100).quotas


def test_a_quota_created_after_a_restart_counts_the_earlier_events(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock) as first:
        for _ in range(4):
            first.usage(customer_id="cust_a", event_type="call", model="gpt-4")
        first.events.ingest(customer_id="cust_a", event_type="call", model="gpt-4")

    with Tracker(ledger_path, clock=clock) as second:
        quota = second.quotas.create(
            name="gpt-4 calls",
            metric="total_events",
            limit_value=6,
            period="day",
            dimension_filters={"model": "gpt-4"},
        )
        second.usage(customer_id="cust_a", event_type="call", model="gpt-4")
        with pytest.raises(QuotaExceeded):
            second.usage(customer_id="cust_a", event_type="call", model="gpt-4")
        assert list(second.ledger.counters().values()) == [6]
        assert second.quotas.get(quota.id).limit_value == 6


def test_events_and_customer_usage_are_the_same_after_a_restart(
    ledger_path: Path, clock: ManualClock
) -> None:
    earlier = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)
    with Tracker(ledger_path, clock=clock) as first:
        first.quotas.create(name="q", metric="total_events", limit_value=1000, period="month")
        first.usage(
            customer_id="cust_a",
            event_type="model_call",
            model="gpt-4",
            provider="openai",
            input_tokens=120,
            output_tokens=30,
            latency_ms=840,
            cost_cents=2.5,
            properties={"team": "red", "attempt": 2, "tags": ["a", "b"]},
        )
        first.events.ingest(
            customer_id="cust_a", event_type="embedding", total_tokens=7, timestamp=earlier
        )
        first.events.batch(
            [
                {"customerId": "cust_b", "eventType": "tool_call", "costCents": 0.1},
                {"customerId": "cust_a", "eventType": "model_call", "model": "claude-3-opus"},
                {"customer_id": "cust_b", "event_type": "model_call", "input_tokens": 5},
            ]
        )
        clock.advance(1.25)
        first.usage(customer_id="cust_c", event_type="model_call", idempotency_key="k1")
        events_before = all_events(first)
        filtered_before = all_events(first, customer_id="cust_a", model="gpt-4")
        usage_before = {
            (c, str(s), str(e)): first.customers.get_usage(c, s, e).model_dump()
            for c in ("cust_a", "cust_b", "cust_c")
            for s, e in ((None, None), (date(2026, 11, 21), None), (None, date(2026, 11, 20)))
        }
        assert len(events_before) == 6

    with Tracker(ledger_path, clock=clock) as second:
        assert all_events(second) == events_before
        assert all_events(second, customer_id="cust_a", model="gpt-4") == filtered_before
        assert second.ledger.event_count() == 6
        usage_after = {
            (c, str(s), str(e)): second.customers.get_usage(c, s, e).model_dump()
            for c in ("cust_a", "cust_b", "cust_c")
            for s, e in ((None, None), (date(2026, 11, 21), None), (None, date(2026, 11, 20)))
        }
        assert usage_after == usage_before
        totals = second.customers.get_usage("cust_a")
        assert (totals.total_events, totals.total_tokens, totals.total_cost_cents) == (3, 157, 2.5)


def test_an_idempotency_key_is_remembered_across_a_restart(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock) as first:
        first.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
        response = first.usage(customer_id="cust_a", event_type="call", idempotency_key="once")
        counters = first.ledger.counters()

    with Tracker(ledger_path, clock=clock) as second:
        # The quota is full, yet the repeat answers the first response and records nothing.
        repeat = second.usage(customer_id="cust_a", event_type="call", idempotency_key="once")
        assert repeat.model_dump() == response.model_dump()
        assert repeat.headers == response.headers
        assert second.ledger.event_count() == 1
        assert second.ledger.counters() == counters
        with pytest.raises(QuotaExceeded):
            second.usage(customer_id="cust_a", event_type="call", idempotency_key="twice")


def test_rate_limit_buckets_start_full_in_a_new_tracker(
    ledger_path: Path, clock: ManualClock
) -> None:
    def burst(tracker: Tracker) -> int:
        admitted = 0
        for _ in range(5):
            try:
                tracker.usage(customer_id="cust_a", event_type="call")
                admitted += 1
            except RateLimitExceeded:
                pass
        return admitted

    with Tracker(ledger_path, clock=clock) as first:
        first.rate_limits.create(name="rph", limit_value=3, window="hour", per=["customer_id"])
        assert burst(first) == 3

    with Tracker(ledger_path, clock=clock) as second:
        assert second.rate_limits.check({"customer_id": "cust_a"}).rate_limits[0].remaining == 3
        assert burst(second) == 3
        assert second.ledger.event_count() == 6


# --- closing ------------------------------------------------------------------------

AFTER_CLOSE: dict[str, Callable[[Tracker, str], object]] = {
    "usage": lambda t, q: t.usage(customer_id="c", event_type="call"),
    "events.ingest": lambda t, q: t.events.ingest(customer_id="c", event_type="call"),
    "events.batch": lambda t, q: t.events.batch([{"customerId": "c", "eventType": "call"}]),
    "events.list": lambda t, q: t.events.list(),
    "customers.get_usage": lambda t, q: t.customers.get_usage("c"),
    "quotas.create": lambda t, q: t.quotas.create(
        name="q2", metric="total_events", limit_value=1, period="day"
    ),
    "quotas.update": lambda t, q: t.quotas.update(q, limit_value=2),
    "quotas.delete": lambda t, q: t.quotas.delete(q),
    "quotas.check": lambda t, q: t.quotas.check({"customer_id": "c"}),
    "rate_limits.create": lambda t, q: t.rate_limits.create(
        name="r", limit_value=1, window="second"
    ),
    "rate_limits.check": lambda t, q: t.rate_limits.check({"customer_id": "c"}),
}

READS_AFTER_CLOSE: dict[str, Callable[[Tracker, Quota, RateLimit], object]] = {
    "quotas.get": lambda t, q, r: t.quotas.get(q.id),
    "quotas.list": lambda t, q, r: t.quotas.list(),
    "rate_limits.get": lambda t, q, r: t.rate_limits.get(r.id),
    "rate_limits.list": lambda t, q, r: t.rate_limits.list(),
}


@pytest.mark.parametrize("on_file", [True, False], ids=["file", "memory"])
@pytest.mark.parametrize("name", sorted(AFTER_CLOSE))
def test_a_tracker_used_as_a_context_manager_is_closed_after_the_block(
    name: str, on_file: bool, ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path if on_file else None, clock=clock) as tracker:
        quota = tracker.quotas.create(name="q", metric="total_events", limit_value=10, period="day")
        tracker.usage(customer_id="c", event_type="call")
    with pytest.raises(LimitryError):
        AFTER_CLOSE[name](tracker, quota.id)
    if on_file:
        # The refused call wrote nothing: the ledger reopens as the block left it.
        with Tracker(ledger_path, clock=clock) as reopened:
            assert reopened.ledger.event_count() == 1
            assert [q.id for q in quotas_of(reopened)] == [quota.id]
            assert reopened.quotas.get(quota.id).limit_value == 10
            assert rate_limits_of(reopened) == []


@pytest.mark.parametrize("name", sorted(READS_AFTER_CLOSE))
def test_limit_reads_on_a_closed_tracker_raise_too(
    name: str, ledger_path: Path, clock: ManualClock
) -> None:
    """Like every other call: a closed Tracker answers nothing, not even from memory."""
    with Tracker(ledger_path, clock=clock) as tracker:
        quota = tracker.quotas.create(name="q", metric="total_events", limit_value=10, period="day")
        rate_limit = tracker.rate_limits.create(name="r", limit_value=1, window="second")
    with pytest.raises(LimitryError):
        READS_AFTER_CLOSE[name](tracker, quota, rate_limit)


def test_the_block_closes_the_tracker_when_it_raises(ledger_path: Path, clock: ManualClock) -> None:
    with pytest.raises(RuntimeError), Tracker(ledger_path, clock=clock) as tracker:
        tracker.usage(customer_id="c", event_type="call")
        raise RuntimeError("boom")
    with pytest.raises(LimitryError, match="closed"):
        tracker.usage(customer_id="c", event_type="call")
    tracker.close()  # closing twice is harmless
    with Tracker(ledger_path, clock=clock) as reopened:
        assert reopened.ledger.event_count() == 1
