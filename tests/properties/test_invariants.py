"""Invariants of enforcement, checked against small independent models.

Each property drives a fresh Tracker on a ManualClock and compares what it
admits and stores with a model written here from docs/semantics.md:

- quotas: admitted totals never exceed any quota in any period, and nothing
  is denied that would have fitted;
- token buckets: never more than capacity + rate * elapsed over any stretch
  of admissions, also with a clock that steps backwards;
- the ledger's quota counters are the sums of the recorded events;
- a denied call changes nothing that any read can see.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import event as tally
from hypothesis import example, given, settings
from hypothesis import strategies as st

from limitry_local import (
    Event,
    LimitExceeded,
    Quota,
    QuotaExceeded,
    RateLimitExceeded,
    Tracker,
)
from limitry_local.buckets import BucketState, take
from limitry_local.metrics import from_units
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.pages import walk
from tests.redis_support import RateStores

METRICS = ("total_events", "total_tokens", "total_cost_cents")
PERIODS = ("hour", "day", "week", "month")
WINDOWS = {"second": 1, "10s": 10, "minute": 60, "7s": 7}
CUSTOMERS = ("cust_a", "cust_b")
MODELS = ("m1", "m2")
DAY = 86_400
# Float noise of a few ulps may tip a decision either way at an exact boundary.
EPSILON = 1e-9

# --- an independent model of matching, periods and amounts ----------------------

Key = tuple[str, ...]


def dimensions(event: Mapping[str, Any]) -> dict[str, str]:
    """Built-in fields plus string properties (strategies never reuse built-in names)."""
    dims = {k: v for k, v in event.get("properties", {}).items() if isinstance(v, str)}
    for name in ("customer_id", "event_type", "model", "provider"):
        if event.get(name) is not None:
            dims[name] = event[name]
    return dims


def limit_key(
    filters: Mapping[str, Any], per: Sequence[str], dims: Mapping[str, str]
) -> Key | None:
    for name, wanted in filters.items():
        value = dims.get(name)
        if value is None or (value != wanted if isinstance(wanted, str) else value not in wanted):
            return None
    if any(name not in dims for name in per):
        return None
    return tuple(dims[name] for name in per)


def period_start(period: str, at: float) -> int:
    moment = datetime.fromtimestamp(math.floor(at), timezone.utc)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        start = day
    elif period == "week":
        start = day - timedelta(days=day.weekday())
    else:
        start = day.replace(day=1)
    return int(start.timestamp())


def amount(metric: str, event: Mapping[str, Any]) -> float:
    if metric == "total_events":
        return 1
    if metric == "total_tokens":
        total = event.get("total_tokens")
        if total is None and ("input_tokens" in event or "output_tokens" in event):
            total = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
        return total or 0
    return event.get("cost_cents") or 0


def event_fields(e: Event) -> dict[str, Any]:
    """A recorded event in the same shape as the requests the strategies draw."""
    return e.model_dump(by_alias=False, exclude_none=True)


# --- strategies ------------------------------------------------------------------

FILTERS: list[dict[str, Any]] = [
    {},
    {"model": "m1"},
    {"model": ["m1", "m2"]},
    {"team": "red"},
    {"event_type": "call", "model": "m2"},
]
PERS: list[list[str]] = [[], ["customer_id"], ["customer_id", "model"]]
CENTS = (0, 0.1, 0.25, 1, 2.5, 7, 12.75)
# Clock moves, in seconds: none, sub-second, across hours, days, weeks and months.
ADVANCES = (0, 0, 0.5, 1, 59, 1800, 3600, 5 * 3600, DAY, 3 * DAY, 7 * DAY, 31 * DAY)

quota_specs = st.fixed_dictionaries(
    {
        "name": st.just("q"),
        "metric": st.sampled_from(METRICS),
        "period": st.sampled_from(PERIODS),
        # Small limits are reached within a few events, so denials are common.
        "limit_value": st.one_of(st.integers(1, 5), st.integers(1, 25)),
        "per": st.sampled_from(PERS),
        "dimension_filters": st.sampled_from(FILTERS),
    }
)

# Explicit timestamps: whole seconds around now, in the same hour, across a
# few days, and far enough to land in the neighbouring months.
offsets = st.one_of(
    st.none(),
    st.integers(-3600, 3600),
    st.integers(-3 * DAY, 3 * DAY),
    st.sampled_from([-45 * DAY, -31 * DAY, -7 * DAY, 6 * DAY, 8 * DAY, 40 * DAY]),
)


@st.composite
def track_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event in snake_case form, without its timestamp (an offset is drawn apart)."""
    event: dict[str, Any] = {
        "customer_id": draw(st.sampled_from(CUSTOMERS)),
        "event_type": draw(st.sampled_from(["call", "embed"])),
    }
    model = draw(st.sampled_from([None, *MODELS]))
    if model is not None:
        event["model"] = model
    tokens = st.integers(0, 12)
    shape = draw(st.sampled_from(["none", "total", "split", "input"]))
    if shape == "total":
        event["total_tokens"] = draw(tokens)
    elif shape == "split":
        event["input_tokens"], event["output_tokens"] = draw(tokens), draw(tokens)
    elif shape == "input":
        event["input_tokens"] = draw(tokens)
    cents = draw(st.sampled_from([None, *CENTS]))
    if cents is not None:
        event["cost_cents"] = cents
    team = draw(st.sampled_from([None, "red", "blue", 7]))
    if team is not None:
        event["properties"] = {"team": team}
    return event


def stamp(event: Mapping[str, Any], now: float, offset: int | None) -> dict[str, Any]:
    if offset is None:
        return dict(event)
    return {**event, "timestamp": datetime.fromtimestamp(math.floor(now) + offset, timezone.utc)}


def event_time(event: Mapping[str, Any], now: float) -> float:
    when = event.get("timestamp")
    return when.timestamp() if isinstance(when, datetime) else now


def all_events(tracker: Tracker) -> list[Event]:
    """Every recorded event, oldest first, read page by page through the public list."""
    return walk(tracker.events.list, limit=7)[::-1]


def all_quotas(tracker: Tracker) -> list[Quota]:
    return walk(tracker.quotas.list, limit=3)


def counters(tracker: Tracker) -> dict[tuple[str, Key, int], float]:
    """The ledger's counters, key decoded and cents back from micro-cents, so the test does
    not depend on the encoding."""
    metrics = {quota.id: quota.metric for quota in all_quotas(tracker)}
    return {
        (quota_id, tuple(json.loads(key)), start): from_units(metrics[quota_id], used)
        for (quota_id, key, start), used in tracker.ledger.counters().items()
    }


def expected_counters(
    quotas: Sequence[Quota], events: Sequence[Event]
) -> dict[tuple[str, Key, int], float]:
    totals: dict[tuple[str, Key, int], float] = defaultdict(float)
    for e in events:
        fields = event_fields(e)
        dims = dimensions(fields)
        for quota in quotas:
            key = limit_key(quota.dimension_filters, quota.per, dims)
            if key is not None:
                start = period_start(quota.period, e.created_at.timestamp())
                totals[quota.id, key, start] += amount(quota.metric, fields)
    return dict(totals)


# --- (a) quotas are never exceeded, and never deny what fits -----------------------


@settings(max_examples=300)
@given(
    specs=st.lists(quota_specs, min_size=1, max_size=4),
    steps=st.lists(
        st.tuples(st.sampled_from(ADVANCES), offsets, track_requests()), min_size=1, max_size=40
    ),
)
def test_admitted_totals_never_exceed_any_quota(
    specs: list[dict[str, Any]], steps: list[tuple[float, int | None, dict[str, Any]]]
) -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        quotas = [tracker.quotas.create(**spec) for spec in specs]
        by_id = {q.id: q for q in quotas}
        used: dict[tuple[str, Key, int], float] = defaultdict(float)
        admitted = 0
        for advance, offset, raw in steps:
            clock.advance(advance)
            request = stamp(raw, clock(), offset)
            when = event_time(request, clock())
            dims = dimensions(request)
            matching: dict[str, tuple[Key, int, float]] = {}
            for q in quotas:
                key = limit_key(q.dimension_filters, q.per, dims)
                if key is not None:
                    matching[q.id] = (key, period_start(q.period, when), amount(q.metric, request))
            # Room left in each matching quota after this event; a sum of fractional
            # cents that lands within float noise of the limit may go either way.
            margins = [
                by_id[qid].limit_value - (used[qid, key, start] + cost)
                for qid, (key, start, cost) in matching.items()
            ]
            fits = all(m >= -EPSILON for m in margins)
            borderline = any(abs(m) < EPSILON for m in margins)
            try:
                response = tracker.usage(**request)
            except QuotaExceeded as exc:
                tally("quota denied")
                assert borderline or not fits, f"denied although every quota had room: {exc}"
                continue
            assert fits, f"admitted past a quota: {request}"
            admitted += 1
            for qid, (key, start, cost) in matching.items():
                used[qid, key, start] += cost
                assert used[qid, key, start] <= by_id[qid].limit_value + EPSILON
            # The 201 lists exactly the matching quotas, with their usage after this event.
            reported = {s.id: s for s in response.quotas}
            assert set(reported) == set(matching)
            for qid, (key, start, _) in matching.items():
                assert reported[qid].used == pytest.approx(used[qid, key, start])
                assert reported[qid].limit == by_id[qid].limit_value
        assert tracker.ledger.event_count() == admitted
        assert all(
            total <= by_id[qid].limit_value + EPSILON
            for (qid, _, _), total in counters(tracker).items()
        )


# --- (b) token buckets: capacity + refill over any stretch ---------------------------


@dataclass
class RefBucket:
    """The documented bucket: new is full, refills continuously, a backwards clock mints nothing."""

    capacity: int
    window: float
    tokens: float | None = None
    updated: float = 0.0

    def level(self, now: float) -> tuple[float, float]:
        if self.tokens is None:
            return float(self.capacity), now
        if now <= self.updated:
            return self.tokens, self.updated
        refilled = self.tokens + (now - self.updated) * self.capacity / self.window
        return min(float(self.capacity), refilled), now

    def charge(self, now: float, cost: int = 1) -> None:
        self.tokens, self.updated = self.level(now)
        self.tokens -= cost


def decided(level: float, cost: int = 1) -> bool | None:
    """Whether ``cost`` fits in a bucket holding ``level`` tokens; None when within EPSILON."""
    return None if abs(level - cost) < EPSILON else cost < level


def assert_within_capacity(
    admissions: Sequence[tuple[float, int]], capacity: int, rate: float
) -> None:
    """``admissions`` is (bucket instant, cost) in order; the instant is the running max of the
    clock at admissions, since a clock that steps back mints nothing.  Any stretch i..j may take
    at most the capacity plus what refilled between its ends."""
    for i in range(len(admissions)):
        taken = 0
        for j in range(i, len(admissions)):
            taken += admissions[j][1]
            allowance = capacity + rate * (admissions[j][0] - admissions[i][0])
            assert taken <= allowance + 1e-6, (i, j, taken, allowance)


# One key's bucket drained, the other key's call moves time on (and lets the
# store forget the drained bucket once full), then the clock steps back: bucket
# time stands still at the latest instant seen, where the drained key is full
# again -- the same answer whether or not the store forgot it.
@example(
    capacity=2,
    window="10s",
    per_customer=True,
    steps=[
        (0, "cust_a", "usage"),
        (0, "cust_a", "usage"),
        (20_000, "cust_b", "usage"),
        (-19_900, "cust_a", "usage"),
    ],
)
# 3 calls, 6 s later a 4th leaves 0.4 tokens; the 5th waits for 0.6 tokens at
# 1/15 per second, Retry-After 9 s -- and 9 s later the bucket holds
# 0.9999999999999999 tokens in floating point.
@example(
    capacity=4,
    window="minute",
    per_customer=False,
    steps=[(0, "cust_a", "usage")] * 3 + [(100, "cust_a", "usage"), (0, "cust_a", "usage")],
)
@settings(max_examples=400)
@given(
    capacity=st.integers(1, 5),
    window=st.sampled_from(sorted(WINDOWS)),
    per_customer=st.booleans(),
    steps=st.lists(
        st.tuples(
            # Clock moves in thousandths of a window: none, forwards and backwards,
            # with whole-window jumps made likely (they empty and refill buckets).
            st.one_of(
                st.just(0),
                st.sampled_from([-1500, -900, -300, 100, 400, 1200, 2500]),
                st.integers(-1500, 2500),
            ),
            st.sampled_from(CUSTOMERS),
            st.sampled_from(["usage", "usage", "usage", "check"]),
        ),
        max_size=60,
    ),
)
def test_token_bucket_never_admits_more_than_capacity_plus_refill(
    rates: RateStores,
    capacity: int,
    window: str,
    per_customer: bool,
    steps: list[tuple[int, str, str]],
) -> None:
    seconds = WINDOWS[window]
    rate = capacity / seconds
    clock = ManualClock(START)
    models: dict[str, RefBucket] = {}
    admissions: dict[str, list[tuple[float, int]]] = defaultdict(list)
    # Rate limits run on the latest instant the tracker has read (docs/semantics.md).
    latest = START
    with Tracker(clock=clock, rate_limits=rates()) as tracker:
        tracker.rate_limits.create(
            name="rl",
            limit_value=capacity,
            window=window,
            per=["customer_id"] if per_customer else [],
        )
        for thousandths, customer, action in steps:
            clock.advance(thousandths * seconds / 1000)
            now = clock()
            latest = max(latest, now)
            key = customer if per_customer else "shared"
            model = models.setdefault(key, RefBucket(capacity, seconds))
            level = model.level(latest)[0]
            dims = {"customer_id": customer}
            if action == "check":
                status = tracker.rate_limits.check(dims).rate_limits[0]
                whole = {math.floor(level)}
                if abs(level - round(level)) < EPSILON:
                    whole.add(round(level))
                assert status.remaining in whole
                continue
            try:
                tracker.usage(customer_id=customer, event_type="call")
            except RateLimitExceeded as exc:
                assert decided(level) in (False, None), f"key {key} denied at +{now - START:.3f}s"
                # Retry-After counts from now: the event fits then, and not a second sooner.
                # (Checks consume nothing; they do move bucket time on, as `latest` follows.)
                # A second early first: bucket time never runs backwards, so peeking
                # at the later instant first would answer for it.
                clock.set(now + exc.retry_after - 1)
                assert exc.retry_after == 1 or not tracker.rate_limits.check(dims).allowed
                clock.set(now + exc.retry_after)
                assert tracker.rate_limits.check(dims).allowed, f"Retry-After {exc.retry_after}"
                clock.set(now)
                latest = max(latest, now + exc.retry_after)
                continue
            assert decided(level) in (True, None), f"key {key} admitted at +{now - START:.3f}s"
            model.charge(latest)
            admissions[key].append((latest, 1))
        for taken in admissions.values():
            assert_within_capacity(taken, capacity, rate)


@example(capacity=4, window="minute", steps=[(0, 1), (0, 1), (0, 1), (100, 1), (0, 1)])
# Refill lands within float noise below a whole token: remaining counts it whole.
@example(
    capacity=5,
    window="minute",
    steps=[(0, 2), (353, 0), (-823, 0), (-103, 0), (-249, 0), (-472, 4), (1894, 0)],
)
# Found by a deep run: after the clock stepped back, Retry-After was a second short by
# float noise in ``at - since``, and waiting it out was denied again.
@example(capacity=5, window="second", steps=[(0, 0), (-15, 3), (-385, 5)])
@settings(max_examples=500)
@given(
    capacity=st.integers(1, 6),
    window=st.sampled_from(sorted(WINDOWS)),
    steps=st.lists(st.tuples(st.integers(-1500, 2500), st.integers(0, 7)), min_size=1, max_size=80),
)
def test_pure_take_never_admits_more_than_capacity_plus_refill(
    capacity: int, window: str, steps: list[tuple[int, int]]
) -> None:
    seconds = WINDOWS[window]
    rate = capacity / seconds
    now = START
    state: BucketState | None = None
    latest = -math.inf
    admissions: list[tuple[float, int]] = []
    for thousandths, cost in steps:
        now += thousandths * seconds / 1000
        decision = take(capacity, seconds, state, now, cost)
        assert 0 <= decision.state.tokens <= capacity
        assert decision.remaining == math.floor(decision.state.tokens + EPSILON)
        if decision.allowed:
            assert cost <= capacity
            assert decision.retry_after == 0
            latest = max(latest, now)
            # The bucket keeps the latest instant it has seen: stepping back mints nothing.
            assert decision.state.updated == latest
            admissions.append((latest, cost))
            state = decision.state
        else:
            assert decision.retry_after >= 1
            # Retry-After counts from now (also after the clock stepped back): the event
            # fits after that many seconds, and a second earlier it did not.
            if cost <= capacity:
                retry = decision.retry_after
                assert take(capacity, seconds, state, now + retry, cost).allowed
                if retry > 1:
                    assert not take(capacity, seconds, state, now + retry - 1, cost).allowed
    assert_within_capacity(admissions, capacity, rate)


# --- (c) ledger counters are the sums of the recorded events ---------------------


quota_updates = st.fixed_dictionaries(
    {},
    optional={
        "name": st.just("renamed"),
        "limit_value": st.integers(1, 25),
        "metric": st.sampled_from(METRICS),
        "period": st.sampled_from(PERIODS),
        "per": st.sampled_from(PERS),
        "dimension_filters": st.sampled_from(FILTERS),
    },
)

operations = st.one_of(
    st.tuples(st.just("usage"), offsets, track_requests()),
    st.tuples(st.just("ingest"), offsets, track_requests()),
    st.tuples(
        st.just("batch"), st.lists(st.tuples(offsets, track_requests()), min_size=1, max_size=4)
    ),
    st.tuples(st.just("create"), quota_specs),
    st.tuples(st.just("update"), st.integers(0, 10), quota_updates),
    st.tuples(st.just("delete"), st.integers(0, 10)),
    st.tuples(st.just("advance"), st.sampled_from(ADVANCES)),
)


@settings(max_examples=200)
@given(ops=st.lists(operations, min_size=1, max_size=25))
def test_ledger_counters_equal_sums_of_recorded_events(ops: list[tuple[Any, ...]]) -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        ids: list[str] = []
        for op in ops:
            kind = op[0]
            now = clock()
            if kind == "usage":
                with contextlib.suppress(LimitExceeded):
                    tracker.usage(**stamp(op[2], now, op[1]))
            elif kind == "ingest":
                tracker.events.ingest(**stamp(op[2], now, op[1]))
            elif kind == "batch":
                answer = tracker.events.batch([stamp(e, now, off) for off, e in op[1]])
                assert answer.count == len(op[1])
            elif kind == "create":
                ids.append(tracker.quotas.create(**op[1]).id)
            elif kind == "update" and ids:
                tracker.quotas.update(ids[op[1] % len(ids)], **op[2])
            elif kind == "delete" and ids:
                tracker.quotas.delete(ids.pop(op[1] % len(ids)))
            elif kind == "advance":
                clock.advance(op[1])
            events = all_events(tracker)
            assert len(events) == tracker.ledger.event_count()
            expected = expected_counters(all_quotas(tracker), events)
            assert counters(tracker) == pytest.approx(expected, rel=1e-12, abs=1e-9)
        for customer in CUSTOMERS:
            mine = [event_fields(e) for e in events if e.customer_id == customer]
            usage = tracker.customers.get_usage(customer)
            assert usage.total_events == len(mine)
            assert usage.total_tokens == sum(amount("total_tokens", e) for e in mine)
            assert usage.total_cost_cents == pytest.approx(
                sum(amount("total_cost_cents", e) for e in mine)
            )


def test_quota_update_can_clear_filters_and_per(clock: ManualClock, tracker: Tracker) -> None:
    """An update takes any subset of the fields, so it can also set them back to empty."""
    quota = tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=10,
        period="day",
        dimension_filters={"model": "m1"},
        per=["customer_id"],
    )
    tracker.usage(customer_id="cust_a", event_type="call", model="m2")
    updated = tracker.quotas.update(quota.id, dimension_filters={}, per=[])
    assert updated.dimension_filters == {}
    assert updated.per == []
    assert tracker.quotas.get(quota.id).dimension_filters == {}
    # The rebuilt counter now counts the m2 event under the shared key.
    assert counters(tracker) == {(quota.id, (), period_start("day", clock())): 1}


# --- (d) a denied call changes nothing ---------------------------------------------


def snapshot(tracker: Tracker, probes: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Everything a user (or an auditor of the ledger) can read."""
    return {
        "counters": tracker.ledger.counters(),
        "event_count": tracker.ledger.event_count(),
        "events": [e.model_dump() for e in all_events(tracker)],
        "rate_checks": [tracker.rate_limits.check(dict(p)).model_dump() for p in probes],
        "quota_checks": [tracker.quotas.check(dict(p)).model_dump() for p in probes],
        "usage": [tracker.customers.get_usage(c).model_dump() for c in CUSTOMERS],
    }


@settings(max_examples=150)
@given(
    capacity=st.integers(1, 4),
    per_customer=st.booleans(),
    specs=st.lists(quota_specs, min_size=1, max_size=3),
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 0, 0, 1, 30, 3600, DAY]),
            offsets,
            track_requests(),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_a_denied_call_changes_nothing(
    rates: RateStores,
    capacity: int,
    per_customer: bool,
    specs: list[dict[str, Any]],
    steps: list[tuple[float, int | None, dict[str, Any], bool]],
) -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock, rate_limits=rates()) as tracker:
        tracker.rate_limits.create(
            name="rl",
            limit_value=capacity,
            window="minute",
            per=["customer_id"] if per_customer else [],
        )
        for spec in specs:
            tracker.quotas.create(**spec)
        for i, (advance, offset, raw, keyed) in enumerate(steps):
            clock.advance(advance)
            request = stamp(raw, clock(), offset)
            if keyed:
                request["idempotency_key"] = f"key-{i}"
            dims = dimensions(request)
            probes = [dims, *({"customer_id": c, "event_type": "call"} for c in CUSTOMERS)]
            before = snapshot(tracker, probes)
            try:
                tracker.usage(**request)
            except LimitExceeded as exc:
                tally(type(exc).__name__)
                assert exc.status_code == 429
                assert snapshot(tracker, probes) == before
                if keyed:
                    # A denied key was never recorded: it will be judged afresh.
                    assert tracker.ledger.idempotent(f"key-{i}") is None
            else:
                after = snapshot(tracker, probes)
                assert after["event_count"] == before["event_count"] + 1
