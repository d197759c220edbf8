"""Key churn at ``max_buckets`` never resets another tenant's limit (issue 20, item 1).

0.2 dropped the least recently written bucket at the bound, full or not: a
caller minting new customer ids faster than ``max_buckets`` a window pushed
every other tenant's empty bucket out, and each came back full.  The store
now drops only full buckets and refuses a new key when none is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import BucketStoreFull, ConflictError, LedgerError, RateLimitExceeded, Tracker
from limitry_local.testing import ManualClock
from tests.conftest import START


def _send(tracker: Tracker, customer: str) -> str:
    try:
        tracker.usage(customer_id=customer, event_type="call")
    except RateLimitExceeded:
        return "denied"
    except BucketStoreFull:
        return "refused"
    return "admitted"


def test_a_key_minting_caller_cannot_reset_a_victims_limit() -> None:
    """The issue's scenario: 10/hour per customer, 100 buckets, 20 rounds of a second.

    Each round the victim sends 30 calls and the others 150, each with a new
    customer id.  0.2 admitted the victim 200 times (10 a round); its limit
    allows 10 in the hour, plus what 20 s refill (0.06 of a token).
    """
    clock = ManualClock(START)
    with Tracker(clock=clock, max_buckets=100) as tracker:
        tracker.rate_limits.create(
            name="per customer", limit_value=10, window="hour", per=["customer_id"]
        )
        victim: list[str] = []
        others: list[str] = []
        minted = 0
        for _ in range(20):
            victim += [_send(tracker, "victim") for _ in range(30)]
            for _ in range(150):
                others.append(_send(tracker, f"mint_{minted}"))
                minted += 1
            clock.advance(1)
        assert victim.count("admitted") == 10
        assert victim.count("denied") == 20 * 30 - 10
        # The store held the victim and 99 minted keys; every later new key was refused.
        assert others.count("admitted") == 99
        assert others.count("refused") == 20 * 150 - 99
        assert tracker.bucket_refusals == 20 * 150 - 99
        assert tracker.bucket_evictions == 0
        assert tracker.ledger.event_count() == 10 + 99


class _Reference:
    """Unbounded buckets: capacity per window, refilled continuously, full when unseen."""

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = capacity
        self.window = window
        self.buckets: dict[str, tuple[float, float]] = {}

    def hit(self, key: str, now: float) -> bool:
        tokens, at = self.buckets.get(key, (float(self.capacity), now))
        if now > at:
            tokens = min(float(self.capacity), tokens + (now - at) * self.capacity / self.window)
            at = now
        if tokens < 1 - 1e-9:
            return False
        self.buckets[key] = (max(0.0, tokens - 1), at)
        return True


@settings(max_examples=200)
@given(
    capacity=st.integers(1, 4),
    max_buckets=st.integers(1, 6),
    via_gate=st.booleans(),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("call"), st.integers(0, 3)),  # a few steady tenants
            st.tuples(st.just("mint"), st.integers(1, 12)),  # new keys, many at once
            st.tuples(st.just("wait"), st.integers(1, 40)),  # quarter seconds
        ),
        max_size=60,
    ),
)
def test_no_churn_admits_past_a_limit(
    capacity: int, max_buckets: int, via_gate: bool, steps: list[tuple[str, int]]
) -> None:
    """Under any churn every admitted call is one an unbounded bucket would admit too.

    A refused call takes nothing (the reference is not asked), every other
    answer equals the reference's, and the store never holds more than
    ``max_buckets`` buckets.  Through ``usage()`` and through a gate's
    compiled path, which keeps the store's bookkeeping by hand.
    """
    clock = ManualClock(START)
    reference = _Reference(capacity, 10)
    minted = 0
    with Tracker(clock=clock, max_buckets=max_buckets) as tracker:
        limit = tracker.rate_limits.create(
            name="r", limit_value=capacity, window="10s", per=["customer_id"]
        )
        gate = tracker.rate_limits.gate(limit.id)
        refused = 0
        admitted = 0

        def call(key: str) -> None:
            nonlocal refused, admitted
            if via_gate:
                try:
                    got = "admitted" if gate.hit(key) else "denied"
                except BucketStoreFull:
                    got = "refused"
            else:
                got = _send(tracker, key)
            if got == "refused":
                refused += 1
                return
            admitted += got == "admitted"
            assert (got == "admitted") is reference.hit(key, clock()), key

        for kind, n in steps:
            if kind == "wait":
                clock.advance(n / 4)
            elif kind == "call":
                call(f"tenant_{n}")
            else:
                for _ in range(n):
                    call(f"mint_{minted}")
                    minted += 1
            assert len(tracker.engine.store) <= max_buckets  # type: ignore[arg-type]
        assert tracker.bucket_refusals == refused
        assert tracker.premature_bucket_evictions == 0
        if not via_gate:
            assert tracker.ledger.event_count() == admitted


@pytest.mark.parametrize("mode", ["enforce", "soft", "shadow"])
def test_calls_that_take_nothing_keep_no_bucket_and_need_no_room(mode: str) -> None:
    """An event without tokens on a token rate limit, or a hit of cost 0, takes nothing.

    A full bucket kept for it would hold one of ``max_buckets``' slots until
    its rounded full-again second (found in review: at a bound of 2, two
    such calls turned the next new key away with a 503).
    """
    clock = ManualClock(START + 0.25)
    with Tracker(clock=clock, max_buckets=2) as tracker:
        limit = tracker.rate_limits.create(
            name="tpm",
            limit_value=1000,
            window="minute",
            per=["customer_id"],
            metric="total_tokens",
            mode=mode,
        )
        gate = tracker.rate_limits.gate(limit.id)
        for customer in ["a", "b", "c"]:
            tracker.usage(customer_id=customer, event_type="tool_call")
        assert gate.hit("e", cost=0) is True
        assert tracker.bucket_refusals == 0
        # Both slots are still free for keys that spend.
        tracker.usage(customer_id="d", event_type="call", total_tokens=50)
        assert gate.hit("f", cost=50) is True
        if mode == "enforce":
            with pytest.raises(BucketStoreFull):
                tracker.usage(customer_id="g", event_type="call", total_tokens=50)
        else:  # a limit that never denies is not charged where there is no room
            tracker.usage(customer_id="g", event_type="call", total_tokens=50)
        assert tracker.bucket_refusals == 1


@pytest.mark.parametrize("via", ["gate", "usage"])
def test_a_busy_key_taking_nothing_still_sweeps_the_store_at_its_bound(via: str) -> None:
    """Takes of nothing keep no bucket, but count toward the next sweep as writes do.

    Otherwise a full store whose only traffic takes nothing never swept, and
    once every held bucket was full again the bound turned away up to
    max_buckets / 8 new keys (found in review: 512 of 600 at 4,096).
    """
    size = 2048
    clock = ManualClock(START + 0.5)
    with Tracker(clock=clock, max_buckets=size) as tracker:
        limit = tracker.rate_limits.create(
            name="tpm",
            limit_value=10,
            window="minute",
            metric="total_tokens",
            per=["customer_id"],
        )
        gate = tracker.rate_limits.gate(limit.id)
        for i in range(size):
            gate.hit(f"cold{i}", cost=1)  # every bucket 9 of 10
        clock.advance(1)
        for _ in range(8000):  # 8 s of one key's calls that take nothing
            clock.advance(0.001)
            if via == "gate":
                gate.hit("cold0", cost=0)
            else:
                tracker.usage(customer_id="cold0", event_type="check", total_tokens=0)
        for j in range(300):  # every held bucket is full again by now
            gate.hit(f"new{j}", cost=1)
        assert tracker.bucket_refusals == 0


@pytest.mark.parametrize("change", ["reshaped", "deleted", "changed by another tracker"])
def test_a_changed_or_deleted_limits_buckets_free_their_room(change: str, tmp_path: Path) -> None:
    """Found in review: buckets of a limit's old generation (or of a deleted limit)
    are never read again, yet held max_buckets' room until they refilled: at the
    bound every key was refused for up to a window (13 hours for a day's limit)."""
    clock = ManualClock(START)
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock, max_buckets=4) as tracker:
        limit = tracker.rate_limits.create(
            name="daily", limit_value=1000, window="1d", per=["customer_id"]
        )
        for n in range(4):
            tracker.usage(customer_id=f"c{n}", event_type="e")  # each bucket below capacity
        with pytest.raises(BucketStoreFull):
            tracker.usage(customer_id="c4", event_type="e")
        if change == "reshaped":
            tracker.rate_limits.update(limit.id, limit_value=500)
        elif change == "deleted":
            tracker.rate_limits.delete(limit.id)
            tracker.rate_limits.create(
                name="new", limit_value=1000, window="1d", per=["customer_id"]
            )
        else:
            with Tracker(path, clock=clock) as other:
                other.rate_limits.update(limit.id, limit_value=500)
        for n in range(4, 8):
            tracker.usage(customer_id=f"c{n}", event_type="e")
        with pytest.raises(BucketStoreFull):  # the bound still holds for live buckets
            tracker.usage(customer_id="c8", event_type="e")


def test_a_reservation_across_a_reshape_does_not_bring_old_buckets_back(tmp_path: Path) -> None:
    """Found in review of the fix above: commits over their estimate, of holds taken
    before a reshape, charged the old generation's dropped buckets and made them
    again, never to be retired: at the bound new keys were refused for a day."""
    clock = ManualClock(START)
    with Tracker(tmp_path / "usage.db", clock=clock, max_buckets=4) as tracker:
        limit = tracker.rate_limits.create(
            name="daily",
            limit_value=10_000,
            window="1d",
            per=["customer_id"],
            metric="total_tokens",
        )
        held = [tracker.reserve(customer_id=f"c{n}", event_type="e", estimate=10) for n in range(4)]
        tracker.rate_limits.update(limit.id, limit_value=5_000)
        tracker.usage(customer_id="x", event_type="e", total_tokens=1)  # sweeps the old ones
        for reservation in held:
            reservation.commit(total_tokens=900)
        clock.advance(60)
        for n in range(3):  # with "x", the four buckets the bound allows
            tracker.usage(customer_id=f"new{n}", event_type="e", total_tokens=1)


def test_another_processes_deletion_is_retired_even_if_the_apply_that_saw_it_fails(
    tmp_path: Path,
) -> None:
    """Found in review: the apply's own look found another process's deletion and
    deferred retiring its buckets to a commit that a ConflictError then cancelled:
    they were never swept."""
    path = tmp_path / "usage.db"
    with Tracker(path, clock=ManualClock(START)) as ours, Tracker(path) as theirs:
        told: list[set[tuple[str, str]]] = []
        retire = ours.engine.definitions.on_retired
        assert retire is not None

        def spy(pairs: set[tuple[str, str]]) -> None:
            told.append(pairs)
            retire(pairs)

        ours.engine.definitions.on_retired = spy
        gone = ours.rate_limits.create(name="gone", limit_value=5, window="minute")
        ours.usage(customer_id="c", event_type="x")
        theirs.rate_limits.delete(gone.id)
        for value in (1, 2):  # two of one name: the apply below raises the 409
            theirs.rate_limits.create(name="dup", limit_value=value, window="hour")
        with pytest.raises(ConflictError):
            ours.apply({"rate_limits": [{"name": "dup", "limit_value": 1, "window": "hour"}]})
        assert [pair[0] for pairs in told for pair in pairs] == [gone.id]


def test_a_reshape_whose_commit_answer_was_lost_still_retires_the_old_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: an ensure() whose COMMIT landed but whose answer was lost
    (a server ledger's in-doubt error) had already taken the new generation as
    live, so the reload found nothing retired: at max_buckets every new key was
    refused until the old buckets refilled."""
    clock = ManualClock(START)
    with Tracker(tmp_path / "usage.db", clock=clock, max_buckets=4) as tracker:
        tracker.rate_limits.ensure(name="rpm", limit_value=5, window="hour", per=["customer_id"])
        assert [_send(tracker, f"old{n}") for n in range(4)] == ["admitted"] * 4
        ledger = tracker.ledger
        write = ledger.write

        @contextmanager
        def answer_lost(*args: Any, **kwargs: Any) -> Iterator[Any]:
            monkeypatch.undo()  # once
            with write(*args, **kwargs) as conn:
                yield conn
            raise LedgerError("COMMIT sent, answer lost", "connection", in_doubt=True)

        monkeypatch.setattr(ledger, "write", answer_lost)
        with pytest.raises(LedgerError, match="answer lost"):
            tracker.rate_limits.ensure(name="rpm", limit_value=5, window="1d", per=["customer_id"])
        assert [limit.window for limit in tracker.rate_limits.list().data] == ["1d"]  # it landed
        assert [_send(tracker, f"new{n}") for n in range(4)] == ["admitted"] * 4
