"""``usage(wait=...)``: wait for rate-limit buckets, never for a quota.

Every wait here is simulated: the Tracker runs on a ManualClock, whose
``sleep`` advances it, so the tests never sleep and the times are exact.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import (
    Client,
    InvalidRequestError,
    QuotaExceeded,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.testing import ManualClock
from tests.conftest import START

EVENT = {"customer_id": "acme", "event_type": "model_call"}


def _tracker(clock: ManualClock, **options: object) -> Tracker:
    return Tracker(clock=clock, **options)  # type: ignore[arg-type]


def test_wait_sleeps_until_the_bucket_refills_then_admits() -> None:
    clock = ManualClock(START)
    with _tracker(clock) as tracker:
        tracker.rate_limits.create(name="2 per minute", limit_value=2, window="minute")
        tracker.usage(EVENT)
        tracker.usage(EVENT)
        response = tracker.usage(EVENT, wait=60)
        assert response.allowed
        # One token refills in 30 s; the wait was exactly that long, in simulated time.
        assert clock() == START + 30
        assert tracker.ledger.event_count() == 3


def test_without_wait_a_rate_denial_raises_at_once() -> None:
    clock = ManualClock(START)
    with _tracker(clock) as tracker:
        tracker.rate_limits.create(name="1 per minute", limit_value=1, window="minute")
        tracker.usage(EVENT)
        with pytest.raises(RateLimitExceeded):
            tracker.usage(EVENT)
        with pytest.raises(RateLimitExceeded):
            tracker.usage(EVENT, wait=0)
        assert clock() == START


def test_a_retry_beyond_the_wait_raises_at_once_without_sleeping() -> None:
    clock = ManualClock(START)
    with _tracker(clock) as tracker:
        tracker.rate_limits.create(name="1 per minute", limit_value=1, window="minute")
        tracker.usage(EVENT)
        with pytest.raises(RateLimitExceeded) as denied:
            tracker.usage(EVENT, wait=59)
        assert denied.value.retry_after == 60
        assert clock() == START  # no sleep that could not end in an admission
        assert tracker.ledger.event_count() == 1


def test_a_quota_denial_never_waits_even_when_a_rate_limit_also_denies() -> None:
    clock = ManualClock(START)
    with _tracker(clock) as tracker:
        tracker.rate_limits.create(name="1 per minute", limit_value=1, window="minute")
        tracker.quotas.create(name="1 a day", metric="total_events", limit_value=1, period="day")
        tracker.usage(EVENT)
        with pytest.raises(QuotaExceeded):
            tracker.usage(EVENT, wait=3600)
        assert clock() == START


def test_a_cost_above_the_capacity_never_waits() -> None:
    clock = ManualClock(START)
    with _tracker(clock) as tracker:
        tracker.rate_limits.create(
            name="tpm", limit_value=100, window="minute", metric="total_tokens"
        )
        with pytest.raises(RateLimitExceeded):
            tracker.usage({**EVENT, "total_tokens": 101}, wait=3600)
        assert clock() == START


def test_nothing_is_taken_while_waiting() -> None:
    """The bucket a waiting call needs stays usable by others until it is admitted."""
    clock = ManualClock(START)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        # While "asleep", another caller finds the half-refilled bucket as it is:
        # 25 tokens back after 15 s, none of them held for the waiting call.
        clock.advance(seconds / 2)
        assert tracker.rate_limits.check(EVENT).rate_limits[0].remaining == 25
        clock.advance(seconds / 2)

    with Tracker(clock=clock, sleep=sleep) as tracker:
        tracker.rate_limits.create(
            name="tpm", limit_value=100, window="minute", metric="total_tokens"
        )
        tracker.usage({**EVENT, "total_tokens": 100})
        tracker.usage({**EVENT, "total_tokens": 50}, wait=60)
        assert slept == [30.0]
        status = tracker.rate_limits.check(EVENT).rate_limits[0]
        assert status.remaining == 0  # 50 refilled, 50 taken, nothing else


def test_a_waiter_that_loses_the_race_waits_again() -> None:
    clock = ManualClock(START)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sleeps) == 1:
            tracker.usage(EVENT)  # another caller takes the token that refilled

    with Tracker(clock=clock, sleep=sleep) as tracker:
        tracker.rate_limits.create(name="1 per minute", limit_value=1, window="minute")
        tracker.usage(EVENT)
        tracker.usage(EVENT, wait=180)
        assert sleeps == [60.0, 60.0]
        assert tracker.ledger.event_count() == 3


def test_a_clock_that_never_moves_still_ends_the_wait() -> None:
    frozen = ManualClock(START)
    sleeps: list[float] = []
    with Tracker(clock=frozen, sleep=sleeps.append) as tracker:
        tracker.rate_limits.create(name="1 per minute", limit_value=1, window="minute")
        tracker.usage(EVENT)
        with pytest.raises(RateLimitExceeded):
            tracker.usage(EVENT, wait=150)
        assert sleeps == [60.0, 60.0]  # a third would pass 150 s of sleeping


@pytest.mark.parametrize("wait", [-1, float("nan"), float("inf"), "5", True])
def test_a_bad_wait_is_a_400_naming_it(wait: object) -> None:
    with Tracker() as tracker, pytest.raises(InvalidRequestError, match="wait: must be a number"):
        tracker.usage(EVENT, wait=wait)


def test_the_async_face_waits_in_simulated_time() -> None:
    clock = ManualClock(START)

    async def scenario() -> None:
        async with Client(clock=clock) as client:
            await client.rate_limits.create(name="1 per second", limit_value=1, window="second")
            await client.track.usage(EVENT)
            response = await client.track.usage(EVENT, wait=5)
            assert response.allowed
            assert clock() == START + 1
            with pytest.raises(QuotaExceeded):
                await client.quotas.create(
                    name="2 a day", metric="total_events", limit_value=2, period="day"
                )
                await client.track.usage(EVENT, wait=5)

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 20),
    window=st.sampled_from(["second", "minute", "10s"]),
    calls=st.lists(st.tuples(st.floats(0, 30), st.integers(1, 20), st.floats(0, 90)), max_size=25),
)
def test_waiting_never_admits_more_than_the_bucket_allows_over_the_elapsed_time(
    capacity: int, window: str, calls: list[tuple[float, int, float]]
) -> None:
    """Admitted tokens <= capacity + refill over the elapsed time; a denial took no wait.

    A reference model of the bucket (continuous refill, capacity cap)
    answers every call too: the Tracker admits exactly when the model says
    the cost fits after at most ``wait`` seconds.
    """
    seconds = {"second": 1.0, "minute": 60.0, "10s": 10.0}[window]
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        tracker.rate_limits.create(
            name="tokens", limit_value=capacity, window=window, metric="total_tokens"
        )
        admitted = calls_admitted = 0
        tokens, at = float(capacity), START
        for gap, cost, wait in calls:
            clock.advance(gap)
            before = clock()
            try:
                tracker.usage({**EVENT, "total_tokens": cost}, wait=wait)
            except RateLimitExceeded:
                assert clock() == before  # a wait that cannot succeed does not sleep
                ok = False
            else:
                admitted += cost
                calls_admitted += 1
                ok = True
            # The reference: the bucket refilled to the call's end, then charged.
            tokens = min(capacity, tokens + (clock() - at) * capacity / seconds)
            at = clock()
            if ok:
                assert cost <= tokens + 1e-6
                tokens -= cost
            else:
                assert cost > tokens - 1e-6  # it did not fit, and waiting was refused
            assert clock() - before <= wait + 1e-9
            assert admitted <= capacity + (clock() - START) * capacity / seconds + 1e-6
        assert tracker.ledger.event_count() == calls_admitted  # no admitted event lost
