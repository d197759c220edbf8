"""Admission is exact under threads: 8 threads racing for one limit get exactly what it allows.

Every test runs on the in-memory ledger and on a file ledger.  The threads
start together on a barrier; nothing sleeps (the clock is a frozen
ManualClock, so no bucket refills and no period ends mid-test).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from limitry_local import (
    Event,
    LimitExceeded,
    QuotaExceeded,
    RateLimitExceeded,
    Tracker,
    TrackPostResponse,
)
from limitry_local.periods import period_bounds
from limitry_local.testing import ManualClock
from tests.pages import walk

THREADS = 8


@pytest.fixture
def shared(tracker: Tracker) -> Tracker:
    """The tracker the threads share: in memory, then on a ledger file (conftest's params)."""
    return tracker


@dataclass
class Outcome:
    admitted: list[tuple[dict[str, Any], TrackPostResponse]] = field(default_factory=list)
    denied: list[tuple[dict[str, Any], LimitExceeded]] = field(default_factory=list)
    ingested: list[dict[str, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


Work = Callable[[Tracker, int, int, Outcome], None]


def track(event: dict[str, Any]) -> Work:
    """A worker step that sends ``event`` to usage() and files the answer."""

    def step(tracker: Tracker, thread: int, i: int, out: Outcome) -> None:
        try:
            out.admitted.append((event, tracker.usage(**event)))
        except LimitExceeded as exc:
            out.denied.append((event, exc))

    return step


def race(tracker: Tracker, calls: int, work: Callable[[int, int], Work]) -> Outcome:
    """Run ``calls`` steps on each of THREADS threads at once; merge what they saw."""
    barrier = threading.Barrier(THREADS)
    outcomes = [Outcome() for _ in range(THREADS)]

    def run(thread: int) -> None:
        out = outcomes[thread]
        try:
            barrier.wait()
            for i in range(calls):
                work(thread, i)(tracker, thread, i, out)
        except BaseException as exc:  # surfaced by the assertion below
            out.errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = Outcome()
    for out in outcomes:
        merged.admitted += out.admitted
        merged.denied += out.denied
        merged.ingested += out.ingested
        merged.errors += out.errors
    assert merged.errors == []
    return merged


def all_events(tracker: Tracker) -> list[Event]:
    return walk(tracker.events.list, limit=100)


def day_start(clock: ManualClock) -> int:
    return period_bounds("day", clock())[0]


def test_an_events_quota_admits_exactly_its_limit(shared: Tracker, clock: ManualClock) -> None:
    quota = shared.quotas.create(
        name="daily calls", metric="total_events", limit_value=1000, period="day"
    )
    out = race(shared, 300, lambda n, i: track({"customer_id": f"c{n}", "event_type": "call"}))

    assert len(out.admitted) == 1000
    assert len(out.denied) == THREADS * 300 - 1000
    assert all(isinstance(exc, QuotaExceeded) for _, exc in out.denied)
    assert shared.ledger.event_count() == 1000
    assert shared.ledger.counters() == {(quota.id, "[]", day_start(clock)): 1000}
    # Every admission saw its own, distinct place in the count: 1..1000 once each.
    assert sorted(r.quotas[0].used for _, r in out.admitted) == list(range(1, 1001))
    assert {e.id for e in all_events(shared)} == {r.id for _, r in out.admitted}
    status = shared.quotas.check({"customer_id": "c0", "event_type": "call"}).quotas[0]
    assert (status.used, status.remaining, status.exceeded) == (1000, 0, True)


def test_a_tokens_quota_admits_exactly_its_limit(shared: Tracker, clock: ManualClock) -> None:
    quota = shared.quotas.create(
        name="daily tokens", metric="total_tokens", limit_value=1000, period="day"
    )
    event = {"customer_id": "c", "event_type": "call", "input_tokens": 6, "output_tokens": 4}
    out = race(shared, 250, lambda n, i: track(event))

    assert len(out.admitted) == 100
    assert len(out.denied) == THREADS * 250 - 100
    assert all(isinstance(exc, QuotaExceeded) for _, exc in out.denied)
    assert shared.ledger.event_count() == 100
    assert shared.ledger.counters() == {(quota.id, "[]", day_start(clock)): 1000}
    assert shared.customers.get_usage("c").total_tokens == 1000


def test_a_tokens_quota_with_uneven_events_never_overshoots(
    shared: Tracker, clock: ManualClock
) -> None:
    quota = shared.quotas.create(
        name="daily tokens", metric="total_tokens", limit_value=5000, period="day"
    )
    out = race(
        shared,
        250,
        lambda n, i: track(
            {"customer_id": "c", "event_type": "call", "total_tokens": 1 + (n * 37 + i * 11) % 60}
        ),
    )

    used = sum(event["total_tokens"] for event, _ in out.admitted)
    assert used <= 5000
    assert shared.ledger.counters() == {(quota.id, "[]", day_start(clock)): used}
    assert shared.ledger.event_count() == len(out.admitted)
    # Usage only grows, so whatever was denied did not fit even at the end.
    assert out.denied
    assert all(used + event["total_tokens"] > 5000 for event, _ in out.denied)


def test_a_quota_per_customer_admits_exactly_its_limit_for_each(
    shared: Tracker, clock: ManualClock
) -> None:
    quota = shared.quotas.create(
        name="per customer",
        metric="total_events",
        limit_value=150,
        period="hour",
        per=["customer_id"],
    )
    customers = [f"cust_{k}" for k in range(4)]
    out = race(
        shared,
        200,
        lambda n, i: track({"customer_id": customers[(n + i) % 4], "event_type": "call"}),
    )

    hour = period_bounds("hour", clock())[0]
    assert shared.ledger.counters() == {(quota.id, f'["{c}"]', hour): 150 for c in customers}
    for c in customers:
        assert sum(1 for e, _ in out.admitted if e["customer_id"] == c) == 150
        assert shared.customers.get_usage(c).total_events == 150
    assert len(out.denied) == THREADS * 200 - 4 * 150


def test_a_rate_limit_on_a_frozen_clock_admits_exactly_its_capacity(shared: Tracker) -> None:
    shared.rate_limits.create(name="per hour", limit_value=500, window="hour")
    out = race(shared, 200, lambda n, i: track({"customer_id": f"c{n}", "event_type": "call"}))

    assert len(out.admitted) == 500
    assert len(out.denied) == THREADS * 200 - 500
    assert all(isinstance(exc, RateLimitExceeded) for _, exc in out.denied)
    assert shared.ledger.event_count() == 500
    assert sorted(r.rate_limits[0].remaining for _, r in out.admitted) == list(range(500))
    status = shared.rate_limits.check({"customer_id": "c0"}).rate_limits[0]
    assert (status.remaining, status.exceeded) == (0, True)


def test_a_rate_limit_and_a_quota_together_admit_the_tighter(
    shared: Tracker, clock: ManualClock
) -> None:
    quota = shared.quotas.create(
        name="daily calls", metric="total_events", limit_value=700, period="day"
    )
    shared.rate_limits.create(name="per hour", limit_value=400, window="hour")
    out = race(shared, 200, lambda n, i: track({"customer_id": f"c{n}", "event_type": "call"}))

    assert len(out.admitted) == 400
    assert all(isinstance(exc, RateLimitExceeded) for _, exc in out.denied)
    # The rate limit denied first, so the quota counted only what was admitted.
    assert shared.ledger.counters() == {(quota.id, "[]", day_start(clock)): 400}
    assert shared.ledger.event_count() == 400


def test_ingest_racing_usage_keeps_counters_equal_to_the_events(
    shared: Tracker, clock: ManualClock
) -> None:
    quota = shared.quotas.create(
        name="daily calls", metric="total_events", limit_value=600, period="day"
    )
    event = {"customer_id": "c", "event_type": "call"}

    def work(n: int, i: int) -> Work:
        if n % 2 == 0:
            return track(event)

        def ingest(tracker: Tracker, thread: int, step: int, out: Outcome) -> None:
            if step % 5 == 0:
                answer = tracker.events.batch([event, event, event])
                assert answer.count == 3
                out.ingested += [event] * 3
            else:
                tracker.events.ingest(event)
                out.ingested.append(event)

        return ingest

    out = race(shared, 250, work)

    recorded = len(out.admitted) + len(out.ingested)
    assert shared.ledger.event_count() == recorded
    assert shared.ledger.counters() == {(quota.id, "[]", day_start(clock)): recorded}
    # Ingest is never denied, but usage() admitted nothing once the count had reached the limit.
    assert len(out.admitted) <= 600
    assert all(r.quotas[0].used <= 600 for _, r in out.admitted)
    assert all(isinstance(exc, QuotaExceeded) for _, exc in out.denied)
