"""The limits compiled for the hot path, and what each one says about one event.

A :class:`Plan` is built once per definitions version (see
:mod:`limitry_local.engine.definitions`): every enabled rate limit and every
quota with its key function, bucket parameters, unit scale and mode already
worked out, so a call only evaluates them.  The outcomes are what a call's
evaluation produced, for the decision (:mod:`~limitry_local.engine.admission`)
and the answer (:mod:`~limitry_local.engine.responses`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from limitry_local.buckets import BucketAnswer, BucketAsk
from limitry_local.dimensions import Key, KeyFunction, key_function
from limitry_local.metrics import amount_reader, unit_scale
from limitry_local.models import (
    Quota,
    RateLimit,
    TrackPostRequest,
    effective_limit,
    same_setting,
    window_seconds,
)
from limitry_local.periods import period_bounds

RESHAPING_QUOTA_FIELDS = ("dimension_filters", "per", "metric", "period", "timezone")
"""An update of any of these changes which events a quota counts, or how: counters are rebuilt."""
RESHAPING_RATE_FIELDS = (
    "dimension_filters",
    "per",
    "metric",
    "limit_value",
    "window",
    "overrides",
)
"""An update of any of these starts a rate limit's buckets afresh (a new generation)."""

_new_tuple = tuple.__new__


def enforced(mode: str) -> bool:
    """The one mode policy: an ``enforce`` limit denies; ``soft`` and ``shadow`` only log."""
    return mode == "enforce"


def shown(mode: str) -> bool:
    """A ``shadow`` limit is left out of every answer; ``enforce`` and ``soft`` appear."""
    return mode != "shadow"


def exceeds(used: int, amount: int | None, limit_units: int) -> bool:
    """The one rule for "over a quota": the event's ``amount`` does not fit in what is
    left, or (a check, no amount) nothing more fits."""
    return used >= limit_units if amount is None else used + amount > limit_units


@dataclass(frozen=True, slots=True)
class RateRule:
    """A rate limit with what the hot path needs worked out."""

    limit: RateLimit
    seconds: int
    generation: str
    """In its buckets' keys: a reshaped limit starts with fresh buckets.

    Stored with the definition in the ledger, not counted per process, so
    every process sharing a bucket store (Redis) names the same buckets."""
    enforced: bool
    shown: bool
    key_of: KeyFunction
    """``limit_key`` of this limit's filters and per, compiled once."""
    counts_tokens: bool
    capacity: int | None
    """The bucket's capacity, or None when overrides make it depend on the event."""
    shared: tuple[tuple[dict[str, dict[str, int]], bool, int], ...]
    """With an override outside ``per`` (one bucket, events meeting different
    capacities): each override in order, as ``({name: values}, on a per
    dimension, its largest value)``, to find a bucket's largest capacity
    (:meth:`largest_for`); else empty."""

    @classmethod
    def compile(cls, limit: RateLimit, generation: str) -> RateRule:
        overrides = limit.overrides
        outside = any(name not in limit.per for name in overrides)
        return cls(
            limit,
            window_seconds(limit.window),
            generation,
            enforced=enforced(limit.mode),
            shown=shown(limit.mode),
            key_of=key_function(limit.dimension_filters, limit.per),
            counts_tokens=limit.metric == "total_tokens",
            capacity=None if overrides else limit.limit_value,
            shared=tuple(
                ({name: values}, name in limit.per, max(values.values()))
                for name, values in overrides.items()
            )
            if outside
            else (),
        )

    def largest_for(self, dims: dict[str, str]) -> int:
        """The largest capacity an event of this event's bucket may meet (BucketAsk).

        Overrides decide in order, the first that matches (effective_limit):
        one on a ``per`` dimension matches every event of the bucket or none,
        one outside ``per`` may match some.  So: every override outside ``per``
        up to the first on a ``per`` dimension that matches (whose value then
        decides the rest), else ``limitValue`` too.
        """
        most = 0
        for single, on_key, top in self.shared:
            if on_key:
                own = effective_limit(0, single, dims)  # 0: no match (values are >= 1)
                if own:
                    return own if own > most else most
            elif top > most:
                most = top
        value = self.limit.limit_value
        return value if value > most else most

    def ask(self, key: Key, dims: dict[str, str], tokens: int | None) -> BucketAsk:
        """What an event asks of ``key``'s bucket (``tokens`` None: a one-request check)."""
        capacity = self.capacity
        # Positional, through tuple.__new__: the named tuple's own constructor
        # is a Python call, once per matching limit per event.
        return _new_tuple(
            BucketAsk,
            (
                (self.limit.id, self.generation, key),
                capacity if capacity is not None else self.limit.limit_for(dims),
                self.seconds,
                tokens if tokens is not None and self.counts_tokens else 1,
                self.largest_for(dims) if self.shared else 0,
            ),
        )


@dataclass(slots=True)
class QuotaRule:
    """A quota with what the hot path needs worked out."""

    quota: Quota
    key_of: KeyFunction
    scale: int
    enforced: bool
    shown: bool
    amount_of: Callable[[TrackPostRequest], int]
    """What an event adds to this quota's counter (:func:`~limitry_local.metrics.amount_reader`)."""
    limit: int | None
    """The quota's limitValue, or None when overrides make it depend on the event."""
    second: int | None = None
    """The last whole second asked about, and its period: bounds depend on nothing else."""
    bounds: tuple[int, int] = (0, 0)

    @classmethod
    def compile(cls, quota: Quota) -> QuotaRule:
        return cls(
            quota,
            key_function(quota.dimension_filters, quota.per),
            unit_scale(quota.metric),
            enforced=enforced(quota.mode),
            shown=shown(quota.mode),
            amount_of=amount_reader(quota.metric),
            limit=None if quota.overrides else quota.limit_value,
        )

    def period(self, second: int, when: float) -> tuple[int, int]:
        """The period holding ``when`` (whose whole second is ``second``), cached per second."""
        if self.second != second:
            self.second = second
            self.bounds = period_bounds(self.quota.period, when, self.quota.timezone)
        return self.bounds


@dataclass(frozen=True, slots=True)
class Plan:
    """Every limit an event is matched against, compiled for one definitions version."""

    rates: tuple[RateRule, ...]
    """The enabled rate limits, in creation order."""
    quotas: tuple[QuotaRule, ...]
    """Every quota, in creation order (a quota has no ``enabled``)."""
    enforced_only: bool = True
    """No soft or shadow rate limit: no bucket is charged after the event is recorded."""

    @classmethod
    def of(cls, rates: Sequence[RateRule], quotas: Sequence[QuotaRule]) -> Plan:
        return cls(tuple(rates), tuple(quotas), all(rule.enforced for rule in rates))


@dataclass(slots=True)
class RateOutcome:
    """What one rate limit's bucket answered for one event."""

    rule: RateRule
    key: Key
    ask: BucketAsk
    answer: BucketAnswer
    enforced: bool
    """False for a soft or shadow limit: its bucket was read, not taken from."""


@dataclass(slots=True)
class QuotaOutcome:
    """Where one quota's counter stands for one event."""

    rule: QuotaRule
    key: Key
    key_json: str
    start: int
    end: int
    used: int
    amount: int | None
    """The event's amount in whole units; None for a check (does anything more fit?)."""
    limit: int
    """The quota's limitValue, or the override for this event's dimensions."""
    limit_units: int
    exceeded: bool

    @property
    def quota(self) -> Quota:
        return self.rule.quota


def shape(limit: RateLimit) -> str:
    """A short digest of what decides a rate limit's buckets (not its name or enabled)."""
    text = json.dumps(
        [getattr(limit, name) for name in RESHAPING_RATE_FIELDS],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def reshaped(before: BaseModel, after: BaseModel, fields: Sequence[str]) -> bool:
    """Whether an update changed any of ``fields`` (which events match, or how they count).

    A window spelled another way ("minute", "1m", "60s") is no reshape: the
    buckets stay (found in review: a respelling restarted them)."""
    return not all(
        window_seconds(getattr(before, f)) == window_seconds(getattr(after, f))
        if f == "window"
        else same_setting(f, getattr(before, f), getattr(after, f))
        for f in fields
    )


@functools.lru_cache(maxsize=65_536)
def key_json(key: Key) -> str:
    """A counter's key as the ledger stores it."""
    # Cached: the same few keys come back on every call, and JSON encoding is
    # a visible share of the hot path.
    return json.dumps(key, separators=(",", ":"), ensure_ascii=False)
