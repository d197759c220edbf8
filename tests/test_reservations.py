"""Reserve, then settle; guards.  Examples of each rule, then a reference-model property."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import (
    InvalidRequestError,
    LimitExceeded,
    LimitryError,
    QuotaExceeded,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.buckets import BucketAsk, BucketStore, BucketTime
from limitry_local.reservations import Reservation
from limitry_local.testing import ManualClock
from tests.conftest import START

CALL = {"customer_id": "cust_1", "event_type": "model_call", "model": "gpt-4o"}


@pytest.fixture
def limited(tracker: Tracker) -> Tracker:
    """1,000 tokens a minute, 10 calls a minute, 5,000 tokens a day, per customer."""
    tracker.rate_limits.create(
        name="tpm", limit_value=1000, window="minute", metric="total_tokens", per=["customer_id"]
    )
    tracker.rate_limits.create(name="rpm", limit_value=10, window="minute", per=["customer_id"])
    tracker.quotas.create(
        name="daily", metric="total_tokens", limit_value=5000, period="day", per=["customer_id"]
    )
    return tracker


def used(tracker: Tracker) -> int:
    return sum(tracker.ledger.counters().values())


def remaining(tracker: Tracker, name: str) -> int:
    statuses = tracker.rate_limits.check({"customer_id": "cust_1"}).rate_limits
    return next(s.remaining for s in statuses if s.name == name)


# --- reserve -------------------------------------------------------------------------


def test_a_reservation_holds_its_estimate_against_every_limit(limited: Tracker) -> None:
    r = limited.reserve(CALL, estimate=800)
    assert r.state == "open"
    assert used(limited) == 800
    assert {s.name: s.remaining for s in r.rate_limits} == {"tpm": 200, "rpm": 9}
    assert r.quotas[0].used == 800
    assert limited.ledger.event_count() == 0  # nothing recorded until commit
    with pytest.raises(RateLimitExceeded):
        limited.reserve(CALL, estimate=300)  # 200 tokens left this minute
    assert used(limited) == 800  # the denied one holds nothing


def test_a_reservation_that_does_not_fit_a_quota_is_denied_at_once(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=10, window="minute", per=["customer_id"])
    tracker.quotas.create(name="q", metric="total_tokens", limit_value=100, period="day")
    with pytest.raises(QuotaExceeded):
        tracker.reserve(CALL, estimate={"total_tokens": 101})
    assert used(tracker) == 0
    assert remaining(tracker, "rpm") == 10  # the rate-limit token was given back


def test_commit_records_the_real_amounts_and_gives_back_the_difference(
    limited: Tracker,
) -> None:
    r = limited.reserve(CALL, estimate=800)
    response = r.commit(input_tokens=100, output_tokens=50)
    assert r.state == "committed"
    assert r.response is response
    assert used(limited) == 150
    (event,) = limited.events.list().data
    assert (event.id, event.total_tokens, event.model) == (response.id, 150, "gpt-4o")
    assert remaining(limited, "tpm") == 850
    assert remaining(limited, "rpm") == 9  # one call, as reserved
    assert response.quotas[0].used == 150


def test_an_overrun_is_recorded_never_lost(limited: Tracker) -> None:
    r = limited.reserve(CALL, estimate=100)
    r.commit(total_tokens=6000)  # past the daily quota: it happened, so it counts
    assert used(limited) == 6000
    assert limited.ledger.event_count() == 1
    assert remaining(limited, "tpm") == 0
    check = limited.quotas.check({"customer_id": "cust_1"})
    assert (check.allowed, check.quotas[0].used) == (False, 6000)


def test_commit_without_amounts_records_the_estimate(limited: Tracker) -> None:
    limited.reserve(CALL, estimate={"input_tokens": 30, "output_tokens": 20}).commit()
    (event,) = limited.events.list().data
    assert (event.input_tokens, event.output_tokens, event.total_tokens) == (30, 20, 50)


def test_commit_merges_properties_and_refuses_other_fields(limited: Tracker) -> None:
    r = limited.reserve({**CALL, "properties": {"team": "a"}}, estimate=10)
    with pytest.raises(InvalidRequestError, match="customerId"):
        r.commit(customerId="someone else", total_tokens=5)
    with pytest.raises(InvalidRequestError, match="totalTokens"):
        r.commit(totalTokens=-1)
    assert r.state == "open"
    r.commit({"totalTokens": 5, "properties": {"route": "chat"}})
    (event,) = limited.events.list().data
    assert event.properties == {"team": "a", "route": "chat"}
    with pytest.raises(LimitryError, match="already committed"):
        r.commit(total_tokens=5)


def test_release_gives_everything_back(limited: Tracker) -> None:
    r = limited.reserve(CALL, estimate=900)
    r.release()
    assert r.state == "released"
    assert used(limited) == 0
    assert remaining(limited, "tpm") == 1000
    assert remaining(limited, "rpm") == 10
    assert limited.ledger.event_count() == 0
    r.release()  # settled already: nothing more to give back
    assert remaining(limited, "tpm") == 1000
    with pytest.raises(LimitryError, match="already released"):
        r.commit(total_tokens=1)


def test_a_release_after_an_overrun_gives_back_no_token_the_overrun_used(
    limited: Tracker,
) -> None:
    # The overrun found the bucket empty: a strict order without the second
    # hold had its 500 tokens there to charge, so its release gives none back.
    first = limited.reserve(CALL, estimate=500)
    second = limited.reserve(CALL, estimate=500)
    first.commit(total_tokens=1000)
    second.release()
    assert remaining(limited, "tpm") == 0  # 1,000 tokens used this minute
    with pytest.raises(RateLimitExceeded):
        limited.usage(**CALL, total_tokens=500)


def test_leaving_a_reservation_block_releases_it(limited: Tracker) -> None:
    with pytest.raises(ValueError), limited.reserve(CALL, estimate=500) as r:
        raise ValueError("the model call failed")
    assert r.state == "released"
    with limited.reserve(CALL, estimate=500) as r2:
        r2.commit(total_tokens=400)
    assert (r2.state, used(limited)) == ("committed", 400)


def test_bad_estimates_and_ttls_are_400s(limited: Tracker) -> None:
    with pytest.raises(InvalidRequestError, match="estimate"):
        limited.reserve(CALL, estimate="lots")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="totalTokens"):
        limited.reserve(CALL, estimate=-5)
    with pytest.raises(InvalidRequestError, match="ttl"):
        limited.reserve(CALL, estimate=5, ttl=0)
    # Accepted once, and then its repr raised: an expiry in the year 33715 is no date.
    with pytest.raises(InvalidRequestError, match=r"ttl: .*at most"):
        limited.reserve(CALL, estimate=5, ttl=1e12)
    assert used(limited) == 0
    r = limited.reserve(CALL, estimate=5, ttl=365 * 86_400)
    assert "hold_" in repr(r)
    with pytest.raises(InvalidRequestError, match="one dict"):
        r.commit([("total_tokens", 5)])  # type: ignore[arg-type]
    assert r.state == "open"


# --- expiry ---------------------------------------------------------------------------


def test_an_expired_hold_is_released_by_the_next_call(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="q", metric="total_tokens", limit_value=5000, period="day")
    r = tracker.reserve(CALL, estimate=4000, ttl=30)
    with pytest.raises(QuotaExceeded):
        tracker.usage({**CALL, "total_tokens": 1500})
    clock.advance(31)
    tracker.usage({**CALL, "total_tokens": 1500})  # sweeps the expired hold first
    assert r.state == "expired"
    assert used(tracker) == 1500
    # Committing late still records what happened.
    r.commit(total_tokens=100)
    assert used(tracker) == 1600
    assert tracker.ledger.event_count() == 2


def test_a_hold_left_by_a_closed_tracker_expires_for_the_others(
    clock: ManualClock, ledger_path: Path
) -> None:
    with Tracker(ledger_path, clock=clock) as first:
        first.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
        first.reserve(CALL, ttl=60)  # never settled: its process "died"
    with Tracker(ledger_path, clock=clock) as second:
        with pytest.raises(QuotaExceeded):
            second.usage(CALL)  # the hold still counts
        clock.advance(61)
        assert second.usage(CALL).allowed is True
        assert sum(second.ledger.counters().values()) == 1


def test_reshaping_a_quota_forgets_what_open_holds_held_on_it(limited: Tracker) -> None:
    r = limited.reserve(CALL, estimate=700)
    (quota,) = limited.quotas.list().data
    limited.quotas.update(quota.id, period="week")  # rebuilt from events: the hold is gone
    assert used(limited) == 0
    r.release()  # must not take 700 off a counter that never had it
    assert sorted(limited.ledger.counters().values()) == []
    r2 = limited.reserve(CALL, estimate=10)
    r2.commit(total_tokens=10)
    assert used(limited) == 10


# --- guards -----------------------------------------------------------------------------


def test_a_guard_commits_when_the_block_returns_and_releases_when_it_raises(
    limited: Tracker,
) -> None:
    with limited.guard(CALL, estimate=300) as r:
        assert used(limited) == 300
    assert r.state == "committed"
    with pytest.raises(RuntimeError), limited.guard(CALL, estimate=300) as failed:
        raise RuntimeError("boom")
    assert failed.state == "released"
    with limited.guard(CALL, estimate=300) as real:
        real.commit(total_tokens=120)
    assert used(limited) == 300 + 120
    assert limited.ledger.event_count() == 2


def test_a_denied_guard_never_runs_its_block(limited: Tracker) -> None:
    ran = []
    with pytest.raises(LimitExceeded), limited.guard(CALL, estimate=9999):
        ran.append(True)
    assert ran == []


def test_a_guard_decorates_sync_and_async_functions(limited: Tracker) -> None:
    guard = limited.guard(CALL, estimate=100)

    @guard
    def call(x: int) -> int:
        return x * 2

    @guard
    async def acall(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @guard
    def broken() -> None:
        raise KeyError("no")

    assert call(21) == 42
    assert asyncio.run(acall(1)) == 2
    with pytest.raises(KeyError):
        broken()
    assert limited.ledger.event_count() == 2
    assert used(limited) == 200
    assert call.__name__ == "call"


def test_an_async_with_guard(limited: Tracker) -> None:
    async def main() -> str:
        async with limited.guard(CALL, estimate=50) as r:
            await asyncio.sleep(0)
            r.commit(total_tokens=40)
        return r.state

    assert asyncio.run(main()) == "committed"
    assert used(limited) == 40


def test_a_bad_guard_event_fails_where_it_is_written(limited: Tracker) -> None:
    with pytest.raises(InvalidRequestError, match="customerId"):
        limited.guard(event_type="x")


# --- the reference model -----------------------------------------------------------------

LIMIT = 1000


@dataclass
class Reference:
    """What the quota must show: recorded tokens plus what open holds hold."""

    recorded: int = 0
    holds: dict[int, int] = field(default_factory=dict)

    @property
    def counted(self) -> int:
        return self.recorded + sum(self.holds.values())


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 600)),
        st.tuples(st.just("usage"), st.integers(0, 600)),
        st.tuples(st.just("commit"), st.integers(0, 900)),
        st.tuples(st.just("release"), st.integers(0, 10)),
    ),
    max_size=30,
)


@settings(max_examples=60)
@given(steps=steps, on_file=st.booleans())
def test_reservations_agree_with_a_reference_model(
    steps: list[Step], on_file: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Never admit past the limit, never lose an admitted event, holds count until settled."""
    path = tmp_path_factory.mktemp("reserve") / "usage.db" if on_file else None
    with Tracker(path, clock=ManualClock(START)) as tracker:
        tracker.quotas.create(name="q", metric="total_tokens", limit_value=LIMIT, period="day")
        ref = Reference()
        open_: dict[int, tuple[Reservation, int]] = {}
        admitted_events = 0
        for number, (op, amount) in enumerate(steps):
            if op in ("reserve", "usage"):
                fits = ref.counted + amount <= LIMIT
                try:
                    if op == "reserve":
                        r = tracker.reserve(CALL, estimate=amount)
                        open_[number] = (r, amount)
                        ref.holds[number] = amount
                    else:
                        tracker.usage({**CALL, "total_tokens": amount})
                        ref.recorded += amount
                        admitted_events += 1
                    assert fits, f"{op} of {amount} admitted past the limit ({ref.counted})"
                except QuotaExceeded:
                    assert not fits, f"{op} of {amount} denied with {ref.counted} counted"
            elif open_:
                key = sorted(open_)[amount % len(open_)] if op == "release" else min(open_)
                reservation, _ = open_.pop(key)
                del ref.holds[key]
                if op == "commit":
                    reservation.commit(total_tokens=amount)
                    ref.recorded += amount
                    admitted_events += 1
                else:
                    reservation.release()
            assert sum(tracker.ledger.counters().values()) == ref.counted
        for reservation, _ in open_.values():
            reservation.release()
        # Nothing lost: the counter is exactly the recorded events.
        assert tracker.ledger.event_count() == admitted_events
        assert sum(tracker.ledger.counters().values()) == ref.recorded
        assert tracker.customers.get_usage("cust_1").total_tokens == ref.recorded


def test_a_hold_another_tracker_expired_is_charged_once_at_commit(
    clock: ManualClock, ledger_path: Path
) -> None:
    with Tracker(ledger_path, clock=clock) as first, Tracker(ledger_path, clock=clock) as other:
        first.rate_limits.create(name="tpm", limit_value=1000, window="hour", metric="total_tokens")
        first.quotas.create(name="q", metric="total_tokens", limit_value=1000, period="day")
        r = first.reserve(CALL, estimate=600, ttl=10)
        clock.advance(11)
        other.usage({**CALL, "total_tokens": 0})  # releases the quota side of the hold
        assert sum(first.ledger.counters().values()) == 0
        r.commit(total_tokens=300)
        assert sum(first.ledger.counters().values()) == 300
        tpm = first.rate_limits.check({"customer_id": "cust_1"}).rate_limits[0]
        # 600 held, 300 given back; refill over 11 s of an hour is 3 tokens.
        assert tpm.remaining == 1000 - 300 + 3


# --- found in review --------------------------------------------------------------------


class _UnreachableAdjust(BucketStore):
    """The in-memory store, except that settling a reservation's tokens fails
    (a shared store that went away between the ledger commit and the adjust)."""

    def adjust(self, asks: Sequence[BucketAsk], at: BucketTime) -> None:
        raise ConnectionError("the bucket store went away")


def test_a_failed_token_adjustment_never_records_an_event_twice(clock: ManualClock) -> None:
    store = _UnreachableAdjust(1000, clock)
    with Tracker(clock=clock, rate_limits=store) as tracker:
        tracker.rate_limits.create(
            name="tpm", limit_value=1000, window="minute", metric="total_tokens"
        )
        with tracker.reserve(CALL, estimate=900) as r:
            r.commit(total_tokens=100)  # recorded; the give-back of 800 is lost
        assert r.state == "committed"
        assert tracker.ledger.event_count() == 1
        with pytest.raises(LimitryError, match="already committed"):
            r.commit(total_tokens=100)
        assert tracker.ledger.event_count() == 1


def test_commit_keeps_the_estimates_amounts_it_does_not_replace(tracker: Tracker) -> None:
    r = tracker.reserve(CALL, estimate={"total_tokens": 1000, "cost_cents": 5})
    r.commit(total_tokens=800)
    r2 = tracker.reserve(CALL, estimate={"input_tokens": 10, "output_tokens": 5, "cost_cents": 2})
    r2.commit(cost_cents=3)
    second, first = tracker.events.list().data
    assert (first.total_tokens, first.cost_cents) == (800, 5)
    assert (second.input_tokens, second.output_tokens, second.total_tokens) == (10, 5, 15)
    assert second.cost_cents == 3


def test_releasing_an_expired_reservation_gives_nothing_back_twice(
    limited: Tracker, clock: ManualClock
) -> None:
    r = limited.reserve(CALL, estimate=900, ttl=5)
    clock.advance(6)
    limited.usage({**CALL, "total_tokens": 0})  # the sweep gives the 900 back once
    assert r.state == "expired"
    limited.usage({**CALL, "total_tokens": 950})
    r.release()
    assert str(r.state) == "released"
    assert remaining(limited, "tpm") < 100  # still charged for the 950


def test_one_guard_entered_by_two_tasks_settles_each_its_own(limited: Tracker) -> None:
    guard = limited.guard(CALL, estimate=100)
    states: dict[str, Reservation] = {}

    async def task(name: str, fail: bool, entered: asyncio.Event, go: asyncio.Event) -> None:
        async with guard as r:
            states[name] = r
            entered.set()
            await go.wait()
            if fail:
                raise RuntimeError(name)

    async def main() -> None:
        a_in, b_in, a_go, b_go = (asyncio.Event() for _ in range(4))
        a = asyncio.create_task(task("a", False, a_in, a_go))
        await a_in.wait()
        b = asyncio.create_task(task("b", True, b_in, b_go))
        await b_in.wait()
        a_go.set()
        await a
        b_go.set()
        with pytest.raises(RuntimeError):
            await b

    asyncio.run(main())
    assert (states["a"].state, states["b"].state) == ("committed", "released")


def test_reserving_a_recorded_idempotency_key_holds_nothing_and_replays(
    tracker: Tracker,
) -> None:
    tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    first = tracker.usage({**CALL, "idempotency_key": "k"})
    r = tracker.reserve({**CALL, "idempotency_key": "k"}, estimate=10)
    assert used(tracker) == 1  # nothing more held
    assert r.commit(total_tokens=10).id == first.id
    assert tracker.ledger.event_count() == 1


def test_an_estimate_holds_amounts_only(tracker: Tracker) -> None:
    for estimate in ({"customer_id": "other", "total_tokens": 9}, {"customerId": "other"}):
        with pytest.raises(InvalidRequestError, match=r"estimate\.customer"):
            tracker.reserve(CALL, estimate=estimate)
    tracker.reserve(CALL, estimate={"totalTokens": 9, "costCents": 1}).release()


def test_a_commit_that_exactly_fills_a_quota_is_not_exceeded(tracker: Tracker) -> None:
    tracker.quotas.create(name="q", metric="total_tokens", limit_value=100, period="day")
    status = tracker.reserve(CALL, estimate=50).commit(total_tokens=100).quotas[0]
    assert (status.used, status.remaining, status.exceeded) == (100, 0, False)


# --- what a commit may not change -----------------------------------------------------


def test_a_commit_after_midnight_counts_in_the_day_it_was_reserved(
    tracker: Tracker, clock: ManualClock
) -> None:
    """Found in review: two holds filled a day's quota at 23:59:50, the new day
    admitted its whole quota, and both commits landed in the new day too (2,000
    of a 1,000 limit).  The hold was checked in its day; the event counts there."""
    tracker.quotas.create(name="daily", metric="total_tokens", limit_value=1000, period="day")
    clock.set(START - START % 86_400 + 86_400 - 10)  # 23:59:50
    held = [tracker.reserve(CALL, estimate=500) for _ in range(2)]
    with pytest.raises(QuotaExceeded):
        tracker.usage({**CALL, "total_tokens": 1})
    clock.advance(11)
    tracker.usage({**CALL, "total_tokens": 1000})
    for r in held:
        r.commit(total_tokens=500)
    (status,) = tracker.quotas.check({"customer_id": "cust_1"}).quotas
    assert status.used == 1000
    assert {e.created_at.timestamp() for e in tracker.events.list().data} == {
        START - START % 86_400 + 86_400 - 10,
        START - START % 86_400 + 86_400 + 1,
    }


def test_a_commit_cannot_move_the_event_onto_limits_that_never_checked_it(
    tracker: Tracker,
) -> None:
    """Found in review: reserving a call without its "feature" (no limit matched)
    and committing it with feature=chat recorded chats past a quota of one a day
    that denied usage().  Properties that change no limit's match still merge."""
    tracker.quotas.create(
        name="chats",
        metric="total_events",
        limit_value=1,
        period="day",
        dimension_filters={"feature": "chat"},
    )
    tracker.usage({**CALL, "properties": {"feature": "chat"}})
    r = tracker.reserve(CALL, estimate=0)
    with pytest.raises(InvalidRequestError, match="properties: feature"):
        r.commit(properties={"feature": "chat"})
    assert r.state == "open"
    r.commit(properties={"feature": "search", "route": "b"})  # matches nothing either way
    (chats,) = tracker.quotas.check({"customer_id": "cust_1", "feature": "chat"}).quotas
    assert chats.used == 1
    assert tracker.ledger.event_count() == 2


@pytest.mark.parametrize("kind", ["quota", "rate_limit"])
def test_a_commit_cannot_move_the_event_onto_another_override(tracker: Tracker, kind: str) -> None:
    """Found in review: an override outside ``per`` decides per event on the same key,
    so a hold reserved as tier=enterprise and committed as tier=free put 5,000 tokens
    under the free limit of 100, which never checked them."""
    enterprise = {"tier": {"enterprise": 1_000_000}}
    if kind == "quota":
        tracker.quotas.create(
            name="daily", metric="total_tokens", limit_value=100, period="day",
            per=["customer_id"], overrides=enterprise,
        )  # fmt: skip
    else:
        tracker.rate_limits.create(
            name="tpm", limit_value=100, window="minute", metric="total_tokens",
            per=["customer_id"], overrides=enterprise,
        )  # fmt: skip
    free = {**CALL, "properties": {"tier": "free"}}
    with pytest.raises((QuotaExceeded, RateLimitExceeded)):
        tracker.reserve(free, estimate=5000)
    r = tracker.reserve({**CALL, "properties": {"tier": "enterprise"}}, estimate=5000)
    with pytest.raises(InvalidRequestError, match="properties: tier"):
        r.commit(total_tokens=5000, properties={"tier": "free"})
    assert r.state == "open"
    r.commit(total_tokens=5000, properties={"tier": "enterprise", "route": "chat"})
    (event,) = tracker.events.list().data
    assert event.properties == {"tier": "enterprise", "route": "chat"}
