"""Edge cases of Tracker found in review: clocks, ties, exact cents, eviction, locks."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from limitry_local import BucketStoreFull, LedgerError, RateLimitExceeded, Tracker
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.testing import ManualClock

EVENT = {"customer_id": "c", "event_type": "e"}


def test_with_the_default_clock_reset_is_in_unix_seconds() -> None:
    # Buckets measure durations on time.monotonic; headers must still speak unix time.
    with Tracker() as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=60, window="minute")
        before = time.time()
        response = tracker.usage(EVENT)
        after = time.time()
    reset = int(response.headers["X-RateLimit-Reset"])
    assert before <= reset <= after + 2


def test_header_ties_go_to_the_limit_created_first(tracker: Tracker) -> None:
    first = tracker.rate_limits.create(name="per minute", limit_value=5, window="minute")
    tracker.rate_limits.create(name="per hour", limit_value=5, window="hour")
    response = tracker.usage(EVENT)
    assert [s.remaining for s in response.rate_limits] == [4, 4]
    assert response.headers["X-RateLimit-Reset"] == str(response.rate_limits[0].reset)
    assert response.rate_limits[0].id == first.id


def test_customer_usage_sums_fractional_cents_exactly(tracker: Tracker) -> None:
    for _ in range(30):
        tracker.usage(**EVENT, cost_cents=0.1)
    assert tracker.customers.get_usage("c").total_cost_cents == 3


def test_threads_racing_one_idempotency_key_record_one_event(tracker: Tracker) -> None:
    tracker.quotas.create(name="q", metric="total_events", limit_value=100, period="day")
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def send() -> None:
        barrier.wait()
        for _ in range(50):
            ids.append(tracker.usage(**EVENT, idempotency_key="same").id)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 400
    assert len(set(ids)) == 1
    assert tracker.ledger.event_count() == 1
    assert tracker.quotas.check({"customer_id": "c"}).quotas[0].used == 1


def test_buckets_forgotten_once_full_change_no_answer(clock: ManualClock) -> None:
    with Tracker(clock=clock, max_buckets=2) as tracker:
        tracker.rate_limits.create(name="r", limit_value=2, window="10s", per=["customer_id"])
        for customer in ("a", "b"):
            tracker.usage(customer_id=customer, event_type="e")
        clock.advance(10)  # both refilled: forgetting them is harmless
        for customer in ("c", "a"):
            assert tracker.usage(customer_id=customer, event_type="e").rate_limits[0].remaining == 1
        assert tracker.premature_bucket_evictions == 0


def test_a_new_key_at_the_size_bound_is_refused_and_nothing_recorded(clock: ManualClock) -> None:
    with Tracker(clock=clock, max_buckets=1) as tracker:
        tracker.rate_limits.create(name="r", limit_value=1, window="hour", per=["customer_id"])
        tracker.usage(customer_id="a", event_type="e")
        with pytest.raises(BucketStoreFull, match=r"max_buckets.*\('b'\)") as caught:
            tracker.usage(customer_id="b", event_type="e")
        assert caught.value.status == 503
        assert caught.value.retry_after == 3600
        assert (tracker.bucket_refusals, tracker.bucket_evictions) == (1, 0)
        assert tracker.premature_bucket_evictions == 0
        assert tracker.ledger.event_count() == 1
        # a's empty bucket was kept: a is still denied.
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="a", event_type="e")
        clock.advance(3600)  # a is full again: it makes room for b
        assert tracker.usage(customer_id="b", event_type="e").allowed is True
        assert (tracker.bucket_refusals, tracker.bucket_evictions) == (1, 1)


@pytest.mark.parametrize("via_gate", [False, True])
def test_a_soft_limit_at_the_size_bound_admits_and_is_not_charged(
    clock: ManualClock, via_gate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A soft limit never denies: a new key that finds no room is admitted, uncharged, logged."""
    with Tracker(clock=clock, max_buckets=1) as tracker:
        limit = tracker.rate_limits.create(
            name="soft", limit_value=1, window="hour", per=["customer_id"], mode="soft"
        )
        gate = tracker.rate_limits.gate(limit.id)

        def send(customer: str) -> bool:
            if via_gate:
                return gate.hit(customer)
            return tracker.usage(customer_id=customer, event_type="e").allowed

        assert send("a") is True
        with caplog.at_level("WARNING", logger="limitry_local"):
            assert send("b") is True
        assert "max_buckets" in caplog.text
        assert tracker.bucket_refusals == 1
        assert tracker.ledger.event_count() == (0 if via_gate else 2)


def test_a_ledger_locked_past_the_timeout_is_a_ledger_error(
    clock: ManualClock, ledger_path: Path
) -> None:
    with Tracker(ledger_path, clock=clock, timeout=0.05) as tracker:
        tracker.rate_limits.create(name="r", limit_value=5, window="minute")
        other = sqlite3.connect(ledger_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LedgerError, match=r"usage\.db.*locked"):
                tracker.usage(EVENT)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Nothing was charged by the failed call: the next one sees a full bucket.
        assert tracker.usage(EVENT).rate_limits[0].remaining == 4
        assert tracker.ledger.event_count() == 1


def test_a_ledger_given_to_the_tracker_is_used_and_closed(clock: ManualClock) -> None:
    ledger = MemoryLedger()
    with Tracker(clock=clock, ledger=ledger) as tracker:
        tracker.usage(customer_id="c", event_type="e")
        assert tracker.ledger is ledger
        assert ledger.event_count() == 1
    with pytest.raises(LedgerError, match="closed"):
        ledger.event_count()


def test_a_path_and_a_ledger_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path or a ledger"):
        Tracker(tmp_path / "x.db", ledger=MemoryLedger())
