"""``tracker.rate_limits.gate(id).hit(key)``: the rate-only path, on the buckets usage() charges.

The stateful machine (tests/properties/test_stateful.py) also hits gates
between its other steps and holds every answer to its reference buckets.
"""

from __future__ import annotations

import doctest
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import limitry_local.gate
from limitry_local import (
    BucketStoreFull,
    InvalidRequestError,
    LimitryError,
    NotFoundError,
    RateGate,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.buckets import EPSILON, BucketStore
from limitry_local.testing import ManualClock
from tests.conftest import START


def test_docstring_example_runs() -> None:
    result = doctest.testmod(limitry_local.gate)
    assert result.attempted >= 5
    assert result.failed == 0


def test_hits_share_buckets_with_usage(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(
        name="rpm", limit_value=3, window="minute", per=["customer_id"]
    )
    gate = tracker.rate_limits.gate(limit.id)
    assert isinstance(gate, RateGate)
    assert gate.rate_limit_id == limit.id
    assert [gate.hit("cust_1"), gate.hit("cust_1")] == [True, True]
    status = tracker.rate_limits.check({"customer_id": "cust_1"}).rate_limits[0]
    assert status.remaining == 1
    tracker.usage(customer_id="cust_1", event_type="model_call")
    with pytest.raises(RateLimitExceeded):
        tracker.usage(customer_id="cust_1", event_type="model_call")
    assert gate.hit("cust_1") is False
    # Another key has its own bucket; a hit records nothing.
    assert gate.hit("cust_2") is True
    assert [e.customer_id for e in tracker.events.list().data] == ["cust_1"]


def test_a_hit_refills_like_usage(tracker: Tracker, clock: ManualClock) -> None:
    limit = tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    hit = tracker.rate_limits.gate(limit.id).hit
    assert [hit(), hit(), hit()] == [True, True, False]
    clock.advance(29)
    assert hit() is False
    clock.advance(1)  # 30 s refill one token of 2 per minute
    assert [hit(), hit()] == [True, False]


def test_retry_after_counts_as_a_denial_of_usage_would(
    tracker: Tracker, clock: ManualClock
) -> None:
    limit = tracker.rate_limits.create(
        name="rpm", limit_value=2, window="minute", per=["customer_id"]
    )
    gate = tracker.rate_limits.gate(limit.id)
    assert gate.retry_after("c") == 0
    assert [gate.hit("c"), gate.hit("c"), gate.hit("c")] == [True, True, False]
    waits = [gate.retry_after("c"), gate.retry_after("c", cost=2), gate.retry_after("c", cost=3)]
    # One token of 2 a minute takes 30 s; a cost above capacity waits for a full bucket.
    assert waits == [30, 60, 60]
    with pytest.raises(RateLimitExceeded) as denied:
        tracker.usage(customer_id="c", event_type="x")
    assert denied.value.retry_after == waits[0], "nothing was taken by asking"
    clock.advance(30)
    assert gate.retry_after("c") == 0
    assert gate.retry_after("c", cost=2) == 30
    assert gate.hit("c") is True
    with pytest.raises(TypeError, match="give 1 key value"):
        gate.retry_after()
    tracker.rate_limits.update(limit.id, mode="soft")
    assert gate.retry_after("c", cost=2) == 0, "a soft limit never denies"


def test_a_denied_hit_takes_nothing(tracker: Tracker, clock: ManualClock) -> None:
    limit = tracker.rate_limits.create(
        name="tpm", limit_value=100, window="minute", metric="total_tokens", per=["customer_id"]
    )
    gate = tracker.rate_limits.gate(limit.id)
    assert gate.hit("c", cost=60) is True
    assert gate.hit("c", cost=50) is False
    assert gate.hit("c", cost=40) is True
    assert gate.hit("c", cost=0) is True
    assert gate.hit("c", cost=1) is False


def test_bad_arguments_are_refused(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(
        name="per-model", limit_value=5, window="minute", per=["customer_id", "model"]
    )
    gate = tracker.rate_limits.gate(limit.id)
    with pytest.raises(TypeError, match="per \\['customer_id', 'model'\\]: give 2"):
        gate.hit("cust_1")
    with pytest.raises(TypeError, match="give 2 key value"):
        gate.hit("a", "b", "c")
    for cost in (-1, 1.5, True, "2", 10**12 + 1, 10**400):
        with pytest.raises(InvalidRequestError, match="cost: must be an integer from 0 to"):
            gate.hit("cust_1", "m", cost=cost)  # type: ignore[arg-type]
    # usage() names buckets by the event's text: 1 is not "1", and no bucket is made for it.
    for value in (1, None, True, 1.0):
        with pytest.raises(TypeError, match="key values must be str"):
            gate.hit("cust_1", value)  # type: ignore[arg-type]
        # Refused before anything is decided, even when the cost could never fit.
        with pytest.raises(TypeError, match="key values must be str"):
            gate.hit("cust_1", value, cost=6)  # type: ignore[arg-type]
    assert gate.hit("cust_1", "m") is True
    status = tracker.rate_limits.check({"customer_id": "cust_1", "model": "m"}).rate_limits[0]
    assert status.remaining == 4, "the refused calls took nothing"


def test_unknown_and_deleted_limits(tracker: Tracker) -> None:
    with pytest.raises(NotFoundError):
        tracker.rate_limits.gate("rl_nope")
    limit = tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
    gate = tracker.rate_limits.gate(limit.id)
    hit = gate.hit
    assert hit() is True
    tracker.rate_limits.delete(limit.id)
    with pytest.raises(NotFoundError):
        hit()
    with pytest.raises(NotFoundError):
        gate.hit()


def test_a_gate_follows_its_limit(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(
        name="rpm", limit_value=2, window="hour", per=["customer_id"]
    )
    gate = tracker.rate_limits.gate(limit.id)
    kept = gate.hit  # a caller may keep the function: it follows the limit too
    assert [kept("c"), kept("c"), kept("c")] == [True, True, False]
    # A rename keeps the buckets ...
    tracker.rate_limits.update(limit.id, name="renamed")
    assert kept("c") is False
    # ... a reshape starts fresh ones, as it does for usage().
    tracker.rate_limits.update(limit.id, limit_value=3)
    assert [kept("c"), gate.hit("c"), gate.hit("c"), kept("c")] == [True, True, True, False]
    # Disabled: always allowed, nothing taken.
    tracker.rate_limits.update(limit.id, enabled=False)
    assert all(gate.hit("d") for _ in range(10))
    tracker.rate_limits.update(limit.id, enabled=True)
    assert [gate.hit("d") for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("mode", ["soft", "shadow"])
def test_unenforced_limits_admit_and_charge(
    tracker: Tracker, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = tracker.rate_limits.create(
        name="rpm", limit_value=2, window="hour", per=["customer_id"], mode=mode
    )
    gate = tracker.rate_limits.gate(limit.id)
    with caplog.at_level(logging.INFO, logger="limitry_local.tracker"):
        assert [gate.hit("c") for _ in range(3)] == [True, True, True]
    assert f"{mode} rate limit 'rpm' would have denied customer_id=c (a gate hit)" in caplog.text
    # The bucket was charged: the same limit, once enforced, denies at once.
    tracker.rate_limits.update(limit.id, mode="enforce")
    assert gate.hit("c") is False


def _per_customer(tracker: Tracker, overrides: dict[str, dict[str, int]]) -> str:
    """A limit of 1 an hour per customer with these overrides; its id."""
    return tracker.rate_limits.create(
        name="rph", limit_value=1, window="hour", per=["customer_id"], overrides=overrides
    ).id


def test_overrides_on_per_dimensions(tracker: Tracker) -> None:
    limit_id = _per_customer(tracker, {"customer_id": {"vip": 3}})
    gate = tracker.rate_limits.gate(limit_id)
    assert [gate.hit("vip") for _ in range(4)] == [True, True, True, False]
    assert [gate.hit("basic") for _ in range(2)] == [True, False]
    # usage() meets the same override on the same bucket.
    with pytest.raises(RateLimitExceeded) as denied:
        tracker.usage(customer_id="vip", event_type="x")
    assert denied.value.body.rate_limits[0].limit == 3


def test_overrides_a_hit_cannot_know_are_refused(tracker: Tracker) -> None:
    by_model = _per_customer(tracker, {"model": {"big": 5}})
    with pytest.raises(InvalidRequestError, match="overrides on \\['model'\\]"):
        tracker.rate_limits.gate(by_model)
    plain = _per_customer(tracker, {})
    gate = tracker.rate_limits.gate(plain)
    tracker.rate_limits.update(plain, overrides={"model": {"big": 5}})
    with pytest.raises(InvalidRequestError, match="use usage\\(\\) for this limit"):
        gate.hit("c")


@pytest.mark.parametrize("on_file", [False, True], ids=["memory", "file"])
def test_a_closed_tracker_refuses(tmp_path: Path, on_file: bool) -> None:
    tracker = Tracker(tmp_path / "usage.db" if on_file else None)
    limit = tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
    hit = tracker.rate_limits.gate(limit.id).hit
    assert hit() is True
    tracker.close()
    with pytest.raises(LimitryError, match="closed"):
        hit()


def test_the_system_clock_path() -> None:
    """No injected clock: the gate reads time.monotonic itself (the path a1 measures)."""
    with Tracker() as tracker:
        limit = tracker.rate_limits.create(
            name="rpd", limit_value=5, window="1d", per=["customer_id"]
        )
        hit = tracker.rate_limits.gate(limit.id).hit
        assert [hit("c") for _ in range(6)] == [True] * 5 + [False]
        # usage() on the system clock meets the same, nearly empty, bucket.
        with pytest.raises(RateLimitExceeded) as denied:
            tracker.usage(customer_id="c", event_type="x")
        assert denied.value.body.rate_limits[0].remaining == 0
        # A cost above what the bucket can ever hold is a plain no.
        assert hit("d", cost=6) is False
        assert hit("d", cost=5) is True


def test_threads_never_admit_past_the_limit() -> None:
    """8 threads hit one bucket, half of them also calling usage(): exactly the limit passes.

    Memory store on the system clock (the compiled path).  500 a day refills
    about 0.006 tokens a second, so no whole token is added while this runs.
    """
    with Tracker() as tracker:
        limit = tracker.rate_limits.create(name="rpd", limit_value=500, window="1d")
        hit = tracker.rate_limits.gate(limit.id).hit
        admitted = [0] * 8
        recorded = [0] * 8
        start = threading.Barrier(8)

        def worker(i: int) -> None:
            start.wait()
            for _ in range(200):
                if hit():
                    admitted[i] += 1
                if i % 2:
                    try:
                        tracker.usage(customer_id=f"t{i}", event_type="x")
                        recorded[i] += 1
                    except RateLimitExceeded:
                        pass

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(admitted) + sum(recorded) == 500
        for i in range(8):
            assert tracker.customers.get_usage(f"t{i}").total_events == recorded[i]


FORKED = textwrap.dedent(
    """
    import os, threading
    from limitry_local import Tracker

    tracker = Tracker()
    limit = tracker.rate_limits.create(name="rpd", limit_value=2, window="1d")
    hit = tracker.rate_limits.gate(limit.id).hit
    hit()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tracker.engine.lock:  # another thread holds the Tracker's lock at the fork
            held.set()
            release.wait()

    threading.Thread(target=hold).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        print("child:", hit(), hit(), flush=True)  # the parent's buckets, copied
        os._exit(0)
    os.waitpid(pid, 0)
    release.set()
    print("parent:", hit(), hit(), flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_hits_without_the_parents_lock() -> None:
    """The fork hook gives the child a fresh lock; a gate reads it at every hit."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child: True False", "parent: True False"]


def test_the_store_stays_bounded(clock: ManualClock) -> None:
    with Tracker(clock=clock, max_buckets=64) as tracker:
        limit = tracker.rate_limits.create(
            name="rps", limit_value=1, window="second", per=["customer_id"]
        )
        hit = tracker.rate_limits.gate(limit.id).hit
        for i in range(5000):
            assert hit(f"c{i}") is True
            clock.advance(0.05)  # each bucket is full again within 2 s: 40 at a time
        assert len(tracker.engine.store) <= 64  # type: ignore[arg-type]
        assert tracker.premature_bucket_evictions == 0
        assert tracker.bucket_refusals == 0


def test_help_shows_what_hit_does(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
    gate = tracker.rate_limits.gate(limit.id)
    tracker.rate_limits.update(limit.id, mode="soft")  # the next hit rebinds to the slow path
    kept = gate.hit
    assert gate.hit() is True
    for hit in (kept, gate.hit):
        assert (hit.__doc__ or "").startswith("Take ``cost`` tokens from ``key``'s bucket")
    assert repr(gate) == f"<RateGate {limit.id}>"


def test_other_processes_changes_are_seen_within_a_second(
    clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as mine, Tracker(path, clock=clock) as theirs:
        limit = mine.rate_limits.create(name="rpm", limit_value=1, window="hour")
        gate = mine.rate_limits.gate(limit.id)
        assert [gate.hit(), gate.hit()] == [True, False]
        theirs.rate_limits.update(limit.id, limit_value=2)  # a reshape: fresh buckets
        clock.advance(1)
        assert [gate.hit(), gate.hit(), gate.hit()] == [True, True, False]
        theirs.rate_limits.delete(limit.id)
        clock.advance(1)
        with pytest.raises(NotFoundError):
            gate.hit()


def _charge(tracker: Tracker, gate: RateGate | None, key: str, cost: int) -> bool:
    """``cost`` tokens for ``key``: a gate hit, or (no gate) an event through usage()."""
    if gate is not None:
        return gate.hit(key, cost=cost)
    try:
        tracker.usage(customer_id=key, event_type="x", total_tokens=cost)
        return True
    except RateLimitExceeded:
        return False


def test_rewrites_count_toward_sweeps_as_usage_writes_do() -> None:
    """At its bound the store drops full buckets before a non-full one, after gate hits too.

    Rewrites of existing keys must count toward the next sweep as usage()'s
    do; counting only new keys once left the full buckets in place and
    evicted k0 while it was nearly empty, which would then admit 3600
    tokens at once (found in review).
    """
    answers = []
    for via_gate in (True, False):
        clock = ManualClock(START)
        with Tracker(clock=clock, max_buckets=16) as tracker:
            limit = tracker.rate_limits.create(
                name="tph",
                limit_value=3600,
                window="hour",
                metric="total_tokens",
                per=["customer_id"],
            )
            gate = tracker.rate_limits.gate(limit.id)

            def go(key: str, cost: int) -> bool:
                return _charge(tracker, gate if via_gate else None, key, cost)  # noqa: B023 (called in this iteration only)

            for i in range(15):
                assert go(f"k{i}", 1000)
            go("k15", 1)
            clock.advance(2)
            go("n1", 1)
            clock.advance(2)
            go("k5", 1)
            go("k5", 1)
            go("n2", 1)
            answers.append((go("k0", 3600), tracker.bucket_refusals))
    assert answers == [(False, 0), (False, 0)]


# --- the same answers as a dict token bucket ------------------------------------------


class _Reference:
    """The documented bucket: capacity per window, refilled continuously, full when unseen."""

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = capacity
        self.window = window
        self.buckets: dict[str, tuple[float, float]] = {}

    def hit(self, key: str, now: float, cost: int) -> bool:
        tokens, at = self.buckets.get(key, (float(self.capacity), now))
        if now > at:
            tokens = min(float(self.capacity), tokens + (now - at) * self.capacity / self.window)
            at = now
        if cost > tokens + EPSILON:
            return False
        self.buckets[key] = (max(0.0, tokens - cost), at)
        return True


KEYS = [f"cust_{i}" for i in range(12)]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.sampled_from(KEYS[:4]), st.integers(0, 8)),
        st.tuples(st.just("hit"), st.sampled_from(KEYS), st.integers(0, 8)),
        st.tuples(st.just("wait"), st.just(""), st.integers(-20, 40)),
    ),
    max_size=80,
)


def _refused_or(charge: Callable[[], bool]) -> bool | str:
    """The charge's answer, or "refused" when the store at its bound turned the new key away."""
    try:
        return charge()
    except BucketStoreFull:
        return "refused"


def _bucket_entries(tracker: Tracker) -> list[tuple[object, object]]:
    """The in-memory store's entries in order, named without the limit's id and generation."""
    store = tracker.engine.store
    assert isinstance(store, BucketStore)
    return [(key[2], value) for key, value in store._entries.items()]  # type: ignore[index]


@settings(max_examples=300)
@given(
    capacity=st.integers(1, 6),
    window=st.sampled_from(["second", "minute", "10s"]),
    steps=steps,
    max_buckets=st.sampled_from([3, 8, 1000]),
)
def test_hits_leave_the_buckets_usage_would(
    capacity: int, window: str, steps: list[tuple[str, str, int]], max_buckets: int
) -> None:
    """The same steps as gate hits on one Tracker and as usage() on its twin.

    Every answer (a refusal at ``max_buckets`` included), every stored
    bucket (in write order) and the counts of evictions and refusals must
    be equal, with a store small enough to fill and a clock that sometimes
    steps back (waits are quarter seconds, some negative).  Every answer
    but a refusal is also that of an unbounded dict token bucket.
    """
    seconds = {"second": 1, "minute": 60, "10s": 10}[window]
    gated_clock, tracked_clock = ManualClock(START), ManualClock(START)
    reference = _Reference(capacity, seconds)
    latest = START
    with (
        Tracker(clock=gated_clock, max_buckets=max_buckets) as gated,
        Tracker(clock=tracked_clock, max_buckets=max_buckets) as tracked,
    ):
        shape = {
            "name": "tpm",
            "limit_value": capacity,
            "window": window,
            "metric": "total_tokens",
            "per": ["customer_id"],
        }
        hit = gated.rate_limits.gate(gated.rate_limits.create(**shape).id).hit
        tracked.rate_limits.create(**shape)
        for kind, key, n in steps:
            if kind == "wait":
                gated_clock.advance(n / 4)
                tracked_clock.advance(n / 4)
                continue
            # Bucket time: the latest instant the tracker has read, at a call.
            latest = max(latest, gated_clock())
            got = _refused_or(lambda: hit(key, cost=n))  # noqa: B023 (called at once)
            assert got == _refused_or(lambda: _charge(tracked, None, key, n)), (key, n)  # noqa: B023
            if got != "refused":  # a refusal takes nothing, so the reference is not asked
                assert got is reference.hit(key, latest, n), (key, n)
        assert _bucket_entries(gated) == _bucket_entries(tracked)
        for tracker in (gated, tracked):
            # Neither path lowers the earliest full instant on a rewrite: a take
            # never brings a bucket's closer, so it stays a lower bound.
            store = tracker.engine.store
            assert isinstance(store, BucketStore)
            fulls = [full for _, full in store._entries.values()]
            assert store._next_full <= min(fulls, default=math.inf)
        assert gated.bucket_refusals == tracked.bucket_refusals
        assert gated.bucket_evictions == tracked.bucket_evictions
        assert gated.premature_bucket_evictions == 0
