"""Stateful property test: a real Tracker against a plain reference model of the spec.

The reference model below is written from ``shared/spec/API.md`` (part 3) and
``docs/semantics.md`` only.  It is deliberately naive:

- events are a plain list; a quota's ``used`` is the sum of the matching
  events' amounts in the period that holds the event's timestamp (no counters);
- token buckets are a dict ``(limit_id, generation, key) -> (tokens, updated)``
  refilled with exactly the documented formula
  ``min(cap, tokens + (now - updated) * cap / window_seconds)``, where ``now``
  is bucket time: the latest instant the tracker has read from its clock (so
  time stands still while a stepped-back clock catches up), and an amount
  within 1e-9 of a whole token counts as that token;
- a reshaping update (limitValue, window, metric, filters, per) starts a new
  generation of buckets; renaming, toggling ``enabled`` or spelling the same
  window another way ("1h" as "hour") keeps them;
- idempotency keys map to the first answer.

Hypothesis drives both through random steps (limits created, updated, toggled
and deleted; events tracked, ingested and batched; the clock moved across
hour, day, week and month edges, and in a second machine also stepped back)
and every answer is compared: allowed or which 429, ids, the rateLimits and
quotas statuses, headers and Retry-After, checks, customer usage, event lists
and the ledger's quota counters.

Float note: bucket tokens are compared exactly (same formula, same order of
evaluation, same instants), but ``reset`` and ``Retry-After`` are a ceiling of
a float sum in the 1.8e9 range, which the documentation does not pin to one
order of operations; when that sum lies within a few ulps of a whole second
either neighbouring second is accepted.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from limitry_local import (
    LimitExceeded,
    NotFoundError,
    QuotaExceeded,
    QuotaStatus,
    RateGate,
    RateLimitExceeded,
    RateLimitStatus,
    Tracker,
    TrackPostRequest,
    TrackPostResponse,
)
from limitry_local.testing import ManualClock
from tests.pages import walk
from tests.redis_support import RedisStores

UTC = timezone.utc

# --- the little world the machine plays in ----------------------------------------

START_TIMES = [
    # Sunday 23:00: hour, day, week and month all end together at midnight.
    datetime(2026, 5, 31, 23, 0, tzinfo=UTC),
    # Saturday 22:50, the last day of February: the month ends before the week.
    datetime(2026, 2, 28, 22, 50, tzinfo=UTC),
    # Wednesday 10:00, mid-week and mid-month.
    datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    # Thursday 23:30 on New Year's Eve.
    datetime(2026, 12, 31, 23, 30, tzinfo=UTC),
]
CUSTOMERS = ["cust_a", "cust_b", "cust_c"]
MODELS = ["gpt-4", "claude-3-opus"]
# What events name: the filters' models, their dated snapshots (which a model
# filter matches) and names that only look alike (which it does not).
EVENT_MODELS = [
    *MODELS,
    "gpt-4-0613",
    "gpt-4-turbo",
    "claude-3-opus-20240229",
    "claude-3-opus-latest",
]
EVENT_TYPES = ["model_call", "embedding"]
TIERS = ["free", "pro"]
IDEMPOTENCY_KEYS = ["key-1", "key-2", "key-3", "key-4"]
# The reference's own reading of the windows used here (not the library's parser).
WINDOW_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "10s": 10,
    "30s": 30,
    "2m": 120,
    "1h": 3600,
}
PERIODS = ["hour", "day", "week", "month"]
QUOTA_METRICS = ["total_events", "total_tokens", "total_cost_cents"]
RATE_METRICS = ["total_events", "total_tokens"]
FILTER_VALUES: dict[str, list[str]] = {
    "customer_id": CUSTOMERS,
    "model": MODELS,
    "event_type": EVENT_TYPES,
    "tier": TIERS,
}
# Built-in dimension names: a property by one of these names is never a dimension.
RESERVED_DIMENSIONS = ("customer_id", "event_type", "model", "provider")
# "An amount within 10^-9 of a whole token counts as that token" (docs/semantics.md).
WHOLE_TOKEN_SLACK = 1e-9
# Quota counters in the ledger keep cents as micro-cents (docs/semantics.md).
MICRO_CENTS = 1_000_000

Filters = dict[str, str | list[str]]
Key = tuple[str, ...]
BucketId = tuple[str, int, Key]

# --- strategies ----------------------------------------------------------------------


def _filter_entry(name: str) -> st.SearchStrategy[tuple[str, str | list[str]]]:
    values = FILTER_VALUES[name]
    value: st.SearchStrategy[str | list[str]] = st.one_of(
        st.sampled_from(values),
        st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True),
    )
    return st.tuples(st.just(name), value)


def _to_filters(entries: list[tuple[str, str | list[str]]]) -> Filters:
    return dict(entries)


filters_st = st.lists(
    st.sampled_from(sorted(FILTER_VALUES)).flatmap(_filter_entry),
    max_size=2,
    unique_by=lambda entry: entry[0],
).map(_to_filters)
per_st = st.sampled_from([(), (), ("customer_id",), ("model",)]).map(list)
names_st = st.sampled_from(["alpha", "beta", "gamma"])
windows_st = st.sampled_from(sorted(WINDOW_SECONDS))
# A timestamp near now (sometimes far back or a day ahead), or none.
offset_st = st.one_of(
    st.none(),
    st.integers(-5400, 5400),
    st.sampled_from([-40 * 86_400, -7 * 86_400, -86_400, 86_400]),
)
# String properties are dimensions; non-string ones ("tier": 2, "seats") and
# properties named like a built-in dimension are not.
PROPERTY_CHOICES: list[dict[str, Any]] = [
    {},
    {},
    {"tier": "free"},
    {"tier": "pro"},
    {"tier": 2},
    {"tier": "pro", "seats": 3},
    {"model": "claude-3-opus", "tier": "free"},
    {"customer_id": "cust_c"},
]
properties_st = st.sampled_from(PROPERTY_CHOICES).map(dict)


@dataclass(frozen=True)
class EventSpec:
    """A generated event: the fields of a TrackPostRequest plus a timestamp offset."""

    customer_id: str
    event_type: str
    model: str | None
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_cents: int | None
    properties: dict[str, Any]
    idempotency_key: str | None
    offset: int | None

    def fields(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"customer_id": self.customer_id, "event_type": self.event_type}
        optional = {
            "model": self.model,
            "provider": self.provider,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_cents": self.cost_cents,
            "idempotency_key": self.idempotency_key,
        }
        out.update({name: value for name, value in optional.items() if value is not None})
        if self.properties:
            out["properties"] = dict(self.properties)
        if self.offset is not None:
            out["timestamp"] = datetime.fromtimestamp(now + self.offset, UTC)
        return out

    def when(self, now: float, stamp: float) -> float:
        """The event's time: its own timestamp (``now`` + offset), else the tracker's stamp."""
        return stamp if self.offset is None else now + self.offset

    def tokens(self) -> int | None:
        """totalTokens, or inputTokens + outputTokens when it is absent (spec part 1)."""
        if self.total_tokens is not None:
            return self.total_tokens
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def dimensions(self) -> dict[str, str]:
        dims = {
            k: v
            for k, v in self.properties.items()
            if isinstance(v, str) and k not in RESERVED_DIMENSIONS
        }
        builtin = {
            "customer_id": self.customer_id,
            "event_type": self.event_type,
            "model": self.model,
            "provider": self.provider,
        }
        dims.update({k: v for k, v in builtin.items() if v is not None})
        return dims


event_st = st.builds(
    EventSpec,
    customer_id=st.sampled_from(CUSTOMERS),
    event_type=st.sampled_from(EVENT_TYPES),
    model=st.one_of(st.none(), st.sampled_from(EVENT_MODELS)),
    provider=st.one_of(st.none(), st.just("openai")),
    input_tokens=st.one_of(st.none(), st.integers(0, 60)),
    output_tokens=st.one_of(st.none(), st.integers(0, 60)),
    total_tokens=st.one_of(st.none(), st.none(), st.integers(0, 150)),
    cost_cents=st.one_of(st.none(), st.integers(0, 25)),
    properties=properties_st,
    idempotency_key=st.one_of(st.none(), st.none(), st.sampled_from(IDEMPOTENCY_KEYS)),
    offset=offset_st,
)
quota_params_st = st.fixed_dictionaries(
    {
        "name": names_st,
        "filters": filters_st,
        "metric": st.sampled_from(QUOTA_METRICS),
        "size": st.integers(1, 5),
        "period": st.sampled_from(PERIODS),
        "per": per_st,
    }
)
rate_params_st = st.fixed_dictionaries(
    {
        "name": names_st,
        "filters": filters_st,
        "size": st.integers(1, 4),
        "window": windows_st,
        "per": per_st,
        "metric": st.sampled_from(RATE_METRICS),
        "enabled": st.one_of(st.just(True), st.booleans()),
    }
)
forms_st = st.sampled_from(["kwargs", "model", "wire"])
check_dims_st = st.fixed_dictionaries(
    {"customer_id": st.sampled_from(CUSTOMERS)},
    optional={
        "model": st.sampled_from(EVENT_MODELS),
        "event_type": st.sampled_from(EVENT_TYPES),
        "tier": st.sampled_from(TIERS),
    },
)

# --- the reference model ---------------------------------------------------------------


@dataclass
class RefQuota:
    id: str
    name: str
    filters: Filters
    metric: str
    limit: int
    period: str
    per: list[str]


@dataclass
class RefRate:
    id: str
    name: str
    filters: Filters
    limit: int
    window: str
    enabled: bool
    per: list[str]
    metric: str
    generation: int


@dataclass(frozen=True)
class RefEvent:
    id: str
    customer_id: str
    event_type: str
    model: str | None
    dims: dict[str, str]
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_cents: int | None
    ts: float


@dataclass
class FirstAnswer:
    """What a recorded idempotency key answers from now on."""

    id: str
    response: TrackPostResponse | None
    """The first usage() response; None when the key was recorded by events.ingest/batch."""


# docs/semantics.md: a model filter also matches the name plus a dated
# snapshot suffix; the reference lists the snapshots of its own few models.
SNAPSHOT_SUFFIXES = ("-0613", "-20240229", "-latest")


def _value_matches(name: str, wanted: str, value: str) -> bool:
    if value == wanted:
        return True
    return name == "model" and any(value == wanted + suffix for suffix in SNAPSHOT_SUFFIXES)


def applies(filters: Filters, per: Sequence[str], dims: dict[str, str]) -> Key | None:
    """The key an event charges under a limit, or None when the limit does not match."""
    for name, wanted in filters.items():
        if name not in dims:
            return None
        choices = [wanted] if isinstance(wanted, str) else wanted
        if not any(_value_matches(name, one, dims[name]) for one in choices):
            return None
    if any(name not in dims for name in per):
        return None
    return tuple(dims[name] for name in per)


def period_bounds(period: str, ts: float) -> tuple[int, int]:
    """The UTC calendar period [start, end) holding ``ts``, by plain datetime arithmetic."""
    moment = datetime.fromtimestamp(math.floor(ts), UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "week":
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp())


def quota_amount(metric: str, total_tokens: int | None, cost_cents: int | None) -> int:
    if metric == "total_events":
        return 1
    if metric == "total_tokens":
        return total_tokens or 0
    return cost_cents or 0


def refill(
    cap: int, window: int, state: tuple[float, float] | None, now: float
) -> tuple[float, float]:
    """The documented refill at bucket time ``now``; an unseen bucket is full."""
    if state is None:
        return float(cap), now
    tokens, updated = state
    if now <= updated:
        return tokens, updated
    return min(float(cap), tokens + (now - updated) * cap / window), now


def ceil_options(x: float, minimum: int | None = None) -> set[int]:
    """ceil(x), plus its neighbour when x is within float noise of a whole second."""
    options = {math.ceil(x)}
    nearest = round(x)
    if abs(x - nearest) < 1e-5:
        options |= {nearest, nearest + 1}
    if minimum is not None:
        options = {max(minimum, o) for o in options}
    return options


@dataclass
class RateExpect:
    rate: RefRate
    bucket: BucketId
    tokens: float
    """Refilled, before this event."""
    at: float
    """The bucket's instant: the latest clock reading the tracker has seen."""
    cost: int
    now: float
    """The caller's clock (earlier than ``at`` after the clock stepped back)."""

    @property
    def allowed(self) -> bool:
        return self.cost <= self.tokens + WHOLE_TOKEN_SLACK

    @property
    def after(self) -> float:
        return max(0.0, self.tokens - self.cost)

    def full_at(self, tokens: float) -> float:
        window = WINDOW_SECONDS[self.rate.window]
        return self.at + (self.rate.limit - tokens) * window / self.rate.limit

    def wait(self) -> float:
        """Seconds on the caller's clock until the cost fits (a full bucket if it never can)."""
        window = WINDOW_SECONDS[self.rate.window]
        missing = min(self.cost, self.rate.limit) - self.tokens
        return (self.at - self.now) + missing * window / self.rate.limit

    def expected(self, *, charged: bool) -> tuple[int, float]:
        """(remaining, unrounded reset) as the status should show them."""
        tokens = self.after if charged else self.tokens
        return math.floor(tokens + WHOLE_TOKEN_SLACK), self.full_at(tokens)


@dataclass
class QuotaExpect:
    quota: RefQuota
    key: Key
    start: int
    end: int
    used: int
    amount: int | None
    """None for a check: is there room for anything more."""

    @property
    def exceeded(self) -> bool:
        if self.amount is None:
            return self.used >= self.quota.limit
        return self.used + self.amount > self.quota.limit


def describe(status: RateLimitStatus) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(status.limit),
        "X-RateLimit-Remaining": str(status.remaining),
        "X-RateLimit-Reset": str(status.reset),
    }


def check_rate_statuses(
    actual: list[RateLimitStatus], expected: list[RateExpect], *, charged: bool
) -> dict[str, RateLimitStatus]:
    """Compare statuses by id (the docs fix no order): before the event, or after charging it."""
    ids = [s.id for s in actual]
    assert len(ids) == len(set(ids)), f"duplicate rate-limit statuses: {ids}"
    assert sorted(ids) == sorted(e.rate.id for e in expected), (
        f"rate limits listed {sorted(ids)}, model expects {sorted(e.rate.id for e in expected)}"
    )
    by_id = {s.id: s for s in actual}
    for e in expected:
        s = by_id[e.rate.id]
        remaining, reset = e.expected(charged=charged)
        exceeded = not charged and not e.allowed
        got = (s.name, s.limit, s.window, s.remaining, s.exceeded)
        want = (e.rate.name, e.rate.limit, e.rate.window, remaining, exceeded)
        assert got == want, f"rate limit {e.rate.id}: got {got}, want {want} (tokens {e.tokens})"
        assert s.reset in ceil_options(reset), (
            f"rate limit {e.rate.id}: reset {s.reset}, want ceil({reset!r}) "
            f"(model bucket: {e.tokens} tokens at {e.at}, now {e.now})"
        )
    return by_id


def check_quota_statuses(
    actual: list[QuotaStatus], expected: list[QuotaExpect], *, charged: bool
) -> None:
    ids = [s.id for s in actual]
    assert len(ids) == len(set(ids)), f"duplicate quota statuses: {ids}"
    assert sorted(ids) == sorted(e.quota.id for e in expected), (
        f"quotas listed {sorted(ids)}, model expects {sorted(e.quota.id for e in expected)}"
    )
    by_id = {s.id: s for s in actual}
    for e in expected:
        s = by_id[e.quota.id]
        used = e.used + (e.amount or 0) if charged else e.used
        q = e.quota
        got = (s.name, s.metric, s.period, s.limit, s.used, s.remaining, s.reset, s.exceeded)
        want = (q.name, q.metric, q.period, q.limit, used, max(0, q.limit - used), e.end)
        want_all = (*want, False if charged else e.exceeded)
        assert got == want_all, f"quota {q.id} key {e.key}: got {got}, want {want_all}"


# --- the machine ---------------------------------------------------------------------


class TrackerMachine(RuleBasedStateMachine):
    """One Tracker on a manual clock, and the reference model beside it."""

    def __init__(self) -> None:
        super().__init__()
        # Before every start time: the tracker must never read a later instant than the run's.
        self.clock = ManualClock(0)
        self.tracker = self.open_tracker()
        self.quotas: dict[str, RefQuota] = {}
        self.rates: dict[str, RefRate] = {}
        self.buckets: dict[BucketId, tuple[float, float]] = {}
        self.events: list[RefEvent] = []
        self.first_answers: dict[str, FirstAnswer] = {}
        self.generations = 0
        self.gates: dict[str, RateGate] = {}
        self.latest = -math.inf
        """The latest instant the tracker has read from the clock: the buckets' time."""

    def open_tracker(self) -> Tracker:
        return Tracker(clock=self.clock)

    def teardown(self) -> None:
        self.tracker.close()

    @property
    def now(self) -> float:
        return self.clock()

    @initialize(
        start=st.sampled_from(START_TIMES),
        rate_limits=st.lists(rate_params_st, max_size=3),
        quotas=st.lists(quota_params_st, max_size=3),
    )
    def start(
        self,
        start: datetime,
        rate_limits: list[dict[str, Any]],
        quotas: list[dict[str, Any]],
    ) -> None:
        """Set the clock and seed a few limits, so short runs still meet them."""
        self.clock.set(start)
        for params in rate_limits:
            self.add_rate_limit(**params)
        for params in quotas:
            self.add_quota(**params)

    # --- the model's answers ---------------------------------------------------------

    def rate_expectations(self, dims: dict[str, str], tokens: int, now: float) -> list[RateExpect]:
        # Buckets run on the latest instant the tracker has read (a monotonic clock).
        self.latest = max(self.latest, now)
        out = []
        for rate in self.rates.values():
            if not rate.enabled:
                continue
            key = applies(rate.filters, rate.per, dims)
            if key is None:
                continue
            bucket = (rate.id, rate.generation, key)
            level, at = refill(
                rate.limit, WINDOW_SECONDS[rate.window], self.buckets.get(bucket), self.latest
            )
            cost = tokens if rate.metric == "total_tokens" else 1
            out.append(RateExpect(rate, bucket, level, at, cost, now))
        return out

    def quota_expectations(
        self, dims: dict[str, str], spec: EventSpec | None, when: float
    ) -> list[QuotaExpect]:
        out = []
        for quota in self.quotas.values():
            key = applies(quota.filters, quota.per, dims)
            if key is None:
                continue
            start, end = period_bounds(quota.period, when)
            used = sum(
                quota_amount(quota.metric, e.total_tokens, e.cost_cents)
                for e in self.events
                if start <= e.ts < end and applies(quota.filters, quota.per, e.dims) == key
            )
            amount = (
                None if spec is None else quota_amount(quota.metric, spec.tokens(), spec.cost_cents)
            )
            out.append(QuotaExpect(quota, key, start, end, used, amount))
        return out

    def record(self, spec: EventSpec, event_id: str, now: float) -> None:
        assert event_id.startswith("evt_"), event_id
        assert all(e.id != event_id for e in self.events), f"event id {event_id} reused"
        self.events.append(
            RefEvent(
                id=event_id,
                customer_id=spec.customer_id,
                event_type=spec.event_type,
                model=spec.model,
                dims=spec.dimensions(),
                input_tokens=spec.input_tokens,
                output_tokens=spec.output_tokens,
                total_tokens=spec.tokens(),
                cost_cents=spec.cost_cents,
                ts=spec.when(now, self.latest),
            )
        )

    def pick(self, ids: Sequence[str], index: int) -> str:
        # Creation order, not sorted ids: ids are random, so sorting would make replays differ.
        return ids[index % len(ids)]

    # --- quotas ------------------------------------------------------------------------

    @rule(params=quota_params_st)
    def create_quota(self, params: dict[str, Any]) -> None:
        self.add_quota(**params)

    def add_quota(
        self, *, name: str, filters: Filters, metric: str, size: int, period: str, per: list[str]
    ) -> None:
        limit = {"total_events": size, "total_tokens": 40 * size, "total_cost_cents": 6 * size}
        quota = self.tracker.quotas.create(
            name=name,
            dimension_filters=filters,
            metric=metric,
            limit_value=limit[metric],
            period=period,
            per=per,
        )
        assert quota.id.startswith("qta_")
        assert quota.id not in self.quotas
        self.quotas[quota.id] = RefQuota(
            quota.id, name, filters, metric, limit[metric], period, list(per)
        )
        self.check_quota_definition(quota.id)

    @precondition(lambda self: bool(self.quotas))
    @rule(
        index=st.integers(0, 63),
        changes=st.fixed_dictionaries(
            {},
            optional={
                "name": names_st,
                "dimension_filters": filters_st,
                "metric": st.sampled_from(QUOTA_METRICS),
                "limit_value": st.sampled_from([1, 2, 3, 5, 40, 150, 300]),
                "period": st.sampled_from(PERIODS),
                "per": per_st,
            },
        ),
    )
    def update_quota(self, index: int, changes: dict[str, Any]) -> None:
        quota_id = self.pick(list(self.quotas), index)
        returned = self.tracker.quotas.update(quota_id, **changes)
        ref = self.quotas[quota_id]
        ref.name = changes.get("name", ref.name)
        ref.filters = changes.get("dimension_filters", ref.filters)
        ref.metric = changes.get("metric", ref.metric)
        ref.limit = changes.get("limit_value", ref.limit)
        ref.period = changes.get("period", ref.period)
        ref.per = list(changes.get("per", ref.per))
        self.check_quota_definition(quota_id)
        assert returned == self.tracker.quotas.get(quota_id)

    @precondition(lambda self: bool(self.quotas))
    @rule(index=st.integers(0, 63))
    def delete_quota(self, index: int) -> None:
        quota_id = self.pick(list(self.quotas), index)
        self.tracker.quotas.delete(quota_id)
        del self.quotas[quota_id]
        with pytest.raises(NotFoundError):
            self.tracker.quotas.get(quota_id)
        with pytest.raises(NotFoundError):
            self.tracker.quotas.update(quota_id, name="back")

    def check_quota_definition(self, quota_id: str) -> None:
        got = self.tracker.quotas.get(quota_id)
        ref = self.quotas[quota_id]
        actual = (
            got.name,
            got.dimension_filters,
            got.metric,
            got.limit_value,
            got.period,
            got.per,
        )
        want = (ref.name, ref.filters, ref.metric, ref.limit, ref.period, ref.per)
        assert actual == want, f"quota {quota_id}: tracker has {actual}, model {want}"

    # --- rate limits ----------------------------------------------------------------

    @rule(params=rate_params_st)
    def create_rate_limit(self, params: dict[str, Any]) -> None:
        self.add_rate_limit(**params)

    def add_rate_limit(
        self,
        *,
        name: str,
        filters: Filters,
        size: int,
        window: str,
        per: list[str],
        metric: str,
        enabled: bool,
    ) -> None:
        limit = size if metric == "total_events" else 75 * size
        created = self.tracker.rate_limits.create(
            name=name,
            dimension_filters=filters,
            limit_value=limit,
            window=window,
            per=per,
            metric=metric,
            enabled=enabled,
        )
        assert created.id.startswith("rl_")
        assert created.id not in self.rates
        self.generations += 1
        self.rates[created.id] = RefRate(
            created.id, name, filters, limit, window, enabled, list(per), metric, self.generations
        )
        self.check_rate_definition(created.id)

    @precondition(lambda self: bool(self.rates))
    @rule(
        index=st.integers(0, 63),
        changes=st.fixed_dictionaries(
            {},
            optional={
                "name": names_st,
                "dimension_filters": filters_st,
                "limit_value": st.sampled_from([1, 2, 3, 4, 100, 250]),
                "window": windows_st,
                "enabled": st.booleans(),
                "per": per_st,
                "metric": st.sampled_from(RATE_METRICS),
            },
        ),
    )
    def update_rate_limit(self, index: int, changes: dict[str, Any]) -> None:
        rate_id = self.pick(list(self.rates), index)
        returned = self.tracker.rate_limits.update(rate_id, **changes)
        self.apply_rate_changes(rate_id, changes)
        assert returned == self.tracker.rate_limits.get(rate_id)

    @precondition(lambda self: bool(self.rates))
    @rule(index=st.integers(0, 63))
    def toggle_rate_limit(self, index: int) -> None:
        rate_id = self.pick(list(self.rates), index)
        changes = {"enabled": not self.rates[rate_id].enabled}
        returned = self.tracker.rate_limits.update(rate_id, **changes)
        self.apply_rate_changes(rate_id, changes)
        assert returned == self.tracker.rate_limits.get(rate_id)

    @precondition(lambda self: bool(self.rates))
    @rule(index=st.integers(0, 63), limit_value=st.integers(1, 5))
    def resize_rate_limit(self, index: int, limit_value: int) -> None:
        """A new limitValue starts the limit's buckets afresh (full)."""
        rate_id = self.pick(list(self.rates), index)
        self.tracker.rate_limits.update(rate_id, limit_value=limit_value)
        self.apply_rate_changes(rate_id, {"limit_value": limit_value})

    def apply_rate_changes(self, rate_id: str, changes: dict[str, Any]) -> None:
        ref = self.rates[rate_id]
        before = (ref.limit, WINDOW_SECONDS[ref.window], ref.metric, ref.filters, ref.per)
        ref.name = changes.get("name", ref.name)
        ref.filters = changes.get("dimension_filters", ref.filters)
        ref.limit = changes.get("limit_value", ref.limit)
        ref.window = changes.get("window", ref.window)
        ref.enabled = changes.get("enabled", ref.enabled)
        ref.per = list(changes.get("per", ref.per))
        ref.metric = changes.get("metric", ref.metric)
        # Reshaping starts the buckets afresh (full); renaming, toggling or
        # spelling the window another way ("1h" as "hour") keeps them.
        after = (ref.limit, WINDOW_SECONDS[ref.window], ref.metric, ref.filters, ref.per)
        if after != before:
            self.generations += 1
            ref.generation = self.generations
        self.check_rate_definition(rate_id)

    @precondition(lambda self: bool(self.rates))
    @rule(index=st.integers(0, 63))
    def delete_rate_limit(self, index: int) -> None:
        rate_id = self.pick(list(self.rates), index)
        self.tracker.rate_limits.delete(rate_id)
        del self.rates[rate_id]
        gate = self.gates.pop(rate_id, None)
        if gate is not None:
            with pytest.raises(NotFoundError):
                gate.hit()  # the limit is gone: no key is asked for
        with pytest.raises(NotFoundError):
            self.tracker.rate_limits.get(rate_id)
        with pytest.raises(NotFoundError):
            self.tracker.rate_limits.update(rate_id, name="back")

    def check_rate_definition(self, rate_id: str) -> None:
        got = self.tracker.rate_limits.get(rate_id)
        ref = self.rates[rate_id]
        actual = (
            got.name,
            got.dimension_filters,
            got.limit_value,
            got.window,
            got.enabled,
            got.per,
            got.metric,
        )
        want = (ref.name, ref.filters, ref.limit, ref.window, ref.enabled, ref.per, ref.metric)
        assert actual == want, f"rate limit {rate_id}: tracker has {actual}, model {want}"

    # --- the clock ----------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 1, 2, 3, 5, 7, 10, 30, 59, 60, 61, 600, 1800, 3600, 86_400]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(period=st.sampled_from(PERIODS), delta=st.integers(-1, 1))
    def advance_to_edge(self, period: str, delta: int) -> None:
        now = self.now
        _, end = period_bounds(period, now)
        target = end + delta if end + delta > now else end
        self.clock.advance(target - now)

    # --- POST /track ------------------------------------------------------------------

    def call_usage(self, fields: dict[str, Any], form: str) -> TrackPostResponse:
        if form == "model":
            return self.tracker.usage(TrackPostRequest.model_validate(fields))
        if form == "wire":
            wire = TrackPostRequest.model_validate(fields).model_dump(mode="json", by_alias=True)
            return self.tracker.usage(wire)
        return self.tracker.usage(**fields)

    @rule(spec=event_st, form=forms_st)
    def track(self, spec: EventSpec, form: str) -> None:
        self.track_one(spec, form)

    @rule(specs=st.lists(event_st, min_size=2, max_size=6), form=forms_st)
    def track_burst(self, specs: list[EventSpec], form: str) -> None:
        """Several events at the same instant: where buckets run dry and quotas fill up."""
        for spec in specs:
            self.track_one(spec, form)

    def track_one(self, spec: EventSpec, form: str) -> None:
        now = self.now
        fields = spec.fields(now)
        key = spec.idempotency_key
        if key is not None and key in self.first_answers:
            # A recorded key: the first answer, whatever the limits say now; nothing changes.
            first = self.first_answers[key]
            repeat = self.call_usage(fields, form)
            assert repeat.id == first.id, f"repeat of {key!r} answered {repeat.id}, not {first.id}"
            if first.response is not None:
                assert repeat.model_dump() == first.response.model_dump()
                assert repeat.headers == first.response.headers
            return

        dims = spec.dimensions()
        rates = self.rate_expectations(dims, spec.tokens() or 0, now)
        quotas = self.quota_expectations(dims, spec, spec.when(now, self.latest))
        denied_rates = [r for r in rates if not r.allowed]
        exceeded = [q for q in quotas if q.exceeded]
        outcome: Literal["rate", "quota", "allowed"] = (
            "rate" if denied_rates else "quota" if exceeded else "allowed"
        )
        try:
            response = self.call_usage(fields, form)
        except RateLimitExceeded as exc:
            assert outcome == "rate", f"tracker: rate limit denied; model: {outcome}"
            self.check_rate_denial(exc, rates, denied_rates, quotas)
            return
        except QuotaExceeded as exc:
            assert outcome == "quota", f"tracker: quota denied; model: {outcome}"
            self.check_quota_denial(exc, rates, quotas, exceeded, now)
            return
        assert outcome == "allowed", f"tracker admitted the event; model: {outcome}"
        assert response.allowed is True
        by_id = check_rate_statuses(response.rate_limits, rates, charged=True)
        check_quota_statuses(response.quotas, quotas, charged=True)
        if rates:
            least = min(r.expected(charged=True)[0] for r in rates)
            candidates = [r.rate.id for r in rates if r.expected(charged=True)[0] == least]
            assert any(response.headers == describe(by_id[c]) for c in candidates), (
                f"201 headers {response.headers} do not describe a least-remaining limit "
                f"of {candidates}"
            )
        else:
            assert response.headers == {}, response.headers
        # All checks passed: record, charge every matching bucket, remember the key.
        self.record(spec, response.id, now)
        for r in rates:
            self.buckets[r.bucket] = (r.after, r.at)
        if key is not None:
            self.first_answers[key] = FirstAnswer(response.id, response)

    def check_denial_common(self, exc: LimitExceeded, error: str) -> None:
        assert exc.status_code == 429
        assert exc.body.error == error
        assert exc.body.allowed is False
        assert exc.retry_after == exc.body.retry_after
        assert exc.headers.get("Retry-After") == str(exc.retry_after), exc.headers

    def check_rate_denial(
        self,
        exc: RateLimitExceeded,
        rates: list[RateExpect],
        denied: list[RateExpect],
        quotas: list[QuotaExpect],
    ) -> None:
        self.check_denial_common(exc, "Rate limit exceeded")
        by_id = check_rate_statuses(exc.body.rate_limits, rates, charged=False)
        check_quota_statuses(exc.body.quotas, quotas, charged=False)
        retry = exc.retry_after
        options = {r.rate.id: ceil_options(r.wait(), minimum=1) for r in denied}
        assert all(retry >= min(o) for o in options.values()), (
            f"Retry-After {retry} is shorter than a denying limit's wait: "
            f"{[(r.rate.id, r.wait()) for r in denied]}"
        )
        candidates = [rid for rid, o in options.items() if retry in o]
        assert candidates, (
            f"Retry-After {retry} matches no denying limit's wait: "
            f"{[(r.rate.id, r.wait()) for r in denied]}"
        )
        assert any(
            exc.headers == {**describe(by_id[c]), "Retry-After": str(retry)} for c in candidates
        ), f"429 headers {exc.headers} do not describe a longest-wait denying limit {candidates}"

    def check_quota_denial(
        self,
        exc: QuotaExceeded,
        rates: list[RateExpect],
        quotas: list[QuotaExpect],
        exceeded: list[QuotaExpect],
        now: float,
    ) -> None:
        self.check_denial_common(exc, "Quota exceeded")
        by_id = check_rate_statuses(exc.body.rate_limits, rates, charged=False)
        check_quota_statuses(exc.body.quotas, quotas, charged=False)
        last_end = max(q.end for q in exceeded)
        assert exc.retry_after == max(1, math.ceil(last_end - now)), (
            f"Retry-After {exc.retry_after}, want the seconds to {last_end} from {now}"
        )
        quota_part = {k: v for k, v in exc.headers.items() if k.startswith("X-Quota-")}
        assert quota_part in [
            {
                "X-Quota-Reset": str(q.end),
                "X-Quota-Period": q.quota.period,
                "X-Quota-Metric": q.quota.metric,
            }
            for q in exceeded
            if q.end == last_end
        ], f"X-Quota-* headers {quota_part} do not describe the quota ending last"
        rate_part = {k: v for k, v in exc.headers.items() if k.startswith("X-RateLimit-")}
        if rates:
            least = min(r.expected(charged=False)[0] for r in rates)
            candidates = [r.rate.id for r in rates if r.expected(charged=False)[0] == least]
            assert any(rate_part == describe(by_id[c]) for c in candidates), (
                f"X-RateLimit-* {rate_part} do not describe a least-remaining limit {candidates}"
            )
        else:
            assert rate_part == {}, rate_part
        assert set(exc.headers) == {"Retry-After", *quota_part, *rate_part}, exc.headers

    # --- events without enforcement ---------------------------------------------------

    @rule(spec=event_st)
    def ingest(self, spec: EventSpec) -> None:
        now = self.now
        self.latest = max(self.latest, now)
        answer = self.tracker.events.ingest(**spec.fields(now))
        key = spec.idempotency_key
        if key is not None and key in self.first_answers:
            assert answer.id == self.first_answers[key].id
            return
        self.record(spec, answer.id, now)
        if key is not None:
            self.first_answers[key] = FirstAnswer(answer.id, None)

    @rule(specs=st.lists(event_st, min_size=1, max_size=3))
    def batch(self, specs: list[EventSpec]) -> None:
        now = self.now
        self.latest = max(self.latest, now)
        answer = self.tracker.events.batch([s.fields(now) for s in specs])
        fresh: list[EventSpec] = []
        keys: set[str] = set()
        for spec in specs:
            key = spec.idempotency_key
            if key is not None and (key in self.first_answers or key in keys):
                continue
            if key is not None:
                keys.add(key)
            fresh.append(spec)
        assert answer.count == len(fresh), f"batch count {answer.count}, want {len(fresh)}"
        if not fresh:
            return
        # The batch answers only a count: read the new ids back, most recent first.
        newest = self.tracker.events.list(limit=len(fresh)).data
        assert len(newest) == len(fresh)
        for spec, event in zip(fresh, reversed(newest), strict=True):
            assert (event.customer_id, event.total_tokens, event.created_at.timestamp()) == (
                spec.customer_id,
                spec.tokens(),
                spec.when(now, self.latest),
            )
            self.record(spec, event.id, now)
            if spec.idempotency_key is not None:
                self.first_answers[spec.idempotency_key] = FirstAnswer(event.id, None)

    # --- non-consuming checks ---------------------------------------------------------

    @rule(dims=check_dims_st)
    def check_limits(self, dims: dict[str, str]) -> None:
        """rate_limits.check and quotas.check: where things stand now, consuming nothing."""
        now = self.now
        rate_answer = self.tracker.rate_limits.check(dims)
        rates = self.rate_expectations(dims, 1, now)  # a check asks about a one-request event
        check_rate_statuses(rate_answer.rate_limits, rates, charged=False)
        assert rate_answer.allowed == all(e.allowed for e in rates)
        quota_answer = self.tracker.quotas.check(dims)
        quotas = self.quota_expectations(dims, None, self.latest)
        check_quota_statuses(quota_answer.quotas, quotas, charged=False)
        assert quota_answer.allowed == (not any(q.exceeded for q in quotas))

    @precondition(lambda self: bool(self.rates))
    @rule(
        index=st.integers(0, 63),
        customer=st.sampled_from(CUSTOMERS),
        model=st.sampled_from(MODELS),
        cost=st.integers(0, 3),
    )
    def gate_hit(self, index: int, customer: str, model: str, cost: int) -> None:
        """rate_limits.gate(id).hit(key): the limit's bucket alone, filters not consulted."""
        rate_id = self.pick(list(self.rates), index)
        rate = self.rates[rate_id]
        gate = self.gates.get(rate_id)
        if gate is None:  # kept across steps: a gate must follow its limit's changes
            gate = self.gates[rate_id] = self.tracker.rate_limits.gate(rate_id)
        values = {"customer_id": customer, "model": model}
        key = tuple(values[name] for name in rate.per)
        if rate.metric == "total_tokens":
            cost *= 40
        now = self.now
        self.latest = max(self.latest, now)
        got = gate.hit(*key, cost=cost)
        if not rate.enabled:
            assert got is True, "a disabled limit never denies"
            return
        bucket = (rate.id, rate.generation, key)
        level, at = refill(
            rate.limit, WINDOW_SECONDS[rate.window], self.buckets.get(bucket), self.latest
        )
        expected = cost <= level + WHOLE_TOKEN_SLACK
        assert got is expected, f"gate hit of {cost} on {level} tokens answered {got}"
        if expected:
            self.buckets[bucket] = (max(0.0, level - cost), at)
            return
        # Denied: Retry-After as usage()'s denial counts it, on the caller's clock.
        wait = RateExpect(rate, bucket, level, at, cost, now).wait()
        assert gate.retry_after(*key, cost=cost) in ceil_options(wait, minimum=1)

    # --- reading back ------------------------------------------------------------------

    def expected_usage(
        self, customer: str, start: float | None, end: float | None
    ) -> tuple[int, int, int, int, int]:
        mine = [
            e
            for e in self.events
            if e.customer_id == customer
            and (start is None or start <= e.ts)
            and (end is None or e.ts < end)
        ]
        return (
            len(mine),
            sum(e.total_tokens or 0 for e in mine),
            sum(e.input_tokens or 0 for e in mine),
            sum(e.output_tokens or 0 for e in mine),
            sum(e.cost_cents or 0 for e in mine),
        )

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        start=st.one_of(st.none(), st.integers(-90_000, 3600)),
        end=st.one_of(st.none(), st.integers(-7200, 90_000)),
    )
    def read_back(self, customer: str, start: int | None, end: int | None) -> None:
        """customers.get_usage over a range, and events.list, against the event list."""
        now = self.now
        lo = None if start is None else now + start
        hi = None if end is None else now + end
        usage = self.tracker.customers.get_usage(
            customer,
            None if lo is None else datetime.fromtimestamp(lo, UTC),
            None if hi is None else datetime.fromtimestamp(hi, UTC),
        )
        got = (
            usage.total_events,
            usage.total_tokens,
            usage.total_input_tokens,
            usage.total_output_tokens,
            usage.total_cost_cents,
        )
        want = self.expected_usage(customer, lo, hi)
        assert got == want, f"{customer} usage in [{lo}, {hi}): got {got}, want {want}"
        page = self.tracker.events.list(customer_id=customer, limit=100)
        newest = [e for e in reversed(self.events) if e.customer_id == customer][:100]
        listed = [(e.id, e.created_at.timestamp(), e.total_tokens) for e in page.data]
        assert listed == [(e.id, e.ts, e.total_tokens) for e in newest]

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def counters_are_the_sums_of_events(self) -> None:
        """ledger.counters() holds whole units: events, tokens, or micro-cents for cost."""
        actual = {
            (quota_id, tuple(json.loads(key)), start): used
            for (quota_id, key, start), used in self.tracker.ledger.counters().items()
            if used != 0
        }
        expected: dict[tuple[str, Key, int], int] = defaultdict(int)
        for quota in self.quotas.values():
            for e in self.events:
                key = applies(quota.filters, quota.per, e.dims)
                if key is None:
                    continue
                start, _ = period_bounds(quota.period, e.ts)
                unit = MICRO_CENTS if quota.metric == "total_cost_cents" else 1
                expected[quota.id, key, start] += unit * quota_amount(
                    quota.metric, e.total_tokens, e.cost_cents
                )
        assert actual == {k: v for k, v in expected.items() if v != 0}

    @invariant()
    def customer_totals_match(self) -> None:
        self.latest = max(self.latest, self.now)  # every tracker call reads the clock
        for customer in CUSTOMERS:
            usage = self.tracker.customers.get_usage(customer)
            got = (
                usage.total_events,
                usage.total_tokens,
                usage.total_input_tokens,
                usage.total_output_tokens,
                usage.total_cost_cents,
            )
            want = self.expected_usage(customer, None, None)
            assert got == want, f"{customer}: got {got}, want {want}"

    @invariant()
    def definitions_match(self) -> None:
        # Every page: a long run may make more limits than one page holds (100).
        quotas = walk(self.tracker.quotas.list, limit=100)
        assert sorted(q.id for q in quotas) == sorted(self.quotas)
        rates = walk(self.tracker.rate_limits.list, limit=100)
        assert sorted(r.id for r in rates) == sorted(self.rates)
        assert self.tracker.ledger.event_count() == len(self.events)


class BackwardClockMachine(TrackerMachine):
    """The same machine, with a clock that sometimes steps back (an NTP correction).

    Bucket time stands still until the clock passes the latest instant the
    tracker has read, and so do the stamps of events sent without a timestamp:
    neither a bucket nor a quota period moves back.  Retry-After is counted on
    the caller's clock.
    """

    @rule(seconds=st.integers(1, 90))
    def step_back(self, seconds: int) -> None:
        self.clock.advance(-seconds)


class SQLiteFileMachine(TrackerMachine):
    """The same machine on a SQLite file ledger: both ledgers must agree with the model."""

    def open_tracker(self) -> Tracker:
        self.directory = tempfile.mkdtemp(prefix="limitry-stateful-")
        return Tracker(Path(self.directory) / "usage.db", clock=self.clock)

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisMachine(TrackerMachine):
    """The same machine on Redis buckets, on the tracker's clock: they must agree with the model."""

    def open_tracker(self) -> Tracker:
        self.stores = RedisStores()
        return Tracker(clock=self.clock, rate_limits=self.stores.new())

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.stores.cleanup()


class RedisBackwardClockMachine(RedisMachine, BackwardClockMachine):
    """Redis buckets under a clock that steps back: the script keeps bucket time from
    running backwards and counts Retry-After from the caller's clock, as the model does."""


# Modest budgets (about 10 s together); the conftest profile supplies deadline=None
# and, under CI, derandomize.
TrackerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50)
TestTrackerMachine = TrackerMachine.TestCase

BackwardClockMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=50)
TestBackwardClockMachine = BackwardClockMachine.TestCase

SQLiteFileMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=50)
TestSQLiteFileMachine = SQLiteFileMachine.TestCase

RedisMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=50)
TestRedisMachine = RedisMachine.TestCase

RedisBackwardClockMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=50)
TestRedisBackwardClockMachine = RedisBackwardClockMachine.TestCase
